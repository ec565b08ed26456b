"""`compress run`: [remove layers] -> score -> plan -> GPTQ (or GGUF for --target llama.cpp) -> one output folder.

With --skip, the layers chosen by --skip-policy are removed first (compress.depth.remove) and the bit plan is
made on the remaining layers; --target restricts the plan to what that engine loads (compress.serving). The
folder is an ordinary checkpoint: GPTQ (config.json with quantization_config and `dynamic`, safetensors,
tokenizer), model.gguf, or with --bits 16 the unquantized model. Beside it: plan.json (one row per layer of the
ORIGINAL model: removed rows skip = true), scores.json (indexed by the saved model's layers), skip_scores.json
(original indices), settings.json and stats.json, so a run can be read and repeated (`--plan plan.json`).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path

from compress.bits.planner import ORDER_COLUMNS, BitsConfig, make_plan
from compress.config import check_settings, setting
from compress.depth.choose import DepthConfig
from compress.errors import CompressError
from compress.plan import Plan
from compress.quant.gptq import GPTQConfig
from compress.scores import LayerScores
from compress.serving.targets import TARGETS


@dataclass(frozen=True)
class RunConfig:
    """`compress run`: the bit budget, the layers removed, GPTQ's settings, calibration and measurement."""

    bits: BitsConfig = BitsConfig()
    depth: DepthConfig = DepthConfig()
    gptq: GPTQConfig = GPTQConfig()
    plan: str | None = setting(None, "use this (hand-edited) plan.json instead of the bit and removal rules")
    seed: int = setting(0, "seed of the calibration sample and of the random order")
    calib: str = setting("wikitext2-valid", "calibration text: wikitext2-valid, boolq-passages, or a .txt/.jsonl "
                         "file")
    calib_samples: int = setting(64, "GPTQ calibration samples (64 x 512 tokens: ~10 min for SmolLM2-135M on 2 "
                                 "CPU cores)", minimum=1)
    calib_seq_len: int = setting(512, "tokens per calibration sample", minimum=1)
    score_samples: int = setting(8, "samples the scorers (and measured knapsack costs) see", flag=None, minimum=1)
    score_seq_len: int = setting(256, "tokens per scorer sample (sensitivity costs (L + 1) forwards a width)",
                                 flag=None, minimum=1)
    unit_rows: int = setting(36, "calibration samples the per-unit allocator sees (4 held out for its KL, 32 for "
                             "the Hessians, 16 of those for the gradients)", flag=None, minimum=6)
    ppl_windows: int | None = setting(4, "WikiText-2 test windows of 2048 tokens for perplexity before/after "
                                      "(0: skip the measurement; none: all)", flag="--max-windows", minimum=0)
    dry_run: bool = setting(False, "print the plan (bits and MiB per layer, effective bits), what the run needs "
                            "and which engines load the result; quantize and write nothing")
    target: str = setting("gptqmodel", "the engine that must load the output; the plan is restricted to what it "
                          "serves: gptqmodel (every option), vllm (GPU: 4/8-bit symmetric), vllm-cpu (4-bit "
                          "symmetric), transformers (one option for the whole checkpoint), llama.cpp (writes "
                          "model.gguf: q4_0/q4_1/q5_0/q5_1/q8_0 per tensor); tables: compress/serving/targets.py; "
                          "--avg-bits left at 3.25 becomes 5.5 for llama.cpp, 4.5 for vllm and vllm-cpu",
                          choices=tuple(TARGETS))

    def __post_init__(self) -> None:
        check_settings(self)
        from compress.serving.restrict import restrict_bits
        object.__setattr__(self, "bits", restrict_bits(self.bits, TARGETS[self.target], self.gptq.desc_act))
        if self.plan and self.depth.removes:
            raise CompressError("plan (--plan) already says which layers to remove (its skip column): drop "
                                "skip (--skip) / skip_layers (--skip-layers)")


@dataclass(frozen=True)
class RunResult:
    """What `compress run` made: the plan over the original layers, the scores behind it, the stats."""

    out: Path
    plan: Plan
    stats: dict  # stats.json: method, effective_bits, size_bytes, seconds, layers, ppl_before/after, ...
    scores: LayerScores | None = None  # the scores the bit plan used (indices of the saved model)
    skip_scores: LayerScores | None = None  # the scores the removal used (original indices)
    costs: list | dict | None = field(default=None, repr=False)  # measured knapsack costs (per layer or unit)


