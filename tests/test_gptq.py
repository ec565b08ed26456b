"""GPTQ through gptqmodel on a tiny Llama: per-layer widths from a Plan land in the checkpoint, and the
reloaded checkpoint tracks the original model at every width."""

import json

import pytest
import torch

from compress.errors import CompressError
from compress.plan import Option, Plan
from compress.model import load_gptq
from compress.quant.storage import linear_bytes
from compress.quant.gptq import GPTQConfig, plan_config, quantize_gptq
from compress.quant.unpack import dequantized_state, load_dequantized, unpack_rows
from conftest import byte_tokenizer, tiny_model


SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=5)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gptq") / "tiny"
    tiny_model("llama", **SHAPE).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def quantize(source, bits, out):
    calib = torch.randint(0, 256, (16, 64), generator=torch.Generator().manual_seed(0))
    return quantize_gptq(str(source), Plan.uniform(5, 4).with_bits(bits), calib, out, GPTQConfig(group_size=32))


IDS = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(1))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.float()


def agreement(model) -> float:
    """Cosine similarity of the model's logits with the original float model's, on fixed tokens."""
    full, quant = logits(tiny_model("llama", **SHAPE)), logits(model)
    assert torch.isfinite(quant).all()
    return torch.nn.functional.cosine_similarity(full.flatten(), quant.flatten(), dim=0).item()


def test_checkpoint_carries_the_plan(gptqmodel, source, tmp_path):
    stats = quantize(source, [4, 2, 8, 4, 16], tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert (config["bits"], config["group_size"], config["sym"], config["desc_act"]) == (4, 32, True, False)
    assert config["dynamic"] == {"-:^model\\.layers\\.4\\.": {}, "+:^model\\.layers\\.1\\.": {"bits": 2},
                                 "+:^model\\.layers\\.2\\.": {"bits": 8}}
    # exact GPTQ bytes (codes, fp16 scales, packed zeros, int32 g_idx) over the four quantized layers
    shapes = [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128)]
    stored = sum(linear_bytes(o, i, Option(b, 32)) for b in (4, 2, 8, 4) for o, i in shapes)
    assert stats["effective_bits"] == pytest.approx(8 * stored / (4 * sum(o * i for o, i in shapes)))
    assert stats["size_bytes"] > 0 and stats["seconds"] > 0
    assert {r["layer"] for r in stats["module_loss"]} == {0, 1, 2, 3}  # layer 4 left unquantized
    model, _ = load_gptq(tmp_path / "q")
    layers = model.model.layers
    assert isinstance(layers[4].self_attn.q_proj, torch.nn.Linear)
    assert [layers[i].mlp.down_proj.bits for i in range(4)] == [4, 2, 8, 4]


# Measured on this model: 8-bit 0.99993, 4-bit 0.972, 3-bit 0.927, 2-bit 0.737. (The model object GPTQModel
# 7.6 holds right after quantize() is wrong below 8 bits on CPU, cos ~0.2 with the original; only the
# saved-and-reloaded checkpoint is used.)
@pytest.mark.parametrize("bits, floor", [(8, 0.999), (4, 0.95), (3, 0.85), (2, 0.6)])
def test_every_width_reloads_close_to_the_original(gptqmodel, source, tmp_path, bits, floor):
    quantize(source, [bits] * 5, tmp_path / "q")
    model, tokenizer = load_gptq(tmp_path / "q")
    assert agreement(model) > floor
    assert tokenizer.decode(tokenizer("ok").input_ids) == "ok"
    # The kernel computes exactly what the packed codes say: same logits as the float model carrying the
    # weights unpacked from the safetensors with plain torch (catches packing or kernel defects per width).
    assert len(dequantized_state(tmp_path / "q")) == 5 * 7
    reference = load_dequantized(tiny_model("llama", **SHAPE), tmp_path / "q")
    got, want = logits(model), logits(reference.to(model.dtype))
    # Measured: cosine >= 0.99995 at every width, max difference 1-3 bfloat16 rounding steps (vs cosine
    # 0.74-0.9999 with the original model), so a scrambled code or zero point cannot pass.
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0).item() > 0.9999
    assert ((got - want).abs().max() / want.abs().max()).item() < 3 * 2**-7


def test_per_unit_options_land_in_the_checkpoint_at_their_exact_bytes(gptqmodel, source, tmp_path):
    """A plan with a different bits / group size / grid per fused unit: GPTQModel writes each as asked, every
    module's tensors take exactly linear_bytes, and the folder reloads and tracks the original."""
    from safetensors import safe_open

    from compress.plan import LayerDecision, Option
    from compress.quant.storage import linear_bytes

    units = {"qkv": Option(8, 32), "o": Option(3, None), "gate_up": Option(2, 32, sym=False), "down": Option(4, 64)}
    base = {name: Option(4, 32) for name in units}
    rows = [LayerDecision(0, 8, units=tuple(units.items()))] + [LayerDecision(i, 4, units=tuple(base.items()))
                                                               for i in range(1, 5)]
    stats = quantize_gptq(str(source), Plan(tuple(rows)), torch.randint(0, 256, (16, 64)), tmp_path / "q",
                          GPTQConfig())
    with safe_open(str(tmp_path / "q" / "model.safetensors"), "pt") as f:
        stored = {}
        for key in f.keys():
            module, _, _ = key.rpartition(".")
            t = f.get_slice(key)
            stored[module] = stored.get(module, 0) + t.get_shape()[0] * (t.get_shape()[1] if len(t.get_shape()) > 1
                                                                         else 1) * (2 if t.get_dtype() == "F16" else 4)
    unit_of = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "o_proj": "o", "gate_proj": "gate_up",
               "up_proj": "gate_up", "down_proj": "down"}
    model, _ = load_gptq(tmp_path / "q")
    total_bytes = total_params = 0
    for name, module in model.named_modules():
        if not name.startswith("model.layers.") or name.rsplit(".", 1)[-1] not in unit_of:
            continue
        option = (units if name.startswith("model.layers.0.") else base)[unit_of[name.rsplit(".", 1)[-1]]]
        assert (module.bits, module.group_size if module.group_size != module.in_features else None) == \
            (option.bits, option.group_size), name
        assert stored[name] == linear_bytes(module.out_features, module.in_features, option), name
        total_bytes += stored[name]
        total_params += module.in_features * module.out_features
    assert stats["effective_bits"] == pytest.approx(8 * total_bytes / total_params)
    assert agreement(model) > 0.9


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_unpack_inverts_gptq_packing(bits):
    """Codes packed as one little-endian bit stream per 32 rows come back unchanged (3-bit values straddle
    int32 words)."""
    codes = torch.randint(0, 2**bits, (64, 5), generator=torch.Generator().manual_seed(bits))
    packed = torch.zeros(64 * bits // 32, 5, dtype=torch.int64)
    for j in range(64):  # reference packing written value by value into a bit stream
        for c in range(5):
            for k in range(bits):
                bit = (codes[j, c].item() >> k) & 1
                position = (j // 32) * 32 * bits + (j % 32) * bits + k
                packed[position // 32, c] |= bit << (position % 32)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)
    assert torch.equal(unpack_rows(packed, bits), codes)


def test_plan_for_another_model_is_refused():
    with pytest.raises(CompressError, match="plan has 5 layers but the model has 4"):
        plan_config(tiny_model("llama"), Plan.uniform(5, 4), GPTQConfig())
