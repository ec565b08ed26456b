"""What both bench workers share: the prompts, the warm-up/timed-repeat loop, the per-batch record, this
process's peak RAM, and the checkpoint's size in bytes and bits per weight."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from compress.benchmark.config import BenchConfig

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
FALLBACK_TEXT = ("The history of the city begins with a small settlement on the river, where traders met to "
                 "exchange grain, timber and cloth. Over the following centuries it grew into a market town. ")


def prompt_ids(tokenizer, batch: int, length: int, data_root: Path | None):
    """(batch, length) token ids: consecutive WikiText-2 test windows, or the fallback text repeated."""
    import torch

    if data_root is not None:
        from compress.data import wikitext2_test_text

        text = wikitext2_test_text(data_root)
    else:
        text = FALLBACK_TEXT * (4 * length * batch // len(FALLBACK_TEXT.split()) + 1)
    ids = tokenizer(text[: 12 * length * batch], return_tensors="pt").input_ids[0]
    if ids.numel() < batch * length:
        ids = ids.repeat(batch * length // ids.numel() + 1)
    return ids[: batch * length].view(batch, length).to(torch.long)


def timed_repeats(config: BenchConfig, measure, bar) -> list:
    """Call `measure()` warmup + repeats times; keep the results of the timed (post-warm-up) calls."""
    kept = []
    for k in range(config.warmup + config.repeats):
        result = measure()
        if k >= config.warmup:
            kept.append(result)
        bar.update()
    return kept


def batch_record(batch: int, input_len: int, prefill: list[float], runs: list[dict]) -> dict:
    """One batch size's results: median prefill (s -> ms, tokens/s) and the summarized generation runs."""
    from compress.benchmark.stats import percentile, summarize

    prefill_s = percentile(prefill, 50)
    return {"batch": batch, "prefill_ms": 1000 * prefill_s, "prefill_throughput": batch * input_len / prefill_s,
            **summarize(runs), "runs": runs}


def checkpoint_size(spec: str | None) -> dict:
    """Weight-file bytes of the model's folder (or .gguf file) and bits per parameter of its float model."""
    from compress.benchmark.stats import bits_per_weight
    from compress.model import resolve_model_path

    where = Path(resolve_model_path(spec))
    files = [where] if where.is_file() else sorted(p for p in where.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    weight_bytes = sum(p.stat().st_size for p in files)
    parameters = float_parameters(where)
    return {"path": str(where), "weight_files": [p.name for p in files], "weight_bytes": weight_bytes,
            "parameters": parameters, "bits_per_weight": bits_per_weight(weight_bytes, parameters)}


def float_parameters(folder: Path) -> int:
    """Parameters of the model its config describes, built on the meta device (nothing allocated); a tied
    embedding counts once. Quantized checkpoints count their logical (float) weights."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # from_config on the meta device leaves a tied head as its own tensor
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB: VmHWM of /proc/self/status (KiB) on Linux. Not
    ru_maxrss: Linux keeps it across fork + execve, so a worker started by a process that once held 18 GiB (a
    recipe's bench after its lm-eval) reported 18 GiB; VmHWM belongs to the worker's own address space."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError, IndexError):  # no /proc: ru_maxrss, bytes on macOS, KiB elsewhere
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
