"""Pure statistics and size arithmetic for `compress bench` (no torch): percentiles, per-run generation
metrics, bits per weight. Metric names follow `vllm bench` (ttft, tpot, itl, e2el in ms; output_throughput in
tokens/s), so HF-backend and vLLM numbers read alike."""

from __future__ import annotations

import math
from typing import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def generation_metrics(token_times: Sequence[float], start: float, batch: int) -> dict[str, float]:
    """Metrics of one generate() call from the wall-clock time of each new token (seconds, `start` = call).

    ttft = first token - start; tpot = (last - first) / (n - 1), the first token excluded; itl = mean gap
    between consecutive tokens (the same number for one request); e2el = last - start;
    output_throughput = batch * n / e2el; decode_throughput = batch * (n - 1) / (last - first)."""
    n = len(token_times)
    if n == 0:
        raise ValueError("no tokens were generated")
    ttft, e2el = token_times[0] - start, token_times[-1] - start
    decode = token_times[-1] - token_times[0]
    gaps = [b - a for a, b in zip(token_times, token_times[1:])]
    return {
        "ttft_ms": 1000 * ttft,
        "tpot_ms": 1000 * decode / (n - 1) if n > 1 else math.nan,
        "itl_ms": 1000 * sum(gaps) / len(gaps) if gaps else math.nan,
        "e2el_ms": 1000 * e2el,
        "output_throughput": batch * n / e2el,
        "decode_throughput": batch * (n - 1) / decode if n > 1 and decode > 0 else math.nan,
    }


def batch_call_metrics(e2el: float, ttft: float, batch: int, output_len: int) -> dict[str, float]:
    """Metrics of one batched call timed only as a whole (vLLM's offline engine reports no per-token times):
    e2el = the call with `output_len` new tokens, ttft = the same prompts with one new token (seconds).

    Same keys as generation_metrics: tpot = itl = (e2el - ttft) / (output_len - 1), the first token excluded
    (`vllm bench serve` computes tpot the same way per request); output_throughput = batch * n / e2el;
    decode_throughput = batch * (n - 1) / (e2el - ttft)."""
    if e2el <= 0 or ttft <= 0 or batch < 1 or output_len < 1:
        raise ValueError(f"need e2el, ttft > 0 s, batch and output_len >= 1; got {e2el}, {ttft}, {batch}, "
                         f"{output_len}")
    decode = e2el - ttft
    tpot = 1000 * decode / (output_len - 1) if output_len > 1 and decode > 0 else math.nan
    return {
        "ttft_ms": 1000 * ttft,
        "tpot_ms": tpot,
        "itl_ms": tpot,
        "e2el_ms": 1000 * e2el,
        "output_throughput": batch * output_len / e2el,
        "decode_throughput": batch * (output_len - 1) / decode if output_len > 1 and decode > 0 else math.nan,
    }


def summarize(runs: list[dict[str, float]]) -> dict[str, float]:
    """median_/p90_/p99_ of e2el, median_ of every other metric, over repeated runs."""
    if not runs:
        raise ValueError("no runs to summarize")
    out = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        out[f"median_{key}"] = percentile(values, 50)
        if key in ("e2el_ms", "ttft_ms"):
            out[f"p90_{key}"] = percentile(values, 90)
            out[f"p99_{key}"] = percentile(values, 99)
    return out


def bits_per_weight(weight_bytes: int, parameters: int) -> float:
    """Checkpoint bits per model parameter: 8 x bytes of weight files / parameters of the float model (tied
    embedding counted once). Packing, scales, zeros and unquantized tensors all count: this is what a
    checkpoint costs per weight, not the nominal width of its quantized layers."""
    if parameters <= 0:
        raise ValueError("parameters must be > 0")
    return 8 * weight_bytes / parameters
