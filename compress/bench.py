"""`compress bench`: latency, throughput and memory of a model with the Hugging Face backend (CPU, or CUDA);
`--backend vllm` swaps the worker for compress.bench_vllm's.

Per batch size (default 1 and 8), on real prompts (WikiText-2 test windows of `input_len` tokens when a data
dir is set, else a fixed text): prefill latency (one forward of the prompt that builds the KV cache), then
greedy generate() of exactly `output_len` new tokens, timed token by token through a streamer: ttft, tpot
(first token excluded), itl, e2el p50/p90/p99 and output throughput over `repeats` runs after `warmup`
(compress.bench_stats; names as `vllm bench`). Each model runs in its own Python process, so its peak RAM
(ru_maxrss) is its own; VRAM is torch's peak allocation. Size: bytes of the weight files and bits per weight
(8 x bytes / parameters of the float model).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from compress.errors import CompressError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
FALLBACK_TEXT = ("The history of the city begins with a small settlement on the river, where traders met to "
                 "exchange grain, timber and cloth. Over the following centuries it grew into a market town. ")


BACKENDS = ("hf", "vllm")


@dataclass(frozen=True)
class BenchConfig:
    input_len: int = 512  # prompt tokens
    output_len: int = 128  # new tokens per request (forced: no early stop)
    batches: tuple[int, ...] = (1, 8)
    repeats: int = 10  # timed runs per batch size, after warmup
    warmup: int = 2
    device: str = "auto"  # auto | cpu | cuda[:N]
    backend: str = "hf"  # hf (transformers generate) | vllm (compress.bench_vllm: CUDA, vllm installed)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise CompressError(f"unknown --backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.backend == "vllm" and self.device == "cpu":
            raise CompressError("--backend vllm runs on CUDA only: drop --device cpu or use --backend hf")
        for name in ("input_len", "output_len", "repeats"):
            if getattr(self, name) < 1:
                raise CompressError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise CompressError(f"--warmup must be >= 0, got {self.warmup}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise CompressError(f"--batch-sizes must be integers >= 1, got {list(self.batches)}")


class TimingStreamer:
    """generate(streamer=...) calls put(prompt ids) once, then put(new tokens) at every step: keep the time of
    each step's call (seconds, perf_counter)."""

    def __init__(self) -> None:
        self.prompt_seen = False
        self.times: list[float] = []

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


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


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    from compress.bench_stats import percentile, summarize

    prefill_s = percentile(prefill, 50)
    return {"batch": batch, "prefill_ms": 1000 * prefill_s, "prefill_throughput": batch * input_len / prefill_s,
            **summarize(runs), "runs": runs}


def bench_loaded(model, tokenizer, config: BenchConfig, data_root: Path | None, progress: bool = True) -> dict:
    """{"batch_<B>": {prefill_ms, prefill_throughput, median_/p90_/p99_ metrics, runs: [...]}} of a loaded model."""
    import torch
    from tqdm.auto import tqdm

    from compress.bench_stats import generation_metrics

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = {}
    total = len(config.batches) * (config.warmup + config.repeats) * 2
    with torch.inference_mode(), tqdm(total=total, desc="bench", unit="run", disable=not progress) as bar:
        for batch in config.batches:
            ids = prompt_ids(tokenizer, batch, config.input_len, data_root).to(device)
            mask = torch.ones_like(ids)

            def prefill() -> float:
                _sync(device)
                start = time.perf_counter()
                model(input_ids=ids, attention_mask=mask, use_cache=True)
                _sync(device)
                return time.perf_counter() - start

            def generate() -> dict:
                streamer = TimingStreamer()
                _sync(device)
                start = time.perf_counter()
                generated = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                           max_new_tokens=config.output_len, min_new_tokens=config.output_len,
                                           pad_token_id=pad, streamer=streamer)
                if generated.shape[1] - config.input_len != config.output_len:
                    raise CompressError(f"generate() returned {generated.shape[1] - config.input_len} new tokens, "
                                        f"not {config.output_len}")
                return generation_metrics(streamer.times, start, batch)

            prefills = timed_repeats(config, prefill, bar)
            out[f"batch_{batch}"] = batch_record(batch, config.input_len, prefills,
                                                 timed_repeats(config, generate, bar))
    return out


def checkpoint_size(spec: str | None) -> dict:
    """Weight-file bytes of the model's folder (or .gguf file) and bits per parameter of its float model."""
    from compress.bench_stats import bits_per_weight
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


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(spec: str | None, config: BenchConfig, data_root: Path | None, trust_remote_code: bool) -> dict:
    """Load one model and bench it in this process; returns the record (peak RAM is this process's)."""
    import torch

    from compress.api import load_any
    from compress.model import resolve_device

    device = resolve_device(config.device)
    before = _peak_rss_mib()
    started = time.perf_counter()
    model, tokenizer = load_any(spec, trust_remote_code=trust_remote_code, device=device)
    load_s = time.perf_counter() - started
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    record = {"model": spec, "device": device, "load_s": load_s, "threads": torch.get_num_threads(),
              "results": bench_loaded(model, tokenizer, config, data_root),
              "peak_ram_mib": _peak_rss_mib(), "ram_before_load_mib": before}
    if device.startswith("cuda"):
        record["peak_vram_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return record


def bench_in_subprocess(spec: str | None, config: BenchConfig, data_root: Path | None,
                        trust_remote_code: bool) -> dict:
    """Run `worker` in a fresh interpreter (own peak RSS, no memory of the previous model)."""
    payload = json.dumps({"spec": spec, "config": asdict(config), "data_root": str(data_root) if data_root else None,
                          "trust_remote_code": trust_remote_code})
    proc = subprocess.run([sys.executable, "-m", "compress.bench", payload], stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise CompressError(f"benchmarking {spec or 'the default model'} failed (exit {proc.returncode}); "
                            f"its error is above")
    return json.loads(lines[-1])


def _main() -> int:
    """Worker entry (`python -m compress.bench PAYLOAD`): the record as the last stdout line."""
    args = json.loads(sys.argv[1])
    config = BenchConfig(**{**args["config"], "batches": tuple(args["config"]["batches"])})
    if config.backend == "vllm":
        from compress.bench_vllm import worker as run
    else:
        run = worker
    try:
        record = run(args["spec"], config, Path(args["data_root"]) if args["data_root"] else None,
                     args["trust_remote_code"])
    except CompressError as e:
        print(f"compress: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
