"""`compress score`: per-layer scores of a model; with an output folder, scores.json/.csv/.png and
settings.json."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from compress.config import check_settings, setting
from compress.scores import LayerScores


@dataclass(frozen=True)
class ScoreConfig:
    """`compress score`: which scorers, on what calibration text, with their main knobs."""

    scorers: tuple[str, ...] = setting(("alpha", "lim", "zd"), "comma list of alpha, lim, zd, sensitivity "
                                       "(aliases: spectral, embedding, bi, angular, outliers, kl); sensitivity runs "
                                       "L+1 forward passes per batch")
    calib: str = setting("wikitext2-valid", "calibration text: wikitext2-valid, boolq-passages, or a .txt/.jsonl "
                         "file")
    calib_samples: int = setting(16, "calibration samples", minimum=1)
    calib_seq_len: int = setting(256, "tokens per calibration sample", minimum=1)
    seed: int = setting(0, "seed of the calibration sample")
    angular_span: int = setting(4, "angular distance for spans 1..N", minimum=1)
    zd_threshold: float = setting(1.0, "|z| above this counts as an outlier weight")
    alpha_precision: str = setting("float32", "eigenvalue precision of the alpha scorer",
                                   choices=("float32", "float64"))
    sensitivity_bits: int = setting(2, "width each layer is tried at by the sensitivity scorer",
                                    choices=(2, 3, 4, 8))

    def __post_init__(self) -> None:
        from compress.scorers import resolve

        object.__setattr__(self, "scorers", tuple(resolve(list(self.scorers))))
        check_settings(self)

    def scorer_settings(self) -> dict[str, dict]:
        """{scorer: {its config field: value}} for the scorers this config runs."""
        knobs = {"alpha": {"precision": self.alpha_precision}, "lim": {"max_span": self.angular_span},
                 "zd": {"threshold": self.zd_threshold}, "sensitivity": {"bits": self.sensitivity_bits}}
        return {name: knobs[name] for name in self.scorers}


def score_folder(model, tokenizer, config: ScoreConfig, out: Path | None, calib_root, texts,
                 progress: bool = True) -> LayerScores:
    """Score a loaded model (calibration `texts` already read from `calib_root`); with `out`, write the folder."""
    from compress.scorers import resolved_settings, score

    names, settings = list(config.scorers), config.scorer_settings()
    started = time.perf_counter()
    tokens = None
    if texts is not None:
        from compress.data import calibration_samples

        tokens = calibration_samples(tokenizer, texts, n_samples=config.calib_samples,
                                     seq_len=config.calib_seq_len, seed=config.seed)
    table = score(model, names, tokens, settings, progress=progress)
    elapsed = time.perf_counter() - started
    if out is not None:
        from compress.model import model_label
        from compress.outputs import write_folder
        from compress.provenance import versions
        from compress.scorers.plot import plot_scores

        resolved = {
            "command": "score",
            "model": str(getattr(model.config, "name_or_path", "")),
            "scorers": names,
            "settings": resolved_settings(names, settings),
            "calib": config.calib if tokens is not None else None,
            "calib_samples": config.calib_samples if tokens is not None else None,
            "calib_seq_len": config.calib_seq_len if tokens is not None else None,
            "seed": config.seed,
            "data_dir": str(calib_root) if calib_root else None,
            "seconds": round(elapsed, 3),
            "versions": versions(),
        }
        write_folder(Path(out), {
            "scores.json": table.to_json(),
            "scores.csv": table.to_csv(),
            "settings.json": json.dumps(resolved, indent=1),
            "scores.png": lambda p: plot_scores(table, p, f"{model_label(model)}: per-layer scores"),
        })
    return table
