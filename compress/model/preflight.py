"""Preflight: before a long run, what it will need (peak RAM, VRAM on a GPU, disk for the output, rough time) and
whether this machine has it. The estimates are small pure functions of the model's sizes and the settings,
calibrated on measurements of this project (2-core CPU, SmolLM2-135M):
- `compress run --bits 4`, 64 x 512 calibration tokens: peak RSS 2615 MiB, 1875 s (eval/results/run_memory);
- the fixed cost of a process with torch, transformers and gptqmodel imported: ~700 MiB.
A run is refused only when the estimate clearly passes what is free (by PREFLIGHT_MARGIN), with the setting
that would fit; they are estimates, so the line says "about".
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from compress.errors import CompressError

MiB = 2**20
BASE_BYTES = 700 * MiB  # python + torch + transformers (+ gptqmodel) imported
# Seconds per (parameter x token pass) on one CPU core, from the measured run above: 1875 s * 2 cores /
# (135e6 params * (2 x 64 x 512 calibration + 2 x 4 x 2048 perplexity) token passes) = 3.4e-10; a CUDA GPU
# is taken as 50x faster.
SECONDS_PER_PARAM_TOKEN = 3.4e-10
# Training: 200 steps of 4 x 256 tokens on SmolLM2 took 955-1400 s on 2 cores (eval/results/llr, uniform LR
# and LLR) -> 7e-11 s per parameter x trained token x core (forward + backward); a forward alone ~1/3 of it.
TRAIN_SECONDS_PER_PARAM_TOKEN = 7e-11
FORWARD_SECONDS_PER_PARAM_TOKEN = 2.4e-11
# GPTQ's solver per option, per decoder weight x hidden width, per core: SmolLM2's 1560 unit x option solves
# took 639 s on 2 cores (eval/results/mixed_units, timing.table_s)
SOLVE_SECONDS = 1.6e-9
GPU_SPEEDUP = 50.0
PREFLIGHT_MARGIN = 1.15  # refuse when the estimate passes what is free by more than this factor


@dataclass(frozen=True)
class ModelSize:
    """What the estimates need of a model, read from its config and safetensors headers (no weights)."""

    params: int  # all weights
    decoder_params: int  # weights of the decoder layers' Linear matrices (what GPTQ quantizes)
    hidden: int
    layers: int
    vocab: int
    kv_width: int  # key (= value) width per token per layer


@dataclass(frozen=True)
class Needs:
    ram: float  # bytes, peak resident memory
    disk: float  # bytes written to the output folder
    seconds: float  # rough wall time
    vram: float | None = None  # bytes on the GPU, when one is used


def model_size(folder: str | Path) -> ModelSize:
    """Sizes of a model folder from config.json and the safetensors headers (no weights read)."""
    import math

    from compress.files import read_json
    from compress.model.check import check_safetensors, weight_files

    folder = Path(folder)
    config = read_json(folder / "config.json", "model config")
    config = config.get("text_config", config)
    shapes = {name: entry["shape"] for path in weight_files(folder) for name, entry in check_safetensors(path).items()}
    params = sum(math.prod(shape) for shape in shapes.values())
    decoder = sum(math.prod(s) for n, s in shapes.items() if ".layers." in n and len(s) == 2 and "norm" not in n)
    hidden = int(config.get("hidden_size") or config.get("n_embd") or 0)
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 1)
    head_dim = int(config.get("head_dim") or hidden // heads)
    kv = int(config.get("num_key_value_heads") or heads) * head_dim
    layers = int(config.get("num_hidden_layers") or config.get("n_layer") or 0)
    return ModelSize(params, decoder, hidden, layers, int(config.get("vocab_size") or 0), kv)


def local_size(spec: str | None) -> ModelSize | None:
    """model_size of --model when it is (or converts to) a local folder; None for a hub id, whose files are
    not here yet: its preflight is skipped rather than guessed."""
    from compress.model.load import resolve_model_path

    folder = Path(resolve_model_path(spec))
    return model_size(folder) if folder.is_dir() else None


def run_needs(m: ModelSize, *, calib_samples: int, calib_seq_len: int, ppl_windows: int, bits: float,
              cores: int, gpu: bool = False, unit_options: int = 0, unit_rounds: int = 0,
              signround_iters: int = 0) -> Needs:
    """`compress run`: the largest of the perplexity phase (one float model + 2048-token logits), the per-unit
    allocation (unit_options > 0: float model, gradients, Hessians, and with rounds every unit x option in
    fp16) and the GPTQ phase (GPTQModel's copy and the float model's, the layer inputs of every calibration
    sample). bits >= 16: no GPTQ, the float32 model is saved as it is."""
    gptq = bits < 16
    model = 4 * m.params
    logits = 2 * 2048 * m.vocab * 4
    acts = 5 * calib_samples * calib_seq_len * m.hidden * 4 if gptq else 0
    table = 2 * m.decoder_params * unit_options if unit_rounds else 2 * m.decoder_params
    allocate = model + 8 * m.decoder_params + table + 2 * 4 * 512 * m.vocab * 4 if unit_options else 0
    ram = BASE_BYTES + max(model + logits, (3 * model + acts) if gptq else 0, allocate)
    disk = m.decoder_params * bits / 8 + (m.params - m.decoder_params) * 2 if gptq else 4 * m.params
    tokens = 2 * calib_samples * calib_seq_len * gptq + 2 * 2048 * ppl_windows
    seconds = _seconds(m.params * tokens, cores, gpu)
    if unit_options:  # Hessians (32 x 512 tokens), gradients (16 x 512, forward + backward) per round, solves
        seconds += _seconds(m.params * 512 * (32 + 48 * (unit_rounds + 1)), cores, gpu)
        seconds += SOLVE_SECONDS * m.decoder_params * m.hidden * (unit_options + 1) / max(1, cores)
    # SignRound: per block and step, forward + backward over auto-round's batch of 8 rows (SmolLM2, 200 steps of
    # 8 x 256 tokens: measured 1110 s on 2 cores, this says 1520 s)
    seconds += _seconds(m.decoder_params * 8 * calib_seq_len * signround_iters, cores, gpu,
                        TRAIN_SECONDS_PER_PARAM_TOKEN) if gptq else 0
    return Needs(ram, disk, seconds, 3 * model + acts if gpu else None)


def finetune_needs(m: ModelSize, *, batch_size: int, seq_len: int, steps: int, lora: bool, cores: int,
                   gpu: bool = False) -> Needs:
    """`compress finetune`: weights, gradients and AdamW's two moments (of the adapters only with LoRA), plus
    activations (~16 hidden-wide tensors per layer and token) and the logits of a batch."""
    trained = 0 if lora else 4 * m.params
    model = 4 * m.params + 3 * trained
    acts = batch_size * seq_len * (16 * m.hidden * m.layers + 3 * m.vocab) * 4
    ram = BASE_BYTES + model + (0 if gpu else acts)
    tokens = steps * batch_size * seq_len
    return Needs(ram, 4 * m.params, _seconds(m.params * tokens, cores, gpu, TRAIN_SECONDS_PER_PARAM_TOKEN),
                 model + acts if gpu else None)


def forward_needs(m: ModelSize, *, batch: int, tokens: int, total_tokens: float, cores: int,
                  gpu: bool = False) -> Needs:
    """`compress eval` / `bench`: one model, the KV cache and logits of `batch` sequences of `tokens`;
    `total_tokens` processed in all sets the time."""
    cache = 2 * batch * tokens * m.layers * m.kv_width * 4
    logits = 2 * batch * tokens * m.vocab * 4
    work = 4 * m.params + cache + logits
    return Needs(BASE_BYTES + (0 if gpu else work), 64 * 1024,
                 _seconds(m.params * total_tokens, cores, gpu, FORWARD_SECONDS_PER_PARAM_TOKEN), work if gpu else None)


def _seconds(param_tokens: float, cores: int, gpu: bool, rate: float = SECONDS_PER_PARAM_TOKEN) -> float:
    return rate * param_tokens / max(1, cores) / (GPU_SPEEDUP if gpu else 1.0)


# ---- the machine ------------------------------------------------------------------------------------------

def free_ram() -> float | None:
    """Bytes this process may still take: MemAvailable, capped by a cgroup memory limit."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        return None
    try:
        limit, used = (Path("/sys/fs/cgroup") / name for name in ("memory.max", "memory.current"))
        if limit.read_text().strip() != "max":
            free = min(free or float("inf"), int(limit.read_text()) - int(used.read_text()))
    except (OSError, ValueError):
        pass
    return free


