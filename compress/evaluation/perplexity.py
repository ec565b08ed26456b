"""The perplexity yardstick: paper-style token perplexity on WikiText-2 raw test.

As GPTQ / AWQ / SparseGPT report it: test rows joined with "\\n\\n", tokenized once, cut into non-overlapping
windows of seq_len tokens (the tail shorter than a window is dropped), each window scored on its own with
no context carried over; ppl = exp(total NLL / tokens predicted).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from compress.config import check_settings, setting
from compress.errors import CompressError
from compress.model import max_positions

if TYPE_CHECKING:
    import torch

DEFAULT_SEQ_LEN = 2048


@dataclass(frozen=True)
class PplConfig:
    """`compress ppl`: WikiText-2 raw test perplexity in non-overlapping windows."""

    seq_len: int | None = setting(None, "window length (none: 2048, capped at the model's context)", minimum=2)
    max_windows: int | None = setting(None, "score only the first N windows (none: all)", minimum=1)
    batch_size: int = setting(1, "windows per forward", minimum=1)

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class Perplexity:
    ppl: float
    nll: float  # mean negative log-likelihood per predicted token, nats
    tokens_scored: int  # tokens predicted: windows x (seq_len - 1)
    seq_len: int
    windows: int  # windows scored
    windows_total: int  # windows in the whole text

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        part = "" if self.windows == self.windows_total else f" (first {self.windows} of {self.windows_total} windows)"
        return (f"perplexity {self.ppl:.4f}  tokens scored {self.tokens_scored}  seq_len {self.seq_len}  "
                f"windows {self.windows}{part}")


def resolve_seq_len(model, seq_len: int | None) -> int:
    """seq_len, defaulting to 2048 and capped at the model's context length."""
    limit = max_positions(model)
    seq_len = seq_len or DEFAULT_SEQ_LEN
    if seq_len < 2:
        raise CompressError(f"--seq-len must be >= 2, got {seq_len}")
    return min(seq_len, limit) if limit else seq_len


def perplexity(
    model,
    token_ids: torch.Tensor,
    *,
    seq_len: int | None = None,
    max_windows: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
) -> Perplexity:
    """Perplexity of `model` on one long 1-D sequence of token ids, in non-overlapping windows."""
    seq_len = resolve_seq_len(model, seq_len)
    ids = token_ids.flatten()
    total = ids.numel() // seq_len
    if total == 0:
        raise CompressError(f"text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    if max_windows is not None and max_windows < 1:
        raise CompressError(f"--max-windows must be >= 1, got {max_windows}")
    windows = min(total, max_windows) if max_windows else total
    nll = calibration_nll(model, ids[: windows * seq_len].view(windows, seq_len), batch_size, progress)
    scored = windows * (seq_len - 1)
    return Perplexity(ppl=math.exp(nll), nll=nll, tokens_scored=scored, seq_len=seq_len, windows=windows,
                      windows_total=total)


def calibration_nll(model, rows: torch.Tensor, batch_size: int = 4, progress: bool = False) -> float:
    """Mean next-token NLL (nats) over token rows (n, seq_len), each scored on its own: the perplexity
    windows, and the loss greedy layer selection and the fine-tuning eval compare."""
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    total = 0.0
    with torch.inference_mode():
        for batch in tqdm(rows.split(batch_size), desc="perplexity", unit="batch", disable=not progress, leave=False):
            batch = batch.to(device)
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                       batch[:, 1:].reshape(-1), reduction="sum").item()
    return total / (rows.shape[0] * (rows.shape[1] - 1))
