"""Optimizer parameter groups and the LR schedule of heavy-tail-guided layerwise learning rates (LLR).

Groups (LLR's granularity, algorithms.md §3.1): every Linear weight with >= 50 eigenvalues is its own group
("tuned": its LR follows its α); the embedding and the LM head are their own groups and take the largest α
of the tuned matrices ("max"); everything else (norms, biases, small matrices) stays at η ("untuned"), with
weight decay off for norms and biases. A tied embedding/head is one parameter and one group. With LoRA
adapters (peft), each adapted Linear's A and B form one group whose LR follows the α of the frozen base
weight it adapts (dequantized when the base is bitsandbytes 4-bit).

LayerwiseLR is a torch LRScheduler, so one object drives a plain loop (`scheduler.step()` after
`optimizer.step()`) and the Hugging Face Trainer (`Trainer(optimizers=(optimizer, scheduler))`): every group's
LR is η_g · mult_g(t) · s(t), with s the warm-up + cosine factor shared by all groups and mult_g recomputed
from the weights' α at recompute_steps, moving linearly to its new value over `ramp` steps.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.optim.lr_scheduler import LRScheduler

from compress.training.lr_map import LRPolicy, lr_multipliers, ramped, recompute_steps, schedule_factor
from compress.model import is_linear

MIN_EIGENVALUES = 50  # LLR / TempBalance eigs_thresh: smaller matrices have no usable spectrum


def _lora_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """peft LoRA-wrapped Linears (they hold `base_layer` and `lora_A`), by module name."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]


def _base_shape(layer: torch.nn.Module) -> tuple[int, int]:
    base = layer.base_layer
    return (base.out_features, base.in_features)  # a 4-bit weight's own shape is its packed storage


def param_groups(model: torch.nn.Module, weight_decay: float = 0.1) -> list[dict]:
    """Groups with "params", "name", "kind" (tuned | max | untuned) and "weight_decay"; trainable params only."""
    seen: set[int] = set()
    groups: list[dict] = []
    for name, layer in _lora_layers(model):
        params = [p for p in [*layer.lora_A.parameters(), *layer.lora_B.parameters()] if p.requires_grad]
        if params and min(_base_shape(layer)) >= MIN_EIGENVALUES:
            seen.update(id(p) for p in params)
            groups.append({"params": params, "name": name, "kind": "tuned", "weight_decay": weight_decay})
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.nn.Parameter) or not weight.requires_grad or id(weight) in seen:
            continue
        embedding = isinstance(module, torch.nn.Embedding) or module is head
        if not (embedding or is_linear(module)) or weight.dim() != 2 or min(weight.shape) < MIN_EIGENVALUES:
            continue
        seen.add(id(weight))
        tied = " (tied to the LM head)" if embedding and head is not None and head.weight is weight and \
            module is not head else ""
        groups.append({"params": [weight], "name": name + tied, "kind": "max" if embedding else "tuned",
                       "weight_decay": weight_decay})
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            (no_decay if param.dim() < 2 else decay).append(param)  # norms and biases: no weight decay
    if decay:
        groups.append({"params": decay, "name": "untuned (small matrices)", "kind": "untuned",
                       "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "name": "untuned (norms, biases)", "kind": "untuned", "weight_decay": 0.0})
    return groups


def alpha_sources(model: torch.nn.Module) -> dict[str, Callable[[], torch.Tensor]]:
    """{group name: float weight whose α sets that group's LR} where it is not the group's own parameter:
    the frozen base weight of each LoRA-adapted Linear (dequantized if bitsandbytes 4-bit)."""
    def base_weight(layer):
        def read() -> torch.Tensor:
            weight = layer.base_layer.weight
            if getattr(weight, "quant_state", None) is not None:
                import bitsandbytes.functional as bnb

                return bnb.dequantize_4bit(weight.data, weight.quant_state).float()
            return weight.detach().float()
        return read

    return {name: base_weight(layer) for name, layer in _lora_layers(model)}


def group_alphas(groups: list[dict], sources: dict[str, Callable[[], torch.Tensor]] | None = None) -> dict[int, float]:
    """{group position: α (median-xmin Hill estimate, as LLR)} for the tuned groups. A group named in `sources`
    takes the α of that weight instead of its own first parameter."""
    from compress.scorers.spectral import median_alphas

    sources = sources or {}
    weights = {p: sources[g["name"]]() if g["name"] in sources else g["params"][0].detach().float()
               for p, g in enumerate(groups) if g["kind"] == "tuned"}
    return dict(zip(weights, median_alphas(list(weights.values()))))


class LayerwiseLR(LRScheduler):
    """Per-group LR = base_lr_g · mult_g(t) · s(t). base_lr_g is the group's LR when the optimizer was built
    (η, or Muon's LR for Muon groups); `history` holds every group's LR at every step (for lr_log.json)."""

    def __init__(self, optimizer: torch.optim.Optimizer, policy: LRPolicy, total_steps: int, warmup_steps: int,
                 every: int = 100, until: float = 0.2, ramp: int = 50, final: float = 0.1,
                 sources: dict[str, Callable[[], torch.Tensor]] | None = None):
        self.sources = sources  # alpha_sources(model) when training LoRA adapters
        self.policy, self.total, self.warmup, self.final, self.ramp = policy, total_steps, warmup_steps, final, ramp
        self.recompute_at = set(recompute_steps(total_steps, every, until))
        self.names = [g.get("name", f"group {i}") for i, g in enumerate(optimizer.param_groups)]
        self.mult = [1.0] * len(optimizer.param_groups)  # current targets
        self.previous = list(self.mult)  # where each ramp starts
        self.since = 0  # step of the last recomputation
        self.alpha_log: list[dict] = []  # [{"step", "alpha": {name: α}}] at each recomputation
        self.history: list[list[float]] = []
        super().__init__(optimizer)

    def _recompute(self, step: int) -> None:
        groups = self.optimizer.param_groups
        alphas = group_alphas(groups, self.sources)
        if not alphas:
            return
        top = max(alphas.values())
        ordered = [p for p, g in enumerate(groups) if g.get("kind") in ("tuned", "max")]
        values = [alphas.get(p, top) for p in ordered]  # embedding / head take the largest α
        new = list(self.mult)
        for p, m in zip(ordered, lr_multipliers(values, self.policy)):
            new[p] = m
        now = self._multipliers(step)
        self.previous, self.mult, self.since = (new if step == 0 else now), new, step
        self.alpha_log.append({"step": step, "alpha": {self.names[p]: v for p, v in zip(ordered, values)}})

    def _multipliers(self, step: int) -> list[float]:
        return [ramped(old, new, step, self.since, self.ramp) for old, new in zip(self.previous, self.mult)]

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step in self.recompute_at:
            self._recompute(step)
        factor = schedule_factor(step, self.total, self.warmup, self.final)
        lrs = [base * m * factor for base, m in zip(self.base_lrs, self._multipliers(step))]
        self.history.append(lrs)
        return lrs

    def log(self) -> dict:
        """What lr_log.json holds: group names, each group's LR at every step, the α at each recomputation."""
        return {"groups": self.names, "lr": self.history, "alpha": self.alpha_log,
                "policy": vars(self.policy), "total_steps": self.total, "warmup_steps": self.warmup}