def free_disk(path: Path) -> float:
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def free_vram(device: str) -> float | None:
    import torch

    return torch.cuda.mem_get_info(torch.device(device))[0] if device.startswith("cuda") else None


# ---- the check --------------------------------------------------------------------------------------------

def preflight(command: str, needs: Needs, out: Path | None, device: str, fixes: dict[str, str]) -> str:
    """Print one line of what `command` needs against what is free; refuse (CompressError) when RAM, VRAM or
    disk clearly cannot hold it, naming the setting from `fixes` ({"ram": "...", "vram": ..., "disk": ...})."""
    free = {"ram": free_ram(), "vram": free_vram(device) if needs.vram is not None else None,
            "disk": free_disk(out) if out is not None else None}
    need = {"ram": needs.ram, "vram": needs.vram, "disk": needs.disk if out is not None else None}
    parts = [f"{_gib(need[k])} {k.upper() if k != 'disk' else 'disk'}" + (f" ({_gib(free[k])} free)"
             if free[k] is not None else "") for k in ("ram", "vram", "disk") if need[k] is not None]
    line = (f"compress: preflight: {command} needs about {', '.join(parts)}, roughly {_duration(needs.seconds)} on "
            f"{'the GPU' if device.startswith('cuda') else f'{os.cpu_count()} CPU cores'}")
    for key in ("ram", "vram", "disk"):
        if need[key] is not None and free[key] is not None and need[key] > PREFLIGHT_MARGIN * free[key]:
            where = {"ram": "memory", "vram": "GPU memory", "disk": f"disk space at {out}"}[key]
            raise CompressError(f"{command} needs about {_gib(need[key])} of {where} but {_gib(free[key])} is "
                                f"free: {fixes.get(key, 'use a larger machine')}")
    print(line, file=sys.stderr)
    return line


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / MiB:.0f} MiB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def fitting(value: int, need_at, free: float, floor: int = 1) -> int | None:
    """The largest setting in [floor, value) whose estimate `need_at(setting)` fits `free` (halving), or None."""
    v = value // 2
    while v >= floor:
        if need_at(v) <= free:
            return v
        v //= 2
    return None


