"""PNG plot of every score column against layer index: one panel per scorer family."""

from __future__ import annotations

import math
from pathlib import Path

from compress.scores import HIGHER, LOWER, LayerScores

_ARROW = {HIGHER: " (higher = more important)", LOWER: " (lower = more important)"}


def _panels(scores: LayerScores) -> list[list[str]]:
    """Columns grouped into panels: the angular_n spans share one panel, every other column has its own."""
    angular = [n for n in scores.names if n.startswith("angular_")]
    panels = [[n] for n in scores.names if not n.startswith("angular_")]
    if angular:
        panels.append(angular)
    return panels


def plot_scores(scores: LayerScores, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(scores)
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.0 * rows), squeeze=False)
    x = list(range(scores.n_layers))
    for ax, names in zip(axes.flat, panels):
        for name in names:
            ax.plot(x, scores[name], marker="o", markersize=3, label=name)
        head = names[0] if len(names) == 1 else "angular distance, span n"
        ax.set_title(head + _ARROW.get(scores.directions[names[0]], ""), fontsize=9)
        ax.set_xlabel("decoder layer")
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    ax.set_yticks(ticks, [names[i][:40] for i in ticks], fontsize=6)
    ax.set_title(f"learning rate per group ({lr_log['policy']['map']}, ratios {lr_log['policy']['r_min']:g}–"
                 f"{lr_log['policy']['r_max']:g})", fontsize=10)
    fig.colorbar(image, ax=ax, label="learning rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
