"""Tables and the Pareto plot of eval/mixed_units.py's results (perplexity against stored bytes).

    python eval/report_mixed_units.py --results eval/results/mixed_units/results.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

COMPRESS = "compress default: unit knapsack, Fisher, options 3/4/8 bits (no 4b-ch)"
CHECKED = "compress default checked by calibration KL against uniform and the llama.cpp mix"
EVO = "EvoPress-style search on calibration KL (seeds: knapsack, uniform, llama.cpp mix)"
METHODS = {  # frontier-name prefix -> label in the table and legend
    "KL-checked default": CHECKED,
    "unit knapsack (fisher@3b-g64, default options less 3b-ch": COMPRESS + " less 3b-ch",
    "unit knapsack (fisher@4b-g64, default options less 3b-ch": COMPRESS + " less 3b-ch",
    "unit knapsack (fisher@3b-g64, default": COMPRESS,
    "unit knapsack (fisher@4b-g64, default": COMPRESS,
    "unit knapsack (fisher@3b-g64, 3/4/8": "unit knapsack, Fisher, options 3/4/8 bits with 4b-ch",
    "unit knapsack (fisher@4b-g64, 3/4/8": "unit knapsack, Fisher, options 3/4/8 bits with 4b-ch",
    "unit knapsack (taylor@3b-g64/no2": "unit knapsack, |g ⊙ ΔW| (AutoScheme's cost) at 3b-g64, options 3/4/8 bits",
    "unit knapsack (taylor@4b-g64/no2": "unit knapsack, |g ⊙ ΔW| (AutoScheme's cost) at 4b-g64, options 3/4/8 bits",
    "unit knapsack (fisher@": "unit knapsack, Fisher at the quantized point, options 2/3/4/8 bits",
    "unit knapsack (fisher, re-linearised)": "unit knapsack, Fisher, options 2/3/4/8 bits, re-linearised once",
    "AutoScheme allocation, same GPTQ": "auto-round AutoScheme allocation, same GPTQ",
    "AutoScheme allocation, same opt-rtn": "auto-round AutoScheme allocation, same opt-rtn",
    "auto-round AutoScheme": "auto-round AutoScheme, its own rounding",
    "llama.cpp-style mix": "llama.cpp-style mix (k-quant priorities)",
    "layer knapsack (isolated KL, g64)": "per-layer knapsack on isolated KL (before)",
    "unit knapsack (output)": "unit knapsack, GPTQ output error",
    "unit knapsack (taylor@3b-g64)": "unit knapsack, |g ⊙ ΔW| (AutoScheme's cost) at 3b-g64, options 2/3/4/8 bits",
    "unit knapsack (fisher-rtn@3b-g64)": "unit knapsack, Fisher with RTN ΔW",
    "evo": EVO,
}


PLOTTED = {EVO, COMPRESS, COMPRESS + " less 3b-ch", CHECKED, "unit knapsack, Fisher, options 3/4/8 bits with 4b-ch", "llama.cpp-style mix (k-quant priorities)",
           "per-layer knapsack on isolated KL (before)", "unit knapsack, Fisher at the quantized point, options 2/3/4/8 bits",
           "auto-round AutoScheme allocation, same GPTQ", "auto-round AutoScheme allocation, same opt-rtn"}
YMAX = 1500  # perplexity; the plot's upper edge


def method_of(name: str) -> str | None:
    return next((label for prefix, label in METHODS.items() if name.startswith(prefix)), None)


def budget_of(name: str) -> float | None:
    m = re.search(r"@([\d.]+)$", name)
    return float(m[1]) if m else None


def same(results: dict) -> str:
    """How the study's rows are rounded, as its AutoScheme rows name it: 'same GPTQ' or 'same opt-rtn'."""
    rounding = results.get("meta", {}).get("args", {}).get("rounding", "gptq")
    return "same GPTQ" if rounding == "gptq" else f"same {rounding}"


