import json

import pytest

from compress.errors import CompressError
from compress.plan import LayerDecision, Plan


def test_round_trip_and_table():
    plan = Plan.uniform(4, 4).with_bits([4, 2, 2, 8], ["lim rank 0", "", "", "kept high"])
    back = Plan.from_json(plan.to_json())
    assert back == plan and back.bits == (4, 2, 2, 8)
    text = plan.table({"lim": [0.1, 0.2, 0.3, 0.4]})
    assert text.splitlines()[0].split() == ["layer", "lim", "bits", "skip", "reason"]
    assert "kept high" in text.splitlines()[4]


def test_validation():
    with pytest.raises(ValueError, match="bits must be one of"):
        LayerDecision(0, bits=5)
    with pytest.raises(ValueError, match="skipped layer is not quantized"):
        LayerDecision(0, bits=4, skip=True)
    with pytest.raises(ValueError, match="0..L-1 in order"):
        Plan((LayerDecision(1),))
    with pytest.raises(ValueError, match="every layer"):
        Plan((LayerDecision(0, skip=True),))


def test_hand_edited_plan_is_checked():
    data = json.loads(Plan.uniform(3, 4).to_json())
    data["layers"][1]["bits"] = 2
    assert Plan.from_json(json.dumps(data)).bits == (4, 2, 4)
    data["layers"][1]["bitz"] = 2
    with pytest.raises(CompressError, match="unknown keys"):
        Plan.from_json(json.dumps(data))
    with pytest.raises(CompressError, match="not valid JSON"):
        Plan.from_json("{")
    with pytest.raises(CompressError, match="bits must be one of"):
        Plan.from_json(json.dumps({"format": 1, "layers": [{"index": 0, "bits": 5}]}))


def test_a_plan_for_another_model_is_refused():
    with pytest.raises(CompressError, match="plan has 30 layers but the model has 32"):
        Plan.uniform(30, 4).check_layers(32)
    Plan.uniform(30, 4).check_layers(30)


def test_skip_marks_layers_and_round_trips():
    plan = Plan.uniform(5, 4).with_skip([1, 3], "bi rank 4/5")
    assert plan.kept == (0, 2, 4) and plan.bits == (4, 16, 4, 16, 4)
    assert plan.layers[1].skip and plan.layers[1].reason == "bi rank 4/5"
    assert Plan.from_json(plan.to_json()) == plan
    with pytest.raises(ValueError, match="out of range"):
        plan.with_skip([5])
    with pytest.raises(ValueError, match="every layer"):
        Plan.uniform(2).with_skip([0, 1])


def test_reduced_plan_and_back():
    """Bits are planned on the model after removal (kept layers renumbered) and written back per original index."""
    plan = Plan.uniform(5).with_skip([1, 3], {1: "bi 0.01", 3: "bi 0.02"})
    assert plan.skipped == (1, 3) and plan.layers[3].reason == "bi 0.02"
    reduced = plan.reduced()
    assert [d.index for d in reduced.layers] == [0, 1, 2] and not reduced.skipped
    full = plan.with_kept(reduced.with_bits([4, 2, 8], ["a", "b", "c"]))
    assert full.bits == (4, 16, 2, 16, 8) and full.skipped == (1, 3)
    assert [d.reason for d in full.layers] == ["a", "bi 0.01", "b", "bi 0.02", "c"]
    assert full.reduced().bits == (4, 2, 8)
    with pytest.raises(ValueError, match="3 kept layers"):
        plan.with_kept(Plan.uniform(4, 4))
