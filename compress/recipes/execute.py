"""Running a recipe: DIR/01-<stage>/, DIR/02-<stage>/, ... (each an ordinary model folder written all or nothing
by its command), eval.json / bench.json in the last one, DIR/recipe.yaml (every setting resolved) and
DIR/report.md (`compress report` over the stage folders).

Resumable: a stage folder holds fingerprint.json (compress.recipes.fingerprint). A rerun skips each stage whose
folder holds a fingerprint equal to the one it would have now (same input, settings, package versions and data
files), and runs everything from the first stage that differs or is missing. A stage killed mid-way left only a
temporary folder beside its own (its command removes it, saying so); a folder without fingerprint.json is run
again, whatever it holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.recipes.spec import Recipe

FINGERPRINT = "fingerprint.json"
TRAINING = ("finetune", "heal")  # stages every process of `accelerate launch` runs together


@dataclass(frozen=True)
class RecipeResult:
    out: Path
    stages: list[dict]  # per stage: name, folder, fingerprint, ran (False: up to date, skipped), summary
    final: Path  # the last stage's folder (holds eval.json / bench.json)
    report: Path
    rank: int = 0  # this process under accelerate launch (0: the main one, which wrote everything)


def run_recipe(recipe: Recipe, out: str | Path, data_dir=None, progress: bool = True) -> RecipeResult:
    from compress.data import data_dir as resolve_data_dir
    from compress.outputs import claim_output
    from compress.recipes.fingerprint import model_hash, package_versions

    from compress.training.distributed import close, is_main, share, world

    root, main = resolve_data_dir(data_dir), is_main()
    out = Path(out)
    if main:  # under accelerate launch every process runs this loop; the main one decides and writes
        claim_output(out, overwrite=True, records=("recipe.yaml", "report.md"))  # one run per DIR
        out.mkdir(parents=True, exist_ok=True)
        _write(out / "recipe.yaml", resolved_yaml(recipe))
    source, versions, model, dirty = model_hash(recipe.model), package_versions(), recipe.model, False
    done = []
    for i, stage in enumerate(recipe.stages, 1):
        folder = out / f"{i:02d}-{stage.name}"
        head = f"[{i}/{len(recipe.stages)}] {stage.name} -> {folder}"
        config = _settings(stage.config)
        saved = None if dirty or not main else _saved(folder / FINGERPRINT)
        saved = share(saved if _is_current(saved, stage.name, source, config, versions) else None)
        ran = saved is None
        if not ran:
            _say(main, f"{head}: up to date (fingerprint {saved['fingerprint'][:12]}), skipped")
        else:
            dirty = True
            _say(main, head + (": changed or incomplete, running again" if folder.exists() else ""))
            if main or stage.name in TRAINING:  # data-parallel training takes every process
                summary, data = _run_stage(stage, model, folder, out, root, progress)
            if main:
                saved = _record(stage.name, source, config, versions, data, summary)
                _write(folder / FINGERPRINT, json.dumps(saved, indent=1) + "\n")
                _say(main, f"{head}: {summary}")
            saved = share(saved)
        done.append({"name": stage.name, "folder": folder, "fingerprint": saved["fingerprint"], "ran": ran,
                     "summary": saved.get("summary", "")})
        source, model = saved["fingerprint"], str(folder)
    final = Path(model)
    if not main:
        close()  # waits for the main process's eval / bench / report
        return RecipeResult(out, done, final, out / "report.md", world()[0])
    _finish(recipe, final, source, versions, root, out, dirty, progress)
    from compress.reporting.folders import write_report

    report = write_report([d["folder"] for d in done], out, overwrite=True)
    close()
    return RecipeResult(out, done, final, report)


def _say(main: bool, line: str) -> None:
    if main:
        print(line, flush=True)


def _run_stage(stage, model, folder: Path, out: Path, root, progress: bool) -> tuple[str, dict]:
    """Run one stage; (summary line, {data file: sha256} of what it read)."""
    from compress.recipes.stages import run_operation

    return _recorded(lambda: run_operation(stage.name, model, stage.config, folder, root, progress), out, model)


def _recorded(call, out: Path, model: str | None) -> tuple[object, dict]:
    """(call(), {file: sha256} of the data files it read)."""
    from compress.files import recorded_reads
    from compress.recipes.fingerprint import data_hashes

    with recorded_reads() as reads:
        result = call()
    return result, data_hashes(_data_files(reads, out, model))


def _data_files(reads: set[Path], out: Path, model: str | None) -> list[Path]:
    """The files read that are data: not the recipe's own folders, the model read, or compress's model cache."""
    from compress.model.gguf import cache_dir

    skip = [out.resolve(), cache_dir().resolve()]
    if model is not None and Path(model).expanduser().is_dir():
        skip.append(Path(model).expanduser().resolve())
    return [p for p in reads if not any(p == s or s in p.parents for s in skip)]


def _record(stage: str, source: str, config: dict, versions: dict, data: dict, summary: str = "") -> dict:
    from compress.recipes.fingerprint import fingerprint

    return {"fingerprint": fingerprint(stage, source, config, versions, data), "stage": stage, "input": source,
            "config": config, "versions": versions, "data": data, "summary": summary}


def _is_current(saved, stage: str, source: str, config: dict, versions: dict) -> bool:
    """Whether a saved record is what this stage would record now (its data files hashed again); a missing or
    damaged record is not trusted."""
    from compress.recipes.fingerprint import data_hashes, fingerprint

    try:
        return fingerprint(stage, source, config, versions, data_hashes(saved["data"])) == saved["fingerprint"]
    except (KeyError, TypeError):
        return False


def _saved(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finish(recipe: Recipe, final: Path, source: str, versions: dict, root, out: Path, dirty: bool,
            progress: bool) -> None:
    """eval / bench of the last stage's model against the recipe's model, each skipped when its record in the
    last folder is current (FINGERPRINT's "finish" entries)."""
    if not recipe.finish:
        return
    path = final / FINGERPRINT
    record = json.loads(path.read_text())
    baseline = recipe.model or _bundled()
    for name, config in recipe.finish.items():
        settings, saved = _settings(config), record.setdefault("finish", {}).get(name)
        head = f"[{name}] {final.name} vs {Path(baseline).name}"
        if not dirty and (final / f"{name}.json").is_file() and _is_current(saved, name, source, settings, versions):
            print(f"{head}: up to date, skipped", flush=True)
            continue
        _, data = _recorded(lambda: _run_finish(name, str(final), config, baseline, root), out, str(final))
        record["finish"][name] = _record(name, source, settings, versions, data)
        _write(path, json.dumps(record, indent=1) + "\n")
        print(f"{head}: wrote {final / (name + '.json')}", flush=True)


def _run_finish(name: str, final: str, config, baseline: str, root) -> None:
    if name == "eval":
        from compress.evaluation.lmeval import run_eval

        run_eval(final, config, baseline=baseline, data_dir=root, out=Path(final), overwrite=True)
    else:
        from compress.benchmark.command import run_bench

        run_bench(final, config, baseline=baseline, data_dir=root, out=Path(final), overwrite=True)


def _bundled() -> str:
    from compress.model.gguf import default_gguf_path

    return str(default_gguf_path())


def _settings(config) -> dict[str, Any]:
    from compress.recipes.stages import resolved

    return resolved(config)


def resolved_yaml(recipe: Recipe) -> str:
    """The recipe with every setting written out: loading it again gives the same configs."""
    import yaml

    data: dict[str, Any] = {"model": recipe.model,
                            "stages": [{s.name: _settings(s.config)} for s in recipe.stages]}
    data.update({name: _settings(config) for name, config in recipe.finish.items()})
    return (f"# resolved from {recipe.source} by compress: every setting of every stage\n"
            + yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def _write(path: Path, text: str) -> None:
    from compress.outputs import write_file

    write_file(path, text, overwrite=True)
