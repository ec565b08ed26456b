"""`compress bench --backend llama.cpp`: the bench's measurements through llama.cpp (llama-cpp-python), on CPU.

The model is a .gguf file or a `compress run --target llama.cpp` folder (its model.gguf); the bundled default is
its own Q4_1 GGUF. Prompts are the HF worker's WikiText-2 test windows, tokenized by the GGUF's own tokenizer.
One sequence at a time (llama-cpp-python's Llama decodes one), so batch size 1 only. Per repeat: the KV cache is
reset (no prefix reuse), the prompt is evaluated (prefill), then `output_len` tokens are decoded greedily
(argmax of the last logits, one llama_decode per token) and each token's time is kept: the HF worker's
metrics (compress.benchmark.stats.generation_metrics). Threads: all cores (n_threads = os.cpu_count()).
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from types import SimpleNamespace

from compress.errors import CompressError

LLAMA_INSTALL = "pip install llama-cpp-python (builds llama.cpp from source: ~10-15 min on 2 cores)"


def gguf_file(spec: str | None) -> Path:
    """The .gguf a spec names: the file itself, FOLDER/model.gguf, or the bundled default."""
    from compress.model import resolve_model_path
    from compress.model.gguf import default_gguf_path

    if spec is None:
        return default_gguf_path()
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "model.gguf").is_file():
        return path / "model.gguf"
    if path.suffix == ".gguf" and path.is_file():
        return path
    raise CompressError(f"--backend llama.cpp needs a .gguf file or a `compress run --target llama.cpp` folder; "
                        f"{resolve_model_path(spec)} is neither")


def gguf_size(spec: str | None) -> dict:
    """checkpoint_size's record for the GGUF llama.cpp reads: its bytes and its tensors' elements."""
    from gguf import GGUFReader

    from compress.benchmark.stats import bits_per_weight

    path = gguf_file(spec)
    parameters = sum(int(t.n_elements) for t in GGUFReader(path).tensors)  # a tied head is stored once
    size = path.stat().st_size
    return {"path": str(path), "weight_files": [path.name], "weight_bytes": size, "parameters": parameters,
            "bits_per_weight": bits_per_weight(size, parameters)}


def check_llamacpp(spec: str | None, config) -> None:
    """Refuse, before anything runs, what this backend cannot do: no llama_cpp, no GGUF, batch sizes but 1."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise CompressError(f"--backend llama.cpp: llama-cpp-python is not installed ({LLAMA_INSTALL})")
    gguf_file(spec)
    if tuple(config.batches) != (1,):
        raise CompressError("--backend llama.cpp decodes one sequence at a time: pass --batch-sizes 1")


def worker(spec: str | None, config, data_root: Path | None, trust_remote_code: bool) -> dict:
    """Load the GGUF into llama.cpp and time it; the record has the HF worker's keys."""
    import llama_cpp
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from compress.benchmark.measure import batch_record, peak_rss_mib, prompt_ids, timed_repeats
    from compress.benchmark.stats import generation_metrics

    path, threads = gguf_file(spec), os.cpu_count() or 1
    before, started = peak_rss_mib(), time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=config.input_len + config.output_len, n_batch=512,
                          n_threads=threads, n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - started
    tokenizer = lambda text, return_tensors=None: SimpleNamespace(  # noqa: E731 -- the GGUF's own vocabulary
        input_ids=torch.tensor([llm.tokenize(text.encode(), add_bos=False, special=False)]))
    prompt = prompt_ids(tokenizer, 1, config.input_len, data_root)[0].tolist()

    def prefill() -> float:
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        return time.perf_counter() - start

    def generate() -> dict:
        llm.reset()
        start, times = time.perf_counter(), []
        llm.eval(prompt)
        for step in range(config.output_len):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            times.append(time.perf_counter())
            if step + 1 < config.output_len:
                llm.eval([token])
        return generation_metrics(times, start, 1)

    with tqdm(total=(config.warmup + config.repeats) * 2, desc="bench (llama.cpp)", unit="run") as bar:
        prefills = timed_repeats(config, prefill, bar)
        results = {"batch_1": batch_record(1, config.input_len, prefills, timed_repeats(config, generate, bar))}
    return {"model": spec, "device": "cpu (llama.cpp)", "load_s": load_s, "threads": threads, "results": results,
            "peak_ram_mib": peak_rss_mib(), "ram_before_load_mib": before,
            "llama_cpp": {"version": llama_cpp.__version__, "gguf": str(path)}}
