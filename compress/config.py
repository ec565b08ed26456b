"""Frozen config dataclasses that carry each setting's default, help and bounds once, and build the CLI.

A config field is declared with `setting(default, help, ...)`. From that one declaration:
- the dataclass gets its default (the Python API),
- `add_arguments` makes the argparse option (flag, type, choices, help ending in the default),
- `check_settings` (called by every config's __post_init__) refuses values out of bounds with a CompressError
  that names the setting as both kinds of user know it: `calib_samples (--calib-samples) must be >= 1, got 0`.
Nested configs (RunConfig.gptq, RunConfig.bits, ...) add their options to the same parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Mapping, TypeVar

from compress.errors import CompressError

T = TypeVar("T")
_SEP = "__"  # argparse dest of a nested setting: "<outer field>__<inner field>"


def setting(default: Any, help: str, *, flag: str | None = "", minimum: float | None = None,
            below: float | None = None, choices: tuple | None = None, metavar: str | None = None) -> Any:
    """A config field. flag: the CLI option ("" = --field-name, None = not on the CLI); minimum: the smallest
    valid value, below: the bound it must stay under (None values pass); choices: the valid values."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "minimum": minimum,
                                                       "below": below, "choices": choices, "metavar": metavar})


def flag_of(field: dataclasses.Field) -> str | None:
    flag = field.metadata.get("flag", "")
    return "--" + field.name.replace("_", "-") if flag == "" else flag


def label(config: Any, name: str) -> str:
    """How an error names a setting: `name (--flag)`, or just `name` when it has no CLI option."""
    field = next(f for f in dataclasses.fields(config) if f.name == name)
    flag = flag_of(field)
    return f"{name} ({flag})" if flag else name


def invalid(config: Any, name: str, message: str) -> CompressError:
    """A CompressError about one setting: `invalid(self, "warmup", "must be >= 0")`."""
    return CompressError(f"{label(config, name)} {message}")


def check_settings(config: Any) -> None:
    """The bounds and choices declared with `setting`, checked for every field of `config`; a list given for a
    tuple setting is stored as a tuple (frozen configs hash and compare by value)."""
    for field in dataclasses.fields(config):
        value, low, high = getattr(config, field.name), field.metadata.get("minimum"), field.metadata.get("below")
        if isinstance(value, list):
            value = tuple(value)
            object.__setattr__(config, field.name, value)
        choices = field.metadata.get("choices")
        items = value if isinstance(value, tuple) else (value,)
        if high is not None and any(v is not None and not (low or 0) <= v < high for v in items):
            raise invalid(config, field.name, f"must be in [{low or 0:g}, {high:g}), got {_show(value)}")
        if low is not None and any(v is not None and v < low for v in items):
            raise invalid(config, field.name, f"must be >= {low:g}, got {_show(value)}")
        if choices is not None and value is not None and any(v not in choices for v in items):
            raise invalid(config, field.name, f"must be one of {', '.join(map(str, choices))}; got {_show(value)}")


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def build_config(cls: type[T], values: Mapping[str, Any] | None = None) -> T:
    """cls(**values), or a CompressError naming the unknown keys and the valid ones."""
    values = dict(values or {})
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise CompressError(f"{cls.__name__} has no setting {', '.join(unknown)}; valid: {', '.join(valid)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise CompressError(f"{cls.__name__}: {e}") from e


# ---- the CLI, built from the configs ----------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One option per CLI setting of `cls` (and of its nested configs). Defaults stay in the dataclass: an
    option not given is absent from the namespace, so `from_args` leaves the dataclass default in place."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            add_arguments(parser, kind, f"{prefix}{field.name}{_SEP}")
            continue
        flag = flag_of(field)
        if flag is None:
            continue
        default = field.default
        shown = _show(default) if default not in (None, ()) else "none"
        text = field.metadata["help"]
        if default is not False and not (default is None and "none:" in text):
            text += f" (default: {shown})"
        options: dict[str, Any] = {"dest": prefix + field.name, "default": argparse.SUPPRESS, "help": text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            options.update(type=_parser(kind), metavar=field.metadata.get("metavar") or field.name.upper())
        parser.add_argument(flag, **options)


def from_args(cls: type[T], args: argparse.Namespace, prefix: str = "") -> T:
    """The config of the options given on the command line, every other setting at its default."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            values[field.name] = from_args(hints[field.name], args, f"{prefix}{field.name}{_SEP}")
        elif hasattr(args, prefix + field.name):
            values[field.name] = getattr(args, prefix + field.name)
    return cls(**values)


def _parser(kind: Any):
    """argparse `type` for int, float, str, comma lists (tuple[int, ...]) and their optional forms ("none" is
    None). Bounds and choices are the config's to check (one message, one place)."""
    if type(None) in typing.get_args(kind):  # Optional[X]: X, or the word "none"
        inner = _parser(next(a for a in typing.get_args(kind) if a is not type(None)))
        return lambda text: None if text.strip().lower() == "none" else inner(text)
    args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple:
        item = args[0]

        def parse_list(text: str) -> tuple:
            try:
                values = tuple(item(part.strip()) for part in text.split(",") if part.strip())
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be a comma list of {item.__name__}s, got {text!r}") from None
            if not values:
                raise argparse.ArgumentTypeError("is empty: give a comma list")
            return values
        return parse_list
    base = kind

    def parse(text: str):
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an' if base is int else 'a'} {base.__name__}, got {text!r}") from None
    return parse


class Parser(argparse.ArgumentParser):
    """argparse whose errors are CompressErrors: one line and exit 2 through the CLI's one error path."""

    def error(self, message: str):  # argparse: "argument --x: must be ..." -> "--x must be ..."
        if message.startswith("argument "):
            where, _, what = message[len("argument "):].partition(": ")
            message = f"{where.split('/')[-1]} {what}"
        raise CompressError(message)


# ---- configs from plain mappings (recipes) ----------------------------------------------------------------

def flat_settings(cls: type) -> dict[str, tuple[str, ...]]:
    """{setting name: field path} of `cls` and its nested configs, e.g. RunConfig's "avg_bits" -> ("bits",
    "avg_bits"). The names are the CLI's (--avg-bits), so they are unique across the nesting."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[str, ...]] = {}
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            out.update({name: (field.name, *path) for name, path in flat_settings(hints[field.name]).items()})
        else:
            out[field.name] = (field.name,)
    return out


def build_flat(cls: type[T], values: Mapping[str, Any]) -> T:
    """`cls` from flat setting names (nested configs' settings by their own names, as on the CLI). A string
    for a non-string setting is parsed as the CLI parses it ("2,3,4,8", "none"); a number for a string
    setting (bits: 4) is its text. Unknown names are refused with the valid ones."""
    names = flat_settings(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise CompressError(f"unknown setting {', '.join(unknown)}; valid: {', '.join(names)}")
    return _build_nested(cls, {names[k]: v for k, v in values.items()})


def _build_nested(cls: type[T], values: dict[tuple[str, ...], Any]) -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind):
            inner = {path[1:]: v for path, v in values.items() if path[0] == field.name}
            if inner:
                kwargs[field.name] = _build_nested(kind, inner)
        elif (field.name,) in values:
            kwargs[field.name] = _coerce(kind, field.name, values[(field.name,)])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CompressError(f"{cls.__name__}: {e}") from e


def _coerce(kind: Any, name: str, value: Any) -> Any:
    """A YAML value as the setting's type: numbers to text for str settings, text parsed like the CLI."""
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if base is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and base is not str:
        try:
            return _parser(kind)(value)
        except argparse.ArgumentTypeError as e:
            raise CompressError(f"{name} {e}") from None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
