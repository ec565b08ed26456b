"""`compress` command line, built from the commands' config dataclasses (compress.config.add_arguments): a
setting's default, help and bounds are written once, in its config. Each handler turns the options into that
config and calls the same function as the Python API (compress.api). Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compress import api
from compress.config import Parser, add_arguments, from_args
from compress.errors import CompressError
from compress.outputs import model_slug
from compress.training.distributed import close

# Columns shown in the printed table (all columns are in scores.csv / scores.json).
_TABLE_COLUMNS = ("alpha", "alpha_median", "lim", "bi", "angular_1", "zd", "max_abs_over_std", "sensitivity")
_MODEL_HELP = "hub id, local folder or .gguf file (default: the bundled SmolLM2-135M-Instruct)"


def _model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help=_MODEL_HELP)


def _model_positional(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None, help="model folder (a compress output, GPTQ included), hub id "
                   "or .gguf (default: the bundled SmolLM2-135M-Instruct)")


def _shared(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="folder laid out like shared/data (default: $COMPRESS_DATA_DIR)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model repo's own Python code")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace what --out already holds (default: refuse)")


def _command(sub, name: str, help: str, config, handler, model, out_help: str | None):
    p = sub.add_parser(name, help=help, description=help)
    model(p)
    add_arguments(p, config)
    if out_help is not None:
        p.add_argument("--out", default=None, help=out_help)
        _overwrite(p)
    _shared(p)
    p.set_defaults(handler=handler, config_class=config)
    return p


def build_parser() -> argparse.ArgumentParser:
    from compress import __version__

    parser = Parser(prog="compress", description="Score every decoder layer, then compress layers differently.")
    parser.add_argument("--version", action="version", version=f"compress {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _command(sub, "score", "per-layer scores (alpha, LIM/BI/angular, ZD): table, CSV, JSON, PNG", api.ScoreConfig,
             cmd_score, _model_option, "output folder, new or empty (default: runs/score-<model>)")
    r = _command(sub, "run", "score -> per-layer bits -> GPTQ checkpoint (gptqmodel), ppl before/after; or a "
                 "recipe: compress run RECIPE.yaml", api.RunConfig, cmd_run, _model_option,
                 "output folder, new or empty (default: runs/run-<model>-<bits>); for a recipe, its folder "
                 "(default: runs/<recipe name>), rerun to resume")
    r.add_argument("recipe", nargs="?", default=None, help="a recipe file (pipelines/*.yaml): its stages, eval and "
                   "bench in order, each stage skipped when its folder is up to date")
    _command(sub, "finetune", "fine-tune with heavy-tail-guided layerwise learning rates (LLR) or one LR",
             api.FinetuneConfig, cmd_finetune, _model_option,
             "output folder, new or empty (default: runs/finetune-<model>-<policy>)")
    g = _command(sub, "generate", "greedy generation; --decode-skip skips layers for the new tokens (Unified "
                 "Layer Skipping: the prompt runs through all layers)", api.GenerateConfig, cmd_generate,
                 _model_option, None)
    g.add_argument("prompt", help="the prompt text")
    e = _command(sub, "eval", "lm-eval tasks on local data (or the hub), with recovery against a baseline",
                 api.EvalConfig, cmd_eval, _model_positional, "folder for eval.json and eval.md (default: the "
                 "model folder, or runs/eval-<model>)")
    e.add_argument("--baseline", default=None, help="model to compare against (recovery %%); its eval.json is "
                   "reused when it holds the same tasks and settings")
    b = _command(sub, "bench", "latency, throughput, memory and size (HF backend on CPU or CUDA, or vLLM)",
                 api.BenchConfig, cmd_bench, _model_positional, "folder for bench.json/.md/.png (default: the "
                 "model folder, or runs/bench-<model>)")
    b.add_argument("--baseline", default=None, help="model to compare against (speed-up columns)")
    rp = sub.add_parser("report", help="report.md of output folders: layers, eval with recovery, bench, trade-off")
    rp.add_argument("runs", nargs="+", help="output folders of compress run / eval / bench")
    rp.add_argument("--out", default=None, help="folder for report.md and figures (default: the first RUN)")
    _overwrite(rp)
    rp.add_argument("--debug", action="store_true", help="show tracebacks")
    rp.set_defaults(handler=cmd_report, config_class=None)
    _command(sub, "ppl", "WikiText-2 raw test perplexity (non-overlapping windows, paper style)", api.PplConfig,
             cmd_ppl, _model_option, "also write the result as JSON to this file")
    return parser


def cmd_score(args: argparse.Namespace, config) -> int:
    out = Path(args.out) if args.out else Path("runs") / f"score-{model_slug(args.model)}"
    table = api.score(args.model, config, out=out, data_dir=args.data_dir, trust_remote_code=args.trust_remote_code,
                      overwrite=args.overwrite)
    print(table.table(tuple(c for c in _TABLE_COLUMNS if c in table.columns)))
    rows = [r for r in table.matrices if r.get("scorer") == "zd"]
    if rows:
        top = max(rows, key=lambda r: r["max_abs_over_std"])
        print(f"largest outlier weight: {top['name']} (layer {top['layer']}), max|w|/std = "
              f"{top['max_abs_over_std']:.1f}")
    if "sensitivity" in table.columns:
        from compress.scores import rank_agreement

        rho = rank_agreement(table, "sensitivity")
        print("Spearman rank correlation with measured sensitivity (+1 = same importance order): "
              + ", ".join(f"{k} {v:+.2f}" for k, v in rho.items() if not k.startswith("sensitivity")))
    print(f"wrote {out}/scores.json, scores.csv, scores.png, settings.json")
    return 0


def cmd_run(args: argparse.Namespace, config) -> int:
    if args.recipe is not None:
        return _cmd_recipe(args, config)
    bits, depth = config.bits, config.depth
    label = bits.bits if bits.bits != "mixed" else f"mixed{bits.avg_bits:g}-" + (
        "units" if bits.per_unit else bits.scorer)
    if depth.skip:
        label = f"skip{depth.skip:g}-{depth.skip_policy}-{label}"
    out = Path(args.out) if args.out else Path("runs") / f"run-{model_slug(args.model)}-{label}"
    result = api.run(args.model, config, out=out, data_dir=args.data_dir, overwrite=args.overwrite)
    plan, stats = result.plan, result.stats
    if stats["method"] == "dry-run":
        print(stats["table"])
        print(f"dry run: decoder layers {stats['decoder_bytes'] / 2**20:.1f} MiB at {stats['effective_bits']:.3f} "
              f"stored bits per weight (base group size {stats['group_size']}); checkpoint ~{stats['size_bytes'] / 2**20:.1f}"
              f" MiB with the embeddings and norms in fp16\nloads in: {', '.join(stats['serving'])}\nnothing "
              f"quantized or written (drop --dry-run to run it into {out})")
        return 0
    from compress.pipeline.dry_run import score_column, unit_columns

    print(plan.table(score_column(plan, result.scores, result.skip_scores, bits.scorer) | unit_columns(plan)))
    layers = stats["layers"]
    if layers["removed"]:
        print(f"removed {len(layers['removed'])} of {layers['before']} layers: {layers['removed']}")
    if stats["method"] in ("gptq", "opt-rtn"):
        rounder = {"gptq": "GPTQ", "auto-round iters=0": "opt-RTN (auto-round)"}.get(
            stats.get("rounder", stats["method"]), f"SignRound ({stats.get('rounder')})")
        print(f"stored bits per decoder weight {stats['effective_bits']:.3f} (codes, scales, zeros), checkpoint "
              f"{stats['size_bytes'] / 2**20:.1f} MiB, {rounder} {stats['seconds']:.0f} s"
              + (f", allocation {sum(stats['allocation']['seconds'].values()):.0f} s" if "allocation" in stats else ""))
        if stats.get("rounding_choice", {}).get("kl"):
            kl = stats["rounding_choice"]["kl"]
            print(f"rounding auto -> {stats['method']}: KL on held-out calibration rows "
                  + ", ".join(f"{r} {v:.4f}" for r, v in kl.items()))
        if stats.get("allocation", {}).get("checked"):
            checked = stats["allocation"]["checked"]
            print(f"plan -> {stats['allocation']['chosen']}: KL on held-out calibration rows "
                  + ", ".join(f"{n} {v:.4f}" for n, v in checked.items()))
    elif stats["method"] == "gguf":
        types = ", ".join(f"{t} {n / 1e6:.1f}M" for t, n in stats["types"].items())
        print(f"{stats['file']}: stored bits per decoder weight {stats['effective_bits']:.3f} ({types} decoder "
              f"weights), {stats['size_bytes'] / 2**20:.1f} MiB, re-quantized from {stats['source']}")
    else:
        print(f"unquantized ({stats['dtype']}), size {stats['size_bytes'] / 2**20:.1f} MiB")
    if "ppl_after" in stats:
        before, after = stats["ppl_before"], stats["ppl_after"]
        print(f"WikiText-2 perplexity ({after['windows']} windows of {after['seq_len']}): {before['ppl']:.3f} "
              f"before, {after['ppl']:.3f} after")
    print(f"wrote {out}")
    return 0


def _cmd_recipe(args: argparse.Namespace, config) -> int:
    if config != api.RunConfig() or args.model is not None or args.overwrite:
        raise CompressError(f"{args.recipe} carries the settings: give the recipe with --out (and --data-dir) only, "
                            f"or write the settings into it")
    out = Path(args.out) if args.out else Path("runs") / Path(args.recipe).stem
    result = api.recipe(args.recipe, out=out, data_dir=args.data_dir)
    ran = sum(s["ran"] for s in result.stages)
    if not result.rank:  # else another process of accelerate launch: the main one reports
        print(f"wrote {out}: {len(result.stages)} stages ({ran} run, {len(result.stages) - ran} up to date), "
              f"recipe.yaml, {result.report.name}")
    return 0


def cmd_finetune(args: argparse.Namespace, config) -> int:
    out = Path(args.out) if args.out else Path("runs") / f"finetune-{model_slug(args.model)}-{config.lr_policy}"
    result = api.finetune(args.model, config, out=out, data_dir=args.data_dir, overwrite=args.overwrite)
    if result.rank:  # data-parallel under accelerate launch: the main process reports
        return 0
    (first_step, first), (last_step, last) = result.eval[0], result.eval[-1]
    print(f"eval loss (WikiText-2 test, {config.eval_windows} x {config.seq_len} tokens): {first:.4f} at step "
          f"{first_step}, {last:.4f} at step {last_step}; {result.seconds:.0f} s")
    print(f"wrote {out} (checkpoint, lr_log.json, lr_heatmap.png, train_log.json)")
    return 0


def cmd_generate(args: argparse.Namespace, config) -> int:
    result = api.generate(args.model, config, prompt=args.prompt, trust_remote_code=args.trust_remote_code)
    print(result.text)
    skipped = f", layers {result.skipped} skipped while decoding" if result.skipped else ""
    print(f"{result.new_tokens} new tokens in {result.seconds:.2f} s = {result.tokens_per_s:.1f} "
          f"tokens/s{skipped}", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace, config) -> int:
    from compress.evaluation.lmeval import markdown

    result = api.evaluate(args.model, config, baseline=args.baseline, data_dir=args.data_dir, out=args.out,
                          trust_remote_code=args.trust_remote_code, overwrite=args.overwrite)
    print(markdown(result.to_dict()))
    return 0


def cmd_bench(args: argparse.Namespace, config) -> int:
    from compress.benchmark.tables import markdown

    result = api.bench(args.model, config, baseline=args.baseline, data_dir=args.data_dir, out=args.out,
                       trust_remote_code=args.trust_remote_code, overwrite=args.overwrite)
    print(markdown(result.to_dict()))
    return 0


def cmd_report(args: argparse.Namespace, config) -> int:
    print(f"wrote {api.report(args.runs, out=args.out, overwrite=args.overwrite)}")
    return 0


def cmd_ppl(args: argparse.Namespace, config) -> int:
    from compress.outputs import check_file_out, write_file
    from compress.provenance import versions

    if args.out:
        check_file_out(Path(args.out), args.overwrite)
    result = api.ppl(args.model, config, data_dir=args.data_dir, trust_remote_code=args.trust_remote_code)
    print(result.summary())
    if args.out:
        out = Path(args.out)
        record = {"model": args.model or api.BUNDLED, "data": "WikiText-2 raw test", **result.to_dict(),
                  "versions": versions()}
        write_file(out, json.dumps(record, indent=1) + "\n", args.overwrite)
    return 0


# Import-time warnings of optional libraries that say nothing about the user's run (torchao, pulled in by
# gptqmodel, warns about CUDA-only extensions on CPU machines; torch about an Enum registration).
_QUIET_LOGGERS = ("torchao", "torch.utils._pytree", "lm_eval", "lm-eval")
# Library chatter kept off the terminal unless --debug: transformers' warnings and load reports (compress checks
# the load report itself and says in one line what is wrong) and weight-loading/-writing bars.
_QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_VERBOSITY": "error",
              "DATASETS_VERBOSITY": "error",
              "TF_CPP_MIN_LOG_LEVEL": "3"}


def quiet_libraries(debug: bool) -> None:
    """Keep library noise out of the terminal (before those libraries are imported); --debug keeps all of it."""
    import logging
    import os

    if debug:
        return
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # imported already (the API in a notebook, tests): the env came too late
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """The CLI: every CompressError (bad option, bad file, bad setting) is one line on stderr and exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    quiet_libraries(debug)
    try:
        args = build_parser().parse_args(argv)
        config = from_args(args.config_class, args) if args.config_class else None
        code = args.handler(args, config)
        close()  # under accelerate launch: every process leaves the process group before exiting
        return code
    except CompressError as e:
        if debug:
            raise
        print(f"compress: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("compress: interrupted", file=sys.stderr)
        return 130
    finally:  # a failed command gives up its --out (lock file included) at once, not at interpreter exit
        from compress.outputs import release_all

        release_all()


if __name__ == "__main__":
    sys.exit(main())
