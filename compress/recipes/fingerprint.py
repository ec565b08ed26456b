"""Stage fingerprints: what a stage folder was made from, hashed, so a rerun can tell it is still valid.

fingerprint = sha256 of the canonical JSON of {stage, input (the predecessor's fingerprint, or the model files'
hash), config (every setting), versions (the packages that compute), data ({file: sha256} of the data files the
stage read)}. Pure functions of their inputs; the files are hashed in 1 MiB blocks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

# Packages whose version can change a stage's numbers (missing ones are left out).
PACKAGES = ("compress", "torch", "transformers", "accelerate", "safetensors", "peft", "bitsandbytes", "gptqmodel",
            "auto-round", "gguf", "numpy", "lm_eval", "datasets", "tokenizers")


def file_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_hash(paths: Iterable[Path], root: Path | None = None) -> str:
    """One hash of several files: their names (relative to `root`) and contents, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        name = str(path.relative_to(root)) if root else str(path)
        digest.update(f"{name}\0{file_hash(path)}\0".encode())
    return digest.hexdigest()


def model_hash(model: str | None) -> str:
    """The recipe's input: the .gguf's bytes, every file of a folder, or a hub id as written (no network)."""
    from compress.model.gguf import default_gguf_path

    path = default_gguf_path() if model is None else Path(model).expanduser()
    if path.is_file():
        return file_hash(path)
    if path.is_dir():
        return files_hash((p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")), path)
    return hashlib.sha256(f"hub:{model}".encode()).hexdigest()


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def data_hashes(paths: Iterable[str | Path]) -> dict[str, str | None]:
    """{path: sha256, or None for a file that is gone}."""
    return {str(p): file_hash(p) if Path(p).is_file() else None for p in sorted(map(str, paths))}


def fingerprint(stage: str, source: str, config: dict[str, Any], versions: dict[str, str],
                data: dict[str, str | None]) -> str:
    record = {"stage": stage, "input": source, "config": config, "versions": versions, "data": data}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
