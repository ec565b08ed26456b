"""Run-time layer skipping: bypass, and decode-time Unified Layer Skipping checked against a removed model."""

import copy

import pytest
import torch
from transformers import DynamicCache

from compress.errors import CompressError
from compress.model import decoder_layers
from compress.depth.remove import remove_layers
from compress.depth.bypass import bypassing
from conftest import tiny_model
from test_removal import IDS, bypassed_logits


@pytest.mark.parametrize("kind, skipped", [("llama", [1, 2]), ("gpt2", [3]), ("gemma3", [2, 3, 6])])
def test_always_mode_is_the_model_without_those_layers(kind, skipped):
    model = tiny_model(kind)
    want = bypassed_logits(model, skipped)
    with bypassing(model, skipped, mode="always"), torch.no_grad():
        got = model(IDS, use_cache=False).logits
    assert torch.allclose(got, want, atol=1e-6)
    with torch.no_grad():  # restored on exit
        assert not torch.allclose(model(IDS, use_cache=False).logits, want, atol=1e-3)


def _greedy(model, cache, token, steps):
    """Greedy decoding from `cache` (the prompt already in it), starting with `token`: (tokens, logits)."""
    tokens, logits = [], []
    with torch.no_grad():
        for _ in range(steps):
            out = model(token, cache=cache, use_cache=True)
            logits.append(out.logits[:, -1])
            token = out.logits[:, -1:].argmax(-1)
            tokens.append(token)
    return torch.cat(tokens, 1), torch.stack(logits)


@pytest.mark.parametrize("kind, skipped", [("llama", [1, 2]), ("qwen3", [3]), ("gemma3", [2, 3, 5])])
def test_decode_skipping_equals_the_removed_model_on_the_full_prompt_cache(kind, skipped):
    """ULS: prompt through all layers, new tokens through the kept ones. Reference: a model with the skipped
    layers removed, decoding from the full model's prompt KV of the kept layers."""
    model = tiny_model(kind)
    n_layers = len(decoder_layers(model))
    kept = [i for i in range(n_layers) if i not in skipped]
    with torch.no_grad():
        prompt = model(IDS, use_cache=True)
    first = prompt.logits[:, -1:].argmax(-1)

    removed = remove_layers(copy.deepcopy(model), skipped)
    reference_cache = DynamicCache(config=removed.config)
    for new, old in enumerate(kept):
        layer = prompt.past_key_values.layers[old]
        reference_cache.update(layer.keys.clone(), layer.values.clone(), new)
    want_tokens, want_logits = _greedy(removed, reference_cache, first, 5)

    cache = copy.deepcopy(prompt.past_key_values)
    with bypassing(model, skipped, mode="decode"):
        got_tokens, got_logits = _greedy(model, cache, first, 5)
    assert torch.equal(got_tokens, want_tokens)
    assert torch.allclose(got_logits, want_logits, atol=1e-5)
    # the cache stays complete: every full-attention layer holds prompt + 5 tokens (Gemma3's sliding layers
    # keep a window); a skipped layer's new entries are those of the nearest kept layer below it
    types = getattr(model.config, "layer_types", None) or ["full_attention"] * n_layers
    assert all(cache.layers[i].keys.shape[-2] == IDS.shape[1] + 5 for i in range(n_layers)
               if types[i] == "full_attention")
    for i in skipped:
        below = max(k for k in kept if k < i)
        keys, values = cache.layers[i].keys, cache.layers[i].values
        assert torch.equal(keys[..., -5:, :], cache.layers[below].keys[..., -5:, :])
        assert torch.equal(values[..., -5:, :], cache.layers[below].values[..., -5:, :])
        from_prompt = keys.shape[-2] - 5
        assert torch.equal(keys[..., :-5, :], prompt.past_key_values.layers[i].keys[..., -from_prompt:, :])

def test_generate_with_decode_skipping():
    """Through HF generate: the first new token comes from the full model (the prompt runs all layers), the
    rest equal the reference decoding above; without a cache nothing is skipped."""
    model = tiny_model("llama")
    with torch.no_grad():
        full = model.generate(IDS, max_new_tokens=6, do_sample=False, pad_token_id=0)
        with bypassing(model, [2], mode="decode"):
            skipped = model.generate(IDS, max_new_tokens=6, do_sample=False, pad_token_id=0)
            uncached = model.generate(IDS, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert skipped[0, IDS.shape[1]] == full[0, IDS.shape[1]]
    assert torch.equal(uncached, full)
    assert not torch.equal(skipped, full)  # tiny random model: skipping a layer changes later tokens


def test_bad_skipping_input():
    model = tiny_model("llama")
    for bad, message in [([0, 1, 2, 3], "all 4 layers"), ([2, 2], "duplicate"), ([7], "out of range")]:
        with pytest.raises(CompressError, match=message):
            with bypassing(model, bad, mode="always"):
                pass
    with pytest.raises(CompressError, match="layer 0 must be kept"):
        with bypassing(model, [0], mode="decode"):
            pass
    with pytest.raises(CompressError, match="valid: always, decode"):
        with bypassing(model, [1], mode="sometimes"):
            pass
