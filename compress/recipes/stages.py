"""The operations a recipe stage may name, each an existing command with its own config class.

    finetune   compress finetune            FinetuneConfig  (full, LoRA merged, or QLoRA merged into the float base)
    heal       compress finetune --lora 16  FinetuneConfig  (the same operation with healing's defaults)
    remove     compress run --bits 16 --skip  RunConfig     (must remove layers; saves the float model)
    quantize   compress run --bits mixed    RunConfig       (GPTQ folder, or model.gguf with target llama.cpp)

A stage's keys are exactly its config's settings (the CLI's names); `defaults` are what the stage sets when the
recipe leaves a key out. Every model stage reads a float model; what it writes (its kind) decides whether the
next stage can read it: that is checked for the whole recipe before any stage starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.benchmark.config import BenchConfig
from compress.config import build_flat, flat_settings
from compress.errors import CompressError
from compress.evaluation.lmeval import EvalConfig
from compress.pipeline.runner import RunConfig
from compress.training.train import FinetuneConfig

FLOAT, GPTQ, GGUF, ADAPTER = "float model", "GPTQ checkpoint", "GGUF file", "LoRA adapter"


@dataclass(frozen=True)
class Operation:
    name: str
    config: type
    help: str
    defaults: dict[str, Any] = field(default_factory=dict)


OPERATIONS = {op.name: op for op in (
    Operation("finetune", FinetuneConfig, "fine-tune (LLR or uniform LR; full, LoRA or QLoRA)", {"merge": True}),
    Operation("heal", FinetuneConfig, "LoRA healing after removal or rounding (finetune with --lora 16)",
              {"lora_rank": 16, "merge": True}),
    Operation("remove", RunConfig, "remove layers (compress run --bits 16 --skip ...)", {"bits": "16"}),
    Operation("quantize", RunConfig, "quantize (compress run --bits ...)", {"bits": "mixed"}),
)}
FINISH = {"eval": EvalConfig, "bench": BenchConfig}  # run on the last stage's model, against the recipe's model


def stage_config(name: str, values: dict[str, Any]):
    """The config of stage `name` from the recipe's keys over the stage's defaults."""
    if name not in OPERATIONS:
        raise CompressError(f"unknown stage {name!r}; valid: {', '.join(OPERATIONS)}")
    op = OPERATIONS[name]
    return build_flat(op.config, {**op.defaults, **values})


def output_kind(name: str, config) -> str:
    """What stage `name` writes with `config`."""
    if name in ("finetune", "heal"):
        return ADAPTER if config.qlora and not config.merge else FLOAT
    if config.target == "llama.cpp":
        return GGUF
    return FLOAT if config.bits.bits == "16" and config.plan is None else GPTQ


def check_stage(name: str, config, given: str) -> None:
    """Refuse a stage that cannot read `given` (its predecessor's output kind) or would do nothing."""
    if given != FLOAT:
        raise CompressError(f"{name} needs a float model as input, but its input is a {given}")
    if name == "remove" and not (config.depth.removes or config.plan):
        raise CompressError("remove removes nothing: set skip (a fraction) or skip_layers")


def input_kind(model: str | None) -> str:
    """What the recipe's model is: a GPTQ (or other quantized) folder, or a float model (a .gguf file is
    dequantized to float on load)."""
    from compress.model import is_quantized_folder

    if model is not None and Path(model).expanduser().is_dir() and is_quantized_folder(Path(model).expanduser()):
        return GPTQ
    return FLOAT


def resolved(config) -> dict[str, Any]:
    """Every setting of a stage config by its flat (CLI) name, tuples as lists: the stage as recipe.yaml keys."""
    out = {}
    for name, path in flat_settings(type(config)).items():
        value = config
        for part in path:
            value = getattr(value, part)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def run_operation(name: str, model: str | None, config, out: Path, data_dir, progress: bool) -> str:
    """Run stage `name` on `model` into `out` (replacing an incomplete one); returns a one-line summary."""
    if name in ("finetune", "heal"):
        from compress.training.train import run_finetune

        result = run_finetune(model, config, out, data_dir=data_dir, progress=progress, overwrite=True)
        (_, first), (_, last) = result.eval[0], result.eval[-1]
        return f"eval loss {first:.4f} -> {last:.4f}, {result.seconds:.0f} s"
    from compress.pipeline.runner import run

    stats = run(model, config, out, data_dir=data_dir, progress=progress, overwrite=True).stats
    text = (f"unquantized ({stats['dtype']})" if stats["method"] == "none" else
            f"{stats['effective_bits']:.3f} bits per decoder weight") + f", {stats['size_bytes'] / 2**20:.1f} MiB"
    if stats["layers"]["removed"]:
        text += f", layers {stats['layers']['removed']} removed"
    if "ppl_after" in stats:
        text += f", WikiText-2 ppl {stats['ppl_before']['ppl']:.3f} -> {stats['ppl_after']['ppl']:.3f}"
    return text
