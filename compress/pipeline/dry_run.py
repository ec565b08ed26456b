"""`compress run`'s preflight and `--dry-run`: what the run needs before it starts, and, without quantizing, the
plan with each layer's bits and bytes, the checkpoint's effective bits and the targets that load it."""

from __future__ import annotations

import os
from pathlib import Path

from compress.plan import Plan


def run_preflight(model: str | None, config, out: Path | None) -> None:
    """Print what `compress run` needs; refuse when RAM or disk clearly cannot hold it (naming what fits), or
    when its rounder is not installed."""
    from compress.model.preflight import check_needs, run_needs
    from compress.quant.autoround import require_autoround
    from compress.quant.storage import SCALE_BITS

    if out is not None and config.bits.quantizes and config.target != "llama.cpp" and (config.gptq.rounding == "opt-rtn" or
                                                        config.gptq.rounding == "auto" and config.gptq.sym):
        require_autoround()

    bits = config.bits.avg_bits if config.bits.bits == "mixed" else float(config.bits.bits)
    if bits < 16 and not config.bits.per_unit:  # stored bits: codes plus an fp16 scale and a zero per group
        bits += (SCALE_BITS + bits) / (config.gptq.group_size or 64)
    windows = config.ppl_windows if config.ppl_windows is not None else 64
    units = len(config.bits.options) if config.bits.per_unit and not config.plan else 0
    check_needs("run", model, out, "cpu", lambda size, samples, gpu: run_needs(
        size, calib_samples=samples, calib_seq_len=config.calib_seq_len, ppl_windows=windows, bits=bits,
        cores=os.cpu_count() or 1, unit_options=units, unit_rounds=config.bits.rounds,
        signround_iters=config.gptq.iters), config.calib_samples,
        "--calib-samples", "use a machine with more memory", also=" (or --calib-seq-len)")


def dry_run_text(plan: Plan, options: dict, other_params: int, fmt: str = "gptq") -> tuple[str, dict]:
    """(the plan table with each kept layer's MiB and, for per-unit plans, each unit's option; the totals):
    options {Unit: Option or None} on the reduced model; bytes are the format's exactly
    (quant.storage.unit_bytes: GPTQ packing or GGUF blocks); float units and the rest of the model (embeddings,
    norms) in fp16. stats["serving"]: the targets whose tables load it (compress.serving.targets)."""
    from collections import Counter

    from compress.quant.storage import unit_bytes
    from compress.serving.targets import loading_targets

    sizes: dict[int, float] = {}
    for unit, option in options.items():
        sizes[unit.layer] = sizes.get(unit.layer, 0) + (unit_bytes(unit, option) if option else 2 * unit.params)
    kept = dict(zip(plan.kept, range(len(plan.kept))))  # original index -> index after removal
    column = [sizes.get(kept[d.index], 0) / 2**20 if d.index in kept else 0.0 for d in plan.layers]
    decoder_bytes = sum(sizes.values())
    params = sum(u.params for u in options)
    groups = Counter(o.group_size for o in options.values() if o is not None)
    stats = {"method": "dry-run", "format": fmt, "decoder_bytes": decoder_bytes,
             "size_bytes": decoder_bytes + 2 * other_params,
             "group_size": (groups.most_common(1)[0][0] or -1) if groups else -1,
             "effective_bits": 8 * decoder_bytes / max(1, params), "serving": loading_targets(options, fmt)}
    return plan.table({"MiB": column, **unit_columns(plan)}), stats


def unit_columns(plan: Plan) -> dict[str, list[str]]:
    """{unit name: each layer's option label} for a per-unit plan (nothing for a per-layer one)."""
    names = list(dict.fromkeys(name for d in plan.layers for name, _ in d.units))
    return {name: [dict(d.units)[name].label if name in dict(d.units) else "" for d in plan.layers]
            for name in names}


def score_column(plan, scores, skip_scores, scorer: str) -> dict:
    """The score to print beside the plan (indexed by the plan's rows = the original layers): the one the
    removal used, else, when nothing was removed, the one the bit plan used."""
    if skip_scores is not None:
        return {"bi": skip_scores["bi"]}
    if scores is None or plan.skipped:
        return {}
    column = {"lim": "lim", "bi": "bi", "angular": "angular_1"}.get(scorer, scorer)
    return {column: scores[column]} if column in scores.columns else {}
