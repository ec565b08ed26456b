"""`compress` command line. Heavy imports (torch, transformers) happen inside the handlers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compress.errors import CompressError
from compress.model import model_slug

# Columns shown in the printed table (all columns are in scores.csv / scores.json).
_TABLE_COLUMNS = ("alpha", "alpha_median", "lim", "bi", "angular_1", "zd", "max_abs_over_std", "sensitivity")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="hub id, local folder or .gguf file (default: the bundled SmolLM2-135M-Instruct)")
    _shared(p)


def _shared(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder laid out like shared/data (default: $COMPRESS_DATA_DIR)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own Python code")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


_positive_int, _count = _at_least(1), _at_least(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compress", description="Score every decoder layer, then compress "
                                     "layers differently.")
    from compress import __version__

    parser.add_argument("--version", action="version", version=f"compress {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="per-layer scores (alpha, LIM/BI/angular, ZD): table, CSV, JSON, PNG")
    _common(s)
    s.add_argument("--scorers", default="alpha,lim,zd",
                   help="comma list of alpha, lim, zd, sensitivity (aliases: spectral, embedding, bi, angular, "
                   "outliers, kl); sensitivity runs L+1 forward passes per batch")
    s.add_argument("--out", default=None, help="output folder (default: runs/score-<model>)")
    s.add_argument("--calib", default="wikitext2-valid",
                   help="calibration text: wikitext2-valid, boolq-passages, or a .txt/.jsonl file")
    s.add_argument("--calib-samples", type=_positive_int, default=16)
    s.add_argument("--calib-seq-len", type=_positive_int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--angular-span", type=_positive_int, default=4, help="angular distance for spans 1..N")
    s.add_argument("--zd-threshold", type=float, default=1.0, help="|z| above this counts as an outlier weight")
    s.add_argument("--alpha-precision", choices=("float32", "float64"), default="float32")
    s.add_argument("--sensitivity-bits", type=int, choices=(2, 3, 4, 8), default=2,
                   help="width each layer is tried at by the sensitivity scorer")
    s.set_defaults(handler=cmd_score)

    r = sub.add_parser("run", help="score -> per-layer bits -> GPTQ checkpoint (gptqmodel), ppl before/after")
    _common(r)
    r.add_argument("--bits", default="mixed", help="mixed, or one width (2, 3, 4, 8) for every layer, or 16 for "
                   "no quantization (e.g. only --skip)")
    r.add_argument("--avg-bits", type=float, default=3.25, help="mixed: average bits over decoder layers")
    r.add_argument("--bit-choices", default="4,2", help="mixed: widths; two use the LayerwiseQuant count rule, "
                   "more the exact budgeted allocation")
    r.add_argument("--scorer", default="lim", help="importance order: lim, bi, angular, zd, alpha, sensitivity, "
                   "random")
    r.add_argument("--plan", default=None, help="use this (hand-edited) plan.json instead of a policy")
    r.add_argument("--out", default=None, help="output folder, must not exist (default: runs/run-<model>-<bits>)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--calib", default="wikitext2-valid")
    r.add_argument("--calib-samples", type=_positive_int, default=64)
    r.add_argument("--calib-seq-len", type=_positive_int, default=512)
    r.add_argument("--max-windows", type=_count, default=4,
                   help="WikiText-2 test windows for perplexity before/after (0: skip the measurement)")
    r.add_argument("--group-size", type=int, choices=(32, 64, 128), default=None)
    r.add_argument("--skip", type=float, default=0.0, help="remove this fraction of the decoder layers first "
                   "(round(skip * L) layers), then plan bits on the rest")
    r.add_argument("--skip-policy", default="bi", help="which layers --skip removes: bi (ShortGPT), angular "
                   "(Gromov et al. contiguous block), uls (evenly spaced), greedy (measured), random")
    r.add_argument("--skip-layers", default=None, help="remove exactly these layers instead: comma list, e.g. 3,5,7")
    r.set_defaults(handler=cmd_run)

    f = sub.add_parser("finetune", help="fine-tune with heavy-tail-guided layerwise learning rates (LLR) or one LR")
    _common(f)
    f.add_argument("--data", default="wikitext2", help="training text: wikitext2 (its valid split; the raw test "
                   "split is held out for the eval loss), boolq-passages, or a .txt/.jsonl file")
    f.add_argument("--steps", type=int, default=200)
    f.add_argument("--lr", type=float, default=5e-4, help="base LR η (LLR groups get η·[r_min, r_max])")
    f.add_argument("--lr-policy", default="llr", help="llr (α mapped onto [1, 5]·η), tempbalance ([0.5, 1.5]), "
                   "sqrt, step (by rank), uniform")
    f.add_argument("--lr-ratio", default=None, help="r_min,r_max overriding the policy's, e.g. 1,3")
    f.add_argument("--optimizer", default="adamw", help="adamw, or muon (Muon for hidden matrices + AdamW)")
    f.add_argument("--batch-size", type=int, default=4)
    f.add_argument("--seq-len", type=int, default=256)
    f.add_argument("--warmup", type=float, default=0.1, help="warm-up, fraction of the steps")
    f.add_argument("--eval-every", type=int, default=25)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--lora", type=int, default=0, metavar="RANK", help="train LoRA adapters of this rank (peft) "
                   "on every Linear instead of the weights, then merge them (healing a reduced model)")
    f.add_argument("--qlora", action="store_true", help="LoRA on a bitsandbytes 4-bit NF4 base (rank 16 unless "
                   "--lora says); saves the adapter")
    f.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    f.add_argument("--out", default=None, help="output folder, must not exist (default: runs/finetune-<model>-<policy>)")
    f.set_defaults(handler=cmd_finetune)

    g = sub.add_parser("generate", help="greedy generation; --decode-skip skips layers for the new tokens "
                       "(Unified Layer Skipping: the prompt runs through all layers)")
    _common(g)
    g.add_argument("prompt", help="the prompt text")
    g.add_argument("--max-new-tokens", type=_positive_int, default=64)
    g.add_argument("--decode-skip", type=float, default=0.0, help="fraction of layers the new tokens skip, "
                   "evenly spaced, first and last kept (ULS); their KV entries copy the nearest kept layer below")
    g.add_argument("--skip-layers", default=None, help="skip exactly these layers while decoding: comma list")
    g.set_defaults(handler=cmd_generate)

    e = sub.add_parser("eval", help="lm-eval tasks on local data (or the hub), with recovery against a baseline")
    e.add_argument("model", nargs="?", default=None, help="model folder (a compress output, GPTQ included), hub "
                   "id or .gguf (default: the bundled SmolLM2-135M-Instruct)")
    e.add_argument("--baseline", default=None, help="model to compare against (recovery %%); its eval.json is "
                   "reused when it holds the same tasks and settings")
    e.add_argument("--tasks", default=None, help="comma list (default: wikitext, arc_easy, arc_challenge, piqa, "
                   "winogrande, boolq, lambada_openai, hellaswag_approx; hellaswag on the hub)")
    e.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--max-length", type=int, default=None, help="tokens per window (default: the model's context; "
                   "e.g. 2048 makes wikitext's rolling windows 4x cheaper on CPU for SmolLM2)")
    e.add_argument("--out", default=None, help="folder for eval.json and eval.md (default: the model folder, or "
                   "runs/eval-<model>)")
    e.add_argument("--rerun", action="store_true", help="evaluate every task again, even those the model folder's "
                   "eval.json already holds under the same --limit/--max-length/data dir (reused by default)")
    _shared(e)
    e.set_defaults(handler=cmd_eval)

    b = sub.add_parser("bench", help="latency, throughput, memory and size (HF backend on CPU or CUDA, or vLLM)")
    b.add_argument("model", nargs="?", default=None, help="model folder, hub id or .gguf (default: the bundled "
                   "SmolLM2-135M-Instruct)")
    b.add_argument("--baseline", default=None, help="model to compare against (speed-up columns)")
    b.add_argument("--input-len", type=int, default=512, help="prompt tokens")
    b.add_argument("--output-len", type=int, default=128, help="new tokens per request")
    b.add_argument("--batch-sizes", default="1,8", help="comma list")
    b.add_argument("--repeats", type=int, default=10, help="timed runs per batch size (after --warmup)")
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    b.add_argument("--backend", default="hf", help="hf (transformers generate, CPU or CUDA) or vllm (vLLM's "
                   "offline engine, as `vllm bench latency`; needs vllm and a CUDA GPU)")
    b.add_argument("--out", default=None, help="folder for bench.json/.md/.png (default: the model folder, or "
                   "runs/bench-<model>)")
    _shared(b)
    b.set_defaults(handler=cmd_bench)

    rp = sub.add_parser("report", help="report.md of output folders: layers, eval with recovery, bench, trade-off")
    rp.add_argument("runs", nargs="+", help="output folders of compress run / eval / bench")
    rp.add_argument("--out", default=None, help="folder for report.md and figures (default: the first RUN)")
    rp.add_argument("--debug", action="store_true", help="show tracebacks")
    rp.set_defaults(handler=cmd_report)

    p = sub.add_parser("ppl", help="WikiText-2 raw test perplexity (non-overlapping windows, paper style)")
    _common(p)
    p.add_argument("--seq-len", type=_positive_int, default=None, help="window length (default 2048, capped at "
                   "the model's context)")
    p.add_argument("--max-windows", type=_positive_int, default=None, help="score only the first N windows")
    p.add_argument("--batch-size", type=_positive_int, default=1)
    p.add_argument("--out", default=None, help="also write the result as JSON to this file")
    p.set_defaults(handler=cmd_ppl)
    return parser


def cmd_score(args: argparse.Namespace) -> int:
    from compress import scorers as registry
    from compress.api import score_model

    names = registry.resolve(args.scorers)  # fail on a bad name before anything slow
    settings = {}
    if "alpha" in names:
        settings["alpha"] = {"precision": args.alpha_precision}
    if "lim" in names:
        settings["lim"] = {"max_span": args.angular_span}
    if "zd" in names:
        settings["zd"] = {"threshold": args.zd_threshold}
    if "sensitivity" in names:
        settings["sensitivity"] = {"bits": args.sensitivity_bits}
    out = Path(args.out) if args.out else Path("runs") / f"score-{model_slug(args.model)}"
    table = score_model(args.model, scorers=names, out=out, data_dir=args.data_dir, calib=args.calib,
                        calib_samples=args.calib_samples, calib_seq_len=args.calib_seq_len, seed=args.seed,
                        settings=settings, trust_remote_code=args.trust_remote_code)
    print(table.table(tuple(c for c in _TABLE_COLUMNS if c in table.columns)))
    _print_outlier(table)
    if "sensitivity" in table.columns:
        from compress.scores import rank_agreement

        rho = rank_agreement(table, "sensitivity")
        print("Spearman rank correlation with measured sensitivity (+1 = same importance order): "
              + ", ".join(f"{k} {v:+.2f}" for k, v in rho.items() if not k.startswith("sensitivity")))
    print(f"wrote {out}/scores.json, scores.csv, scores.png, settings.json")
    return 0


def _print_outlier(table) -> None:
    rows = [r for r in table.matrices if r.get("scorer") == "zd"]
    if rows:
        top = max(rows, key=lambda r: r["max_abs_over_std"])
        print(f"largest outlier weight: {top['name']} (layer {top['layer']}), max|w|/std = "
              f"{top['max_abs_over_std']:.1f}")


def cmd_run(args: argparse.Namespace) -> int:
    from compress.pipeline import RunConfig, run

    try:
        choices = tuple(int(b) for b in args.bit_choices.split(","))
    except ValueError as e:
        raise CompressError(f"--bit-choices must be comma-separated widths, got {args.bit_choices!r}") from e
    skip_layers = _index_list(args.skip_layers) if args.skip_layers else ()
    config = RunConfig(bits=args.bits, avg_bits=args.avg_bits, bit_choices=choices, scorer=args.scorer,
                       seed=args.seed, calib=args.calib, calib_samples=args.calib_samples,
                       calib_seq_len=args.calib_seq_len, ppl_windows=args.max_windows, group_size=args.group_size,
                       skip=args.skip, skip_layers=skip_layers, skip_policy=args.skip_policy)
    label = args.bits if args.bits != "mixed" else f"mixed{args.avg_bits:g}-{args.scorer}"
    if args.skip:
        label = f"skip{args.skip:g}-{args.skip_policy}-{label}"
    out = Path(args.out) if args.out else Path("runs") / f"run-{model_slug(args.model)}-{label}"
    result = run(args.model, out, config, data_dir=args.data_dir, plan_file=args.plan)
    plan, scores, stats = result["plan"], result["scores"], result["stats"]
    print(plan.table(_score_column(plan, scores, result["skip_scores"], args.scorer)))
    layers = stats["layers"]
    if layers["removed"]:
        print(f"removed {len(layers['removed'])} of {layers['before']} layers: {layers['removed']}")
    if stats["method"] == "gptq":
        print(f"effective bits per weight {stats['effective_bits']:.3f} (group size {stats['group_size']}), "
              f"size {stats['size_bytes'] / 2**20:.1f} MiB, GPTQ {stats['seconds']:.0f} s")
    else:
        print(f"unquantized ({stats['dtype']}), size {stats['size_bytes'] / 2**20:.1f} MiB")
    if "ppl_after" in stats:
        before, after = stats["ppl_before"], stats["ppl_after"]
        print(f"WikiText-2 perplexity ({after['windows']} windows of {after['seq_len']}): {before['ppl']:.3f} "
              f"before, {after['ppl']:.3f} after")
    print(f"wrote {out}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from compress.finetune import FinetuneConfig, run_finetune

    ratio = (None, None)
    if args.lr_ratio:
        try:
            ratio = tuple(float(x) for x in args.lr_ratio.split(","))
        except ValueError:
            ratio = ()
        if len(ratio) != 2:
            raise CompressError(f"--lr-ratio must be r_min,r_max, got {args.lr_ratio!r}")
    config = FinetuneConfig(data=args.data, steps=args.steps, lr=args.lr, lr_policy=args.lr_policy,
                            r_min=ratio[0], r_max=ratio[1], optimizer=args.optimizer, batch_size=args.batch_size,
                            seq_len=args.seq_len, warmup=args.warmup, eval_every=args.eval_every, seed=args.seed,
                            lora_rank=args.lora, qlora=args.qlora)
    out = Path(args.out) if args.out else Path("runs") / f"finetune-{model_slug(args.model)}-{args.lr_policy}"
    result = run_finetune(args.model, out, config, data_dir=args.data_dir, device=args.device)
    (first_step, first), (last_step, last) = result["eval"][0], result["eval"][-1]
    print(f"eval loss (WikiText-2 test, {config.eval_windows} x {config.seq_len} tokens): {first:.4f} at step "
          f"{first_step}, {last:.4f} at step {last_step}; {result['seconds']:.0f} s")
    print(f"wrote {out} (checkpoint, lr_log.json, lr_heatmap.png, train_log.json)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from compress.api import generate

    skip_layers = _index_list(args.skip_layers) if args.skip_layers else ()
    result = generate(args.model, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                      decode_skip=args.decode_skip, skip_layers=skip_layers,
                      trust_remote_code=args.trust_remote_code)
    print(result["text"])
    skipped = f", layers {result['skipped']} skipped while decoding" if result["skipped"] else ""
    print(f"{result['new_tokens']} new tokens in {result['seconds']:.2f} s = {result['tokens_per_s']:.1f} "
          f"tokens/s{skipped}", file=sys.stderr)
    return 0


def _index_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(i) for i in text.split(","))
    except ValueError as e:
        raise CompressError(f"--skip-layers must be comma-separated layer indices, got {text!r}") from e


def _score_column(plan, scores, skip_scores, scorer: str) -> dict:
    """The score to print beside the plan (indexed by the plan's rows = the original layers): the one the
    removal used, else, when nothing was removed, the one the bit plan used."""
    if skip_scores is not None:
        return {"bi": skip_scores["bi"]}
    if scores is None or plan.skipped:
        return {}
    column = {"lim": "lim", "bi": "bi", "angular": "angular_1"}.get(scorer, scorer)
    return {column: scores[column]} if column in scores.columns else {}


def cmd_eval(args: argparse.Namespace) -> int:
    from compress.lmeval import EvalConfig, markdown, run_eval

    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks is not None else ()
    if args.tasks is not None and not tasks:
        raise CompressError("--tasks is empty: give a comma list of task names")
    config = EvalConfig(tasks=tasks, limit=args.limit, batch_size=args.batch_size, max_length=args.max_length)
    result = run_eval(args.model, config, baseline=args.baseline, data_dir=args.data_dir,
                      out=Path(args.out) if args.out else None, trust_remote_code=args.trust_remote_code,
                      rerun=args.rerun)
    print(markdown(result))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from compress.bench import BenchConfig
    from compress.bench_report import markdown, run_bench

    try:
        batches = tuple(int(b) for b in args.batch_sizes.split(","))
    except ValueError as e:
        raise CompressError(f"--batch-sizes must be a comma list of integers, got {args.batch_sizes!r}") from e
    config = BenchConfig(input_len=args.input_len, output_len=args.output_len, batches=batches,
                         repeats=args.repeats, warmup=args.warmup, device=args.device,
                         backend=args.backend)
    result = run_bench(args.model, config, baseline=args.baseline, data_dir=args.data_dir,
                       out=Path(args.out) if args.out else None, trust_remote_code=args.trust_remote_code)
    print(markdown(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from compress.report import write_report

    path = write_report([Path(r) for r in args.runs], Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0


def cmd_ppl(args: argparse.Namespace) -> int:
    from compress.api import wikitext2_ppl

    if args.out:
        from compress.outputs import check_writable

        check_writable(Path(args.out).parent)
    result = wikitext2_ppl(args.model, seq_len=args.seq_len, max_windows=args.max_windows,
                           batch_size=args.batch_size, data_dir=args.data_dir,
                           trust_remote_code=args.trust_remote_code)
    print(result.summary())
    if args.out:
        from compress.outputs import write_folder

        from compress.api import versions

        out = Path(args.out)
        record = {"model": args.model or "SmolLM2-135M-Instruct (bundled default)", "data": "WikiText-2 raw test",
                  **result.to_dict(), "versions": versions()}
        write_folder(out.parent, {out.name: json.dumps(record, indent=1) + "\n"})
    return 0


# Import-time warnings of optional libraries that say nothing about the user's run (torchao, pulled in by
# gptqmodel, warns about CUDA-only extensions on CPU machines; torch about an Enum registration).
_QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def main(argv: list[str] | None = None) -> int:
    import logging

    args = build_parser().parse_args(argv)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return args.handler(args)
    except CompressError as e:
        if args.debug:
            raise
        print(f"compress: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("compress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
