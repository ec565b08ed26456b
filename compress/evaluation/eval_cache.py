"""`compress eval`'s cache: a model folder's eval.json holds the tasks already scored, reused when the limit,
max length, data dir and backend match (compress.evaluation.lmeval.run_eval). A .gguf file (the bundled model
included) has no folder of its own: its scores are kept in the user cache beside its converted folder
(compress.model.gguf.cache_dir()/eval/<the converted folder's name>.json, so a replaced file is scored again)."""

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
    own = isinstance(spec, str) and Path(spec).is_dir()
    saved = _read(Path(spec) / "eval.json" if own else gguf_record(spec), own)
    if saved is None or not _same_settings(saved, settings, root):
        return {}
    return {name: saved["tasks"][name] for name in names if name in saved["tasks"]}


def _read(path: Path | None, own: bool) -> dict | None:
    """The eval.json record at `path`; None when there is none, or when a damaged cache entry (not `own`: not
    the model folder's own file) is to be scored again rather than refused."""
    if path is None or not path.is_file():
        return None
    from compress.files import read_record

    try:
        return read_record(path, "eval.json", {"tasks": dict, "settings": dict})
    except CompressError:
        if own:
            raise
        return None


def gguf_record(spec) -> Path | None:
    """Where the scores of a GGUF model (a .gguf path, or None: the bundled one) are kept; None for anything else
    (a folder keeps its own eval.json; a hub id or a model in memory is not cached)."""
    if spec is not None and not (isinstance(spec, str) and spec.endswith(".gguf")):
        return None
    from compress.model.gguf import cache_dir, cache_folder, default_gguf_path

    try:
        path = default_gguf_path() if spec is None else Path(spec).expanduser()
    except CompressError:  # no bundled model installed: nothing to cache
        return None
    return cache_dir() / "eval" / f"{cache_folder(path).name}.json" if path.is_file() else None


def remember(spec, tasks: dict, settings: dict, root: Path | None) -> None:
    """Keep a GGUF model's task records for the next evaluation under the same settings (merged with those
    kept already); a no-op for other models."""
    path = gguf_record(spec)
    if path is None:
        return
    import json

    from compress.outputs import write_file

    saved = _read(path, own=False)
    kept = saved["tasks"] if saved and _same_settings(saved, settings, root) else {}  # same settings only
    record = {"tasks": {**kept, **tasks}, "settings": settings, "data_dir": str(root) if root else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, json.dumps(record, indent=1) + "\n", overwrite=True)
