"""Bypassing decoder layers at run time (the depth stage's "bypass", as opposed to removal), without changing
the weights (the model is restored on exit).

Two modes, one mechanism (each skipped layer's `forward` is patched on the instance to return its input):
- "always": the layer is bypassed in every call. What greedy selection measures: the same function as the
  model with those layers removed, without copying or saving anything.
- "decode": Unified Layer Skipping (Liu, Meng, Zhou, arXiv 2404.06954; code Adaxry/Unified_Layer_Skipping,
  codes/modeling_bloom.py). The prompt runs through all layers; once the KV cache holds tokens (token-by-token
  decoding), skipped layers are bypassed, and each one's KV entry for the new tokens is a copy of the KV of
  the nearest kept layer below it (the reference's `presents[-1]`), so the cache stays complete for every
  layer (e.g. a later full-depth prefill of the next turn).

The cache is transformers' Cache (DynamicCache: `.layers[i].keys`, (batch, kv_heads, seq, head_dim)).
Decoder layers of transformers 5.x return the hidden-state tensor, which is what a skipped layer returns.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

from compress.errors import CompressError
from compress.depth.select import check_drop
from compress.model import decoder_layers

MODES = ("always", "decode")


def _cache_of(args: tuple, kwargs: dict):
    """The Cache passed to a decoder layer: `cache=` (transformers >= 5.x), `past_key_values=`, or GPT-2's
    second positional argument."""
    from transformers import Cache

    for value in (kwargs.get("cache"), kwargs.get("past_key_values"), *args[1:2]):
        if isinstance(value, Cache):
            return value
    return None


@contextmanager
def bypassing(model, skipped: Sequence[int], mode: str = "decode") -> Iterator[None]:
    """Within the block, the `skipped` decoder layers of `model` are bypassed (mode "always") or bypassed
    while decoding with a KV cache (mode "decode", Unified Layer Skipping; layer 0 must be kept, since a
    skipped layer's KV is copied from a kept layer below it)."""
    if mode not in MODES:
        raise CompressError(f"unknown bypass mode {mode!r}; valid: {', '.join(MODES)}")
    layers = decoder_layers(model)
    skipped = check_drop(list(skipped), len(layers))
    if mode == "decode" and 0 in skipped:
        raise CompressError("decode-time skipping copies a skipped layer's KV from a kept layer below it: "
                            "layer 0 must be kept")
    source = {}  # skipped layer -> nearest kept layer below it
    for index in skipped:
        below = index - 1
        while below in skipped:
            below -= 1
        source[index] = below

    def patched(index: int, original):
        def forward(hidden_states, *args, **kwargs):
            if mode == "always":
                return hidden_states
            cache = _cache_of((hidden_states, *args), kwargs)
            if cache is None or cache.get_seq_length(index) == 0:  # no cache, or the prompt: all layers run
                return original(hidden_states, *args, **kwargs)
            new = hidden_states.shape[1]  # tokens in this step
            kept = cache.layers[source[index]]
            cache.update(kept.keys[..., -new:, :], kept.values[..., -new:, :], index)
            return hidden_states
        return forward

    own = {i: vars(layers[i]).get("forward") for i in skipped}  # an instance-level forward (hooks), if any
    for index in skipped:
        layers[index].forward = patched(index, layers[index].forward)
    try:
        yield
    finally:
        for index in skipped:
            if own[index] is None:
                del layers[index].forward  # back to the class's forward
            else:
                layers[index].forward = own[index]
