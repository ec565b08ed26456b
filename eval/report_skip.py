"""Tables and the plot for eval/bench_skip.py: results.md and ppl_vs_removed.png beside results.json.

    python eval/report_skip.py --out eval/results/layer_skip
"""

from __future__ import annotations

import statistics
from pathlib import Path

from report_common import write_report

POLICIES = {"bi": "ShortGPT (BI)", "angular": "Gromov et al. (angular block)", "uls": "ULS (evenly spaced)",
            "greedy": "greedy (calibration NLL)", "random": "random (median of 3 seeds)"}


def table_rows(results: dict) -> tuple[list[int], dict[str, dict[int, float]], dict[int, tuple[float, float]]]:
    """(removed counts, {policy: {count: ppl}}, {count: (min, max) over random seeds})."""
    quality = results["quality"]
    counts = sorted({row["removed"] for key, row in quality.items() if key != "full"})
    ppl: dict[str, dict[int, float]] = {p: {} for p in POLICIES}
    spread = {}
    for n in counts:
        for policy in POLICIES:
            if policy == "random":
                values = [row["ppl"] for row in quality.values() if row.get("policy", "").startswith("random")
                          and row["removed"] == n]
                if values:
                    ppl["random"][n] = statistics.median(values)
                    spread[n] = (min(values), max(values))
            elif f"{policy}-{n}" in quality:
                ppl[policy][n] = quality[f"{policy}-{n}"]["ppl"]
    return counts, ppl, spread


def markdown(results: dict) -> str:
    counts, ppl, spread = table_rows(results)
    settings, versions = results["settings"], results["versions"]
    full = results["quality"]["full"]["ppl"]
    lines = ["# Layer removal on SmolLM2-135M-Instruct (30 layers)", "",
             f"WikiText-2 raw test perplexity, first {settings['ppl_windows']} windows of {settings['seq_len']} "
             f"tokens; full model **{full:.2f}**. Layers chosen as `compress run --skip R --skip-policy P` "
             f"chooses them (calibration: {settings['calib']}).", "",
             "| policy | " + " | ".join(f"{n} removed ({n / 30:.0%})" for n in counts) + " |",
             "|---|" + "---|" * len(counts)]
    for policy, label in POLICIES.items():
        cells = []
        for n in counts:
            value = ppl[policy].get(n)
            cell = "–" if value is None else f"{value:.2f}"
            if policy == "random" and n in spread:
                cell += f" ({spread[n][0]:.1f}–{spread[n][1]:.1f})"
            best = min(v[n] for v in ppl.values() if n in v)
            cells.append(f"**{cell}**" if value == best else cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Layers removed:", ""]
    for key, row in results["quality"].items():
        if key != "full" and not row["policy"].startswith("random"):
            lines.append(f"- {key}: {row['dropped']}")
    order = [layer for layer, _ in results.get("greedy_order", [])]
    if order:
        lines += ["", f"Greedy removal order: {order} ({results.get('greedy_seconds', 0):.0f} s for "
                      f"{sum(30 - k for k in range(len(order)))} calibration forwards)."]
    if "decode_uls" in results:
        d = results["decode_uls"]
        lines += ["", "## Decode-time Unified Layer Skipping", "",
                  f"Teacher-forced continuations: {d['windows']} windows of WikiText-2 test, a {d['prompt']}-token "
                  f"prompt, then the next {d['continuation']} tokens one at a time; ULS layers {d['dropped']}.", "",
                  "| model | continuation perplexity |", "|---|---|"]
        for name in ("full", "uls decode-time", "uls removed"):
            lines.append(f"| {name} | {d[name]['ppl']:.2f} |")
    if "speed" in results:
        lines += ["", "## Decode speed", "",
                  f"HF generate, batch 1, {settings['prompt_tokens']}-token prompt, {settings['new_tokens']} new "
                  f"tokens (forced), greedy, {settings['dtype']}, {settings['threads']} threads; warm-up, then the "
                  f"median of {settings['repeats']} interleaved runs.", "",
                  "| model | decoder layers | median s | tokens/s | speed-up vs full (ratio of medians) | "
                  "speed-up, median of per-repeat ratios |", "|---|---|---|---|---|---|"]
        for name, row in results["speed"].items():
            layers = 30 - int(name.rsplit("-", 1)[1]) if name != "full" else 30
            if name.startswith("uls-decode"):
                layers = f"30 prompt / {layers} decode"
            lines.append(f"| {name} | {layers} | {row['median_s']:.3f} | {row['tokens_per_s']:.1f} | "
                         f"{row['speedup']:.3f}× | {row['paired_speedup']:.3f}× |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    return "\n".join(lines) + "\n"


def plot(results: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts, ppl, spread = table_rows(results)
    full = results["quality"]["full"]["ppl"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy, label in POLICIES.items():
        xs = [0, *[n for n in counts if n in ppl[policy]]]
        ys = [full, *[ppl[policy][n] for n in xs[1:]]]
        ax.plot(xs, ys, marker="o", label=label)
    if spread:
        xs = sorted(spread)
        ax.fill_between(xs, [spread[n][0] for n in xs], [spread[n][1] for n in xs], color="grey", alpha=0.2,
                        label="random, min–max of 3 seeds")
    ax.set_yscale("log")
    ax.set_xlabel("decoder layers removed (of 30)")
    ax.set_ylabel(f"WikiText-2 perplexity ({results['settings']['ppl_windows']} × 2048 tokens)")
    ax.set_title("SmolLM2-135M-Instruct: perplexity vs layers removed")
    ax.set_xticks([0, *counts])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)


def main() -> None:
    write_report(__doc__.split("\n")[0], "eval/results/layer_skip", markdown, plot, "ppl_vs_removed.png")


if __name__ == "__main__":
    main()
