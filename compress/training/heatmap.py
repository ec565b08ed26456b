"""lr_heatmap.png of `compress finetune`: every optimizer group's learning rate over the steps."""

from __future__ import annotations

from pathlib import Path


def short_name(group: str) -> str:
    """A group's tick label: "base_model.model.model.layers.3.self_attn.q_proj" -> "layer 3 self_attn.q_proj";
    a name outside the decoder layers is kept whole (its last 40 characters)."""
    import re

    match = re.search(r"layers\.(\d+)\.(.+)$", group)
    return f"layer {match[1]} {match[2]}" if match else group[-40:]


def plot_lr_heatmap(lr_log: dict, path: Path) -> None:
    """Heat map of every optimizer group's LR (rows: groups in model order) over steps (columns), log colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    lrs = np.array(lr_log["lr"], dtype=float).T  # (groups, steps)
    positive = lrs[lrs > 0]
    fig, ax = plt.subplots(figsize=(9, max(3.0, min(12.0, 0.04 * len(lrs) + 2))))
    image = ax.imshow(np.where(lrs > 0, lrs, np.nan), aspect="auto", interpolation="nearest", cmap="viridis",
                      norm=LogNorm(positive.min(), positive.max()) if positive.size else None)
    ax.set_xlabel("step")
    ax.set_ylabel(f"optimizer group ({len(lrs)}: one per weight matrix, model order)")
    names = lr_log["groups"]
    ticks = list(range(0, len(names), max(1, len(names) // 12)))
    ax.set_yticks(ticks, [short_name(names[i]) for i in ticks], fontsize=7)
    ax.set_title(f"learning rate per group ({lr_log['policy']['map']}, ratios {lr_log['policy']['r_min']:g}–"
                 f"{lr_log['policy']['r_max']:g})", fontsize=10)
    fig.colorbar(image, ax=ax, label="learning rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
