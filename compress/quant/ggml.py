"""llama.cpp's legacy block types (q4_0, q4_1, q5_0, q5_1, q8_0) through the `gguf` package's own quantizer:
gguf/quants.py ports ggml-quants.c's reference rounding (quantize_row_q4_0_ref, ...) to numpy, so the weights
the allocator's costs see are the ones the GGUF file will hold, bit for bit. K-quants are not there (their
quantize_blocks is abstract in gguf 0.19): those need llama.cpp's own quantizer.
Shapes: weights (out, in), in a multiple of 32; blocks run along `in` (a GGUF row is ne0 = in_features).
"""

from __future__ import annotations

import numpy as np
import torch

from compress.plan import GGUF_TYPES, Option


def qtype(option: Option):
    """The gguf.GGMLQuantizationType of a gguf option."""
    import gguf

    return getattr(gguf.GGMLQuantizationType, GGUF_TYPES[option.bits, option.sym].upper())


def quantize_rows(w: np.ndarray, option: Option) -> np.ndarray:
    """(rows, in) float32 -> the GGUF type's bytes (rows, in / 32 * block bytes), uint8."""
    import gguf

    return gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), qtype(option))


def ggml_weights(w: torch.Tensor, option: Option) -> torch.Tensor:
    """`w` (out, in) stored as the option's GGUF type and read back, float32 (what llama.cpp multiplies by)."""
    import gguf

    data = quantize_rows(w.detach().float().cpu().numpy(), option)
    return torch.from_numpy(gguf.quants.dequantize(data, qtype(option)).astype(np.float32)).reshape(w.shape)
