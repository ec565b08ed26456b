"""Peak resident memory of `compress run --bits 4` on the bundled SmolLM2-135M, for one checkout of compress.

Runs the command once in a child process (importing compress from --checkout, default this one) and records
the child's peak RSS (ru_maxrss of RUSAGE_CHILDREN: this script starts no other child), its wall time and the
run's stats; appends the row to --out (JSON) and rewrites the Markdown table beside it. Run it alone: the
number is memory, but two torch jobs on 2 cores make the wall time meaningless.

    python eval/bench_run_memory.py --label before --checkout /tmp/before   # a worktree of the old commit
    python eval/bench_run_memory.py --label after
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(checkout: Path, args: list[str]) -> dict:
    """One `compress run` in a child process: its peak RSS (MiB), wall time (s) and stats.json."""
    with tempfile.TemporaryDirectory(prefix="run-memory-") as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, "PYTHONPATH": str(checkout), "GPTQMODEL_CPU_WORKERS": "2"}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "compress.cli", "run", *args, "--out", str(out)], env=env,
                       check=True, cwd=checkout)
        wall = time.perf_counter() - started
        stats = json.loads((out / "stats.json").read_text())
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return {"peak_rss_mib": round(peak, 1), "wall_s": round(wall, 1), "effective_bits": stats["effective_bits"],
            "ppl_before": stats["ppl_before"]["ppl"], "ppl_after": stats["ppl_after"]["ppl"]}


def markdown(rows: list[dict]) -> str:
    lines = ["# Peak RSS of `compress run`", "", f"Command: `compress run {rows[0]['args']}` on the bundled "
             "SmolLM2-135M-Instruct; peak resident memory of the whole process (ru_maxrss).", "",
             "| checkout | commit | peak RSS MiB | wall s | effective bits | ppl before | ppl after |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['commit']} | {r['peak_rss_mib']:.0f} | {r['wall_s']:.0f} | "
                     f"{r['effective_bits']:.3f} | {r['ppl_before']:.3f} | {r['ppl_after']:.3f} |")
    versions = rows[-1]["versions"]
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--label", required=True)
    p.add_argument("--checkout", type=Path, default=ROOT, help="folder whose compress/ is imported")
    p.add_argument("--args", default="--bits 4", help="arguments of `compress run` (before --out)")
    p.add_argument("--out", type=Path, default=ROOT / "eval/results/run_memory.json")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from compress.provenance import versions

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.checkout, capture_output=True,
                            text=True).stdout.strip()
    row = {"label": args.label, "commit": commit, "args": args.args, **measure(args.checkout, args.args.split()),
           "versions": versions()}
    rows = json.loads(args.out.read_text()) if args.out.is_file() else []
    rows = [r for r in rows if r["label"] != args.label] + [row]
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
