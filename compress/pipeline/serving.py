"""`compress run --target`: the plan checked against the target's table before anything is quantized, and the
llama.cpp target's output (one GGUF instead of a GPTQ folder)."""

from __future__ import annotations

from pathlib import Path

from compress.errors import CompressError
from compress.plan import Option, Plan
from compress.serving.targets import TARGETS


def check_target(model: str | None, config, given: Plan | None) -> None:
    """Refuse, before the weights load, a source the target's writer cannot start from (llama.cpp re-quantizes a
    GGUF) and a --avg-bits outside what the target's options allow on this model."""
    target = TARGETS[config.target]
    if target.fmt == "gguf":
        from compress.quant.gguf_export import source_gguf

        source_gguf(model)
    if given is None and config.bits.per_unit:
        from compress.bits.unit_plan import check_model_budget

        try:
            check_model_budget(model, config.bits.option_list, config.bits.avg_bits)
        except CompressError as e:
            if config.target == "gptqmodel":
                raise
            raise CompressError(f"{e} with target (--target) {target.name}'s options "
                                f"({', '.join(config.bits.options)})") from None


def served_options(fp_model, config, plan: Plan) -> dict:
    """{Unit: Option or None} of the plan on the (reduced) model in the target's format, or a one-line refusal
    when the target cannot load it: before anything is quantized."""
    from compress.model.units import model_units
    from compress.quant.gptq import plan_options, resolve_group_size
    from compress.serving.targets import plan_refusal

    target = TARGETS[config.target]
    if target.fmt == "gguf":  # per-layer widths: the legacy type of that width (4 -> q4_0, 8 -> q8_0)
        default = Option(4, 32, True, "gguf")
    else:
        default = Option(4, resolve_group_size(fp_model, config.gptq), config.gptq.sym)
    try:
        options = plan_options(plan.reduced(), model_units(fp_model), default)
    except CompressError as e:
        raise CompressError(f"target (--target) {target.name} cannot load this plan: {e}") from None
    why = plan_refusal(target, options)
    if why:
        raise CompressError(f"target (--target) {target.name} cannot load this plan: {why}")
    return options


def run_gguf(model, fp_model, config, decided, options: dict, out: Path, measured: tuple, n_layers: int,
             progress: bool) -> dict:
    """--target llama.cpp: model.gguf re-quantized per plan from the source GGUF (compress.quant.gguf_export),
    and perplexity after measured in torch on the same rounded weights. measured: (WikiText-2 test ids or None,
    the float model's perplexity on them). -> stats.json's dict."""
    from compress.evaluation.perplexity import perplexity
    from compress.outputs import staged_folder
    from compress.pipeline.records import write_records
    from compress.quant.gguf_export import apply_ggml, export_gguf, source_gguf

    test_ids, before = measured
    modules = {name: option for unit, option in options.items() for name in unit.modules}
    with staged_folder(out) as tmp:
        stats = export_gguf(source_gguf(model), modules, decided.plan.kept, tmp / "model.gguf", progress)
        if test_ids is not None:
            apply_ggml(fp_model, modules)
            after = perplexity(fp_model, test_ids, max_windows=config.ppl_windows, progress=progress)
            stats.update(ppl_before=before.to_dict(), ppl_after=after.to_dict(), ppl_after_in="torch, same weights")
        stats["layers"] = {"before": n_layers, "after": len(decided.plan.kept), "removed": list(decided.plan.skipped)}
        if decided.allocation:
            stats["allocation"] = decided.allocation
        write_records(tmp, model, config, decided, stats, True)
    return stats
