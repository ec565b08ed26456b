"""Plan: one decision per decoder layer (bits, skip, reason), made by the decision rules (compress.bits, compress.depth) from
LayerScores before anything touches the model. No torch: it is the table a run writes as plan.json and
a user may edit and feed back with --plan.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from compress.errors import CompressError

BITS = (2, 3, 4, 8, 16)  # 16 = leave the layer in its original floating-point dtype
WIDTHS = (2, 3, 4, 8)  # quantized code widths
GROUPS = (32, 64, 128, None)  # weights per scale; None: one scale per output channel (GPTQ group_size -1)
# llama.cpp's legacy block types that the `gguf` package quantizes itself (gguf/quants.py, reference rounding of
# ggml-quants.c): blocks of 32 weights, an fp16 scale (and an fp16 min for the _1 types). (bits, sym) -> type.
GGUF_TYPES = {(4, True): "q4_0", (4, False): "q4_1", (5, True): "q5_0", (5, False): "q5_1", (8, True): "q8_0"}


@dataclass(frozen=True, order=True)
class Option:
    """One way to store a unit: code width, group size (None = per channel), symmetric grid, and the format
    that stores it: "gptq" (GPTQ packing, compress.quant.storage) or "gguf" (a llama.cpp block type of
    GGUF_TYPES, group size 32, labelled by its type name: q4_0, q8_0, ...)."""

    bits: int
    group_size: int | None = 64
    sym: bool = True
    fmt: str = "gptq"

    def __post_init__(self) -> None:
        if self.fmt == "gguf":
            if (self.bits, self.sym) not in GGUF_TYPES or self.group_size != 32:
                raise CompressError(f"gguf options are {', '.join(GGUF_TYPES.values())} (blocks of 32)")
            return
        if self.fmt != "gptq":
            raise CompressError(f"option format must be gptq or gguf, got {self.fmt!r}")
        if self.bits not in WIDTHS:
            raise CompressError(f"option bits must be one of {', '.join(map(str, WIDTHS))}, got {self.bits}")
        if self.group_size not in GROUPS:
            raise CompressError(f"option group size must be 32, 64, 128 or per-channel, got {self.group_size}")

    @property
    def label(self) -> str:
        if self.fmt == "gguf":
            return GGUF_TYPES[self.bits, self.sym]
        return f"{self.bits}b-{'g' + str(self.group_size) if self.group_size else 'ch'}{'' if self.sym else '-asym'}"

    @classmethod
    def parse(cls, text: str) -> "Option":
        """'4b-g64', '3b-ch', '2b-g32-asym', 'q4_0' (the label) back to an Option; one-line error otherwise."""
        gguf = {name: key for key, name in GGUF_TYPES.items()}
        if text.strip().lower() in gguf:
            bits, sym = gguf[text.strip().lower()]
            return cls(bits, 32, sym, "gguf")
        m = re.fullmatch(r"(\d)b-(?:g(\d+)|ch)(-asym)?", text.strip())
        if not m:
            raise CompressError(f"option {text!r} must look like 4b-g64, 3b-ch, 2b-g32-asym or q4_0")
        return cls(int(m[1]), int(m[2]) if m[2] else None, not m[3])


@dataclass(frozen=True)
class LayerDecision:
    index: int  # decoder-layer index in the model as it is now
    bits: int = 16
    skip: bool = False
    reason: str = ""
    # per fused unit ("qkv", "o", "gate_up", "down"): its option; empty = every Linear at `bits` with the
    # checkpoint's group size. When set, `bits` is the widest of them.
    units: tuple[tuple[str, Option], ...] = ()

    def __post_init__(self) -> None:
        if self.bits not in BITS and not (self.units and all(o.fmt == "gguf" for _, o in self.units)):
            raise ValueError(f"layer {self.index}: bits must be one of {BITS}, got {self.bits}")
        if self.skip and self.bits != 16:
            raise ValueError(f"layer {self.index}: a skipped layer is not quantized (bits must be 16)")
        if self.units and (self.skip or self.bits != max(o.bits for _, o in self.units)):
            raise ValueError(f"layer {self.index}: with per-unit options the layer is not skipped and bits is "
                             f"their widest ({max(o.bits for _, o in self.units)})")

    def to_dict(self) -> dict:
        row = {"index": self.index, "bits": self.bits, "skip": self.skip, "reason": self.reason}
        return row | ({"units": {name: o.label for name, o in self.units}} if self.units else {})


@dataclass(frozen=True)
class Plan:
    layers: tuple[LayerDecision, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("a plan needs at least one layer")
        for position, decision in enumerate(self.layers):
            if decision.index != position:
                raise ValueError(f"plan row {position} has index {decision.index}: rows must be 0..L-1 in order")
        if all(d.skip for d in self.layers):
            raise ValueError("a plan cannot skip every layer")

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def bits(self) -> tuple[int, ...]:
        return tuple(d.bits for d in self.layers)

    @classmethod
    def uniform(cls, n_layers: int, bits: int = 16, reason: str = "") -> "Plan":
        return cls(tuple(LayerDecision(i, bits=bits, reason=reason) for i in range(n_layers)))

    def with_bits(self, bits: Sequence[int], reasons: Sequence[str] | None = None) -> "Plan":
        """The same plan with new per-layer bits (and reasons)."""
        if len(bits) != self.n_layers:
            raise ValueError(f"{len(bits)} bit widths for a plan of {self.n_layers} layers")
        reasons = reasons or [d.reason for d in self.layers]
        return Plan(tuple(LayerDecision(d.index, b, d.skip, r)
                          for d, b, r in zip(self.layers, bits, reasons)))

    def with_skip(self, dropped: Sequence[int], reason: str | Mapping[int, str] = "") -> "Plan":
        """The same plan with the `dropped` layers marked skip (and left at 16 bits); reason: one for all,
        or {layer: reason}."""
        dropped = set(dropped)
        bad = sorted(i for i in dropped if not 0 <= i < self.n_layers)
        if bad:
            raise ValueError(f"layer indices {bad} are out of range 0..{self.n_layers - 1}")
        reasons = reason if isinstance(reason, Mapping) else {i: reason for i in dropped}
        return Plan(tuple(LayerDecision(d.index, 16, True, reasons.get(d.index) or d.reason)
                          if d.index in dropped else d for d in self.layers))

    @property
    def kept(self) -> tuple[int, ...]:
        """Indices of the layers that stay, in order."""
        return tuple(d.index for d in self.layers if not d.skip)

    @property
    def skipped(self) -> tuple[int, ...]:
        return tuple(d.index for d in self.layers if d.skip)

    def reduced(self) -> "Plan":
        """The plan of the model after removing the skipped layers: the kept rows, renumbered 0..L'-1."""
        return Plan(tuple(LayerDecision(new, d.bits, False, d.reason, d.units)
                          for new, d in enumerate(d for d in self.layers if not d.skip)))

    def with_kept(self, reduced: "Plan") -> "Plan":
        """The inverse of `reduced`: this plan with the kept layers' decisions taken, in order, from a plan
        made for the model after removal."""
        if reduced.n_layers != len(self.kept) or reduced.skipped:
            raise ValueError(f"need a plan of the {len(self.kept)} kept layers without skips, got "
                             f"{reduced.n_layers} layers")
        after = dict(zip(self.kept, reduced.layers))
        return Plan(tuple(replace(after[d.index], index=d.index) if d.index in after else d for d in self.layers))

    def check_layers(self, n_layers: int) -> None:
        """Refuse a plan made for a model with a different number of decoder layers."""
        if n_layers != self.n_layers:
            raise CompressError(f"the plan has {self.n_layers} layers but the model has {n_layers}: "
                                f"it was made for another model")

    # ---- serialisation -------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"format": 1, "layers": [d.to_dict() for d in self.layers]}, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "plan.json") -> "Plan":
        """The plan a plan.json holds; `source` names the file in every refusal (wrong shape, types, values)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CompressError(f"{source} is not valid JSON ({e.msg} at line {e.lineno})") from e
        if not isinstance(data, dict) or data.get("format") != 1 or not isinstance(data.get("layers"), list):
            raise CompressError(f'{source} must be {{"format": 1, "layers": [...]}}')
        try:
            return cls(tuple(_decision(row, n) for n, row in enumerate(data["layers"])))
        except (TypeError, ValueError) as e:
            raise CompressError(f"{source}: {e}") from e

    def table(self, extra: dict[str, Sequence[Any]] | None = None) -> str:
        """Aligned text: layer | extra columns (e.g. the score used) | bits | skip | reason."""
        extra = extra or {}
        heads = ["layer", *extra, "bits", "skip", "reason"]
        rows = [[str(d.index), *(_fmt(v[d.index]) for v in extra.values()), str(d.bits), "yes" if d.skip else "",
                 d.reason] for d in self.layers]
        widths = [max(len(r[c]) for r in [heads, *rows]) for c in range(len(heads))]
        lines = ["  ".join(h.ljust(w) if h == "reason" else h.rjust(w) for h, w in zip(heads, widths))]
        lines += ["  ".join(v.ljust(w) if c == len(heads) - 1 else v.rjust(w) for c, (v, w) in
                            enumerate(zip(r, widths))) for r in rows]
        return "\n".join(line.rstrip() for line in lines)


_ROW_TYPES = {"index": int, "bits": int, "skip": bool, "reason": str, "units": dict}


def _decision(row: Any, position: int) -> LayerDecision:
    """One plan.json row, its keys and types checked (bool is not an int here: "bits": true is refused)."""
    if not isinstance(row, dict):
        raise TypeError(f"row {position} must be an object, got {type(row).__name__}")
    row = {k: v for k, v in row.items() if k != "lr_mult"}  # plans written before 0.2 carry an unused lr_mult
    unknown = set(row) - set(_ROW_TYPES)
    if unknown:
        raise TypeError(f"row {position} has unknown keys {sorted(unknown)}; valid: {sorted(_ROW_TYPES)}")
    for key, kind in _ROW_TYPES.items():
        value = row.get(key)
        if key in row and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise TypeError(f"row {position}: {key} must be {kind.__name__}, got {json.dumps(value)}")
    if "index" not in row:
        raise TypeError(f"row {position} has no index")
    units = row.pop("units", {})
    try:
        row["units"] = tuple((str(name), Option.parse(str(label))) for name, label in units.items())
    except CompressError as e:
        raise ValueError(f"row {position}: {e}") from e
    return LayerDecision(**row)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
