"""Tables and the plot for eval/bench_heal.py: results.md and loss_curves.png beside results.json.

Per run: eval loss (start, final, best), WikiText-2 perplexity after healing and the share of the perplexity
lost by removal that healing won back, (removed - healed) / (removed - full). Per seed and kind (LoRA, full): the
first step at which LLR's eval loss reaches uniform's final one (the LLR paper's measure; speed-up = uniform's
steps / that step), "never" if it does not. Then lm-eval mean recovery against the full model when measured.

    python eval/report_heal.py --out eval/results/healing
"""

from __future__ import annotations

from pathlib import Path

from report_common import write_report
from report_llr import crossing_step

ARMS = {"lora-uniform": "LoRA r16, uniform η", "lora-llr": "LoRA r16, LLR [η, 5η]",
        "lora-uniformmean": "LoRA r16, uniform at LLR's mean LR", "full-uniform": "full, uniform η",
        "full-llr": "full, LLR [η, 5η]", "full-uniformmean": "full, uniform at LLR's mean LR"}
COLOURS = {"lora-uniform": "tab:blue", "lora-llr": "tab:red", "lora-uniformmean": "tab:purple",
           "full-uniform": "tab:green", "full-llr": "tab:orange", "full-uniformmean": "tab:brown"}


def arm(name: str) -> str:
    return name.rsplit("-seed", 1)[0]


def won_back(ref: dict, ppl: float) -> float:
    return 100 * (ref["removed_ppl"] - ppl) / (ref["removed_ppl"] - ref["full_ppl"])


def speedups(results: dict) -> list[tuple]:
    """(kind, baseline arm, seed, its final loss, its steps, LLR's step to that loss or None, speed-up or None)."""
    rows = []
    for name, run in results["runs"].items():
        base = name.split("-")[1]
        if base not in ("uniform", "uniformmean"):
            continue
        llr = results["runs"].get(name.replace(f"-{base}-", "-llr-"))
        if llr is None:
            continue
        target, steps = run["eval"][-1][1], run["eval"][-1][0]
        step = crossing_step(llr["eval"], target)
        rows.append((name.split("-")[0], ARMS[arm(name)].split(", ", 1)[1], run["config"]["seed"], target, steps,
                     step, steps / step if step else None))
    return sorted(rows, key=lambda r: (r[0] != "lora", r[1], r[2]))


def per_arm(results: dict) -> list[str]:
    """Mean over the seeds of each arm (± half the spread between seeds): the headline table."""
    import statistics

    def cell(values: list[float], fmt: str) -> str:
        if not values:
            return "–"
        spread = f" ± {(max(values) - min(values)) / 2:{fmt}}" if len(values) > 1 else ""
        return f"{statistics.mean(values):{fmt}}{spread}"

    ref, lmeval = results["reference"], results.get("lmeval", {})
    lines = ["| arm | seeds | final eval loss | ppl after | ppl loss won back % | lm-eval mean recovery % |",
             "|---|---|---|---|---|---|",
             f"| no healing | – | – | {ref['removed_ppl']:.2f} | 0 | "
             f"{cell([lmeval['removed']['mean_recovery']] if 'removed' in lmeval else [], '.1f')} |"]
    for key, label in ARMS.items():
        names = [n for n in results["runs"] if arm(n) == key]
        if not names:
            continue
        runs = [results["runs"][n] for n in names]
        recs = [lmeval[n]["mean_recovery"] for n in names if n in lmeval]
        lines.append(f"| {label} | {len(names)} | {cell([r['eval'][-1][1] for r in runs], '.4f')} | "
                     f"{cell([r['ppl'] for r in runs], '.2f')} | {cell([won_back(ref, r['ppl']) for r in runs], '.1f')}"
                     f" | {cell(recs, '.1f')}{f' ({len(recs)} of {len(names)} seeds)' if recs and len(recs) < len(names) else ''} |")
    return lines


def markdown(results: dict) -> str:
    ref = results["reference"]
    any_run = next(iter(results["runs"].values()))["config"]
    lines = [f"# Healing after removing 25 % of layers (SmolLM2-135M-Instruct, CPU)", "",
             f"Removed by Block Influence: layers {ref['removed_layers']}. Budget: {any_run['steps']} AdamW steps of "
             f"{any_run['batch_size']} × {any_run['seq_len']} tokens of WikiText-2 valid; eval loss = mean NLL on 16 "
             f"held-out windows of 256 tokens of WikiText-2 raw test; perplexity = 4 WikiText-2 test windows of 2048 "
             f"(as `compress run`). Full model {ref['full_ppl']:.2f}, removed {ref['removed_ppl']:.2f}.", "",
             "Per arm, mean over seeds (± half the spread):", "", *per_arm(results), "", "Per run:", "",
             "| run | η | eval loss at 0 | final | best | ppl after | ppl loss won back | seconds |",
             "|---|---|---|---|---|---|---|---|",
             f"| no healing | – | – | – | – | {ref['removed_ppl']:.2f} | 0 % | – |"]
    for name, run in sorted(results["runs"].items(), key=lambda kv: (list(ARMS).index(arm(kv[0])), kv[0])):
        losses = [loss for _, loss in run["eval"]]
        lines.append(f"| {ARMS[arm(name)]}, seed {run['config']['seed']} | {run['config']['lr']:g} | {losses[0]:.4f} "
                     f"| {losses[-1]:.4f} | {min(losses):.4f} | {run['ppl']:.2f} | {won_back(ref, run['ppl']):.1f} % "
                     f"| {run['seconds']:.0f} |")
    lines += ["", "Steps for LLR to reach uniform's final eval loss (target ≥ 1.3× sooner), and the control's:", "",
              "| kind | against | seed | its final loss | its steps | LLR's step | speed-up |", "|---|---|---|---|---|---|---|"]
    for kind, base, seed, target, steps, step, speed in speedups(results):
        lines.append(f"| {kind} | {base} | {seed} | {target:.4f} | {steps} | {'never' if step is None else f'{step:.1f}'}"
                     f" | {'never reached' if speed is None else f'{speed:.2f}×'} |")
    if results.get("lmeval"):
        lines += ["", "lm-eval mean recovery against the full model (8 default tasks):", "",
                  "| model | mean recovery % | tasks |", "|---|---|---|"]
        for name, rec in results["lmeval"].items():
            lines.append(f"| {name} | {rec['mean_recovery']:.1f} | {rec['tasks']} |")
    versions = results.get("versions", {})
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    return "\n".join(lines) + "\n"


def plot(results: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, run in results["runs"].items():
        steps, losses = zip(*run["eval"])
        seed = run["config"]["seed"]
        ax.plot(steps, losses, marker="o", markersize=2.5, color=COLOURS[arm(name)],
                linestyle="-" if seed == 0 else "--", label=f"{ARMS[arm(name)]}, seed {seed}")
    ax.set_xlabel("step")
    ax.set_ylabel("eval loss (WikiText-2 test, nats/token)")
    ax.set_title("Healing SmolLM2-135M after removing 8 of 30 layers (BI), CPU", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)


def main() -> None:
    write_report(__doc__.split("\n")[0], "eval/results/healing", markdown, plot, "loss_curves.png")


if __name__ == "__main__":
    main()
