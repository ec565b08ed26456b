import math

import pytest
import torch

from compress.errors import CompressError
from compress.model import decoder_layers
from compress.scorers import SCORERS, resolve, score
from compress.scorers.embedding import EmbeddingConfig, embedding_scores
from compress.scorers.outliers import OutlierConfig, outlier_scores, outlier_stats
from compress.scorers.spectral import matrix_table, spectral_scores
from compress.scores import HIGHER, INFO, LOWER
from conftest import tiny_model


def calib(n=6, t=16, seed=0):
    return torch.randint(0, 256, (n, t), generator=torch.Generator().manual_seed(seed))


class Identity(torch.nn.Module):
    """A decoder layer that returns its input unchanged."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_identity_layer_scores_zero_change(kind):
    model = tiny_model(kind)
    layers = decoder_layers(model)
    layers[2] = Identity()
    s = embedding_scores(model, calib(), progress=False)
    assert s.columns["bi"][2] == pytest.approx(0, abs=1e-6)
    assert s.columns["lim"][2] == pytest.approx(-1, abs=1e-6)
    assert s.columns["angular_1"][2] == pytest.approx(0, abs=2e-3)  # arccos near 1 is steep
    assert all(b > 1e-3 for i, b in enumerate(s.columns["bi"]) if i != 2)
    assert s.directions["lim"] == HIGHER and s.importance_order("bi")[-1] == 2


def test_embedding_scores_match_a_direct_computation():
    model = tiny_model("llama")
    tokens = calib()
    s = embedding_scores(model, tokens, EmbeddingConfig(max_span=2, batch_size=4), progress=False)
    out = model(tokens, output_hidden_states=True)
    # hidden_states[i] is the input of layer i; the last one has the final norm applied, so use i < L
    h = [x.float() for x in out.hidden_states]
    for i in range(3):
        cos = torch.nn.functional.cosine_similarity(h[i], h[i + 1], dim=-1).mean().item()
        assert s.columns["bi"][i] == pytest.approx(1 - cos, abs=1e-5)
        last = torch.nn.functional.cosine_similarity(h[i][:, -1], h[i + 1][:, -1], dim=-1)
        assert s.columns["angular_1"][i] == pytest.approx((torch.arccos(last) / math.pi).mean().item(), abs=1e-4)
    assert math.isnan(s.columns["angular_2"][3]) and not math.isnan(s.columns["angular_2"][2])


def test_embedding_is_one_forward_pass_and_leaves_no_hooks():
    model = tiny_model("llama")
    calls = []
    model.model.norm.register_forward_hook(lambda *a: calls.append("norm"))
    handle = decoder_layers(model)[0].register_forward_hook(lambda *a: calls.append("layer0"))
    embedding_scores(model, calib(n=8), EmbeddingConfig(batch_size=4), progress=False)
    assert calls == ["layer0", "layer0"]  # 2 batches, one pass each; stops before the final norm
    handle.remove()
    for layer in decoder_layers(model):
        assert not layer._forward_hooks and not layer._forward_pre_hooks


def test_embedding_bad_input():
    with pytest.raises(CompressError, match="calibration tokens"):
        embedding_scores(tiny_model(), None)
    with pytest.raises(CompressError, match="exceeds"):
        embedding_scores(tiny_model(), calib(), EmbeddingConfig(max_span=9))


def test_outlier_stats_on_planted_weights():
    w = torch.zeros(100, 10)
    w[:, :2] = 1.0  # 20% of weights are far from the mean
    stats = outlier_stats(w)
    assert stats["zd"] == pytest.approx(0.2)
    w = torch.randn(200, 200, generator=torch.Generator().manual_seed(0))
    assert outlier_stats(w)["zd"] == pytest.approx(0.3173, abs=0.01)  # P(|N(0,1)| > 1)
    w[3, 7] = 40 * w.std()
    assert outlier_stats(w)["max_abs_over_std"] == pytest.approx(40, rel=0.02)


def test_outlier_scores_find_the_planted_layer():
    model = tiny_model("llama")
    with torch.no_grad():
        down = decoder_layers(model)[1].mlp.down_proj.weight
        down[0, 0] = 50 * down.std()
    s = outlier_scores(model, progress=False)
    assert max(range(4), key=lambda i: s.columns["max_abs_over_std"][i]) == 1
    assert s.directions == {"zd": LOWER, "max_abs_over_std": INFO}
    top = max(s.matrices, key=lambda r: r["max_abs_over_std"])
    assert (top["layer"], top["name"]) == (1, "model.layers.1.mlp.down_proj")
    assert len(s.matrices) == 4 * 7
    with pytest.raises(ValueError):
        OutlierConfig(threshold=0)


def test_spectral_scores_layer_means_and_rows():
    model = tiny_model("llama", hidden_size=64, intermediate_size=128)
    s = spectral_scores(model, progress=False)
    rows = [r for r in s.matrices if r["layer"] is not None]
    assert len(rows) == 4 * 7 and any(r["name"] == "lm_head" for r in s.matrices)
    for i in range(4):
        mine = [r["alpha"] for r in rows if r["layer"] == i]
        assert s.columns["alpha"][i] == pytest.approx(sum(mine) / len(mine))
    assert s.directions["alpha"] == LOWER and s.directions["stable_rank"] == INFO
    # per-matrix α equals a direct fit of that weight's squared singular values
    from compress.scorers.powerlaw import fit_powerlaw

    q = decoder_layers(model)[0].self_attn.q_proj.weight.detach()
    direct = fit_powerlaw(torch.linalg.svdvals(q.double()).pow(2).flip(-1))
    row = next(r for r in rows if r["layer"] == 0 and r["name"].endswith("q_proj"))
    assert row["alpha"] == pytest.approx(direct.alpha.item(), abs=1e-3)


def test_spectral_handles_gpt2_conv1d():
    rows = matrix_table(tiny_model("gpt2"), progress=False)
    assert sum(r["layer"] is not None for r in rows) == 16


def test_registry_resolves_aliases_and_rejects_unknown():
    assert resolve("alpha, bi,angular,zd") == ["alpha", "lim", "zd"]
    with pytest.raises(CompressError, match="unknown scorer 'kurtosis'; valid: alpha, lim, zd, sensitivity"):
        resolve("alpha,kurtosis")
    assert set(SCORERS) == {"alpha", "lim", "zd", "sensitivity"}


def test_score_merges_and_validates_settings():
    model = tiny_model("llama")
    s = score(model, "alpha,lim,zd", calib(), {"zd": {"threshold": 2.0}}, progress=False)
    assert {"alpha", "alpha_median", "lim", "bi", "angular_1", "zd"} <= set(s.columns)
    assert s.n_layers == 4
    with pytest.raises(CompressError, match="has no setting bogus; valid: threshold"):
        score(model, "zd", None, {"zd": {"bogus": 1}}, progress=False)
    with pytest.raises(CompressError, match="needs calibration"):
        score(model, "lim", None, progress=False)
    with pytest.raises(CompressError, match="not run: alpha"):
        score(model, "zd", None, {"alpha": {}}, progress=False)


def test_sensitivity_is_zero_for_an_identity_layer_and_restores_weights():
    from compress.scorers.sensitivity import SensitivityConfig, sensitivity_scores

    model = tiny_model("llama")
    decoder_layers(model)[1] = Identity()
    tokens = calib(n=4, t=24)
    before = model(tokens).logits
    low = sensitivity_scores(model, tokens, SensitivityConfig(bits=2, group_size=32), progress=False)
    assert torch.equal(model(tokens).logits, before)  # every weight put back
    assert low.columns["sensitivity"][1] == 0.0
    assert all(x > 0 for i, x in enumerate(low.columns["sensitivity"]) if i != 1)
    high = sensitivity_scores(model, tokens, SensitivityConfig(bits=8, group_size=32), progress=False)
    assert sum(high.columns["sensitivity"]) < sum(low.columns["sensitivity"]) / 10
    assert low.directions["sensitivity"] == HIGHER


def test_sensitivity_runs_on_gpt2_conv1d():
    from compress.scorers.sensitivity import SensitivityConfig, sensitivity_scores

    s = sensitivity_scores(tiny_model("gpt2"), calib(n=2, t=16), SensitivityConfig(group_size=32), progress=False)
    assert all(x > 0 for x in s.columns["sensitivity"])


def test_measured_costs_fall_with_width_and_feed_the_knapsack():
    from compress.bits.allocate import budgeted_bits
    from compress.scorers.sensitivity import measured_costs

    model = tiny_model("llama")
    decoder_layers(model)[1] = Identity()
    costs = measured_costs(model, calib(n=4, t=24), (2, 4, 8), group_size=32, progress=False)
    assert len(costs) == len(decoder_layers(model)) and all(set(c) == {2, 4, 8} for c in costs)
    assert costs[1] == {2: 0.0, 4: 0.0, 8: 0.0}  # a layer with no weights costs nothing at any width
    assert all(c[2] > c[4] > c[8] for i, c in enumerate(costs) if i != 1)
    bits = budgeted_bits(costs, [1] * len(costs), 4.0)
    assert bits[1] == 2  # the free layer takes the lowest width, paying for more bits elsewhere
