"""Where a Hugging Face model keeps its decoder blocks and their Linear modules.

The only code that knows where a model keeps its blocks (`decoder_layers`); everything else addresses layers
by integer index through it. No torch at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.errors import CompressError

if TYPE_CHECKING:  # heavy imports stay out of `compress --help`
    import torch.nn as nn

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


def model_label(model: nn.Module) -> str:
    """A short name for tables and file names."""
    name = str(getattr(model.config, "name_or_path", "") or type(model).__name__)
    return Path(name).name.removesuffix(".gguf") or type(model).__name__


CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def max_positions(model: nn.Module) -> int | None:
    """The model's context length from its config, if it states one."""
    return config_context(model.config)


def config_context(cfg) -> int | None:
    """Context length (tokens) a transformers config states, if any."""
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for key in CONTEXT_FIELDS:
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
