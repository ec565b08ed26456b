"""Writing output folders: all or nothing, one owner at a time, never replacing earlier output unless asked.

The one policy of every command that writes (`claim_output`, before any work):
- a folder command (score, run, finetune) needs a new or empty --out; `overwrite` replaces the old folder whole
  (swapped in when the new one is complete, never the model folder being read);
- a record command (eval, bench, report, ppl --out) adds its files to a folder (by default the model's own);
  it refuses to replace a file of the same name unless `overwrite` (eval merges into eval.json instead);
- the claim holds an exclusive lock on --out until the result is in place, so a second process writing the
  same --out fails at once with a clear line; temporary folders a killed run left are removed with a notice;
- what is written gets the user's umask (not mkdtemp's 0700 / the 0600 of some writers), so a model folder can
  be shared with a server running as another user.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from compress.errors import CompressError

# A file's content, or a function that writes the file at the path it is given (e.g. a matplotlib figure).
Content = str | bytes | Callable[[Path], None]


@dataclass
class _Claim:
    fd: int  # the open lock file (flock held while open)
    lock: Path
    overwrite: bool
    records: tuple[str, ...] | None  # None: a folder command


_CLAIMS: dict[Path, _Claim] = {}


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


def claim_output(out: str | Path, *, overwrite: bool = False, records: Sequence[str] | None = None,
                 source: str | Path | None = None) -> Path:
    """Check and lock `out` for this process before any work (see the module doc for the policy). `records`:
    the file names a record command writes; `source`: the model folder read, which is never replaced."""
    out = Path(out)
    check_writable(out)
    key = out.absolute()
    if key not in _CLAIMS:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, lock = _lock(out)
        _CLAIMS[key] = _Claim(fd, lock, overwrite, None)
    _CLAIMS[key].overwrite, _CLAIMS[key].records = overwrite, None if records is None else tuple(records)
    remove_stale(out)
    try:
        _check_policy(out, overwrite, records, source)
    except CompressError:
        release(out)
        raise
    return out


def _check_policy(out: Path, overwrite: bool, records: Sequence[str] | None, source) -> None:
    if records is not None:
        existing = [name for name in records if (out / name).exists()]
        if existing and not overwrite:
            raise CompressError(f"{out} already holds {', '.join(existing)}: pass --overwrite to replace "
                                f"{'it' if len(existing) == 1 else 'them'}, or choose another --out")
        return
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise CompressError(f"{out} already exists and is not empty: pass --overwrite to replace it, or "
                                f"choose another --out")
        if source is not None and Path(source).expanduser().resolve() == out.resolve():
            raise CompressError(f"--out {out} is the model folder being read: choose another --out")


def release(out: str | Path) -> None:
    """Drop this process's claim on `out` (the lock file goes; the OS drops the lock of a killed process)."""
    claim = _CLAIMS.pop(Path(out).absolute(), None)
    if claim is not None:
        claim.lock.unlink(missing_ok=True)
        os.close(claim.fd)


def release_all() -> None:
    """Drop every claim of this process (run at exit too)."""
    for out in list(_CLAIMS):
        release(out)


atexit.register(release_all)


def _lock(out: Path, wait: bool = False) -> tuple[int, Path]:
    """An exclusive flock on .<name>.lock beside `out`: (fd, path). Not waiting, a held lock is one line."""
    import fcntl

    lock = out.parent / f".{out.name}.lock"
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CompressError(f"{out} is being written by another compress process (pid {owner}): wait for "
                                f"it to finish, or choose another --out") from None
        try:  # the file may have been unlinked by its last owner between open and flock: then lock anew
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                return fd, lock
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def file_lock(target: Path, waiting: str) -> Iterator[None]:
    """Hold an exclusive lock on `target` (blocking; `waiting` is printed if another process holds it)."""
    try:
        fd, lock = _lock(target)
    except CompressError:
        print(f"compress: {waiting}", file=sys.stderr)
        fd, lock = _lock(target, wait=True)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def remove_stale(out: Path) -> None:
    """Remove temporary folders a killed run left beside `out` (only while holding its lock: none is live)."""
    stale = sorted(p for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*") for p in out.parent.glob(pattern))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    if stale:
        print(f"compress: removed {len(stale)} temporary folder(s) left by an interrupted run: "
              f"{', '.join(p.name for p in stale)}", file=sys.stderr)


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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give `folder` and everything in it the modes the user's umask allows (dirs 0777, files 0666 before it)."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(Path(root) / name, 0o777 & ~mask)
        for name in files:
            os.chmod(Path(root) / name, 0o666 & ~mask)


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; when the block ends without error, put it in place as the claim
    on `out` says (new folder; whole replacement with overwrite; files added for a record command), else
    delete it: all or nothing. The claim is released either way."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    claim = _CLAIMS.get(out.absolute())
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        apply_umask(tmp)
        _commit(tmp, out, claim)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        release(out)


def _commit(tmp: Path, out: Path, claim: _Claim | None) -> None:
    if out.is_dir() and not any(out.iterdir()) and (claim is None or claim.records is None):
        out.rmdir()  # an empty folder (made by hand, or a claimed --out) is taken as new
    if not out.exists():
        tmp.rename(out)
        return
    if claim is not None and claim.records is None:  # a folder command: replace the whole folder
        if not claim.overwrite:
            raise CompressError(f"{out} was written by another process while this run worked: nothing "
                                f"replaced; choose another --out")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
        return
    for path in tmp.iterdir():  # a record command (or an unclaimed caller): replace just these files
        os.replace(path, out / path.name)


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


def check_file_out(path: Path, overwrite: bool) -> None:
    """Before any work: `path` (one output file) can be written and is new, or `overwrite`."""
    path = Path(path)
    if path.is_dir():
        raise CompressError(f"--out {path} is a folder: give the path of the file to write")
    check_writable(path.parent)
    if path.exists() and not overwrite:
        raise CompressError(f"{path} already exists: pass --overwrite to replace it, or choose another --out")


def write_file(path: Path, text: str, overwrite: bool) -> None:
    """Write one file atomically: a temporary file beside it, then linked into place (which fails if another
    process made `path` meanwhile) or, with `overwrite`, renamed over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise CompressError(f"{path} was written by another process meanwhile: nothing replaced") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
