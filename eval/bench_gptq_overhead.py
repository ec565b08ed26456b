"""Wall time of `compress run` against calling GPTQModel directly with the same config (issue 3, target
ratio <= 1.1), same process, alternating A/B, median of repeats.

A: compress.pipeline.runner.run(): load, LIM scoring, plan, GPTQ through gptqmodel, save with scores/plan/stats/
   settings (perplexity skipped: --max-windows 0, it is evaluation, not quantization).
B: what a user writes by hand: tokenizer, the same calibration samples, GPTQModel.load with the same
   QuantizeConfig (bits, group size, sym, desc_act, damping, the plan's `dynamic`), quantize, save.
Both start from the same local model folder and end with a saved checkpoint. Run alone:

    COMPRESS_DATA_DIR=../shared/data python eval/bench_gptq_overhead.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))

from compress.provenance import versions  # noqa: E402
from compress.data import calibration_samples, calibration_texts, data_dir  # noqa: E402
from compress.model import resolve_model_path  # noqa: E402
from compress.bits.planner import BitsConfig  # noqa: E402
from compress.pipeline.runner import RunConfig, run  # noqa: E402


def direct(model_path: str, stats: dict, config: RunConfig, root, out: Path) -> None:
    """B: the same quantization written against gptqmodel's API by hand."""
    from gptqmodel import GPTQModel, QuantizeConfig
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    calib = calibration_samples(tokenizer, calibration_texts(config.calib, root), n_samples=config.calib_samples,
                                seq_len=config.calib_seq_len, seed=config.seed)
    quant = QuantizeConfig(bits=stats["base_bits"], group_size=stats["group_size"], sym=stats["sym"],
                           desc_act=stats["desc_act"], damp_percent=stats["damp_percent"],
                           dynamic=stats["dynamic"] or None, offload_to_disk=False)
    model = GPTQModel.load(model_path, quant)
    model.quantize([{"input_ids": r.tolist(), "attention_mask": [1] * r.numel()} for r in calib], batch_size=4)
    model.save(str(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--calib-samples", type=int, default=8)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_overhead"))
    p.add_argument("--out", type=Path, default=Path("eval/results/gptq_overhead.json"))
    args = p.parse_args()

    root = data_dir(args.data_dir)
    model_path = resolve_model_path(None)
    config = RunConfig(BitsConfig(avg_bits=3.25, scorer="lim", allocator="layers"), calib_samples=args.calib_samples, ppl_windows=0)
    # warm-up A (untimed): fills caches and yields the plan's `dynamic` that B passes by hand
    shutil.rmtree(args.work, ignore_errors=True)
    stats = run(None, config, args.work / "warmup", data_dir=root, progress=False).stats
    times: dict[str, list[float]] = {"compress_run": [], "gptqmodel_direct": []}
    for repeat in range(args.repeats):
        order = ["compress_run", "gptqmodel_direct"][:: 1 if repeat % 2 == 0 else -1]
        for which in order:
            out = args.work / f"{which}-{repeat}"
            started = time.perf_counter()
            if which == "compress_run":
                run(None, config, out, data_dir=root, progress=False)
            else:
                direct(model_path, stats, config, root, out)
            times[which].append(time.perf_counter() - started)
            print(which, repeat, f"{times[which][-1]:.1f} s", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "what": "wall time, model folder -> saved GPTQ checkpoint; compress run = load + LIM scoring + plan + GPTQ + "
                "save (perplexity skipped); direct = tokenizer + calibration + GPTQModel.load/quantize/save",
        "plan": "mixed 3.25 bits (4/2) by LIM on SmolLM2-135M-Instruct, group size 64, sym, no act-order",
        "calib": f"{args.calib_samples} x {config.calib_seq_len} tokens of {config.calib}",
        "seconds": times, "median_seconds": medians,
        "ratio_compress_over_direct": medians["compress_run"] / medians["gptqmodel_direct"],
        "versions": versions(),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
