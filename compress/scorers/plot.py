"""scores.png: every score column against layer index, one panel per scorer family."""

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