def equal_bytes(results: dict) -> list[str]:
    """Each uniform option against compress's knapsack at exactly its bytes (rows named '... @=<option>')."""
    frontier = results["frontier"]
    lines = ["| the plain alternative | its bits | its KL | its ppl | at the same bytes | bits | KL | ppl | ppl change |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in sorted(frontier.items(), key=lambda kv: kv[1]["bits"]):
        label = row.get("equal_bytes_to")
        ref = (f"AutoScheme allocation, {same(results)} @{label.split('@')[1]}" if str(label).startswith("AutoScheme@")
               else f"uniform {label}")
        if not label or ref not in frontier:
            continue
        u = frontier[ref]
        lines.append(f"| {label} | {u['bits']:.3f} | {u['kl']:.4f} | {u['ppl']:.2f} | {method_of(name)} | {row['bits']:.3f} | "
                     f"{row['kl']:.4f} | **{row['ppl']:.2f}** | {100 * (row['ppl'] / u['ppl'] - 1):+.1f} % |")
    return lines if len(lines) > 2 else []


def load_result(row: dict) -> str:
    if "gptqmodel_load_cosine" in row:
        return f"{row['gptqmodel_load_cosine']:.5f}"
    return "CPU forward refused: " + row.get("gptqmodel_forward_error", "not run").replace("|", "/")


def checkpoints(results: dict, path: Path) -> list[str]:
    """Frontier points quantized for real by GPTQModel (eval/mixed_units_checkpoint.py -> checkpoints.json)."""
    if not path.exists():
        return []
    lines = ["| point | simulated: bits | ppl | GPTQModel checkpoint: bits (its config) | safetensors MiB | KL | ppl | "
             "GPTQModel.load: logits cosine on CPU | GPTQModel s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in json.loads(path.read_text()).items():
        sim = results["frontier"].get(name, {})
        lines.append(f"| {name} | {sim.get('bits', float('nan')):.3f} | {sim.get('ppl', float('nan')):.2f} | "
                     f"{row['effective_bits']:.3f} | {row['size_bytes'] / 2**20:.1f} | {row['kl']:.4f} | "
                     f"**{row['ppl']:.2f}** | {load_result(row)} | {row.get('gptqmodel_seconds') or '–'} |")
    return lines + [""]


def autoround_rows(results: dict, path: Path) -> dict:
    """auto-round's own rounding (autoscheme.json's "autoround_rounding") of AutoScheme's allocations, as rows
    named 'auto-round AutoScheme, its own rounding (iters=N) @B', and of frontier allocations (compress's,
    uniform), as '<frontier name>, auto-round's rounding (iters=N)'; each at the allocation's bits."""
    lane = json.loads(path.read_text()) if path.exists() else {}
    rows = {}
    for key, row in lane.get("autoround_rounding", {}).items():
        source, iters = key.rsplit(" ", 1)
        if re.fullmatch(r"[\d.]+", source):
            sim = results["frontier"].get(f"AutoScheme allocation, {same(results)} @{float(source):g}")
            name = f"auto-round AutoScheme, its own rounding ({iters}) @{float(source):g}"
        else:
            sim, name = results["frontier"].get(source), f"{source}, auto-round's rounding ({iters})"
        if sim:
            rows[name] = {**row, "bits": sim["bits"], "checkpoint_bytes": sim["checkpoint_bytes"], "sim_ppl": sim["ppl"]}
    return rows


def autoround_table(rows: dict) -> list[str]:
    if not rows:
        return []
    lines = ["| auto-round's own rounding of an allocation (real GPTQ-format checkpoint) | bits | KL | ppl | "
             "same allocation, this study's simulation: ppl | auto-round s |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['bits']:.3f} | {r['kl']:.4f} | {r['ppl']:.2f} | {r['sim_ppl']:.2f} | "
              f"{r.get('autoround_seconds') or '–'} |" for name, r in rows.items()]
    return lines + [""]


def lmeval_table(results: dict) -> list[str]:
    """Zero-shot accuracy (the mixed_units lmeval stage) of float and the frontier's equal-bytes pairs."""
    done = results.get("lmeval", {})
    if not done:
        return []
    tasks = list(next(iter(done.values()))["tasks"])
    limit = next(iter(done.values()))["limit"]
    lines = [f"lm-eval 0-shot, first {limit} documents per task (acc ± stderr):", "",
             "| point | bits | ppl | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 4) + "|"]
    for name, row in done.items():
        bits = f"{row['bits']:.3f}" if row.get("bits") else "16 (float)"
        ppl = f"{row['ppl']:.2f}" if row.get("ppl") else "–"
        cells = [f"{a['value']:.3f} ± {a['stderr']:.3f}" for a in row["tasks"].values()]
        lines.append(f"| {name} | {bits} | {ppl} | " + " | ".join(cells) + f" | **{row['mean']:.4f}** |")
    return lines + [""]


def tables(results: dict, path: Path | None = None) -> str:
    frontier = results["frontier"]
    lines = checkpoints(results, path.parent / "checkpoints.json") if path else []
    lines += autoround_table(autoround_rows(results, path.parent / "autoscheme.json")) if path else []
    lines += lmeval_table(results)
    lines += equal_bytes(results)
    lines += [""] if lines else []
    uniform = sorted(((v["bits"], k.removeprefix("uniform "), v) for k, v in frontier.items()
                      if k.startswith("uniform ")), key=lambda t: t[0])
    lines += ["| uniform option | bits / decoder weight | checkpoint MiB | calib KL | WikiText-2 ppl |", "|---|---|---|---|---|"]
    lines += [f"| {label} | {b:.3f} | {v['checkpoint_bytes'] / 2**20:.1f} | {v['kl']:.4f} | {v['ppl']:.2f} |"
              for b, label, v in uniform]
    budgets = sorted({budget_of(k) for k in frontier if budget_of(k) is not None})
    methods = [m for m in dict.fromkeys(method_of(k) for k in frontier) if m]
    lines += ["", "| method | " + " | ".join(f"@{b:g}" for b in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for method in methods:
        cells = []
        for b in budgets:
            row = next((v for k, v in frontier.items() if method_of(k) == method and budget_of(k) == b), None)
            cells.append(f"{row['ppl']:.2f} ({row['bits']:.3f} b)" if row else "–")
        lines.append(f"| {method.replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
    best = {b: min(((v["ppl"], k) for k, v in frontier.items() if k.startswith("uniform ") and v["bits"] <= b + 1e-9),
                   default=None) for b in budgets}
    lines.append("| best uniform option within the budget | " + " | ".join(
        f"{best[b][0]:.2f} ({best[b][1].removeprefix('uniform ')})" if best[b] else "–" for b in budgets) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frontier = results["frontier"]  # simulation rows only: real checkpoints (GPTQModel, auto-round) are in tables.md
    rounding = results["meta"]["args"].get("rounding", "gptq")
    fig, ax = plt.subplots(figsize=(8, 5))
    uniform = [(v["bits"], v["ppl"], k.removeprefix("uniform ")) for k, v in frontier.items() if k.startswith("uniform ")]
    ax.scatter([u[0] for u in uniform], [u[1] for u in uniform], c="grey", marker="x",
               label=f"uniform options ({rounding})")
    for b, p, label in uniform:
        if p < YMAX:
            ax.annotate(label, (b, p), fontsize=7, color="grey")
    for method in dict.fromkeys(method_of(k) for k in frontier):
        if method not in PLOTTED:
            continue
        pts = sorted((v["bits"], v["ppl"]) for k, v in frontier.items() if method_of(k) == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method,
                lw=2.5 if method == COMPRESS else 1.2)
    ax.set_yscale("log")
    shown = [line.get_ydata() for line in ax.get_lines()] + [[u[1] for u in uniform]]
    top = min(YMAX, 1.3 * max(max((y for y in ys if y < YMAX), default=0) for ys in shown))
    ax.set_ylim(25, top)  # the 2.5-bit points (10^4-10^5) would squash everything else; they are in tables.md
    ax.set_xlim(2.9, 4.8)
    ax.set_xlabel("stored bits per decoder weight (codes, fp16 scales, zeros, g_idx)")
    ax.set_ylabel("WikiText-2 test perplexity (lower is better; log)")
    ax.set_title(f"{Path(str(results['meta']['model'])).name}: mixed precision vs uniform at equal bytes\n"
                 f"(every row rounded by {rounding})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="eval/results/mixed_units/results.json")
    args = p.parse_args()
    path = Path(args.results)
    results = json.loads(path.read_text())
    text = tables(results, path)
    (path.parent / "tables.md").write_text(text + "\n")
    plot(results, path.parent / "pareto.png")
    print(text)


if __name__ == "__main__":
    main()
