"""Bit plans: from per-layer scores (or measured costs) and a bit budget to a Plan of per-layer widths.

The decision rule of `compress run --bits`: the importance order of one score column, then the LayerwiseQuant
count rule (two widths) or the exact budgeted knapsack (more widths) of compress.bits.allocate.
"""

from __future__ import annotations

from dataclasses import dataclass

from compress.bits.allocate import budgeted_bits, check_widths, layerwise_bits, proxy_costs, random_order
from compress.bits.options import default_options
from compress.config import check_settings, invalid, setting
from compress.errors import CompressError
from compress.plan import Option, Plan

# --scorer -> (scorer to run, column whose importance order ranks the layers)
ORDER_COLUMNS = {"lim": ("lim", "lim"), "bi": ("lim", "bi"), "angular": ("lim", "angular_1"), "zd": ("zd", "zd"),
                 "alpha": ("alpha", "alpha"), "sensitivity": ("sensitivity", "sensitivity"), "random": (None, None)}


@dataclass(frozen=True)
class BitsConfig:
    """The bit budget and how it is spread over the decoder layers."""

    bits: str = setting("mixed", "mixed, or one width (2, 3, 4, 8) for every layer, or 16 for no quantization "
                        "(e.g. only removal)")
    avg_bits: float = setting(3.25, "mixed: the budget. units: stored bits per decoder weight (codes, fp16 scales, "
                              "zeros and g_idx: the exact GPTQ bytes); layers: the average code width")
    allocator: str = setting("units", "mixed: units = one option per fused unit (qkv, o, gate_up, down) by the exact "
                             "knapsack on Fisher costs at the quantized point (measured best); layers = one width "
                             "per layer in --scorer's order", choices=("units", "layers"))
    options: tuple[str, ...] = setting(tuple(o.label for o in default_options()), "units: what a unit may take, "
                                       "<bits>b-g<group> or <bits>b-ch (one scale per channel), -asym for an "
                                       "asymmetric grid; left out by default: 2-bit (the Fisher costs underrate "
                                       "it) and 4b-ch (GPTQModel's CPU int4 kernel refuses it): "
                                       "eval/results/mixed_units")
    rounds: int = setting(0, "units: re-linearisation rounds (gradients again at the chosen plan, re-solve, keep "
                          "the lowest calibration KL)", minimum=0)
    check: bool = setting(True, "units: also measure the richest uniform plans and a llama.cpp-style mix within the "
                          "budget against the knapsack's by KL on held-out calibration rows and keep the lowest "
                          "(measured: eval/results/mixed_units-optrtn/STUDY.md §5)")
    bit_choices: tuple[int, ...] = setting((4, 2), "layers: widths; two use the LayerwiseQuant count rule, more "
                                           "the exact budgeted allocation")
    scorer: str = setting("lim", "layers: importance order of the layers", choices=tuple(ORDER_COLUMNS))

    def __post_init__(self) -> None:
        object.__setattr__(self, "bit_choices", check_widths(self.bit_choices))
        check_settings(self)
        for text in self.options:
            try:
                Option.parse(text)
            except CompressError as e:
                raise invalid(self, "options", f"cannot take {text!r}: {e}") from None
        if len({o.fmt for o in self.option_list}) > 1:
            raise invalid(self, "options", "mixes GPTQ options and GGUF types: one checkpoint has one format")
        if self.bits != "mixed":
            if not self.bits.isdigit():
                raise invalid(self, "bits", f"must be mixed, 16 or a width, got {self.bits!r}")
            if self.bits != "16":
                check_widths([int(self.bits)])
        elif self.allocator == "layers" and not min(self.bit_choices) <= self.avg_bits <= max(self.bit_choices):
            raise invalid(self, "avg_bits", f"{self.avg_bits:g} is outside the range of the choices "
                          f"{min(self.bit_choices)}..{max(self.bit_choices)}")

    @property
    def quantizes(self) -> bool:
        return self.bits != "16"

    @property
    def per_unit(self) -> bool:
        return self.bits == "mixed" and self.allocator == "units"

    @property
    def option_list(self) -> tuple[Option, ...]:
        return tuple(Option.parse(text) for text in self.options)

    @property
    def order_scorer(self) -> str | None:
        """The scorer a per-layer mixed plan needs run (None: uniform, per-unit, or the random order)."""
        return ORDER_COLUMNS[self.scorer][0] if self.bits == "mixed" and not self.per_unit else None


def make_plan(n_layers: int, scores, config: BitsConfig, seed: int = 0, params: list[int] | None = None,
              costs: list[dict[int, float]] | None = None) -> Plan:
    """Per-layer widths from the importance order of the chosen score column. With more than two widths the
    exact knapsack decides, on measured `costs` (per layer {bits: KL}) when given, else on rank proxies."""
    if config.bits != "mixed":
        return Plan.uniform(n_layers, int(config.bits), "uniform")
    column = ORDER_COLUMNS[config.scorer][1]
    order = random_order(n_layers, seed) if column is None else scores.importance_order(column)
    rank = {index: r for r, index in enumerate(order)}
    label = column or f"random(seed {seed})"
    if len(config.bit_choices) == 2:
        bits = layerwise_bits(order, config.avg_bits, config.bit_choices)
    else:
        if costs is not None:
            label = f"knapsack on measured KL, {label}"
        bits = budgeted_bits(costs or proxy_costs(order, config.bit_choices), params or [1] * n_layers,
                             config.avg_bits)
    return Plan.uniform(n_layers).with_bits(bits, [f"{label} rank {rank[i]}/{n_layers}" for i in range(n_layers)])
