"""The scorer registry: name -> function returning a LayerScores, merged into one table by `score`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from compress.config import build_config
from compress.errors import CompressError
from compress.scores import LayerScores


@dataclass(frozen=True)
class Scorer:
    function: str  # "module:function" under compress.scorers, imported on use (keeps `--help` instant)
    config: str  # "module:ConfigClass"
    needs_calib: bool
    summary: str


SCORERS: dict[str, Scorer] = {
    "alpha": Scorer("spectral:spectral_scores", "spectral:SpectralConfig", False,
                    "HT-SR power-law exponent of each weight matrix's eigenvalue spectrum (alpha, alpha_median, ...)"),
    "lim": Scorer("embedding:embedding_scores", "embedding:EmbeddingConfig", True,
                  "embedding change on calibration tokens: LIM, ShortGPT BI, angular distance (one forward pass)"),
    "zd": Scorer("outliers:outlier_scores", "outliers:OutlierConfig", False,
                 "outlier weights: fraction with |z| > 1 (ZD) and max|w|/std"),
    "sensitivity": Scorer("sensitivity:sensitivity_scores", "sensitivity:SensitivityConfig", True,
                          "measured: KL and perplexity increase with each layer alone at low-bit RTN (slow)"),
}
# Other names users reach for; each resolves to the scorer that computes that column.
ALIASES = {"spectral": "alpha", "embedding": "lim", "bi": "lim", "angular": "lim", "outliers": "zd",
           "kl": "sensitivity"}


def resolve(names: str | Sequence[str]) -> list[str]:
    """'alpha,lim,zd' or ['alpha', 'bi'] -> registry names, deduplicated, in the given order."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out: list[str] = []
    for raw in names:
        name = ALIASES.get(raw.strip(), raw.strip())
        if name not in SCORERS:
            valid = ", ".join([*SCORERS, *ALIASES])
            raise CompressError(f"unknown scorer {raw.strip()!r}; valid: {valid}")
        if name not in out:
            out.append(name)
    if not out:
        raise CompressError(f"no scorer named; valid: {', '.join(SCORERS)}")
    return out


def _load(ref: str) -> Any:
    import importlib

    module, attr = ref.split(":")
    return getattr(importlib.import_module(f"compress.scorers.{module}"), attr)


def resolved_settings(names: Sequence[str], settings: Mapping[str, Mapping[str, Any]] | None = None) -> dict:
    """Every config field of every named scorer, defaults filled in: what settings.json records."""
    import dataclasses

    settings = settings or {}
    return {n: dataclasses.asdict(build_config(_load(SCORERS[n].config), settings.get(n))) for n in resolve(names)}


def needs_calib(names: Sequence[str]) -> bool:
    return any(SCORERS[n].needs_calib for n in resolve(names))


def score(
    model,
    names: str | Sequence[str] = ("alpha", "lim", "zd"),
    calib=None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> LayerScores:
    """Run the named scorers and merge their columns into one LayerScores.

    settings: {scorer name: {config field: value}}, e.g. {"zd": {"threshold": 2.0}}; unknown keys are errors.
    calib: (samples, seq_len) token ids, needed by "lim".
    """
    names = resolve(names)
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise CompressError(f"settings for scorers not run: {', '.join(unknown)}")
    result = None
    for name in names:
        spec = SCORERS[name]
        if spec.needs_calib and calib is None:
            raise CompressError(f"scorer {name!r} needs calibration tokens")
        config = build_config(_load(spec.config), settings.get(name))
        table = _load(spec.function)(model, calib, config, progress=progress)
        result = table if result is None else result.merge(table)
    return result
