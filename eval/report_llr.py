"""Tables and the plot for eval/bench_llr.py: results.md and eval_loss.png beside results.json.

Two speed measures per seed: the issue's (the first step at which LLR reaches uniform's *final* eval loss,
"never" if it does not), and a common-target one (the first step at which each run reaches the lower loss both
runs reach: the larger of the two best losses), so that a run which gets low fast and then rises is still read.

    python eval/report_llr.py --out eval/results/llr
"""

from __future__ import annotations

import statistics
from pathlib import Path

from report_common import write_report

LABELS = {"uniform": "uniform η", "llr": "LLR [η, 5η]", "uniform5x": "uniform 5η"}


def crossing_step(curve: list[list[float]], target: float) -> float | None:
    """First step at which an eval-loss curve [(step, loss)] reaches `target`, interpolated linearly between
    eval points; None if it never does."""
    for (s0, l0), (s1, l1) in zip(curve, curve[1:]):
        if l1 <= target:
            return s1 if l0 == l1 else s0 + (l0 - target) / (l0 - l1) * (s1 - s0)
    return None


def by_seed(results: dict) -> dict[int, dict[str, dict]]:
    seeds: dict[int, dict[str, dict]] = {}
    for name, run in results["runs"].items():
        policy = name.split("-")[0]
        seeds.setdefault(run["config"]["seed"], {})[policy] = run
    return seeds


def device(results: dict) -> str:
    """Where the runs ran: each run's own record (later results), else the GPU in the versions, else CPU."""
    names = {run.get("device") or results.get("versions", {}).get("gpu", "cpu") for run in results["runs"].values()}
    return " and ".join(sorted("CPU" if n == "cpu" else n for n in names))


def common_target(uniform: dict, llr: dict) -> tuple[float, float | None, float | None]:
    """(target, uniform's step, LLR's step): target = the lower eval loss both runs reach."""
    target = max(min(l for _, l in uniform["eval"]), min(l for _, l in llr["eval"]))
    return target, crossing_step(uniform["eval"], target), crossing_step(llr["eval"], target)


def markdown(results: dict) -> str:
    seeds = by_seed(results)
    any_run = next(iter(results["runs"].values()))["config"]
    eta = min(run["config"]["lr"] for run in results["runs"].values())
    lines = [f"# LLR vs uniform LR: fine-tuning SmolLM2-135M-Instruct ({any_run['optimizer']}, {device(results)})", "",
             f"{any_run['optimizer']}, η = {eta:g}, {any_run['steps']} steps of {any_run['batch_size']} × {any_run['seq_len']} "
             f"tokens of WikiText-2 valid, warm-up {any_run['warmup']:.0%}, cosine to 0.1×; eval loss = mean NLL on "
             f"{any_run['eval_windows']} held-out windows of {any_run['seq_len']} tokens of WikiText-2 raw test.", "",
             "| seed | run | eval loss at 0 | final eval loss | best eval loss | steps to reach uniform's final | "
             "speed-up vs uniform |", "|---|---|---|---|---|---|---|"]
    speedups = []
    for seed, runs in sorted(seeds.items()):
        uniform = runs.get("uniform")
        target = uniform["eval"][-1][1] if uniform else None
        for policy in ("uniform", "llr", "uniform5x"):
            run = runs.get(policy)
            if run is None:
                continue
            curve = run["eval"]
            cross = crossing_step(curve, target) if target is not None else None
            steps = run["config"]["steps"]
            speed = f"{steps / cross:.2f}×" if cross else "never reached"
            if policy == "llr" and cross:
                speedups.append(steps / cross)
            lines.append(f"| {seed} | {LABELS[policy]} (lr {run['config']['lr']:g}) | {curve[0][1]:.4f} | "
                         f"{curve[-1][1]:.4f} | {min(l for _, l in curve):.4f} | "
                         f"{'–' if policy == 'uniform' else (f'{cross:.0f}' if cross else 'never')} | "
                         f"{'1.00×' if policy == 'uniform' else speed} |")
    if speedups:
        lines += ["", f"LLR reaches uniform's final eval loss {statistics.median(speedups):.2f}× sooner (median over "
                      f"{len(speedups)} seed(s); paper: 1.5×, goal ≥ 1.3×)."]
    else:
        lines += ["", "LLR never reaches uniform's final eval loss (paper: 1.5× sooner, goal ≥ 1.3×)."]
    pairs = [(seed, runs["uniform"], runs["llr"]) for seed, runs in sorted(seeds.items()) if {"uniform", "llr"} <= set(runs)]
    if pairs:
        lines += ["", "Common target (the lower eval loss both runs reach):", "",
                  "| seed | target | uniform's step | LLR's step | LLR sooner by |", "|---|---|---|---|---|"]
        for seed, uniform, llr in pairs:
            target, u, r = common_target(uniform, llr)
            lines.append(f"| {seed} | {target:.4f} | {u:.0f} | {r:.0f} | {u / r:.2f}× |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items())]
    return "\n".join(lines) + "\n"


def plot(results: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"uniform": "tab:blue", "llr": "tab:red", "uniform5x": "tab:grey"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, run in results["runs"].items():
        policy, seed = name.split("-")[0], run["config"]["seed"]
        steps, losses = zip(*run["eval"])
        ax.plot(steps, losses, marker="o", markersize=3, color=colours[policy], linestyle="-" if seed == 0 else "--",
                label=f"{LABELS[policy]}, seed {seed}")
    ax.set_xlabel("step")
    ax.set_ylabel("eval loss (WikiText-2 test, nats/token)")
    any_run = next(iter(results["runs"].values()))["config"]
    ax.set_title(f"SmolLM2-135M fine-tuning: LLR vs uniform LR ({any_run['optimizer']}, η = "
                 f"{min(run['config']['lr'] for run in results['runs'].values()):g}, {device(results)})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)


def main() -> None:
    write_report(__doc__.split("\n")[0], "eval/results/llr", markdown, plot, "eval_loss.png")


if __name__ == "__main__":
    main()
