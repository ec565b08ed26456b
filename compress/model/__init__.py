"""Models: where a model keeps its decoder layers (layers), loading any model spec (load), GGUF conversion
into the cache (gguf). Everything above addresses layers by index through `decoder_layers`."""

from compress.model.gguf import cache_dir, default_gguf_path
from compress.model.layers import (LAYER_COUNT_FIELDS, decoder_layers, decoder_layers_path, in_features, is_linear,
                                   layer_params, linears, max_positions, model_label, named_linears)
from compress.model.load import (GPTQ_INSTALL, check_model_spec, context_length, is_quantized_folder, layer_count, load_any, load_gptq,
                                 load_model, resolve_device, resolve_model_path)

__all__ = ["GPTQ_INSTALL", "LAYER_COUNT_FIELDS", "cache_dir", "check_model_spec", "context_length", "decoder_layers", "decoder_layers_path",
           "default_gguf_path", "in_features", "is_linear", "is_quantized_folder", "layer_count", "layer_params",
           "linears", "load_any", "load_gptq", "load_model", "max_positions", "model_label", "named_linears",
           "resolve_device", "resolve_model_path"]