def run(model: str | None, config: RunConfig = RunConfig(), out: str | Path = "runs/run", data_dir=None,
        progress: bool = True, overwrite: bool = False) -> RunResult:
    """[remove layers] -> score -> plan -> GPTQ (or save) -> perplexity before/after, into `out`."""
    from compress.data import calibration_samples, calibration_texts, wikitext2_test_text
    from compress.data import data_dir as resolve_data_dir
    from compress.evaluation.perplexity import perplexity
    from compress.model import check_model_spec, layer_count, load_model
    from compress.outputs import check_writable, claim_output, staged_folder
    from compress.pipeline.dry_run import run_preflight
    from compress.pipeline.serving import check_target, run_gguf, served_options
    from compress.pipeline.records import write_records

    check_model_spec(model)
    out = Path(out)
    if config.dry_run:
        check_writable(out)
    else:
        claim_output(out, overwrite=overwrite, source=model)
    root = resolve_data_dir(data_dir)
    measure = config.ppl_windows != 0 and not config.dry_run  # perplexity before/after (0: skip)
    texts = calibration_texts(config.calib, root)
    test_text = wikitext2_test_text(root) if measure else None
    given = _read_plan(config.plan)
    n_layers = layer_count(model)  # from the config: layer-index errors come before the weights load
    if given is not None:
        given.check_layers(n_layers)
    else:
        _skip_count(config.depth, n_layers)
    check_target(model, config, given)  # the target's source and budget, before the weights load
    run_preflight(model, config, None if config.dry_run else out)
    fp_model, tokenizer = load_model(model)
    calib = calibration_samples(tokenizer, texts, n_samples=config.calib_samples, seq_len=config.calib_seq_len,
                                seed=config.seed)
    test_ids = tokenizer(test_text, return_tensors="pt").input_ids[0] if measure else None
    before = perplexity(fp_model, test_ids, max_windows=config.ppl_windows, progress=progress) if measure else None
    decided = _decide(fp_model, config, given, calib, progress)
    unit_options = served_options(fp_model, config, decided.plan)
    if config.dry_run:
        return _dry_run(fp_model, config, decided, out, n_layers, unit_options)
    if TARGETS[config.target].fmt == "gguf":
        stats = run_gguf(model, fp_model, config, decided, unit_options, out, (test_ids, before), n_layers, progress)
        return RunResult(out, decided.plan, stats, decided.scores, decided.skip_scores, decided.costs)
    quantize = decided.plan.reduced().bits != (16,) * len(decided.plan.kept)
    if quantize:
        from compress.bits.rounding import resolve_rounding

        gptq, rounding_choice = resolve_rounding(fp_model, config.gptq, decided.plan, decided.allocation, calib)
    else:
        gptq, rounding_choice = config.gptq, None

    with staged_folder(out) as tmp:
        if quantize:
            source = _gptq_source(model, fp_model, tokenizer, decided.plan, tmp)
            fp_model = None  # the only reference: GPTQModel loads its own copy, so one model is in memory
            gc.collect()
            stats, final = _quantize(source, decided.plan, calib, tmp, gptq, measure)
        else:
            stats, final = _save_unquantized(fp_model, tokenizer, tmp), fp_model
        if measure:
            after = perplexity(final, test_ids, max_windows=config.ppl_windows, progress=progress)
            stats.update(ppl_before=before.to_dict(), ppl_after=after.to_dict())
        stats["layers"] = {"before": n_layers, "after": len(decided.plan.kept), "removed": list(decided.plan.skipped)}
        if decided.trace:
            stats["greedy_trace"] = decided.trace
        if decided.allocation:
            stats["allocation"] = decided.allocation
        if rounding_choice:
            stats["rounding_choice"] = rounding_choice
        write_records(tmp, model, config, decided, stats, quantize)
    return RunResult(out, decided.plan, stats, decided.scores, decided.skip_scores, decided.costs)


@dataclass(frozen=True)
class _Decision:
    plan: Plan  # over the original layers
    scores: LayerScores | None
    skip_scores: LayerScores | None
    costs: list | dict | None  # per layer {bits: KL}, or per unit {option: Fisher cost}
    trace: list
    allocation: dict | None = None  # the per-unit allocator's stats (bytes, seconds, KL per round)


def _dry_run(fp_model, config: RunConfig, decided: _Decision, out: Path, n_layers: int, options: dict) -> RunResult:
    """The plan with its bytes and serving paths, nothing quantized or written (stats["method"] = "dry-run")."""
    from compress.model import layer_params
    from compress.pipeline.dry_run import dry_run_text

    other = sum(p.numel() for p in fp_model.parameters()) - sum(layer_params(fp_model))
    table, stats = dry_run_text(decided.plan, options, other, TARGETS[config.target].fmt)
    stats.update(table=table, target=config.target, layers={"before": n_layers, "after": len(decided.plan.kept),
                                                            "removed": list(decided.plan.skipped)})
    return RunResult(out, decided.plan, stats, decided.scores, decided.skip_scores, decided.costs)


def _read_plan(path: str | None) -> Plan | None:
    if path is None:
        return None
    from compress.files import read_text

    return Plan.from_json(read_text(path, "plan file"), source=f"plan file {path}")


