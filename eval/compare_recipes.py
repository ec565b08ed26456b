"""The shipped recipes side by side (issue 17, item 5): quality, bytes and decode speed of each recipe's final
folder, read from what `compress run RECIPE.yaml` wrote there (stats.json, eval.json, bench.json).

    for r in mixed finetune-then-quantize remove-heal-quantize qlora-heal; do
        COMPRESS_DATA_DIR=../shared/data compress run pipelines/$r.yaml --out runs/recipes/$r; done
    python eval/compare_recipes.py runs/recipes/* --out eval/results/recipes

Columns: checkpoint MiB and bits per weight (bench's size of the final folder), WikiText-2 perplexity of the
final model (4 windows of 2048, as `compress run` measures it) and of the input to the last stage, lm-eval mean
recovery against the recipe's input model, decode tokens/s at batch 1 and 8 with the speed-up over the input
model in the same bench invocation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def row(run: Path) -> dict:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from compress.evaluation.lmeval import mean_recovery

    stages = sorted(p for p in run.iterdir() if p.is_dir() and p.name[:2].isdigit())
    final = stages[-1]
    stats = json.loads((final / "stats.json").read_text())
    evaluation = json.loads((final / "eval.json").read_text())
    bench = json.loads((final / "bench.json").read_text())
    model, base = bench["models"][0], bench["models"][-1]
    out = {"recipe": run.name, "stages": " → ".join(p.name.split("-", 1)[1] for p in stages),
           "mib": model["size"]["weight_bytes"] / 2**20, "bits_per_weight": model["size"]["bits_per_weight"],
           "ppl": stats["ppl_after"]["ppl"], "ppl_input": stats["ppl_before"]["ppl"],
           "mean_recovery": mean_recovery(evaluation)[0]}
    for batch, record in model["results"].items():
        speed = record["median_decode_throughput"]
        out[f"tok_s_{batch}"] = speed
        out[f"speedup_{batch}"] = speed / base["results"][batch]["median_decode_throughput"]
    return out


KEPT = ("recipe.yaml", "report.md", "*.png", "*/stats.json", "*/plan.json", "*/fingerprint.json", "*/train_log.json",
        "*/eval.json", "*/eval.md", "*/bench.json", "*/bench.md", "*/lr_heatmap.png")  # what a reader needs; no weights


def keep(run: Path, out: Path) -> None:
    """Copy the run's recipe, report and each stage's small records into out/<recipe name>/."""
    import shutil

    for pattern in KEPT:
        for path in run.glob(pattern):
            target = out / run.name / path.relative_to(run)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def markdown(rows: list[dict]) -> str:
    batches = sorted({k[6:] for r in rows for k in r if k.startswith("tok_s_")})
    head = ["recipe", "stages", "MiB", "bits/weight", "ppl (final)", "ppl (into last stage)", "mean recovery %"]
    head += [f"tok/s {b.replace('_', ' ')} (× input)" for b in batches]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["recipe"], r["stages"], f"{r['mib']:.1f}", f"{r['bits_per_weight']:.2f}", f"{r['ppl']:.2f}",
                 f"{r['ppl_input']:.2f}", "–" if r["mean_recovery"] is None else f"{r['mean_recovery']:.1f}"]
        cells += [f"{r[f'tok_s_{b}']:.1f} ({r[f'speedup_{b}']:.2f}×)" for b in batches]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("eval/results/recipes"))
    args = parser.parse_args()
    rows = [row(run) for run in args.runs]
    from compress.provenance import versions

    meta = versions()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps({"recipes": rows, "versions": meta}, indent=1) + "\n")
    text = (f"# Shipped recipes side by side (SmolLM2-135M-Instruct)\n\n{meta['cpu']}, {meta['cores']} cores, no "
            f"GPU; torch {meta['torch']}, transformers {meta['transformers']}\n\n" + markdown(rows))
    (args.out / "compare.md").write_text(text)
    for run in args.runs:
        keep(run, args.out)
    print(text)


if __name__ == "__main__":
    main()
