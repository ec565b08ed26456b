"""Quantization: what a quantized weight costs on disk and the group-size rule (storage), round-to-nearest as
pure tensor math (rtn), GPTQ through GPTQModel (gptq) with the plan's per-layer widths as `dynamic` overrides
(gptq_config), and reading a saved GPTQ checkpoint back with plain torch (unpack)."""
