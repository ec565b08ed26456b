"""The records beside a run's weights, so the run can be read and repeated: plan.json, scores.json,
skip_scores.json, costs.json, stats.json and settings.json (`compress run`, compress.pipeline.runner)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path


def write_records(tmp: Path, model: str | None, config, decided, stats: dict, quantize: bool) -> None:
    """plan.json, scores.json, skip_scores.json, costs.json, stats.json and settings.json beside the weights."""
    from compress.provenance import versions

    if decided.scores is not None:
        (tmp / "scores.json").write_text(decided.scores.to_json())
    if decided.skip_scores is not None:
        (tmp / "skip_scores.json").write_text(decided.skip_scores.to_json())
    if isinstance(decided.costs, dict):
        (tmp / "costs.json").write_text(json.dumps(decided.costs))
    elif decided.costs is not None:
        (tmp / "costs.json").write_text(json.dumps([{str(b): c for b, c in row.items()} for row in decided.costs]))
    (tmp / "plan.json").write_text(decided.plan.to_json())
    (tmp / "stats.json").write_text(json.dumps(stats, indent=1))
    (tmp / "settings.json").write_text(json.dumps(
        {"command": "run", "model": model or "SmolLM2-135M-Instruct (bundled default)", "config": asdict(config),
         "quantized": quantize, "versions": versions()}, indent=1))
