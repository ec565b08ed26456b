"""`compress eval`'s cache: a model folder's eval.json holds the tasks already scored, reused when the limit,
max length, data dir and backend match (compress.evaluation.lmeval.run_eval)."""

from __future__ import annotations

from pathlib import Path

from compress.errors import CompressError


def check_nothing_dropped(path: Path, names: list[str], settings: dict, root: Path | None) -> None:
    """An eval.json at --out is replaced only when the new one keeps all it holds (same settings, its tasks
    among `names`: they are reused, so adding a task to --tasks extends it), else only with --overwrite."""
    if not path.is_file():
        return
    from compress.files import read_record

    saved = read_record(path, "eval.json", {"tasks": dict, "settings": dict})
    dropped = sorted(set(saved["tasks"]) - set(names))
    if dropped or not _same_settings(saved, settings, root):
        what = f"tasks {', '.join(dropped)} that --tasks leaves out" if dropped else "results under other settings"
        raise CompressError(f"{path} holds {what}: add them to --tasks, pass --overwrite to replace it, or "
                            f"choose another --out")


def _same_settings(saved: dict, settings: dict, root: Path | None) -> bool:
    """Same limit, max length, data dir and backend (eval.json files written before --backend were hf's)."""
    return (all(saved["settings"].get(key) == settings[key] for key in ("limit", "max_length"))
            and saved["settings"].get("backend", "hf") == settings.get("backend", "hf")
            and saved.get("data_dir") == (str(root) if root else None))


def saved_results(spec: str | None, names: list[str], settings: dict, root: Path | None) -> dict:
    """{task: record} of the tasks among `names` that the model folder's own eval.json holds under the same
    limit, max_length and data dir ({} when it has none). Records are taken from the model's side only."""
    path = Path(spec) / "eval.json" if isinstance(spec, str) and Path(spec).is_dir() else None
    if path is None or not path.is_file():
        return {}
    from compress.files import read_record

    saved = read_record(path, "eval.json", {"tasks": dict, "settings": dict})
    same = _same_settings(saved, settings, root)
    return {name: saved["tasks"][name] for name in names if name in saved["tasks"]} if same else {}
