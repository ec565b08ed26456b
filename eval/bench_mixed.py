"""Variable-bit GPTQ benchmark on the bundled SmolLM2-135M-Instruct (issue 3).

For each configuration: plan (same make_plan as `compress run`) -> GPTQ through gptqmodel -> save ->
reload -> WikiText-2 raw test perplexity on a fixed prefix of windows. Configurations: the unquantized
model; uniform 8/4/3/2; mixed 4/2 at 3.25 and 3.5 average bits ordered by LIM, ZD, alpha, measured
sensitivity and random order (3 seeds); the exact knapsack over {2,3,4,8} on measured per-width KL at the
same budgets. Perplexity is computed on exactly the stored weights (unpacked from the safetensors with
plain torch, compress.quant.unpack, run in float32); every checkpoint is also reloaded through GPTQModel
and its bfloat16 CPU kernel checked against those weights on 512 tokens (kernel_check).

Resumable: results go to OUT/results.json after every configuration; configurations already there are
skipped. Run alone (2 CPU cores; a second torch job slows both many-fold):

    COMPRESS_DATA_DIR=../shared/data python eval/bench_mixed.py --out eval/results/mixed_bits
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compress.provenance import versions  # noqa: E402
from compress.data import calibration_samples, calibration_texts, data_dir, wikitext2_test_text  # noqa: E402
from compress.model import decoder_layers, layer_params, load_model, resolve_model_path  # noqa: E402
from compress.evaluation.perplexity import perplexity  # noqa: E402
from compress.bits.planner import BitsConfig, make_plan  # noqa: E402
from compress.pipeline.runner import RunConfig  # noqa: E402
from compress.model import load_gptq
from compress.quant.gptq import GPTQConfig, quantize_gptq  # noqa: E402
from compress.quant.unpack import load_dequantized  # noqa: E402
from compress.scores import LayerScores, rank_agreement  # noqa: E402
from compress.scorers import score  # noqa: E402
from compress.scorers.sensitivity import measured_costs  # noqa: E402

GROUP_SIZE = 64  # what GPTQ picks for SmolLM2 (576 is not a multiple of 128)
SCORERS = ("sensitivity", "lim", "zd", "alpha")
KNAPSACK_WIDTHS = (2, 3, 4, 8)


def configurations(budgets: list[float], seeds: int) -> list[tuple[str, RunConfig]]:
    """(name, config), most informative first so that a cut-short run still answers the main question."""
    runs = [("uniform-3", RunConfig(BitsConfig(bits="3"))), ("uniform-4", RunConfig(BitsConfig(bits="4")))]
    for budget in budgets:
        runs += [(f"mixed-{budget}-{s}", RunConfig(BitsConfig(avg_bits=budget, scorer=s, allocator="layers"))) for s in SCORERS]
        runs += [(f"mixed-{budget}-random{seed}", RunConfig(BitsConfig(avg_bits=budget, scorer="random", allocator="layers"), seed=seed))
                 for seed in range(seeds)]
        runs.append((f"knapsack-{budget}-sensitivity",
                     RunConfig(BitsConfig(avg_bits=budget, bit_choices=KNAPSACK_WIDTHS, scorer="sensitivity", allocator="layers"))))
    runs.append(("uniform-2", RunConfig(BitsConfig(bits="2"))))
    # 4/2 and knapsack plans at 3.0 bits store exactly as many bytes as uniform 3-bit: the equal-size comparison
    runs += [(f"mixed-3.0-{s}", RunConfig(BitsConfig(avg_bits=3.0, scorer=s, allocator="layers"))) for s in ("sensitivity", "lim")]
    runs += [("mixed-3.0-random0", RunConfig(BitsConfig(avg_bits=3.0, scorer="random", allocator="layers"), seed=0)),
             ("knapsack-3.0-sensitivity", RunConfig(BitsConfig(avg_bits=3.0, bit_choices=KNAPSACK_WIDTHS, scorer="sensitivity", allocator="layers")))]
    return runs + [("uniform-8", RunConfig(BitsConfig(bits="8")))]


def unpacked_model(folder: Path, model_spec):
    """The float32 model carrying the weights unpacked from the checkpoint's safetensors with plain torch."""
    return load_dequantized(load_model(model_spec)[0], folder)


