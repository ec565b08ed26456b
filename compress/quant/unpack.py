"""Read a saved GPTQ checkpoint back into float weights with plain torch, independently of GPTQModel's
kernels: the reference that the reloaded model's output is checked against at every width.

On-disk GPTQ ("v1", AutoGPTQ's format, what GPTQModel saves with checkpoint_format "gptq"):
  qweight (in·bits/32, out) int32: 32 consecutive input rows per `bits` words, value j of a block at bit
      offset bits·j of the block's little-endian bit stream (3-bit values straddle word boundaries);
  qzeros (groups, out·bits/32) int32: the same packing along the output columns, each stored as zero − 1;
  scales (groups, out) fp16; g_idx (in,) int32: each input row's group.
  weight (out, in) = (scales[g_idx] · (q − zeros[g_idx])).T
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

WORD = 32


def unpack_rows(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """(n·bits/32, m) int32 -> (n, m) int64 codes in [0, 2^bits): the inverse of GPTQ's packing along dim 0."""
    if bits not in (2, 3, 4, 8):
        raise ValueError(f"bits must be 2, 3, 4 or 8, got {bits}")
    words = packed.to(torch.int64) & 0xFFFFFFFF  # unsigned view of each int32 word
    blocks = words.reshape(-1, bits, words.shape[1])  # (blocks, bits words, m): 32 values per block
    maxq = (1 << bits) - 1
    values = []
    for j in range(WORD):
        word, shift = divmod(bits * j, WORD)
        value = blocks[:, word] >> shift
        if shift + bits > WORD:  # the value's high bits sit at the bottom of the next word
            value = value | (blocks[:, word + 1] << (WORD - shift))
        values.append(value & maxq)
    return torch.stack(values, dim=1).reshape(-1, words.shape[1])


def unpack_columns(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """(g, m·bits/32) int32 -> (g, m) codes: the same packing along dim 1 (qzeros)."""
    return unpack_rows(packed.t().contiguous(), bits).t()


def dequantize_weight(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor,
                      bits: int) -> torch.Tensor:
    """The float32 (out, in) weight a v1 GPTQ Linear stores."""
    q = unpack_rows(qweight, bits)[: g_idx.numel()]  # (in, out)
    zeros = unpack_columns(qzeros, bits)[:, : scales.shape[1]] + 1  # v1 stores zero − 1
    groups = g_idx.long()
    return (scales.float()[groups] * (q - zeros[groups]).float()).t().contiguous()


def layer_bits(name: str, config: dict) -> int | None:
    """Width of the Linear `name` under quantization_config's `dynamic` rules (None: left in float), matched
    as GPTQModel and vLLM do: first matching rule wins, "-:" excludes, "+:" (or no prefix) overrides."""
    for pattern, override in (config.get("dynamic") or {}).items():
        if pattern.startswith("-:") and re.match(pattern[2:], name):
            return None
        if re.match(pattern.removeprefix("+:"), name):
            return override.get("bits", config["bits"])
    return config["bits"]


def dequantized_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """{'<linear>.weight': float32 (out, in)} for every quantized Linear in a saved GPTQ folder."""
    from safetensors import safe_open

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    if config.get("checkpoint_format", "gptq") != "gptq":
        raise ValueError(f"only the v1 'gptq' checkpoint format is read, got {config['checkpoint_format']}")
    tensors = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            tensors.update({key: f.get_tensor(key) for key in f.keys()})
    weights = {}
    for key in tensors:
        if key.endswith(".qweight"):
            name = key.removesuffix(".qweight")
            bits = layer_bits(name, config)
            weights[f"{name}.weight"] = dequantize_weight(tensors[key], tensors[f"{name}.qzeros"],
                                                          tensors[f"{name}.scales"], tensors[f"{name}.g_idx"], bits)
    return weights


def load_dequantized(model, folder: str | Path):
    """`model` (the float architecture of the checkpoint) carrying the weights stored in `folder`'s
    quantized Linears; its other weights are left as they are. Returns the model."""
    model.load_state_dict(dequantized_state(folder), strict=False)
    return model
