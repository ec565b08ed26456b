import pytest

from compress.model import decoder_layers_path
from compress.quant.gptq_config import default_bits, dynamic_overrides, resolve_bits
from compress.quant.storage import common_group_size
from conftest import tiny_model


def test_group_size():
    assert common_group_size([576, 1536]) == 64  # SmolLM2
    assert common_group_size([4096, 11008]) == 128  # Llama-2-7B
    assert common_group_size([96, 128]) == 32
    with pytest.raises(ValueError):
        common_group_size([50])


def test_default_bits_is_the_most_common_width():
    assert default_bits([4] * 18 + [2] * 12) == 4
    assert default_bits([2, 2, 4, 16, 16, 16]) == 2
    assert default_bits([2, 4]) == 4


def test_dynamic_overrides_address_whole_layers_by_index():
    bits = [4, 2, 4, 8, 16, 4, 4, 4, 4, 4, 4, 3]  # layer 11 must not pick up layer 1's rule
    dynamic = dynamic_overrides(bits, "model.layers", 4)
    assert len(dynamic) == 4  # layers 1, 3, 4, 11
    for index, b in enumerate(bits):
        for module in ("self_attn.q_proj", "self_attn.qkv_proj", "mlp.gate_up_proj", "mlp.down_proj"):
            assert resolve_bits(dynamic, f"model.layers.{index}.{module}", 4) == b
    assert resolve_bits(dynamic, "lm_head", 4) == 4


def test_layers_path_comes_from_the_accessor():
    assert decoder_layers_path(tiny_model("llama")) == "model.layers"
    assert decoder_layers_path(tiny_model("gpt2")) == "transformer.h"
    assert decoder_layers_path(tiny_model("opt")) == "model.decoder.layers"


def test_unpack_reads_widths_from_dynamic_like_gptqmodel():
    from compress.quant.unpack import layer_bits

    config = {"bits": 4, "dynamic": dynamic_overrides([4, 2, 16], "model.layers", 4)}
    names = [f"model.layers.{i}.self_attn.q_proj" for i in range(3)]
    assert [layer_bits(n, config) for n in names] == [4, 2, None]
    assert layer_bits("model.layers.12.mlp.up_proj", {"bits": 4, "dynamic": {"+:^model\\.layers\\.1\\.": {"bits": 2}}}) == 4


def unit_plan(layers=4):
    """Layer 0: every unit different; layer 3 unquantized; the rest 4b-g32."""
    from compress.plan import LayerDecision, Option, Plan

    rest = (("qkv", Option(4, 32)), ("o", Option(4, 32)), ("gate_up", Option(4, 32)), ("down", Option(4, 32)))
    first = (("qkv", Option(8, 32)), ("o", Option(3, None)), ("gate_up", Option(2, 32, sym=False)),
             ("down", Option(4, 64)))
    rows = [LayerDecision(0, 8, units=first)] + [LayerDecision(i, 4, units=rest) for i in range(1, layers - 1)]
    return Plan(tuple(rows) + (LayerDecision(layers - 1, 16),))


def test_per_unit_plan_gives_one_rule_per_unit_that_differs():
    from compress.quant.gptq import GPTQConfig, plan_config

    resolved = plan_config(tiny_model("llama"), unit_plan(), GPTQConfig())
    base = resolved.base
    assert (base.bits, base.group_size, base.sym) == (4, 32, True)
    layer0 = {k: v for k, v in resolved.dynamic.items() if "layers\\.0\\." in k}
    assert layer0 == {
        "+:^model\\.layers\\.0\\.self_attn\\.(q_proj|k_proj|v_proj|qkv_proj)$": {"bits": 8, "group_size": 32, "sym": True},
        "+:^model\\.layers\\.0\\.self_attn\\.(o_proj)$": {"bits": 3, "group_size": -1, "sym": True,
                                                       "desc_act": True, "act_group_aware": False},
        "+:^model\\.layers\\.0\\.mlp\\.(gate_proj|up_proj|gate_up_proj)$": {"bits": 2, "group_size": 32, "sym": False},
        "+:^model\\.layers\\.0\\.mlp\\.(down_proj)$": {"bits": 4, "group_size": 64, "sym": True}}
    assert sum(k.startswith("-:") and "layers\\.3\\." in k for k in resolved.dynamic) == 4  # layer 3 left float
    assert not any("layers\\.1\\." in k or "layers\\.2\\." in k for k in resolved.dynamic)  # at the base
    for module in ("self_attn.q_proj", "self_attn.qkv_proj", "mlp.gate_up_proj", "mlp.down_proj"):
        assert resolve_bits(resolved.dynamic, f"model.layers.0.{module}", 4) == {"self_attn.q_proj": 8,
            "self_attn.qkv_proj": 8, "mlp.gate_up_proj": 2, "mlp.down_proj": 4}[module]
    assert resolve_bits(resolved.dynamic, "model.layers.3.mlp.down_proj", 4) == 16


def test_per_unit_plan_for_another_model_or_width_is_refused():
    from dataclasses import replace

    from compress.errors import CompressError
    from compress.plan import Option, Plan
    from compress.quant.gptq import GPTQConfig, plan_config

    plan = unit_plan()
    wrong = Plan((replace(plan.layers[0], units=plan.layers[0].units[:3]),) + plan.layers[1:])
    with pytest.raises(CompressError, match="plan layer 0 names units .* but the model's layer has"):
        plan_config(tiny_model("llama"), wrong, GPTQConfig())
    wide = Plan((replace(plan.layers[0], units=(("qkv", Option(8, 128)),) + plan.layers[0].units[1:]),)
                + plan.layers[1:])
    with pytest.raises(CompressError, match="plan layer 0: unit 0.qkv: group size 128 does not divide its input width 32"):
        plan_config(tiny_model("llama"), wide, GPTQConfig())
