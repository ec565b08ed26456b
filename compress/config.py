"""Building frozen config dataclasses from plain mappings, rejecting unknown keys with the valid ones named."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from compress.errors import CompressError

T = TypeVar("T")


def build_config(cls: type[T], values: Mapping[str, Any] | None = None) -> T:
    """cls(**values), or a CompressError naming the unknown keys and the valid ones."""
    values = dict(values or {})
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise CompressError(f"{cls.__name__} has no setting {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        return cls(**values)
    except ValueError as e:
        raise CompressError(f"{cls.__name__}: {e}") from e
