"""Loading models: a model spec (hub id, local folder, .gguf file, or None for the bundled default) checked
cheaply, resolved to a folder, and loaded as (model, tokenizer) on a device; GPTQ folders through GPTQModel.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from compress.errors import CompressError
from compress.files import read_json
from compress.model.check import check_gguf_file, check_load_report, check_model_folder
from compress.model.gguf import cache_folder, convert_gguf, default_gguf_path
from compress.model.layers import LAYER_COUNT_FIELDS, config_context

if TYPE_CHECKING:  # heavy imports stay out of `compress --help`
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GPTQ_INSTALL = "pip install 'gptqmodel==7.6.0'"


def check_model_spec(spec: str | None) -> None:
    """Validation of --model before any work (no weights loaded, no conversion, no download): a bad path, a
    file that is not GGUF, a folder whose config, architecture or weight files are wrong all fail here."""
    if spec is None:
        default_gguf_path()
        return
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise CompressError(f"model file {spec} does not exist")
        check_gguf_file(path)
    elif path.exists():
        if not path.is_dir():
            raise CompressError(f"model {spec} is a file, not a model folder or .gguf file")
        if not (path / "config.json").is_file():
            raise CompressError(f"{spec} is not a Hugging Face model folder (no config.json in it)")
        check_model_folder(path)
    # A hub id looks like "name" or "org/name"; anything else that does not exist is a bad path.
    elif not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec) or spec.startswith((".", "/")):
        raise CompressError(f"model path {spec} does not exist")


def resolve_model_path(spec: str | None) -> str:
    """Turn --model into something from_pretrained reads: a local folder or a hub id.

    None -> the bundled SmolLM2-135M (converted once into the cache); *.gguf -> converted into the cache.
    """
    check_model_spec(spec)
    gguf = default_gguf_path() if spec is None else Path(spec).expanduser()
    if gguf.suffix != ".gguf":
        return str(gguf) if gguf.exists() else spec
    folder = cache_folder(gguf)
    if not (folder / "config.json").is_file():
        from compress.outputs import file_lock, remove_stale

        # One conversion at a time per file: a second first run waits, then finds the folder made.
        with file_lock(folder, f"waiting for another process converting {gguf.name}"):
            if not (folder / "config.json").is_file():
                remove_stale(folder)  # an interrupted conversion's temporary folder
                convert_gguf(gguf, folder)
    return str(folder)


def is_quantized_folder(folder: str | Path) -> bool:
    """A saved checkpoint whose config.json carries a quantization_config (e.g. GPTQ from `compress run`)."""
    config = Path(folder) / "config.json"
    return config.is_file() and "quantization_config" in read_json(config, "model config")


def model_config(spec: str | None, trust_remote_code: bool = False):
    """The transformers config of --model alone (no weights), text part of multimodal configs."""
    from transformers import AutoConfig

    where = resolve_model_path(spec)
    try:
        return AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code).get_text_config()
    except (OSError, ValueError) as e:
        raise CompressError(f"cannot load model {spec!r}: {_first_line(e)}") from e


def context_length(spec: str | None, trust_remote_code: bool = False) -> int | None:
    """Tokens --model can attend over, from its config (None when it states none)."""
    return config_context(model_config(spec, trust_remote_code))


def layer_count(spec: str | None) -> int:
    """Decoder layers of --model from its config alone (no weights): lets layer-index errors come first."""
    config = model_config(spec)
    for key in LAYER_COUNT_FIELDS:
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    raise CompressError(f"the config of {spec or 'the bundled model'} states no layer count")


def resolve_device(name: str = "auto") -> str:
    """--device: "auto" (CUDA when torch sees a GPU, else CPU), "cpu", "cuda" or "cuda:N"; a GPU asked for
    where there is none is refused rather than silently run on CPU."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise CompressError(f"--device {name}: torch sees no CUDA GPU here; use --device cpu")
        return name
    raise CompressError(f"unknown --device {name!r}; valid: auto, cpu, cuda, cuda:N")


def load_model(
    spec: str | None = None,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) from a hub id, a local folder, a .gguf file, or None for the default model.

    dtype: "float32" (default: CPU matmuls and SVDs want it), "bfloat16", "float16" or "auto".
    trust_remote_code is off unless asked: a model repo's Python code only runs on explicit request.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    where = resolve_model_path(spec)
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        if "trust_remote_code" in str(e):
            raise CompressError(
                f"{spec} needs to run its own Python code: pass --trust-remote-code if you trust it"
            ) from e
        raise CompressError(f"cannot load model {spec!r}: {str(e).strip().splitlines()[0]}") from e
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            where,
            dtype=dtype if dtype == "auto" else getattr(torch, dtype),
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
        )
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise CompressError(
                f"{spec or where} is a {config.model_type!r} model, not a causal language model"
            ) from e
        raise CompressError(f"cannot load model {spec or where}: {_first_line(e)}") from e
    except (OSError, RuntimeError) as e:  # damaged weights, shapes that contradict the config
        raise CompressError(f"cannot load model {spec or where}: {_first_line(e)}") from e
    check_load_report(info, spec or where)
    tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    model.to(device).eval()
    model.config.name_or_path = spec or "SmolLM2-135M-Instruct (bundled)"
    return model, tokenizer


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def load_gptq(path: str | Path, device: str = "cpu"):
    """(model, tokenizer) of a saved GPTQ folder through GPTQModel (it reads per-module `dynamic` widths), on
    `device`: GPTQModel picks its kernel for the device it loads onto, so a CUDA bench loads there rather than
    moving a CPU model."""
    try:
        from gptqmodel import GPTQModel
    except ImportError as e:
        raise CompressError(f"loading a GPTQ checkpoint needs gptqmodel: run `{GPTQ_INSTALL}`") from e
    from transformers import AutoTokenizer

    check_model_spec(str(path))
    try:
        wrapper = GPTQModel.load(str(path), device=device)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise CompressError(f"cannot load GPTQ checkpoint {path}: {_first_line(e)}") from e
    return wrapper.model.eval(), AutoTokenizer.from_pretrained(str(path))


def load_any(spec: str | None, trust_remote_code: bool = False, device: str = "cpu"):
    """(model, tokenizer) of anything compress reads or writes, on `device`: a GPTQ folder of `compress run`
    (through GPTQModel) or any model `load_model` takes."""
    check_model_spec(spec)
    if spec is not None and is_quantized_folder(spec):
        return load_gptq(spec, device=device)
    return load_model(spec, trust_remote_code=trust_remote_code, device=device)
