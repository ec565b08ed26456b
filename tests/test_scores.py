import json
import math

import pytest

from compress.errors import CompressError
from compress.scores import HIGHER, INFO, LOWER, LayerScores


def table():
    return LayerScores(
        n_layers=4,
        columns={"lim": (0.1, 0.4, 0.2, 0.3), "zd": (0.3, 0.1, 0.2, 0.4), "norm": (1, 2, 3, 4),
                 "angular_2": (0.5, 0.1, 0.3, math.nan)},
        directions={"lim": HIGHER, "zd": LOWER, "norm": INFO, "angular_2": HIGHER},
        matrices=({"name": "mlp.down_proj", "layer": 0, "alpha": 3.0},),
    )


def test_importance_order_follows_direction():
    t = table()
    assert t.importance_order("lim") == [1, 3, 2, 0]  # higher first
    assert t.importance_order("zd") == [1, 2, 0, 3]  # lower first
    assert t.importance_order("angular_2") == [0, 2, 1, 3]  # undefined (NaN) last


def test_diagnostic_columns_are_not_rankable():
    with pytest.raises(CompressError, match="diagnostic"):
        table().importance_order("norm")


def test_unknown_column_lists_valid_ones():
    with pytest.raises(CompressError, match="lim, zd, norm"):
        table()["alpha"]


def test_validation():
    with pytest.raises(ValueError, match="2 values for 3 layers"):
        LayerScores(3, {"a": (1, 2)}, {"a": HIGHER})
    with pytest.raises(ValueError, match="needs a direction"):
        LayerScores(2, {"a": (1, 2)}, {})
    with pytest.raises(ValueError, match="needs a direction"):
        LayerScores(2, {"a": (1, 2)}, {"a": "up"})
    with pytest.raises(ValueError, match="cannot merge"):
        table().merge(LayerScores(2, {"a": (1, 2)}, {"a": HIGHER}))


def test_json_round_trip_keeps_nan_as_null():
    t = table()
    text = t.to_json()
    assert json.loads(text)["columns"]["angular_2"][3] is None
    back = LayerScores.from_dict(json.loads(text))
    assert back.columns["lim"] == t.columns["lim"]
    assert math.isnan(back.columns["angular_2"][3])
    assert back.directions == t.directions
    assert back.matrices == t.matrices


def test_csv_and_table():
    t = table()
    lines = t.to_csv().splitlines()
    assert lines[0] == "layer,lim,zd,norm,angular_2"
    assert len(lines) == 5
    text = t.table(("lim", "zd", "norm"))
    assert text.splitlines()[0].split() == ["layer", "lim↑", "zd↓", "norm"]
    assert len(text.splitlines()) == 5


def test_merge_combines_columns():
    merged = table().merge(LayerScores(4, {"alpha": (1, 2, 3, 4)}, {"alpha": LOWER}))
    assert merged.names == ("lim", "zd", "norm", "angular_2", "alpha")


def test_spearman_and_rank_agreement():
    from compress.scores import rank_agreement, spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)  # scipy.stats.spearmanr
    t = LayerScores(4, {"ref": (4, 3, 2, 1), "lim": (0.9, 0.5, 0.3, 0.1), "zd": (0.1, 0.2, 0.3, 0.4),
                        "norm": (1, 2, 3, 4), "angular_2": (0.5, 0.4, 0.3, math.nan)},
                    {"ref": HIGHER, "lim": HIGHER, "zd": LOWER, "norm": INFO, "angular_2": HIGHER})
    assert rank_agreement(t, "ref") == pytest.approx({"lim": 1.0, "zd": 1.0, "angular_2": 1.0})
