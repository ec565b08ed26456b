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
