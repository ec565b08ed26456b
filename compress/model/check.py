"""A model folder checked before any work, the same way for every command: its config parses and names a causal
language model, its weights are safetensors whose headers fit their files (pickle weights are refused, never
unpickled), and after loading, transformers' load report shows no missing, unexpected or mismatched key (a
randomly initialised tensor must never be scored, evaluated, fine-tuned or saved)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from compress.errors import CompressError
from compress.files import read_json

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
GGUF_MAGIC = b"GGUF"


def check_gguf_file(path: Path) -> None:
    """A .gguf file starts with the magic bytes GGUF (the llama.cpp format)."""
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise CompressError(f"model file {path} is not a GGUF file (it does not start with 'GGUF')")


def check_model_folder(folder: Path) -> dict:
    """The folder's config.json as a dict, after checking config, architecture and weight files."""
    config = read_json(folder / "config.json", "model config")
    check_causal(config, folder)
    files = weight_files(folder)
    for path in files:
        check_safetensors(path)
    return config


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder (the shards an index names, all present), else a one-line refusal."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, "weight index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise CompressError(f"weight index {index} has no weight_map")
        shards = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise CompressError(f"model folder {folder} is missing weight shards {', '.join(missing)} "
                                f"(named in {index.name})")
        return shards
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CompressError(f"model folder {folder} holds only pickle weights ({', '.join(pickles)}): compress "
                            f"reads safetensors only and never unpickles; convert it with save_pretrained "
                            f"(safe_serialization) where you trust the file")
    raise CompressError(f"model folder {folder} has no weights (no *.safetensors file)")


def check_safetensors(path: Path) -> dict:
    """The header ({tensor name: {dtype, shape, data_offsets}}) after checking it parses and every tensor's
    byte range lies inside the file (a truncated copy fails here)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 2 <= length <= min(size - 8, 100 * 2**20):
            raise CompressError(f"weights file {path} is damaged (not a safetensors header)")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CompressError(f"weights file {path} is damaged (its safetensors header is not JSON)") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else None
    if tensors is None or not all(isinstance(v, dict) and len(v.get("data_offsets") or ()) == 2
                                  for v in tensors.values()):
        raise CompressError(f"weights file {path} is damaged (a tensor entry without data offsets)")
    end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
    if 8 + length + end > size:
        raise CompressError(f"weights file {path} is truncated: {size} bytes, its header needs {8 + length + end}")
    return tensors


def check_causal(config: dict, folder: Path) -> None:
    """Refuse encoder-decoder and encoder-only models: compress scores and serves decoder-only causal LMs."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kind = config.get("model_type", "?")
    archs = config.get("architectures") or []
    if config.get("auto_map"):  # the repo's own code defines the model: loading decides (--trust-remote-code)
        return
    if config.get("is_encoder_decoder"):
        raise CompressError(f"{folder} is an encoder-decoder model ({kind}), not a causal language model")
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if archs and not any(a in causal for a in archs):
        raise CompressError(f"{folder} is a {', '.join(archs)} ({kind}), not a causal language model")
    if not archs and kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise CompressError(f"{folder} is a {kind!r} model, not a causal language model (transformers has no "
                            f"causal-LM class for it)")
    if _encoder_only(kind) and not config.get("is_decoder"):
        raise CompressError(f"{folder} is an encoder ({kind}, is_decoder false), not a causal language model")


def _encoder_only(model_type: str) -> bool:
    """Families whose config has an `is_decoder` switch (bert, roberta, ...): encoders unless it is set."""
    from transformers import AutoConfig

    try:
        return hasattr(AutoConfig.for_model(model_type), "is_decoder")
    except (ValueError, KeyError):
        return False


def check_load_report(info: dict, folder: str) -> None:
    """transformers' load report (output_loading_info=True): any missing, unexpected or mismatched key means
    tensors were randomly initialised or dropped; refuse the model rather than use it."""
    for key, what in (("missing_keys", "missing"), ("mismatched_keys", "of the wrong shape"),
                      ("unexpected_keys", "unexpected (not part of the architecture)")):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(key) or ())
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise CompressError(f"model {folder}: {len(names)} weight(s) {what}: {shown}; the checkpoint does not "
                                f"match its config.json (a damaged or edited folder?)")