def kernel_check(quantized, unpacked, window: torch.Tensor) -> dict:
    """Reloaded model (GPTQModel's CPU kernel, bfloat16) vs the unpacked weights in the same dtype."""
    reference = copy.deepcopy(unpacked).to(quantized.dtype)
    with torch.inference_mode():
        a = quantized(input_ids=window[None]).logits.float()
        b = reference(input_ids=window[None]).logits.float()
    nll = [torch.nn.functional.cross_entropy(x[0, :-1], window[1:]).item() for x in (a, b)]
    return {"tokens": window.numel(), "max_abs_logit_diff": (a - b).abs().max().item(),
            "logit_scale": b.abs().max().item(), "nll_reloaded": nll[0], "nll_unpacked": nll[1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("eval/results/mixed_bits"))
    p.add_argument("--model", default=None, help="default: the bundled SmolLM2-135M-Instruct")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--calib-samples", type=int, default=16, help="GPTQ calibration samples of 512 tokens")
    p.add_argument("--ppl-windows", type=int, default=16, help="WikiText-2 test windows of 2048 tokens")
    p.add_argument("--budgets", default="3.25,3.5")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--only", default=None, help="comma list of configuration names to run")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_mixed"), help="checkpoints (deleted after)")
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {"runs": {}}
    root = data_dir(args.data_dir)
    model, tokenizer = load_model(args.model)
    n_layers, params = len(decoder_layers(model)), layer_params(model)
    base = RunConfig(calib_samples=args.calib_samples)
    calib = calibration_samples(tokenizer, calibration_texts(base.calib, root), n_samples=base.calib_samples,
                                seq_len=base.calib_seq_len, seed=base.seed)
    score_calib = calib[:base.score_samples, :base.score_seq_len]
    test_ids = tokenizer(wikitext2_test_text(root), return_tensors="pt").input_ids[0]

    scores_file, costs_file = args.out / "scores.json", args.out / "costs.json"
    if scores_file.exists():
        scores = LayerScores.from_dict(json.loads(scores_file.read_text()))
        costs = [{int(b): c for b, c in row.items()} for row in json.loads(costs_file.read_text())]
    else:
        started = time.perf_counter()
        settings = {"sensitivity": {"bits": 2, "group_size": GROUP_SIZE}}
        scores = score(model, ["alpha", "lim", "zd", "sensitivity"], score_calib, settings)
        results["scoring_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        costs = measured_costs(model, score_calib, KNAPSACK_WIDTHS, GROUP_SIZE, known={2: scores["sensitivity"]})
        results["costs_seconds"] = round(time.perf_counter() - started, 1)
        scores_file.write_text(scores.to_json())
        costs_file.write_text(json.dumps([{str(b): c for b, c in row.items()} for row in costs], indent=1))
    results["spearman_with_sensitivity"] = rank_agreement(scores, "sensitivity")
    results["setup"] = {"model": args.model or "SmolLM2-135M-Instruct (bundled Q4_1 GGUF, dequantized)",
                        "calib": f"{base.calib}: {args.calib_samples} x {base.calib_seq_len} tokens",
                        "score_calib": f"first {base.score_samples} x {base.score_seq_len} of those",
                        "ppl": f"WikiText-2 raw test, first {args.ppl_windows} windows of 2048 tokens",
                        "gptq": {"group_size": GROUP_SIZE, "sym": True, "desc_act": False, "damp_percent": 0.05},
                        "versions": versions()}
    if "unquantized" not in results["runs"]:
        ppl = perplexity(model, test_ids, max_windows=args.ppl_windows)
        results["runs"]["unquantized"] = {"ppl": ppl.ppl, "effective_bits": 16.0, "bits": [16] * n_layers}
    results_file.write_text(json.dumps(results, indent=1))
    del model

    only = set(args.only.split(",")) if args.only else None
    for name, config in configurations([float(b) for b in args.budgets.split(",")], args.seeds):
        if name in results["runs"] or (only and name not in only):
            continue
        print(f"== {name}", flush=True)
        plan = make_plan(n_layers, scores, config.bits, config.seed, params,
                         costs if len(config.bits.bit_choices) > 2 else None)
        folder = args.work / name
        shutil.rmtree(folder, ignore_errors=True)
        stats = quantize_gptq(resolve_model_path(args.model), plan, calib, folder, GPTQConfig())
        quantized, _ = load_gptq(folder)
        unpacked = unpacked_model(folder, args.model)
        started = time.perf_counter()
        # Perplexity of exactly the stored weights, in float32 (4x faster on this CPU than GPTQModel's
        # bfloat16 kernel); the kernel check shows the reloaded model computes the same function.
        ppl = perplexity(unpacked, test_ids, max_windows=args.ppl_windows)
        results["runs"][name] = {
            "ppl": ppl.ppl, "bits": plan.bits, "effective_bits": stats["effective_bits"],
            "size_bytes": stats["size_bytes"], "gptq_seconds": stats["seconds"],
            "ppl_seconds": round(time.perf_counter() - started, 1),
            "kernel_check": kernel_check(quantized, unpacked, test_ids[:512]),
            "config": {"bits": config.bits.bits, "avg_bits": config.bits.avg_bits,
                       "bit_choices": config.bits.bit_choices, "scorer": config.bits.scorer, "seed": config.seed},
        }
        print(json.dumps({k: v for k, v in results["runs"][name].items() if k != "bits"}), flush=True)
        results_file.write_text(json.dumps(results, indent=1))
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
