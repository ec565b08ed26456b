"""Benchmark: α of every Linear weight of SmolLM2-135M with `compress` vs WeightWatcher's analyze.

Same model, same process, same 211 matrices (30 x 7 decoder Linears + lm_head; WeightWatcher is told to
skip the embedding), median of --repeats timed runs each after one untimed warm-up. Also the parity of the
per-matrix α (median / max |Δα|). Writes eval/results/alpha_speed.{json,md}.

Run alone (two torch jobs on 2 cores slow each other many-fold):
    python eval/bench_alpha.py [--model M] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def timed(fn, repeats: int) -> tuple[list[float], object]:
    result = fn()  # warm-up: first-call allocations, lazy imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="float32", choices=("float32", "float64"))
    args = parser.parse_args()

    import torch
    import weightwatcher

    from compress.provenance import versions
    from compress.model import load_model, model_label
    from parity import alpha_parity, weightwatcher_alphas  # eval/parity.py, beside this script
    from compress.scorers.spectral import SpectralConfig, matrix_table

    model, _ = load_model(args.model)
    config = SpectralConfig(precision=args.precision)
    ours_t, rows = timed(lambda: matrix_table(model, config, progress=False), args.repeats)
    ww_t, theirs = timed(lambda: weightwatcher_alphas(model), args.repeats)
    ours = {r["name"]: r["alpha"] for r in rows}
    parity = alpha_parity(ours, theirs)
    result = {
        "model": model_label(model),
        "matrices": len(rows),
        "compress_seconds": ours_t,
        "weightwatcher_seconds": ww_t,
        "compress_median_s": statistics.median(ours_t),
        "weightwatcher_median_s": statistics.median(ww_t),
        "speedup": statistics.median(ww_t) / statistics.median(ours_t),
        "parity": parity,
        "settings": {"precision": args.precision, "xmin_rule": "ks (both)", "repeats": args.repeats,
                     "torch_threads": torch.get_num_threads()},
        "versions": {**versions(), "weightwatcher": weightwatcher.__version__},
        "machine": {"cpu": versions()["cpu"], "cores": os.cpu_count()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "alpha_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    v = result["versions"]
    md = f"""# α of every Linear: compress vs WeightWatcher

Model {result['model']}, {result['matrices']} weight matrices (30 x 7 decoder Linears + lm_head), xmin by
minimum KS distance in both. Median of {args.repeats} timed runs each after one warm-up, same process.
Reproduce: `python eval/bench_alpha.py` (run alone).

| tool | median s | runs (s) |
| --- | ---: | --- |
| compress (Gram + eigvalsh in {args.precision}, batched KS) | {result['compress_median_s']:.2f} | {', '.join(f'{t:.2f}' for t in ours_t)} |
| weightwatcher {v['weightwatcher']} analyze() | {result['weightwatcher_median_s']:.2f} | {', '.join(f'{t:.2f}' for t in ww_t)} |

**Speed-up: {result['speedup']:.1f}x.** Parity over {parity['matrices']} matrices: median |Δα| =
{parity['median_abs_diff']:.2e}, max |Δα| = {parity['max_abs_diff']:.2e}.

Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, torch threads
{result['settings']['torch_threads']}. Versions: python {v['python']}, torch {v['torch']}, transformers
{v['transformers']}, numpy {v['numpy']}, compress {v.get('compress', '?')}.
"""
    (RESULTS / "alpha_speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