def check_needs(command: str, spec: str | None, out: Path | None, device: str, needs_at, value: int, flag: str,
                fallback: str, vram_fix: str | None = None, also: str = "") -> None:
    """The preflight of one command on a model spec: `needs_at(size, v, gpu)` gives the Needs at setting `flag`
    = v; a refusal names the largest v that fits (halving from `value`), else `fallback` (either followed by
    `also`). Hub ids are skipped."""
    size = local_size(spec)
    if size is None:  # a hub id: nothing local to measure
        return
    gpu = device.startswith("cuda")
    free = free_vram(device) if gpu else free_ram()
    fits = fitting(value, lambda v: (needs_at(size, v, gpu).vram if gpu else needs_at(size, v, gpu).ram) or 0,
                   free) if free else None
    fix = (f"lower {flag} to {fits}" if fits else fallback) + also
    preflight(command, needs_at(size, value, gpu), out, device,
              {"ram": fix, "vram": vram_fix or fix, "disk": "choose an --out on a disk with more free space"})


def check_forward(command: str, spec: str | None, out: Path | None, device: str, *, batch: int, tokens: int,
                  total_tokens: float, batch_flag: str) -> None:
    """Preflight of a command that runs the model forward (eval, bench) on a model spec."""
    cores = os.cpu_count() or 1
    check_needs(command, spec, out, device, lambda size, b, gpu: forward_needs(
        size, batch=b, tokens=tokens, total_tokens=total_tokens, cores=cores, gpu=gpu), batch, batch_flag,
        "use a machine with more memory")
