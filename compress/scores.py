"""LayerScores: one row per decoder layer, one column per score, each column with its direction.

No torch here: this is the table that policies read, and it round-trips through JSON and CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from compress.errors import CompressError

# Which end of a column marks the *more important* layer. A policy reads this; it never guesses.
HIGHER = "higher"  # larger value = more important layer (e.g. LIM, Block Influence)
LOWER = "lower"  # smaller value = more important layer (e.g. ZD per LayerwiseQuant, α per AlphaPruning)
INFO = "none"  # diagnostic only (norms, ranks): not an importance, policies refuse to rank by it
DIRECTIONS = (HIGHER, LOWER, INFO)


@dataclass(frozen=True)
class LayerScores:
    """columns[name][i] is layer i's score (NaN where undefined, e.g. angular distance past the last layer)."""

    n_layers: int
    columns: Mapping[str, tuple[float, ...]]
    directions: Mapping[str, str]
    descriptions: Mapping[str, str] = field(default_factory=dict)
    matrices: tuple[Mapping[str, Any], ...] = ()  # per-matrix detail rows where a scorer has them

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        object.__setattr__(self, "columns", {k: tuple(float(x) for x in v) for k, v in self.columns.items()})
        for name, values in self.columns.items():
            if len(values) != self.n_layers:
                raise ValueError(f"column {name!r} has {len(values)} values for {self.n_layers} layers")
            if self.directions.get(name) not in DIRECTIONS:
                raise ValueError(f"column {name!r} needs a direction in {DIRECTIONS}")
        extra = set(self.directions) - set(self.columns)
        if extra:
            raise ValueError(f"directions for unknown columns: {sorted(extra)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def __getitem__(self, name: str) -> tuple[float, ...]:
        if name not in self.columns:
            raise CompressError(f"no score column {name!r}; columns: {', '.join(self.columns)}")
        return self.columns[name]

    def importance_order(self, name: str) -> list[int]:
        """Layer indices from most to least important by column `name` (undefined values last)."""
        values, direction = self[name], self.directions[name]
        if direction == INFO:
            raise CompressError(f"column {name!r} is diagnostic, not an importance score")
        sign = -1.0 if direction == HIGHER else 1.0
        return sorted(range(self.n_layers), key=lambda i: (math.isnan(values[i]), sign * values[i], i))

    def merge(self, other: "LayerScores") -> "LayerScores":
        if other.n_layers != self.n_layers:
            raise ValueError(f"cannot merge scores of {self.n_layers} and {other.n_layers} layers")
        return LayerScores(
            n_layers=self.n_layers,
            columns={**self.columns, **other.columns},
            directions={**self.directions, **other.directions},
            descriptions={**self.descriptions, **other.descriptions},
            matrices=self.matrices + other.matrices,
        )

    # ---- serialisation -------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        def clean(x):  # JSON has no NaN: undefined entries become null
            return None if isinstance(x, float) and not math.isfinite(x) else x

        return {
            "format": 1,
            "n_layers": self.n_layers,
            "columns": {k: [clean(x) for x in v] for k, v in self.columns.items()},
            "directions": dict(self.directions),
            "descriptions": dict(self.descriptions),
            "matrices": [{k: clean(v) for k, v in row.items()} for row in self.matrices],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerScores":
        if data.get("format") != 1:
            raise CompressError(f"unsupported scores.json format {data.get('format')!r}")
        nan = float("nan")
        return cls(
            n_layers=data["n_layers"],
            columns={k: tuple(nan if x is None else x for x in v) for k, v in data["columns"].items()},
            directions=data["directions"],
            descriptions=data.get("descriptions", {}),
            matrices=tuple(data.get("matrices", ())),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["layer", *self.columns])
        for i in range(self.n_layers):
            writer.writerow([i, *(repr(self.columns[k][i]) for k in self.columns)])
        return out.getvalue()

    def table(self, names: tuple[str, ...] | None = None) -> str:
        """Aligned text table, one row per layer; column headers carry ↑/↓ for the important end."""
        names = names or self.names
        arrow = {HIGHER: "↑", LOWER: "↓", INFO: ""}
        heads = ["layer"] + [f"{n}{arrow[self.directions[n]]}" for n in names]
        rows = [[str(i)] + [_fmt(self.columns[n][i]) for n in names] for i in range(self.n_layers)]
        widths = [max(len(r[c]) for r in [heads, *rows]) for c in range(len(heads))]
        lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
        return "\n".join(lines)


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties) of two equal-length sequences."""
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    norm = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / norm if norm else float("nan")


def rank_agreement(scores: LayerScores, reference: str) -> dict[str, float]:
    """Spearman correlation of each rankable column's importance with `reference`'s, on the layers where
    both are defined; directions are applied, so +1 means the same importance order."""
    def signed(name):
        sign = 1.0 if scores.directions[name] == HIGHER else -1.0
        return [sign * x for x in scores[name]]

    ref = signed(reference)
    out = {}
    for name in scores.names:
        if name == reference or scores.directions[name] == INFO:
            continue
        pairs = [(x, y) for x, y in zip(signed(name), ref) if not (math.isnan(x) or math.isnan(y))]
        if len(pairs) > 2:
            out[name] = spearman([p[0] for p in pairs], [p[1] for p in pairs])
    return out


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "-"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.4f}"
