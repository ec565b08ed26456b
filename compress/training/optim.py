"""Optimizers for `compress finetune`: AdamW, or Muon for the 2-D hidden matrices with AdamW for the rest.

Muon (torch.optim.Muon, Keller Jordan's orthogonalised momentum) is meant for hidden weight matrices only;
embeddings, the LM head, norms and biases go to AdamW, as Muon is normally used. `adjust_lr_fn=
"match_rms_adamw"` (Moonlight's scaling, 0.2·√max(rows, cols)) makes one LR mean the same update size for
both, so `--lr` and the LLR multipliers apply unchanged. LLR works on top of either: the groups are the same.
"""

from __future__ import annotations

import torch

from compress.errors import CompressError
from compress.training import OPTIMIZERS

BETAS = (0.9, 0.95)  # LLR / OLMo's AdamW setting


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer object (what schedulers and the HF Trainer expect) whose "tuned" groups step with Muon
    and all others with AdamW. The inner optimizers share the group dicts, so LR changes reach them."""

    def __init__(self, groups: list[dict], lr: float, weight_decay: float = 0.1):
        if not hasattr(torch.optim, "Muon"):
            raise CompressError(f"--optimizer muon needs torch.optim.Muon (torch >= 2.9); this is torch "
                                f"{torch.__version__}")
        super().__init__(groups, {"lr": lr, "weight_decay": weight_decay})
        muon = [g for g in self.param_groups if g.get("kind") == "tuned"]
        adamw = [g for g in self.param_groups if g.get("kind") != "tuned"]
        self.inner = []
        if muon:
            self.inner.append(torch.optim.Muon(muon, lr=lr, weight_decay=weight_decay,
                                               adjust_lr_fn="match_rms_adamw"))
        if adamw:
            self.inner.append(torch.optim.AdamW(adamw, lr=lr, betas=BETAS, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for optimizer in self.inner:
            optimizer.step()
        return loss

    def state_dict(self) -> dict:
        return {"inner": [o.state_dict() for o in self.inner]}

    def load_state_dict(self, state_dict: dict) -> None:
        for optimizer, state in zip(self.inner, state_dict["inner"]):
            optimizer.load_state_dict(state)


def build_optimizer(name: str, groups: list[dict], lr: float, weight_decay: float = 0.1) -> torch.optim.Optimizer:
    """`--optimizer` adamw | muon over `groups` (compress.training.schedule.param_groups), every group starting at `lr`."""
    if name not in OPTIMIZERS:
        raise CompressError(f"unknown optimizer (--optimizer) {name!r}; valid: {', '.join(OPTIMIZERS)}")
    if name == "muon":
        return MuonWithAdamW(groups, lr, weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, weight_decay=weight_decay)
