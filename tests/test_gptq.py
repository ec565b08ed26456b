"""GPTQ through gptqmodel on a tiny Llama: per-layer widths from a Plan land in the checkpoint, and the
reloaded checkpoint tracks the original model at every width."""

import json

import pytest
import torch

from compress.errors import CompressError
from compress.plan import Plan
from compress.quant.gptq import GPTQSettings, load_quantized, plan_config, quantize_gptq
from conftest import byte_tokenizer, tiny_model

pytest.importorskip("gptqmodel")

SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=5)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gptq") / "tiny"
    tiny_model("llama", **SHAPE).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def quantize(source, bits, out):
    calib = torch.randint(0, 256, (16, 64), generator=torch.Generator().manual_seed(0))
    return quantize_gptq(str(source), Plan.uniform(5, 4).with_bits(bits), calib, out, GPTQSettings(group_size=32))


def agreement(model) -> float:
    """Cosine similarity of the model's logits with the original float model's, on fixed tokens."""
    ids = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, quant = tiny_model("llama", **SHAPE)(ids).logits, model(ids).logits.float()
    assert torch.isfinite(quant).all()
    return torch.nn.functional.cosine_similarity(full.flatten(), quant.flatten(), dim=0).item()


def test_checkpoint_carries_the_plan(source, tmp_path):
    stats = quantize(source, [4, 2, 8, 4, 16], tmp_path / "q")
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert (config["bits"], config["group_size"], config["sym"], config["desc_act"]) == (4, 32, True, False)
    assert config["dynamic"] == {"-:^model\\.layers\\.4\\.": {}, "+:^model\\.layers\\.1\\.": {"bits": 2},
                                 "+:^model\\.layers\\.2\\.": {"bits": 8}}
    assert stats["effective_bits"] == pytest.approx(sum(b + (16 + b) / 32 for b in (4, 2, 8, 4)) / 4)
    assert stats["size_bytes"] > 0 and stats["seconds"] > 0
    assert {r["layer"] for r in stats["module_loss"]} == {0, 1, 2, 3}  # layer 4 left unquantized
    model, _ = load_quantized(tmp_path / "q")
    layers = model.model.layers
    assert isinstance(layers[4].self_attn.q_proj, torch.nn.Linear)
    assert [layers[i].mlp.down_proj.bits for i in range(4)] == [4, 2, 8, 4]


# Measured on this model: 8-bit 0.99993, 4-bit 0.972, 3-bit 0.927, 2-bit 0.737. (The model object GPTQModel
# 7.6 holds right after quantize() is wrong below 8 bits on CPU, cos ~0.2 with the original; only the
# saved-and-reloaded checkpoint is used.)
@pytest.mark.parametrize("bits, floor", [(8, 0.999), (4, 0.95), (3, 0.85), (2, 0.6)])
def test_every_width_reloads_close_to_the_original(source, tmp_path, bits, floor):
    quantize(source, [bits] * 5, tmp_path / "q")
    model, tokenizer = load_quantized(tmp_path / "q")
    assert agreement(model) > floor
    assert tokenizer.decode(tokenizer("ok").input_ids) == "ok"


def test_plan_for_another_model_is_refused():
    with pytest.raises(CompressError, match="plan has 5 layers but the model has 4"):
        plan_config(tiny_model("llama"), Plan.uniform(5, 4), GPTQSettings())
