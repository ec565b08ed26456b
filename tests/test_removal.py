"""Static layer removal: an ordinary checkpoint that reloads without custom code and decodes with its KV cache."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from compress.errors import CompressError
from compress.model import decoder_layers
from compress.depth.remove import remove_layers
from conftest import tiny_model

IDS = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(0))


def bypassed_logits(model, dropped):
    """Reference: the original model with the dropped layers' outputs replaced by their inputs."""
    handles = []
    for i in dropped:
        def identity(module, args, kwargs, output):
            hidden = args[0] if args else kwargs["hidden_states"]
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        handles.append(decoder_layers(model)[i].register_forward_hook(identity, with_kwargs=True))
    with torch.no_grad():
        logits = model(IDS, use_cache=False).logits
    for h in handles:
        h.remove()
    return logits


@pytest.mark.parametrize("kind, dropped", [("llama", [1, 2]), ("qwen2", [0]), ("qwen3", [3]),
                                           ("gemma3", [1, 5]), ("gpt2", [2])])
def test_removed_model_saves_reloads_and_decodes(kind, dropped, tmp_path):
    model = tiny_model(kind)
    n_layers = len(decoder_layers(model))
    want = bypassed_logits(model, dropped)
    types = getattr(model.config, "layer_types", None)
    remove_layers(model, dropped)
    # in memory too: every attention module indexes the KV cache by its new position
    indices = [[m.layer_idx for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)]
               for layer in decoder_layers(model)]
    assert all(ids and set(ids) == {position} for position, ids in enumerate(indices))
    with torch.no_grad():
        assert torch.equal(model.generate(IDS, max_new_tokens=4, do_sample=False, pad_token_id=0),
                           model.generate(IDS, max_new_tokens=4, do_sample=False, use_cache=False, pad_token_id=0))
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    layers = decoder_layers(again)
    assert len(layers) == again.config.get_text_config().num_hidden_layers == n_layers - len(dropped)
    if types is not None:
        assert again.config.layer_types == [t for i, t in enumerate(types) if i not in dropped]
    with torch.no_grad():
        assert torch.allclose(again(IDS, use_cache=False).logits, want, atol=1e-5)
        # decoding with the KV cache (needs renumbered layer_idx) gives the same tokens as without it
        cached = again.generate(IDS, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        plain = again.generate(IDS, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, plain)


def test_bad_indices_change_nothing():
    model = tiny_model("llama")
    for bad, message in [([0, 1, 2, 3], "all 4 layers"), ([1, 1], "duplicate"), ([4], "out of range")]:
        with pytest.raises(CompressError, match=message):
            remove_layers(model, bad)
    assert len(decoder_layers(model)) == model.config.num_hidden_layers == 4
