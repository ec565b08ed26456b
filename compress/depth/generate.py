"""`compress generate`: greedy generation, optionally bypassing decoder layers for the new tokens (Unified
Layer Skipping: the prompt runs through every layer; compress.depth.bypass)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from compress.config import check_settings, setting
from compress.errors import CompressError


@dataclass(frozen=True)
class GenerateConfig:
    """`compress generate`: how many tokens, and which layers the new tokens bypass."""

    max_new_tokens: int = setting(64, "new tokens (greedy)", minimum=1)
    decode_skip: float = setting(0.0, "fraction of layers the new tokens skip, evenly spaced, first and last kept "
                                 "(ULS); their KV entries copy the nearest kept layer below", minimum=0, below=1)
    skip_layers: tuple[int, ...] = setting((), "skip exactly these layers while decoding: comma list")
    truncate_prompt: bool = setting(False, "keep the last tokens of a prompt longer than the model's context "
                                    "minus max_new_tokens (default: refuse it)")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.decode_skip and self.skip_layers:
            raise CompressError("give decode_skip (--decode-skip) or skip_layers (--skip-layers), not both")


@dataclass(frozen=True)
class Generation:
    text: str  # the new tokens, decoded
    new_tokens: int
    seconds: float
    tokens_per_s: float
    skipped: list[int]  # the layers the new tokens bypassed


def generate_text(model, tokenizer, prompt: str, config: GenerateConfig) -> Generation:
    """Greedy generation from a loaded model, the new tokens bypassing the chosen layers."""
    import torch

    from compress.depth.bypass import bypassing
    from compress.depth.select import check_drop, drop_count, uls_drop
    from compress.model import decoder_layers, max_positions

    n_layers = len(decoder_layers(model))
    skipped = (check_drop(list(config.skip_layers), n_layers) if config.skip_layers
               else uls_drop(n_layers, drop_count(n_layers, drop_ratio=config.decode_skip)))
    ids = prompt_ids(tokenizer, prompt, config, max_positions(model)).to(next(model.parameters()).device)
    started = time.perf_counter()
    with bypassing(model, skipped, mode="decode"), torch.inference_mode():
        out = model.generate(ids, max_new_tokens=config.max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    seconds = time.perf_counter() - started
    new = out[0, ids.shape[1]:]
    return Generation(tokenizer.decode(new, skip_special_tokens=True), new.numel(), seconds,
                      new.numel() / seconds, list(skipped))


def check_prompt(prompt: str) -> None:
    """Refuse an empty prompt and one that is not text (bytes that were not UTF-8 reach Python as surrogates)."""
    if not prompt.strip():
        raise CompressError("the prompt is empty: give the text to continue")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CompressError(f"the prompt is not valid UTF-8 text (undecodable byte at character {e.start})") from None


def prompt_ids(tokenizer, prompt: str, config: GenerateConfig, context: int | None):
    """(1, tokens) ids of the prompt; one that leaves no room for max_new_tokens in the context is refused before
    any compute, or cut to its last tokens with truncate_prompt."""
    check_prompt(prompt)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    room = None if context is None else context - config.max_new_tokens
    if room is not None and ids.shape[1] > room:
        if room < 1:
            raise CompressError(f"max_new_tokens (--max-new-tokens) {config.max_new_tokens} fills the model's "
                                f"context of {context} tokens: ask for fewer")
        if not config.truncate_prompt:
            raise CompressError(f"the prompt is {ids.shape[1]} tokens; with {config.max_new_tokens} new tokens it "
                                f"passes the model's context of {context}: shorten it, lower --max-new-tokens, or "
                                f"pass --truncate-prompt to keep its last {room} tokens")
        ids = ids[:, -room:]
    return ids