def _decide(fp_model, config: RunConfig, given: Plan | None, calib, progress: bool) -> _Decision:
    """Which layers go (chosen before anything changes, then removed from `fp_model`), then the bits of the
    layers that remain."""
    from compress.depth.remove import remove_layers
    from compress.model import decoder_layers, layer_params
    from compress.quant.gptq import resolve_group_size
    from compress.scorers import score
    from compress.scorers.sensitivity import measured_costs

    score_calib = calib[:config.score_samples, :config.score_seq_len]
    skip_plan, choice = (given, None) if given is not None else _skip_plan(fp_model, config, score_calib, progress)
    if skip_plan.skipped:
        remove_layers(fp_model, skip_plan.skipped)
    if given is not None:
        return _Decision(given, None, None, None, [])
    bits = config.bits
    kept_layers = len(decoder_layers(fp_model))
    if bits.per_unit:
        return _unit_decision(fp_model, config, skip_plan, choice, calib, progress)
    scorer = bits.order_scorer
    scores = costs = None
    if scorer is not None:
        group_size = resolve_group_size(fp_model, config.gptq)
        # sensitivity is measured at the plan's low width and the group size GPTQ will use; angular spans
        # cannot exceed the (possibly reduced) depth
        options = {"sensitivity": {"bits": bits.bit_choices[0], "group_size": group_size, "sym": config.gptq.sym},
                   "lim": {"max_span": min(4, kept_layers)}}
        scores = score(fp_model, [scorer], score_calib, {k: v for k, v in options.items() if k == scorer},
                       progress=progress)
        if len(bits.bit_choices) > 2 and scorer == "sensitivity":
            costs = measured_costs(fp_model, score_calib, bits.bit_choices, group_size, config.gptq.sym,
                                   known={bits.bit_choices[0]: scores["sensitivity"]}, progress=progress)
    reduced = make_plan(kept_layers, scores, bits, config.seed, layer_params(fp_model), costs)
    return _Decision(skip_plan.with_kept(reduced), scores, choice.scores if choice else None, costs,
                     choice.trace if choice else [])


def _unit_decision(fp_model, config: RunConfig, skip_plan: Plan, choice, calib, progress: bool) -> _Decision:
    """Per-unit options by the knapsack on Fisher costs (compress.bits.unit_plan) on the kept layers."""
    from compress.bits.unit_plan import unit_plan

    bits = config.bits
    result = unit_plan(fp_model, calib[:config.unit_rows], bits.avg_bits, bits.option_list, rounds=bits.rounds,
                       progress=progress, rounding=config.gptq.rounding, check=bits.check)
    return _Decision(skip_plan.with_kept(result.plan), None, choice.scores if choice else None, result.costs,
                     choice.trace if choice else [], result.stats)


def _skip_count(config: DepthConfig, n_layers: int) -> int:
    """How many layers --skip / --skip-layers remove, or a one-line error (all, duplicates, out of range)."""
    from compress.depth.select import check_drop, drop_count, uls_drop

    if config.skip_layers:
        return len(check_drop(list(config.skip_layers), n_layers))
    n = drop_count(n_layers, drop_ratio=config.skip)
    if config.skip_policy == "uls":
        uls_drop(n_layers, n)  # it keeps the first and last layer: refuse more before the weights load
    return n


def _skip_plan(model, config: RunConfig, calib, progress: bool):
    """(plan over the model's layers with the removed ones marked skip, the SkipChoice or None)."""
    from compress.depth.choose import choose_layers
    from compress.model import decoder_layers

    depth = config.depth
    n_layers = len(decoder_layers(model))
    n = _skip_count(depth, n_layers)
    if depth.skip_layers:
        return Plan.uniform(n_layers).with_skip(depth.skip_layers, "given by --skip-layers"), None
    choice = choose_layers(model, depth.skip_policy, n, calib, config.seed, progress)
    return Plan.uniform(n_layers).with_skip(choice.dropped, choice.reasons), choice


def _gptq_source(model: str | None, fp_model, tokenizer, plan: Plan, tmp: Path) -> Path:
    """The folder GPTQModel reads the float model from: the model's own, or, with layers removed, the reduced
    model saved into `tmp` first."""
    from compress.model import resolve_model_path

    if not plan.skipped:
        return Path(resolve_model_path(model))
    source = tmp / "removed-layers-fp"
    fp_model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    return source


def _quantize(source: Path, plan: Plan, calib, tmp: Path, config: GPTQConfig, reload: bool):
    """The checkpoint of the float model in `source` per the kept rows of `plan` into `tmp`: (stats, the reloaded
    model if `reload`). A `source` inside `tmp` (layers removed) is deleted after."""
    import shutil

    from compress.model import load_gptq
    from compress.quant.checkpoint import write_checkpoint

    stats = write_checkpoint(str(source), plan.reduced(), calib, tmp, config)
    if source.parent == tmp:
        shutil.rmtree(source)
    gc.collect()  # GPTQModel's own copy of the float model goes before the quantized one is loaded
    return stats, load_gptq(tmp)[0] if reload else None


def _save_unquantized(fp_model, tokenizer, tmp: Path) -> dict:
    """--bits 16: save the (reduced) model as it is; stats in the same terms as GPTQ's."""
    import time

    from compress.model import named_linears

    started = time.perf_counter()
    fp_model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    dtype = next(fp_model.parameters()).dtype
    _, _, module = named_linears(fp_model)[0]
    return {"method": "none", "dtype": str(dtype).removeprefix("torch."),
            "effective_bits": float(module.weight.element_size() * 8),
            "seconds": round(time.perf_counter() - started, 2),
            "size_bytes": sum(f.stat().st_size for f in tmp.glob("*.safetensors"))}
