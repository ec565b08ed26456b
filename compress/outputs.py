"""Writing output folders so a failed run leaves nothing half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

from compress.errors import CompressError

# A file's content, or a function that writes the file at the path it is given (e.g. a matplotlib figure).
Content = str | bytes | Callable[[Path], None]


def check_writable(out: Path) -> None:
    """Fail early, before any model is loaded, if `out` cannot be created or written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CompressError(f"output path {out} exists and is not a folder: choose another --out")
    parent = out if out.exists() else _existing_ancestor(out)
    if not parent.is_dir():
        raise CompressError(f"cannot create {out}: {parent} is not a folder; choose another --out")
    try:  # a real write: permission bits say nothing for root or read-only mounts
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise CompressError(f"cannot write to {parent} ({e.strerror}): choose a writable --out") from e


def default_out(model_spec: str | None, command: str) -> Path:
    """Where `compress eval` / `bench` write by default: the model's own folder (a compress output folder
    carries its eval and bench beside plan.json), else runs/<command>-<model>."""
    if model_spec is not None and Path(model_spec).is_dir():
        return Path(model_spec)
    return Path("runs") / f"{command}-{model_slug(model_spec)}"


def model_slug(model: str | None) -> str:
    """A short name of a model spec for default output folders (runs/<command>-<slug>)."""
    if model is None:
        return "SmolLM2-135M-Instruct"
    return Path(model.rstrip("/")).name.removesuffix(".gguf") or "model"


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; when the block ends without error, move its files into
    `out` (a rename if `out` does not exist yet, else file by file), else delete it: all or nothing."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if not out.exists():
            tmp.rename(out)
            return
        for path in tmp.iterdir():  # out exists (e.g. a rerun): replace just these files
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_folder(out: Path, files: Mapping[str, Content]) -> None:
    """Write every file into `out` through a staged folder: all or nothing."""
    check_writable(Path(out))
    with staged_folder(Path(out)) as tmp:
        for name, content in files.items():
            target = tmp / name
            if callable(content):
                content(target)
            elif isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
