"""Embedding change: how much each decoder layer changes the hidden state passing through it.

All from ONE forward pass over the calibration tokens, with hooks on every decoder layer:
- LIM (LayerwiseQuant): −cos(h_in, h_out), averaged over all tokens. Higher = more important.
- BI (ShortGPT Block Influence): 1 − mean cos(h_in, h_out). Identical ranking to LIM. Higher = more important.
- angular_n (Gromov et al., arXiv 2403.17887): arccos(cos(x_ℓ, x_{ℓ+n}))/π between the inputs of layer ℓ and
  layer ℓ+n on the last token, averaged over samples (x_L = output of the last layer). Defined for
  ℓ <= L − n; larger = the n layers from ℓ change more = more important.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from compress.errors import CompressError
from compress.model import decoder_layers
from compress.scores import HIGHER, LayerScores


@dataclass(frozen=True)
class EmbeddingConfig:
    max_span: int = 4  # angular distance for spans n = 1..max_span
    batch_size: int = 4  # calibration samples per forward call

    def __post_init__(self) -> None:
        if self.max_span < 1 or self.batch_size < 1:
            raise ValueError("max_span and batch_size must be >= 1")


class _StopForward(Exception):
    """Raised after the last decoder layer: the final norm and lm_head are not needed (GPTQ's Catcher idea)."""


def _hidden(x) -> torch.Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


def _forward_until_last_layer(model, calib: torch.Tensor, batch_size: int, progress: bool) -> int:
    """Run the calibration batches through the hooked model (the last layer's hook stops each forward before
    the head); returns the number of tokens seen."""
    device = next(model.parameters()).device
    n_tokens = 0
    with torch.no_grad():
        for batch in tqdm(calib.split(batch_size), desc="embedding change", unit="batch", disable=not progress,
                          leave=False):
            try:
                model(input_ids=batch.to(device), use_cache=False)
            except _StopForward:
                pass
            n_tokens += batch.numel()
    return n_tokens


def angular_distances(states: list[torch.Tensor], max_span: int) -> dict[str, tuple[float, ...]]:
    """Gromov et al. (arXiv 2403.17887) eq. 7: {"angular_n": per start layer l, mean over samples of
    arccos(cos(x_l, x_l+n)) / π}, from the last token's state before each layer and after the last
    (L + 1 tensors of (samples, hidden)); NaN where l + n runs past the last layer."""
    n_layers = len(states) - 1
    columns = {}
    for span in range(1, max_span + 1):
        column = []
        for start in range(n_layers):
            if start + span > n_layers:
                column.append(math.nan)
                continue
            cos = torch.nn.functional.cosine_similarity(states[start], states[start + span], dim=-1)
            column.append((torch.arccos(cos.clamp(-1, 1)) / math.pi).mean().item())
        columns[f"angular_{span}"] = tuple(column)
    return columns


def embedding_scores(model: torch.nn.Module, calib: torch.Tensor, config: EmbeddingConfig = EmbeddingConfig(),
                     progress: bool = True) -> LayerScores:
    """calib: (n_samples, seq_len) token ids, no padding."""
    if calib is None or calib.dim() != 2 or calib.numel() == 0:
        raise CompressError("the embedding-change scorer needs calibration tokens of shape (samples, seq_len)")
    layers = decoder_layers(model)
    n_layers = len(layers)
    if config.max_span > n_layers:
        raise CompressError(f"angular span {config.max_span} exceeds the model's {n_layers} layers")
    cos_sum = torch.zeros(n_layers, dtype=torch.float64)
    last_tokens: list[list[torch.Tensor]] = [[] for _ in range(n_layers + 1)]  # x_0 .. x_L, (batch, hidden) each
    inputs: dict[int, torch.Tensor] = {}

    def pre_hook(index):
        def hook(module, args, kwargs):
            h = _hidden(args[0] if args else kwargs["hidden_states"])
            inputs[index] = h
            last_tokens[index].append(h[:, -1].float())

        return hook

    def post_hook(index):
        def hook(module, args, kwargs, output):
            h_in, h_out = inputs.pop(index).float(), _hidden(output).float()
            cos_sum[index] += torch.nn.functional.cosine_similarity(h_in, h_out, dim=-1).double().sum()
            if index == n_layers - 1:
                last_tokens[n_layers].append(h_out[:, -1])
                raise _StopForward

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(post_hook(i), with_kwargs=True))
    try:
        n_tokens = _forward_until_last_layer(model, calib, config.batch_size, progress)
    finally:
        for handle in handles:
            handle.remove()

    mean_cos = cos_sum / n_tokens
    columns = {"lim": tuple((-mean_cos).tolist()), "bi": tuple((1 - mean_cos).tolist()),
               **angular_distances([torch.cat(x) for x in last_tokens], config.max_span)}
    return LayerScores(
        n_layers=n_layers,
        columns=columns,
        directions={name: HIGHER for name in columns},
        descriptions={
            "lim": "LayerwiseQuant LIM: -mean over tokens of cos(layer input, layer output)",
            "bi": "ShortGPT Block Influence: 1 - mean over tokens of cos(layer input, layer output)",
            **{f"angular_{n}": f"Gromov et al.: arccos(cos(x_l, x_l+{n}))/pi on the last token, mean over samples"
               for n in range(1, config.max_span + 1)},
        },
    )
