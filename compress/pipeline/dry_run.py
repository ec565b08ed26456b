"""`compress run`'s preflight and `--dry-run`: what the run needs before it starts, and, without quantizing, the
plan with each layer's bits and bytes, the checkpoint's effective bits and the serving paths that load it."""

from __future__ import annotations

import os
from pathlib import Path

from compress.plan import Plan


def run_preflight(model: str | None, config, out: Path | None) -> None:
    """Print what `compress run` needs; refuse when RAM or disk clearly cannot hold it (naming what fits)."""
    from compress.model.preflight import check_needs, run_needs
    from compress.quant.storage import SCALE_BITS

    bits = config.bits.avg_bits if config.bits.bits == "mixed" else float(config.bits.bits)
    if bits < 16:  # stored bits: the codes plus an fp16 scale and a zero per group (quant.storage)
        bits += (SCALE_BITS + bits) / (config.gptq.group_size or 64)
    windows = config.ppl_windows if config.ppl_windows is not None else 64
    check_needs("run", model, out, "cpu", lambda size, samples, gpu: run_needs(
        size, calib_samples=samples, calib_seq_len=config.calib_seq_len, ppl_windows=windows, bits=bits,
        cores=os.cpu_count() or 1), config.calib_samples, "--calib-samples", "use a machine with more memory",
        also=" (or --calib-seq-len)")


def serving_paths(bits: tuple[int, ...]) -> list[str]:
    """Which engines load a checkpoint of these per-layer bits (16 = float): what the GPTQ format and the
    engines' own checks accept (GPTQModel: 2/3/4/8 and per-module `dynamic`; vLLM's gptq: 2/3/4/8 bits,
    `dynamic` overrides; llama.cpp reads float checkpoints through its converter, not GPTQ)."""
    quantized = {b for b in bits if b != 16}
    if not quantized:
        return ["transformers", "vLLM", "llama.cpp (convert_hf_to_gguf.py)", "GPTQModel (to quantize)"]
    paths = ["GPTQModel", "transformers (with gptqmodel installed)"]
    paths.append("vLLM gptq (CUDA; mixed widths through `dynamic`)" if len(quantized | ({16} & set(bits))) > 1
                 else "vLLM gptq / gptq_marlin (CUDA)" if quantized <= {4, 8} else "vLLM gptq (CUDA)")
    return paths


def dry_run_text(plan: Plan, layer_params: list[int], group_size: int, other_params: int) -> tuple[str, dict]:
    """(the plan table with each kept layer's MiB, and the totals): bytes are the GPTQ format's (codes, fp16
    scales, packed zeros: quant.storage.effective_bits); the rest of the model (embeddings, norms) in fp16."""
    from compress.quant.storage import effective_bits

    kept = plan.reduced()
    sizes = {i: n * (effective_bits(b, group_size) if b != 16 else 16) / 8
             for i, n, b in zip(plan.kept, layer_params, kept.bits)}
    column = [sizes[d.index] / 2**20 if d.index in sizes else 0.0 for d in plan.layers]
    decoder_bytes = sum(sizes.values())
    total = decoder_bytes + 2 * other_params
    stats = {"method": "dry-run", "decoder_bytes": decoder_bytes, "size_bytes": total, "group_size": group_size,
             "effective_bits": 8 * decoder_bytes / max(1, sum(layer_params)),
             "serving": serving_paths(kept.bits)}
    return plan.table({"MiB": column}), stats
