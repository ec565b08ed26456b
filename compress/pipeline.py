"""`compress run`: [remove layers] -> score -> plan -> GPTQ -> one output folder.

With --skip, the layers chosen by --skip-policy are removed first (compress.removal) and the bit plan is
made on the remaining layers. The folder is an ordinary checkpoint: GPTQ (config.json with
quantization_config and `dynamic`, safetensors, tokenizer), or with --bits 16 the unquantized model with
its layers removed. Beside it: plan.json (one row per layer of the ORIGINAL model: removed rows have
skip = true, kept rows their bits), scores.json (the scores the bit plan used, indexed by the layers of
the saved model), skip_scores.json (the scores the removal used, original indices), settings.json and
stats.json, so a run can be read and repeated (`--plan plan.json`). It is written under a temporary name
and renamed at the end.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from compress.errors import CompressError
from compress.plan import Plan
from compress.policies import budgeted_bits, check_widths, layerwise_bits, proxy_costs, random_order

# --scorer -> (scorer to run, column whose importance order ranks the layers)
ORDER_COLUMNS = {"lim": ("lim", "lim"), "bi": ("lim", "bi"), "angular": ("lim", "angular_1"), "zd": ("zd", "zd"),
                 "alpha": ("alpha", "alpha"), "sensitivity": ("sensitivity", "sensitivity"), "random": (None, None)}


@dataclass(frozen=True)
class RunConfig:
    bits: str = "mixed"  # "mixed", or one width for a uniform plan (16: no quantization)
    avg_bits: float = 3.25  # mixed: target average over decoder layers
    bit_choices: tuple[int, ...] = (4, 2)  # mixed: two widths -> LayerwiseQuant count rule; more -> knapsack
    scorer: str = "lim"  # the importance order; "random" is the baseline
    seed: int = 0
    calib: str = "wikitext2-valid"
    calib_samples: int = 64  # GPTQ calibration: 64 x 512 tokens, ~10 min for SmolLM2-135M on 2 CPU cores
    calib_seq_len: int = 512
    score_samples: int = 8  # scorers (and measured knapsack costs) see calib[:score_samples, :score_seq_len]
    score_seq_len: int = 256  # sensitivity costs (L + 1) forwards per width: kept short on purpose
    ppl_windows: int | None = 4  # WikiText-2 test windows of 2048 for perplexity before/after (None: all, 0: skip)
    group_size: int | None = None
    sym: bool = True
    desc_act: bool = False
    skip: float = 0.0  # fraction of decoder layers to remove before quantizing: round(skip * L) layers
    skip_layers: tuple[int, ...] = ()  # or exactly these layer indices
    skip_policy: str = "bi"  # which layers --skip removes (compress.skip_policy.SKIP_POLICIES)

    def __post_init__(self) -> None:
        from compress.skip_policy import check_policy

        object.__setattr__(self, "bit_choices", check_widths(self.bit_choices))
        object.__setattr__(self, "skip_layers", tuple(self.skip_layers))
        if self.bits != "mixed":
            if not self.bits.isdigit():
                raise CompressError(f"--bits must be mixed, 16 or a width, got {self.bits!r}")
            if self.bits != "16":
                check_widths([int(self.bits)])
        elif not min(self.bit_choices) <= self.avg_bits <= max(self.bit_choices):
            raise CompressError(f"--avg-bits {self.avg_bits} is outside the range of the choices "
                                f"{min(self.bit_choices)}..{max(self.bit_choices)}")
        if self.scorer not in ORDER_COLUMNS:
            raise CompressError(f"unknown --scorer {self.scorer!r}; valid: {', '.join(ORDER_COLUMNS)}")
        if not 0 <= self.skip < 1:
            raise CompressError(f"--skip is the fraction of layers to remove, in [0, 1); got {self.skip:g}")
        if self.skip and self.skip_layers:
            raise CompressError("give --skip or --skip-layers, not both")
        check_policy(self.skip_policy)


def make_plan(n_layers: int, scores, config: RunConfig, params: list[int] | None = None,
              costs: list[dict[int, float]] | None = None) -> Plan:
    """Per-layer widths from the importance order of the chosen score column. With more than two widths the
    exact knapsack decides, on measured `costs` (per layer {bits: KL}) when given, else on rank proxies."""
    if config.bits != "mixed":
        return Plan.uniform(n_layers, int(config.bits), "uniform")
    column = ORDER_COLUMNS[config.scorer][1]
    order = random_order(n_layers, config.seed) if column is None else scores.importance_order(column)
    rank = {index: r for r, index in enumerate(order)}
    label = column or f"random(seed {config.seed})"
    if len(config.bit_choices) == 2:
        bits = layerwise_bits(order, config.avg_bits, config.bit_choices)
    else:
        if costs is not None:
            label = f"knapsack on measured KL, {label}"
        bits = budgeted_bits(costs or proxy_costs(order, config.bit_choices), params or [1] * n_layers,
                             config.avg_bits)
    return Plan.uniform(n_layers).with_bits(bits, [f"{label} rank {rank[i]}/{n_layers}" for i in range(n_layers)])


def run(model: str | None, out: Path, config: RunConfig = RunConfig(), data_dir=None, plan_file=None,
        progress: bool = True) -> dict:
    from compress.api import versions
    from compress.data import calibration_samples, calibration_texts, wikitext2_test_text
    from compress.data import data_dir as resolve_data_dir
    from compress.model import check_model_spec, decoder_layers, layer_count, layer_params, load_model
    from compress.outputs import check_writable, staged_folder
    from compress.perplexity import perplexity
    from compress.quant.gptq import GPTQSettings, resolve_group_size
    from compress.removal import remove_layers
    from compress.scorers import score
    from compress.scorers.sensitivity import measured_costs

    out = Path(out)
    if out.exists():
        raise CompressError(f"{out} already exists: choose a new --out")
    check_writable(out)
    check_model_spec(model)
    root = resolve_data_dir(data_dir)
    measure = config.ppl_windows != 0  # perplexity before/after (0: skip)
    texts = calibration_texts(config.calib, root)
    test_text = wikitext2_test_text(root) if measure else None
    if plan_file and (config.skip or config.skip_layers):
        raise CompressError("--plan already says which layers to remove (its skip column): drop --skip/--skip-layers")
    if plan_file and not Path(plan_file).is_file():
        raise CompressError(f"plan file {plan_file} does not exist")
    given = Plan.from_json(Path(plan_file).read_text()) if plan_file else None

    n_layers = layer_count(model)  # from the config: layer-index errors come before the weights load
    if given is not None:
        given.check_layers(n_layers)
    else:
        _skip_count(config, n_layers)
    fp_model, tokenizer = load_model(model)
    calib = calibration_samples(tokenizer, texts, n_samples=config.calib_samples, seq_len=config.calib_seq_len,
                                seed=config.seed)
    score_calib = calib[:config.score_samples, :config.score_seq_len]
    test_ids = tokenizer(test_text, return_tensors="pt").input_ids[0] if measure else None
    before = perplexity(fp_model, test_ids, max_windows=config.ppl_windows, progress=progress) if measure else None

    # 1. which layers go (before anything changes), then remove them
    skip_plan, choice = (given, None) if given is not None else _skip_plan(fp_model, config, score_calib, progress)
    if skip_plan.skipped:
        remove_layers(fp_model, skip_plan.skipped)

    # 2. bits for the layers that remain
    scorer = ORDER_COLUMNS[config.scorer][0]
    settings = GPTQSettings(group_size=config.group_size, sym=config.sym, desc_act=config.desc_act)
    quantize = given.reduced().bits != (16,) * len(given.kept) if given else config.bits != "16"
    group_size = resolve_group_size(fp_model, settings) if quantize else None
    kept_layers = len(decoder_layers(fp_model))
    # sensitivity is measured at the plan's low width and the group size GPTQ will use; angular spans
    # cannot exceed the (possibly reduced) depth
    options = {"sensitivity": {"bits": config.bit_choices[0], "group_size": group_size, "sym": config.sym},
               "lim": {"max_span": min(4, kept_layers)}}
    needs_scores = given is None and config.bits == "mixed" and scorer is not None
    scores = score(fp_model, [scorer], score_calib, {k: v for k, v in options.items() if k == scorer},
                   progress=progress) if needs_scores else None
    costs = None
    if needs_scores and len(config.bit_choices) > 2 and scorer == "sensitivity":
        costs = measured_costs(fp_model, score_calib, config.bit_choices, group_size, config.sym,
                               known={config.bit_choices[0]: scores["sensitivity"]}, progress=progress)
    reduced = given.reduced() if given else make_plan(kept_layers, scores, config, layer_params(fp_model), costs)
    plan = skip_plan.with_kept(reduced)

    with staged_folder(out) as tmp:
        if quantize:
            stats, final = _quantize(model, fp_model, tokenizer, reduced, calib, tmp, settings,
                                     bool(skip_plan.skipped), measure)
        else:
            stats, final = _save_unquantized(fp_model, tokenizer, tmp), fp_model
        if measure:
            after = perplexity(final, test_ids, max_windows=config.ppl_windows, progress=progress)
            stats.update(ppl_before=before.to_dict(), ppl_after=after.to_dict())
        stats["layers"] = {"before": n_layers, "after": kept_layers, "removed": list(skip_plan.skipped)}
        if choice is not None and choice.trace:
            stats["greedy_trace"] = choice.trace
        if scores is not None:
            (tmp / "scores.json").write_text(scores.to_json())
        if choice is not None and choice.scores is not None:
            (tmp / "skip_scores.json").write_text(choice.scores.to_json())
        if costs is not None:
            (tmp / "costs.json").write_text(json.dumps([{str(b): c for b, c in row.items()} for row in costs]))
        (tmp / "plan.json").write_text(plan.to_json())
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
        (tmp / "settings.json").write_text(json.dumps(
            {"command": "run", "model": model or "SmolLM2-135M-Instruct (bundled default)", "config": asdict(config),
             "plan_file": plan_file, "gptq": asdict(settings) if quantize else None, "versions": versions()},
            indent=1))
    return {"plan": plan, "scores": scores, "skip_scores": choice.scores if choice else None, "stats": stats}


def _skip_count(config: RunConfig, n_layers: int) -> int:
    """How many layers --skip / --skip-layers remove, or a one-line error (all, duplicates, out of range)."""
    from compress.layer_selection import check_drop, drop_count, uls_drop

    if config.skip_layers:
        return len(check_drop(list(config.skip_layers), n_layers))
    n = drop_count(n_layers, drop_ratio=config.skip)
    if config.skip_policy == "uls":
        uls_drop(n_layers, n)  # it keeps the first and last layer: refuse more before the weights load
    return n


def _skip_plan(model, config: RunConfig, calib, progress: bool):
    """(plan over the model's layers with the removed ones marked skip, the SkipChoice or None)."""
    from compress.model import decoder_layers
    from compress.skip_policy import choose_layers

    n_layers = len(decoder_layers(model))
    n = _skip_count(config, n_layers)
    if config.skip_layers:
        return Plan.uniform(n_layers).with_skip(config.skip_layers, "given by --skip-layers"), None
    choice = choose_layers(model, config.skip_policy, n, calib, config.seed, progress)
    return Plan.uniform(n_layers).with_skip(choice.dropped, choice.reasons), choice


def _quantize(model, fp_model, tokenizer, reduced: Plan, calib, tmp: Path, settings, removed: bool,
              reload: bool):
    """GPTQ of the (reduced) model into `tmp`: (stats, the reloaded quantized model if `reload` else None).
    GPTQModel reads models from folders, so a model with layers removed is saved first."""
    import shutil

    from compress.model import resolve_model_path
    from compress.quant.gptq import load_quantized, quantize_gptq

    source = resolve_model_path(model)
    if removed:
        source = tmp / "removed-layers-fp"
        fp_model.save_pretrained(source)
        tokenizer.save_pretrained(source)
    del fp_model
    stats = quantize_gptq(str(source), reduced, calib, tmp, settings)
    if removed:
        shutil.rmtree(source)
    return stats, load_quantized(tmp)[0] if reload else None


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
