"""Preflight estimates against this project's measurements, the refusal that names a fitting setting, and the
dry run's plan bytes and serving paths."""

from __future__ import annotations

import pytest

from compress.errors import CompressError
from compress.model.preflight import (ModelSize, Needs, finetune_needs, fitting, forward_needs, preflight,
                                      run_needs)

# SmolLM2-135M as model_size() reads it from the converted folder's headers.
SMOLLM2 = ModelSize(params=134_515_008, decoder_params=106_168_320, hidden=576, layers=30, vocab=49_152,
                    kv_width=192)


def test_run_estimate_matches_the_measured_run():
    """compress run --bits 4 (64 x 512 calibration, 4 ppl windows): 2615 MiB peak RSS, 1875 s, 109.3 MiB
    checkpoint (eval/results/run_memory, mixed_bits uniform-4) -> within 10 %."""
    needs = run_needs(SMOLLM2, calib_samples=64, calib_seq_len=512, ppl_windows=4, bits=4.3125, cores=2)
    assert needs.ram / 2**20 == pytest.approx(2615, rel=0.1)
    assert needs.seconds == pytest.approx(1875, rel=0.1)
    assert needs.disk == pytest.approx(114_620_920, rel=0.1)


def test_signround_time_matches_the_measured_rounding():
    """SignRound, 200 steps of auto-round's 8 rows x 256 tokens on SmolLM2: 1110 s on 2 cores
    (eval/results/mixed_units/autoscheme.json, "uniform 3b-g64 iters=200") -> within 1.5x."""
    plain = run_needs(SMOLLM2, calib_samples=16, calib_seq_len=256, ppl_windows=0, bits=3.34, cores=2)
    tuned = run_needs(SMOLLM2, calib_samples=16, calib_seq_len=256, ppl_windows=0, bits=3.34, cores=2,
                      signround_iters=200)
    assert 1110 / 1.5 < tuned.seconds - plain.seconds < 1110 * 1.5


def test_estimates_grow_with_the_settings_that_cost():
    small = run_needs(SMOLLM2, calib_samples=64, calib_seq_len=512, ppl_windows=4, bits=4, cores=2)
    big = run_needs(SMOLLM2, calib_samples=4096, calib_seq_len=512, ppl_windows=4, bits=4, cores=2)
    assert big.ram > small.ram and big.seconds > small.seconds
    full = finetune_needs(SMOLLM2, batch_size=4, seq_len=256, steps=200, lora=False, cores=2)
    lora = finetune_needs(SMOLLM2, batch_size=4, seq_len=256, steps=200, lora=True, cores=2)
    assert lora.ram < full.ram
    assert full.seconds == pytest.approx(1000, rel=0.5)  # measured 955-1400 s (eval/results/llr)
    one = forward_needs(SMOLLM2, batch=1, tokens=640, total_tokens=1e4, cores=2)
    eight = forward_needs(SMOLLM2, batch=8, tokens=640, total_tokens=1e4, cores=2)
    assert eight.ram > one.ram


def test_fitting_halves_down_to_what_fits():
    assert fitting(64, lambda n: n * 10, 250) == 16
    assert fitting(64, lambda n: n * 10, 5) is None


def test_preflight_refuses_with_the_fix_and_prints_otherwise(monkeypatch, tmp_path, capsys):
    import compress.model.preflight as pf

    monkeypatch.setattr(pf, "free_ram", lambda: 1e9)
    monkeypatch.setattr(pf, "free_disk", lambda path: 1e9)
    with pytest.raises(CompressError, match="needs about 2.8 GiB of memory but 954 MiB is free: lower --x to 2"):
        preflight("run", Needs(ram=3e9, disk=1e6, seconds=10), tmp_path, "cpu", {"ram": "lower --x to 2"})
    with pytest.raises(CompressError, match=f"disk space at {tmp_path}"):
        preflight("run", Needs(ram=1e8, disk=5e9, seconds=10), tmp_path, "cpu", {})
    line = preflight("run", Needs(ram=1.1e9, disk=1e6, seconds=4000), tmp_path, "cpu", {})  # within the margin
    assert "roughly 67 min" in line and line in capsys.readouterr().err


def test_dry_run_bytes_are_the_gptq_format():
    from conftest import tiny_model

    from compress.pipeline.dry_run import dry_run_text
    from compress.plan import LayerDecision, Option, Plan
    from compress.quant.gptq import GPTQConfig, plan_config
    from compress.quant.storage import linear_bytes

    model = tiny_model("llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2)
    units = (("qkv", Option(4, 64)), ("o", Option(3, None)), ("gate_up", Option(4, 32)), ("down", Option(8, 64)))
    plan = Plan((LayerDecision(0, 8, units=units), LayerDecision(1, 4), LayerDecision(2, skip=True)))
    table, stats = dry_run_text(plan, plan_config(model, plan.reduced(), GPTQConfig(group_size=32)).options, 500)
    # every Linear at its option's exact GPTQ bytes: qweight, qzeros, fp16 scales, g_idx
    shapes = {"qkv": [(64, 64), (32, 64), (32, 64)], "o": [(64, 64)], "gate_up": [(128, 64)] * 2,
              "down": [(64, 128)]}
    layer0 = sum(linear_bytes(o, i, option) for name, option in units for o, i in shapes[name])
    layer1 = sum(linear_bytes(o, i, Option(4, 32)) for name in shapes for o, i in shapes[name])
    assert stats["decoder_bytes"] == layer0 + layer1 and stats["size_bytes"] == layer0 + layer1 + 1000
    assert stats["serving"] == ["gptqmodel (verified by loading)"]  # 3-bit and mixed: no vLLM, no transformers
    assert "MiB" in table.splitlines()[0] and "3b-ch" in table.splitlines()[1]


def test_a_float_run_needs_no_gptq_time_and_saves_float32():
    needs = run_needs(SMOLLM2, calib_samples=64, calib_seq_len=512, ppl_windows=4, bits=16, cores=2)
    assert needs.disk == 4 * SMOLLM2.params and needs.seconds < 400


def test_on_a_gpu_the_vram_is_checked_too(monkeypatch, tmp_path):
    import compress.model.preflight as pf

    monkeypatch.setattr(pf, "free_ram", lambda: 1e12)
    monkeypatch.setattr(pf, "free_vram", lambda device: 8e9)
    with pytest.raises(CompressError, match="of GPU memory but 7.5 GiB is free: lower --batch-size"):
        preflight("finetune", Needs(ram=1e9, disk=1e6, seconds=5, vram=4e10), None, "cuda",
                  {"vram": "lower --batch-size"})


def test_a_hub_id_skips_the_preflight_rather_than_guessing(monkeypatch):
    import compress.model.load as load
    from compress.model.preflight import local_size

    monkeypatch.setattr(load, "resolve_model_path", lambda spec: spec)  # a hub id resolves to itself
    assert local_size("HuggingFaceTB/SmolLM2-135M") is None
