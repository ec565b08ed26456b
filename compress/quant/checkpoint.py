"""One GPTQ-format checkpoint per plan, rounded as GPTQConfig.rounding says: GPTQModel's GPTQ
(compress.quant.gptq) or auto-round's optimised RTN (compress.quant.autoround). Same format, same loaders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.plan import Plan
from compress.quant.gptq import GPTQConfig

if TYPE_CHECKING:
    import torch


def write_checkpoint(model_path: str, plan: Plan, calib: "torch.Tensor", out: Path,
                     settings: GPTQConfig = GPTQConfig()) -> dict:
    """Quantize the float model at `model_path` per `plan` into `out`; calib (samples, seq_len) token ids.
    Returns the rounder's stats (method, effective_bits, size_bytes, seconds, ...)."""
    if settings.rounding not in ("gptq", "opt-rtn"):  # "auto" is resolved by the caller, on the model
        raise ValueError(f"write_checkpoint needs rounding gptq or opt-rtn, got {settings.rounding!r}")
    if settings.rounding == "opt-rtn":
        from compress.quant.autoround import quantize_autoround

        return quantize_autoround(model_path, plan, calib, out, settings)
    from compress.quant.gptq import quantize_gptq

    return quantize_gptq(model_path, plan, calib, out, settings)
