"""Measured sensitivity: the ground truth the cheap scorers are compared against.

For each decoder layer alone, round its Linear weights to `bits` (round-to-nearest, group size by
group_size_for) and measure on calibration tokens the KL divergence KL(p_full || p_quantized) of the
next-token distribution, mean per token, and the perplexity increase. Higher = more important.
Loop order: batches outside, layers inside, so only one batch of reference logits is held at a time.
Cost: (L + 1) forward passes per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from compress.errors import CompressError
from compress.model import decoder_layers, in_features, linears
from compress.quant.rtn import fake_quantize
from compress.quant.storage import group_size_for
from compress.scores import HIGHER, LayerScores


@dataclass(frozen=True)
class SensitivityConfig:
    bits: int = 2  # the low width each layer is tried at
    group_size: int = 128  # preferred group size (falls back to 64/32 where 128 does not divide)
    sym: bool = True
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.bits not in (2, 3, 4, 8):
            raise ValueError(f"bits must be 2, 3, 4 or 8, got {self.bits}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


def _log_probs(model, batch: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(model(input_ids=batch, use_cache=False).logits[:, :-1].float(), dim=-1)


def sensitivity_scores(model: torch.nn.Module, calib: torch.Tensor, config: SensitivityConfig = SensitivityConfig(),
                       progress: bool = True) -> LayerScores:
    if calib is None or calib.dim() != 2 or calib.shape[1] < 2:
        raise CompressError("the sensitivity scorer needs calibration tokens of shape (samples, seq_len >= 2)")
    layers = decoder_layers(model)
    n_layers = len(layers)
    kl_sum = torch.zeros(n_layers, dtype=torch.float64)
    nll_sum = torch.zeros(n_layers, dtype=torch.float64)
    base_nll, count = 0.0, 0
    device = next(model.parameters()).device
    batches = calib.split(config.batch_size)
    bar = tqdm(total=len(batches) * n_layers, desc=f"sensitivity ({config.bits}-bit RTN)", unit="layer",
               disable=not progress, leave=False)
    with torch.no_grad():
        for batch in batches:
            batch = batch.to(device)
            targets = batch[:, 1:].unsqueeze(-1)
            reference = _log_probs(model, batch)
            base_nll -= reference.gather(-1, targets).double().sum().item()
            count += targets.numel()
            for index, layer in enumerate(layers):
                modules = linears(layer)
                originals = {}
                for name, module in modules.items():
                    w = module.weight.data
                    originals[name] = w.clone()
                    # GPT-2's Conv1D stores (in, out): quantize along the input dimension either way.
                    conv1d = type(module).__name__ == "Conv1D"
                    matrix = w.t() if conv1d else w
                    q = fake_quantize(matrix, config.bits, group_size_for(in_features(module), config.group_size),
                                      config.sym)
                    w.copy_(q.t() if conv1d else q)
                try:
                    quantized = _log_probs(model, batch)
                finally:
                    for name, module in modules.items():
                        module.weight.data.copy_(originals[name])
                kl_sum[index] += (reference.exp() * (reference - quantized)).sum().double().item()
                nll_sum[index] -= quantized.gather(-1, targets).double().sum().item()
                bar.update(1)
    bar.close()
    base_ppl = math.exp(base_nll / count)
    return LayerScores(
        n_layers=n_layers,
        columns={
            "sensitivity": tuple((kl_sum / count).tolist()),
            "sensitivity_ppl": tuple(math.exp(x / count) - base_ppl for x in nll_sum.tolist()),
        },
        directions={"sensitivity": HIGHER, "sensitivity_ppl": HIGHER},
        descriptions={
            "sensitivity": f"KL(full || layer alone at {config.bits}-bit RTN) per token on calibration text",
            "sensitivity_ppl": f"calibration perplexity increase with the layer alone at {config.bits}-bit RTN "
                               f"(full model: {base_ppl:.3f})",
        },
    )


def measured_costs(model: torch.nn.Module, calib: torch.Tensor, widths, group_size: int = 128, sym: bool = True,
                   known: dict | None = None, progress: bool = True) -> list[dict[int, float]]:
    """Per layer and width, the measured KL of quantizing that layer alone to that width with RTN: the
    knapsack's costs (budgeted_bits). One sensitivity pass per width, (L + 1) forwards per batch each,
    except for widths whose per-layer column is already `known` ({bits: sensitivity column})."""
    per_width = dict(known or {})
    for b in widths:
        if b not in per_width:
            config = SensitivityConfig(bits=b, group_size=group_size, sym=sym)
            per_width[b] = sensitivity_scores(model, calib, config, progress=progress).columns["sensitivity"]
    return [{b: max(0.0, per_width[b][i]) for b in widths} for i in range(len(decoder_layers(model)))]
