"""Reading the files a user hands compress (text, JSON records, JSONL) so that a bad one is one line naming the
file (and the line, for JSONL), never a traceback: not UTF-8, empty, not JSON, the wrong shape."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from compress.errors import CompressError


# Files read while a recording is on (recorded_reads): a recipe stage's fingerprint hashes the data it read.
_RECORDING: list[set[Path]] = []


@contextmanager
def recorded_reads() -> Iterator[set[Path]]:
    """Collect the absolute paths of the files read through read_text (and note_read) inside the block."""
    reads: set[Path] = set()
    _RECORDING.append(reads)
    try:
        yield reads
    finally:
        _RECORDING.remove(reads)


def note_read(path: str | Path) -> None:
    """Record a file read by other means (e.g. the task files lm-eval opens) for recorded_reads."""
    for reads in _RECORDING:
        reads.add(Path(path).resolve())


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of `path`; refuses a missing, unreadable, non-UTF-8 or empty (whitespace only) file."""
    path = Path(path)
    note_read(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CompressError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise CompressError(f"cannot read {what} {path} ({e.strerror})") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CompressError(f"{what} {path} is not UTF-8 text (byte {e.start}, line {line}): save it as UTF-8") from None
    if not text.strip():
        raise CompressError(f"{what} {path} is empty")
    return text


def read_json(path: str | Path, what: str = "file", kind: type = dict) -> Any:
    """The JSON value of `path`, which must be a `kind` (dict by default)."""
    text = read_text(path, what)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CompressError(f"{what} {path} is not valid JSON ({e.msg} at line {e.lineno}): it is damaged; "
                     f"delete it or write it again") from None
    if not isinstance(value, kind):
        raise CompressError(f"{what} {path} must hold a JSON {_json_name(kind)}, not a {_json_name(type(value))}")
    return value


def read_record(path: str | Path, what: str, required: dict[str, type]) -> dict:
    """A JSON object that must hold `required` keys of the given types (records compress wrote: eval.json,
    bench.json, stats.json); a damaged or foreign one is refused by name."""
    value = read_json(path, what)
    for key, kind in required.items():
        if not isinstance(value.get(key), kind):
            found = "missing" if key not in value else f"a {_json_name(type(value[key]))}"
            raise CompressError(f"{what} {path} is not a compress record: {key!r} must be a {_json_name(kind)}, "
                         f"found {found}")
    return value


def jsonl_texts(path: str | Path, field: str = "text") -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of a JSONL file whose objects carry a string `field`."""
    for number, line in enumerate(read_text(path, "JSONL file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CompressError(f"{path}:{number} is not valid JSON ({e.msg})") from None
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            found = "missing" if not isinstance(record, dict) or field not in record else \
                f"a {_json_name(type(value))}"
            raise CompressError(f"{path}:{number} needs a string {field!r} field, found {found}")
        yield number, value


def _json_name(kind: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(kind, getattr(kind, "__name__", str(kind)))
