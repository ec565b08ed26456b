"""GPTQ-format checkpoints rounded by auto-round's optimised RTN (`AutoRound(iters=0)`, the rounding
compress.quant.opt_rtn mirrors for the allocator's costs) instead of GPTQ's solver; with GPTQConfig.iters > 0
by its SignRound (that many signed-gradient steps per block on the block's output error; measured on SmolLM2,
uniform 3b-g64: perplexity 39.7 at 200 steps vs 50.9 at 0, 1110 s vs 62 s; eval/results/mixed_units-optrtn §7).

The Plan's per-unit options become auto-round's `layer_config` (every shard of a fused unit gets the unit's
option; an unquantized unit 16 bits); auto-round collects its imatrix (mean x² per input column) on the same
calibration rows GPTQ would see and exports `auto_gptq`: config.json with a GPTQ quantization_config and
per-module `dynamic`, packed safetensors, the tokenizer — the folder GPTQModel.load reads (measured,
eval/results/mixed_units-optrtn). Measured on SmolLM2-135M at 3.34 bits per decoder weight: uniform 3-bit g64
WikiText-2 perplexity 50.9 rounded this way against 75.2 through GPTQModel's GPTQ.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from compress.errors import CompressError
from compress.model.units import Unit
from compress.plan import Option, Plan

if TYPE_CHECKING:
    import torch

    from compress.quant.gptq import GPTQConfig

AUTOROUND_INSTALL = 'pip install "auto-round==0.16.1"'
# AutoRound's settings for every rounding compress (and eval/) runs: on CPU, no torch.compile, the whole model
# in memory (its offload reloads blocks from model files on disk), and amp=False: auto-round otherwise rounds in
# bf16 wherever the CPU reports bf16 (CpuInfo().bf16, e.g. avx512_bf16), so the checkpoint would depend on the
# machine and no longer be the fp32 opt-RTN the allocator costed.
CPU_ROUNDING = {"device_map": "cpu", "enable_torch_compile": False, "low_cpu_mem_usage": False, "amp": False}


def require_autoround() -> None:
    """One line, before any work, when `--rounding opt-rtn` (or auto, which may choose it) cannot run here."""
    import importlib.util

    if importlib.util.find_spec("auto_round") is None:
        raise CompressError(f"rounding opt-rtn / auto (--rounding) needs auto-round: run `{AUTOROUND_INSTALL}`, or pass "
                            "--rounding gptq")


def layer_config(options: Mapping[Unit, Option | None]) -> dict[str, dict]:
    """{module name: {bits, group_size, sym}} for auto-round from {unit: option or None (unquantized)};
    per channel is group_size -1, as GPTQ writes it."""
    out: dict[str, dict] = {}
    for unit, option in options.items():
        cfg = {"bits": 16} if option is None else {"bits": option.bits, "group_size": option.group_size or -1,
                                                   "sym": option.sym}
        out.update({name: dict(cfg) for name in unit.modules})
    return out


def quantize_autoround(model_path: str, plan: Plan, calib: "torch.Tensor", out: Path,
                       settings: "GPTQConfig") -> dict:
    """Round the model at `model_path` per `plan` with auto-round (optimised RTN, or SignRound for settings.iters
    steps) and save a GPTQ folder into `out`. calib: (samples, seq_len) token ids (its imatrix, SignRound's
    batches). Returns stats in quantize_gptq's terms."""
    from compress.quant.gptq import plan_config, skeleton

    require_autoround()
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = plan_config(skeleton(model_path), plan, settings)
    if any(o is not None and not o.sym for o in resolved.options.values()):
        raise CompressError("rounding opt-rtn rounds symmetric grids only: use --rounding gptq for asymmetric")
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rounder = AutoRound(model, tokenizer, scheme="W4A16", layer_config=layer_config(resolved.options),
                        iters=settings.iters, dataset=[row.unsqueeze(0) for row in calib],
                        nsamples=calib.shape[0], seqlen=calib.shape[1], **CPU_ROUNDING)
    staging = Path(out) / ".autoround-export"  # its own folder: `out` may hold the float source (layers removed)
    rounder.quantize_and_save(str(staging), format="auto_gptq")
    del rounder, model
    move_export(staging, Path(out))
    compact_export(Path(out))
    base = resolved.base
    return {"method": "opt-rtn", "rounder": f"auto-round iters={settings.iters}", "base_bits": base.bits,
            "group_size": base.group_size or -1, "sym": base.sym, "seconds": round(time.perf_counter() - started, 2),
            "effective_bits": resolved.effective_bits,
            "size_bytes": sum(f.stat().st_size for f in Path(out).glob("*.safetensors"))}


def move_export(staging: Path, out: Path) -> None:
    """auto-round writes into a subfolder of `staging` named after the model: move the checkpoint's files
    (the folder holding config.json) into `out` and drop `staging`."""
    import shutil

    inner = next((p.parent for p in staging.rglob("config.json")), None)
    if inner is None:
        raise CompressError(f"auto-round wrote no config.json under {staging}")
    for f in inner.iterdir():
        f.rename(out / f.name)
    shutil.rmtree(staging)


def compact_export(out: Path) -> None:
    """auto-round 0.16.1's export keeps the unquantized float32 tensors of the fp32 model it rounded (the
    embedding) and writes the tied lm_head beside it: on SmolLM2 113 MB + 57 MB of a 228 MB folder, on Gemma-3-270M
    1.06 GB. Cast float32 tensors to the config's dtype and drop lm_head.weight when the config ties it, as a
    GPTQModel checkpoint stores them. Single-file exports only (what auto-round writes below 5 GB)."""
    import torch
    from safetensors.torch import load_file, save_file

    from compress.files import read_json

    files = sorted(out.glob("*.safetensors"))
    if len(files) != 1:
        return
    config = read_json(out / "config.json", "model config")
    text = config.get("text_config", config)
    dtype = getattr(torch, config.get("dtype") or config.get("torch_dtype") or "float16")
    tensors = load_file(files[0])
    tied = config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
    if tied and "lm_head.weight" in tensors and any(k.endswith("embed_tokens.weight") for k in tensors):
        del tensors["lm_head.weight"]
    tensors = {k: v.to(dtype) if v.dtype == torch.float32 else v for k, v in tensors.items()}
    save_file(tensors, str(files[0]), metadata={"format": "pt"})
