"""The Hugging Face worker of `compress bench`: one model, loaded in this process, timed per batch size.

Per batch size (default 1 and 8), on real prompts (WikiText-2 test windows of `input_len` tokens when a data
dir is set, else a fixed text): prefill latency (one forward of the prompt that builds the KV cache), then
greedy generate() of exactly `output_len` new tokens, timed token by token through a streamer: ttft, tpot
(first token excluded), itl, e2el p50/p90/p99 and output throughput over `repeats` runs after `warmup`
(compress.benchmark.stats; names as `vllm bench`). VRAM is torch's peak allocation.
"""

from __future__ import annotations

import time
from pathlib import Path

from compress.benchmark.config import BenchConfig
from compress.benchmark.measure import batch_record, peak_rss_mib, prompt_ids, timed_repeats
from compress.errors import CompressError


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


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_loaded(model, tokenizer, config: BenchConfig, data_root: Path | None, progress: bool = True) -> dict:
    """{"batch_<B>": {prefill_ms, prefill_throughput, median_/p90_/p99_ metrics, runs: [...]}} of a loaded model."""
    import torch
    from tqdm.auto import tqdm

    from compress.benchmark.stats import generation_metrics

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


def worker(spec: str | None, config: BenchConfig, data_root: Path | None, trust_remote_code: bool) -> dict:
    """Load one model and bench it in this process; returns the record (peak RAM is this process's)."""
    import torch

    from compress.model import load_any
    from compress.model import resolve_device

    device = resolve_device(config.device)
    before = peak_rss_mib()
    started = time.perf_counter()
    model, tokenizer = load_any(spec, trust_remote_code=trust_remote_code, device=device)
    load_s = time.perf_counter() - started
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    record = {"model": spec, "device": device, "load_s": load_s, "threads": torch.get_num_threads(),
              "results": bench_loaded(model, tokenizer, config, data_root),
              "peak_ram_mib": peak_rss_mib(), "ram_before_load_mib": before}
    if device.startswith("cuda"):
        record["peak_vram_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return record
