"""A recipe file: YAML with the model, an ordered list of stages, and the evaluation / benchmark to finish with.

    model: null                  # hub id, folder or .gguf (null: the bundled SmolLM2-135M-Instruct)
    stages:
      - remove: {skip: 0.25}     # each stage: one operation (compress.recipes.stages) and its config's keys
      - heal: {steps: 100, lr_policy: llr}
      - quantize: {bits: mixed, avg_bits: 4.0}
    eval: {limit: 200}           # EvalConfig keys, on the last stage's model, recovery against `model`
    bench: {batch_sizes: [1]}    # BenchConfig keys, against `model`

Everything is checked before any stage starts (unknown stage or key, a bad value, a stage that cannot read its
predecessor's output, a missing model): one error naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import CompressError

TOP_KEYS = ("model", "stages", "eval", "bench")


@dataclass(frozen=True)
class Stage:
    name: str
    config: Any  # the operation's frozen config
    line: int  # where the recipe file declares it (0: not from a file)


@dataclass(frozen=True)
class Recipe:
    model: str | None
    stages: tuple[Stage, ...]
    finish: dict[str, Any]  # "eval" / "bench" -> EvalConfig / BenchConfig, in that order
    source: str  # the file read, or "<mapping>"


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe file."""
    import yaml

    from compress.files import read_text

    text = read_text(path, "recipe")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise CompressError(f"recipe {path}{where} is not YAML ({getattr(e, 'problem', None) or e})") from None
    return parse_recipe(data, str(path), node)


def parse_recipe(data: Any, source: str = "<mapping>", node=None) -> Recipe:
    """A Recipe from the loaded YAML (or a dict from Python); `node` (yaml.compose's tree) gives line numbers."""
    from compress.config import build_flat
    from compress.model import check_model_spec
    from compress.recipes.stages import FINISH, check_stage, input_kind, output_kind, stage_config

    def fail(path: tuple, message: str):
        line = _line(node, path)
        return CompressError(f"recipe {source}{f':{line}' if line else ''}: {message}")

    if not isinstance(data, dict):
        raise fail((), f"must be a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise fail((unknown[0],), f"unknown key {unknown[0]!r}; valid: {', '.join(TOP_KEYS)}")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise fail(("model",), "model must be a hub id, a folder or a .gguf path (or null for the bundled one)")
    try:
        check_model_spec(model)
    except CompressError as e:
        raise fail(("model",), str(e)) from None
    items = data.get("stages")
    if not isinstance(items, list) or not items:
        raise fail(("stages",), "stages must be a non-empty list, e.g. - quantize: {bits: mixed}")
    stages, kind = [], input_kind(model)
    for i, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise fail(("stages", i), f"stage {i + 1} must be one operation and its settings, e.g. - heal: {{steps: 100}}")
        name, values = next(iter(item.items()))
        where = ("stages", i, name)
        if values is not None and not isinstance(values, dict):
            raise fail(where, f"stage {i + 1} ({name}): its settings must be a mapping")
        try:
            config = stage_config(name, values or {})
            check_stage(name, config, kind)
        except CompressError as e:
            key = _bad_key(str(e), values or {})
            raise fail(where + ((key,) if key else ()), f"stage {i + 1} ({name}): {e}") from None
        kind = output_kind(name, config)
        stages.append(Stage(name, config, _line(node, where)))
    finish = {}
    for name, cls in FINISH.items():
        if data.get(name) is None and name not in data:
            continue
        values = data.get(name) or {}
        try:
            if not isinstance(values, dict):
                raise CompressError("its settings must be a mapping")
            finish[name] = build_flat(cls, values)
        except CompressError as e:
            key = _bad_key(str(e), values if isinstance(values, dict) else {})
            raise fail((name, key) if key else (name,), f"{name}: {e}") from None
    return Recipe(model, tuple(stages), finish, source)


def _bad_key(message: str, values: dict) -> str | None:
    """The recipe key an error is about, for its line number."""
    for key in values:
        if message.startswith((f"unknown setting {key}", f"{key} ", f"{key}:")):
            return key
    return None


def _line(node, path: tuple) -> int:
    """1-based line of the key or item at `path` in a yaml.compose tree (0 when unknown)."""
    import yaml

    line = 0
    for part in path:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
