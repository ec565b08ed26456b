"""Static layer removal: delete decoder layers from a Hugging Face model so that the result is an ordinary
checkpoint (save_pretrained -> AutoModelForCausalLM.from_pretrained, no custom code, KV cache working).

What has to change besides the ModuleList (ShortGPT / Gromov et al. publish only the selection):
- config.num_hidden_layers (GPT-2: n_layer), and every per-layer list in the config (`layer_types`,
  sliding-window patterns, ...): any list whose length is the old layer count is cut to the kept layers;
- each kept layer's `layer_idx` (attention modules index the KV cache with it) is renumbered 0..L'−1.
"""

from __future__ import annotations

from typing import Sequence

from compress.depth.select import check_drop
from compress.model import LAYER_COUNT_FIELDS, decoder_layers, decoder_layers_path


def _configs(model) -> list:
    """The model's config and its text sub-config, if any (multimodal wrappers keep layers in the latter)."""
    config = model.config
    text = getattr(config, "get_text_config", lambda: config)()
    return [config] if text is config else [config, text]


def remove_layers(model, dropped: Sequence[int]):
    """Delete the `dropped` decoder layers in place; returns the model. Indices refer to the model as it is."""
    import torch.nn as nn

    layers = decoder_layers(model)
    n_layers = len(layers)
    dropped = set(check_drop(list(dropped), n_layers))
    kept = [i for i in range(n_layers) if i not in dropped]
    path = decoder_layers_path(model)
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, nn.ModuleList([layers[i] for i in kept]))
    for new_index, layer in enumerate(decoder_layers(model)):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    for config in _configs(model):
        for key, value in list(vars(config).items()):
            if key in LAYER_COUNT_FIELDS and value == n_layers:
                setattr(config, key, len(kept))
            elif isinstance(value, (list, tuple)) and len(value) == n_layers and key not in LAYER_COUNT_FIELDS:
                setattr(config, key, type(value)(value[i] for i in kept))
    return model
