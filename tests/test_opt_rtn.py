"""Opt-RTN (compress.quant.opt_rtn): auto-round's iters=0 rounding, mirrored so the allocator's costs are those
of the weights an opt-rtn checkpoint holds; and the checkpoint itself (compress.quant.autoround)."""

import pytest
import torch

from compress.bits.unit_costs import round_unit
from compress.plan import Option
from compress.quant.opt_rtn import opt_rtn_weights
from compress.quant.rtn import fake_quantize


def heavy_tailed(rows=48, cols=256, seed=0) -> torch.Tensor:
    """Student-t weights (4 degrees of freedom): the outliers decoder weights have."""
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(rows, cols, generator=g)
    chi2 = torch.randn(4, rows, cols, generator=g).square().sum(0)
    return 0.02 * normal / (chi2 / 4).sqrt()


@pytest.mark.parametrize("bits,group", [(3, 64), (4, 128), (2, 32), (3, None)])
def test_each_group_holds_at_most_2_to_the_bits_values(bits, group):
    w = heavy_tailed()
    q = opt_rtn_weights(w, bits, group)
    for row in q.reshape(-1, group or w.shape[1]):
        assert row.unique().numel() <= 2**bits


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_weighted_error_is_below_gptqs_min_max_grid(bits):
    w, imatrix = heavy_tailed(), torch.rand(256) + 0.1
    ours = (imatrix * (opt_rtn_weights(w, bits, 64, imatrix) - w).square()).sum()
    min_max = (imatrix * (fake_quantize(w, bits, 64) - w).square()).sum()
    assert ours < 0.9 * min_max  # the full-range grid and the searched scale both pay


def test_the_imatrix_steers_the_error_to_the_columns_that_matter():
    w = heavy_tailed(cols=64)
    imatrix = torch.ones(64)
    imatrix[:8] = 100.0  # eight columns carry most of the activation energy
    weighted = (opt_rtn_weights(w, 3, 64, imatrix) - w)[:, :8].square().sum()
    plain = (opt_rtn_weights(w, 3, 64) - w)[:, :8].square().sum()
    assert weighted < plain


def test_matches_auto_rounds_own_function():
    int_module = pytest.importorskip("auto_round.data_type.int")
    w, imatrix = heavy_tailed(seed=1), torch.rand(256) + 0.01
    for bits, group in [(3, 64), (4, 128), (2, 32), (8, 64), (3, -1)]:
        ref = int_module.quant_tensor_opt_rtn_sym(w.clone(), bits=bits, group_size=group, imatrix=imatrix)[0]
        assert torch.equal(opt_rtn_weights(w, bits, None if group == -1 else group, imatrix), ref)


def test_bad_opt_rtn_input_is_refused():
    w = heavy_tailed()
    with pytest.raises(ValueError, match="does not divide"):
        opt_rtn_weights(w, 3, 96)
    with pytest.raises(ValueError, match="bits must be"):
        opt_rtn_weights(w, 1, 64)
    with pytest.raises(ValueError, match="symmetric"):
        round_unit(w, torch.eye(256), Option(3, 64, False), "opt-rtn")
    with pytest.raises(ValueError, match="rounding must be"):
        round_unit(w, torch.eye(256), Option(3, 64), "awq")


def test_layer_config_gives_every_shard_its_units_option(tiny_llama):
    from compress.model.units import model_units
    from compress.quant.autoround import layer_config

    units = model_units(tiny_llama)
    options = {u: (None if u.key == "1.down" else Option(3, None) if u.name == "qkv" else Option(4, 32))
               for u in units}
    cfg = layer_config(options)
    assert cfg["model.layers.0.self_attn.k_proj"] == {"bits": 3, "group_size": -1, "sym": True}
    assert cfg["model.layers.0.mlp.up_proj"] == {"bits": 4, "group_size": 32, "sym": True}
    assert cfg["model.layers.1.mlp.down_proj"] == {"bits": 16}
    assert len(cfg) == sum(len(u.modules) for u in units)


def test_the_export_is_moved_up_and_a_float_source_beside_it_is_left_alone(tmp_path):
    """`compress run --skip ... --rounding opt-rtn`: the reduced float model sits in the output folder while
    auto-round exports; only the export's files become the checkpoint."""
    from compress.quant.autoround import move_export

    out = tmp_path / "run"
    (out / "removed-layers-fp").mkdir(parents=True)
    (out / "removed-layers-fp" / "config.json").write_text("float")
    inner = out / ".autoround-export" / "model-w4g128"
    inner.mkdir(parents=True)
    (inner / "config.json").write_text("quantized")
    (inner / "model.safetensors").write_text("codes")
    move_export(out / ".autoround-export", out)
    assert (out / "config.json").read_text() == "quantized" and (out / "model.safetensors").exists()
    assert (out / "removed-layers-fp" / "config.json").read_text() == "float"
    assert not (out / ".autoround-export").exists()


def test_iters_need_autoround_rounding():
    from compress.errors import CompressError
    from compress.quant.gptq import GPTQConfig

    assert GPTQConfig(rounding="opt-rtn", iters=200).iters == 200
    with pytest.raises(CompressError, match="--rounding opt-rtn"):
        GPTQConfig(iters=200)  # rounding auto may pick GPTQ, which has no SignRound


def test_signround_steps_change_the_stored_rounding(tiny5, tmp_path):
    """GPTQConfig.iters reaches auto-round: SignRound moves some roundings away from opt-RTN's, in the same
    GPTQ folder of the same size, which unpacks to a model that still computes."""
    pytest.importorskip("auto_round")
    pytest.importorskip("gptqmodel")
    from compress.bits.unit_costs import linear_modules, unit_weight
    from compress.bits.unit_plan import to_plan
    from compress.model import load_model
    from compress.model.units import model_units
    from compress.plan import Option
    from compress.quant.autoround import quantize_autoround
    from compress.quant.gptq import GPTQConfig
    from compress.quant.unpack import load_dequantized

    model = load_model(str(tiny5))[0]
    units = model_units(model)
    plan = to_plan(units, {u.key: Option(3, 32) for u in units})
    calib = torch.randint(0, 256, (8, 64), generator=torch.Generator().manual_seed(0))
    stats = {n: quantize_autoround(str(tiny5), plan, calib, tmp_path / n, GPTQConfig(rounding="opt-rtn", iters=i))
             for n, i in (("rtn", 0), ("signround", 20))}
    assert stats["signround"]["rounder"] == "auto-round iters=20"
    assert stats["signround"]["size_bytes"] == stats["rtn"]["size_bytes"]
    stored = {n: linear_modules(load_dequantized(load_model(str(tiny5))[0], tmp_path / n)) for n in stats}
    moved = [float((unit_weight(stored["rtn"], u) != unit_weight(stored["signround"], u)).float().mean())
             for u in units]
    assert max(moved) > 0.01  # tuned: not opt-RTN's weights
    ids = calib[:1]
    with torch.inference_mode():
        assert torch.isfinite(load_dequantized(load_model(str(tiny5))[0], tmp_path / "signround")(input_ids=ids).logits).all()
