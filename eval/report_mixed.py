"""Table (results.md) and Pareto plot (pareto.png) of eval/bench_mixed.py's results.json.

    python eval/report_mixed.py --out eval/results/mixed_bits
"""

from __future__ import annotations

import statistics
from pathlib import Path

from report_common import write_report

STYLE = {"uniform": ("black", "s"), "lim": ("tab:blue", "o"), "zd": ("tab:orange", "^"),
         "alpha": ("tab:green", "v"), "sensitivity": ("tab:red", "D"), "random": ("grey", "x"),
         "knapsack": ("tab:purple", "*")}


def family(name: str) -> str:
    if name.startswith("uniform"):
        return "uniform"
    if name.startswith("knapsack"):
        return "knapsack"
    tail = name.rsplit("-", 1)[-1]
    return "random" if tail.startswith("random") else tail


def table(results: dict) -> str:
    runs = results["runs"]
    lines = ["| configuration | widths (count of layers) | effective bits/weight | size MB | WikiText-2 ppl | "
             "GPTQ s | kernel check: nll reloaded / unpacked |", "|---|---|---|---|---|---|---|"]
    for name, r in sorted(runs.items(), key=lambda kv: (-kv[1]["effective_bits"], kv[1]["ppl"])):
        counts = {b: r["bits"].count(b) for b in sorted(set(r["bits"]), reverse=True)}
        widths = ", ".join(f"{b}:{n}" for b, n in counts.items())
        check = r.get("kernel_check")
        check = f"{check['nll_reloaded']:.4f} / {check['nll_unpacked']:.4f}" if check else ""
        size = f"{r['size_bytes'] / 1e6:.1f}" if "size_bytes" in r else ""
        seconds = f"{r['gptq_seconds']:.0f}" if "gptq_seconds" in r else ""
        lines.append(f"| {name} | {widths} | {r['effective_bits']:.3f} | {size} | {r['ppl']:.2f} | {seconds} | {check} |")
    for budget in sorted({n.split("-")[1] for n in runs if n.startswith("mixed-")}):
        seeds = [r["ppl"] for n, r in runs.items() if n.startswith(f"mixed-{budget}-random")]
        if seeds:
            lines.append(f"\nRandom order at {budget} bits: median ppl {statistics.median(seeds):.2f} over "
                         f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} (min {min(seeds):.2f}, max {max(seeds):.2f}).")
    rho = results.get("spearman_with_sensitivity", {})
    if rho:
        lines.append("\nSpearman rank correlation of each score with measured 2-bit sensitivity: "
                     + ", ".join(f"{k} {v:+.2f}" for k, v in rho.items() if not k.startswith("sensitivity")) + ".")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    seen = set()
    for name, r in runs.items():
        if name == "unquantized":
            ax.axhline(r["ppl"], color="black", lw=0.8, ls="--", label=f"unquantized ({r['ppl']:.2f})")
            continue
        fam = family(name)
        color, marker = STYLE[fam]
        ax.scatter(r["effective_bits"], r["ppl"], color=color, marker=marker, s=60 if fam == "knapsack" else 35,
                   label=None if fam in seen else fam, zorder=3)
        seen.add(fam)
        if fam == "uniform":
            ax.annotate(name.split("-")[1] + "-bit", (r["effective_bits"], r["ppl"]), textcoords="offset points",
                        xytext=(5, 3), fontsize=8)
    uniform = sorted((r["effective_bits"], r["ppl"]) for n, r in runs.items() if n.startswith("uniform"))
    if uniform:
        ax.plot(*zip(*uniform), color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("effective bits per weight (decoder Linears; codes + fp16 scales + zero points)")
    ax.set_ylabel("WikiText-2 perplexity (log scale)")
    ax.set_title(f"SmolLM2-135M GPTQ: {results['setup']['ppl']}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    write_report(__doc__.split("\n")[0], "eval/results/mixed_bits", table, plot, "pareto.png")


if __name__ == "__main__":
    main()
