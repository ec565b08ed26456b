"""The Python API behind the CLI: each `compress <command>` is one function here with the same options."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from compress.errors import CompressError

DEFAULT_SCORERS = ("alpha", "lim", "zd")


def versions() -> dict[str, str]:
    """Versions of what produced a result, for every settings.json and benchmark table."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "machine": f"{platform.machine()} {platform.system()}",
           "cpu": _cpu_name(), "cores": str(os.cpu_count())}
    for name in ("compress", "torch", "transformers", "gguf", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    torch = sys.modules.get("torch")  # the GPU only where torch is already in use: versions() stays cheap
    if torch is not None and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _check_model(model) -> None:
    if model is None or isinstance(model, str):
        from compress.model import check_model_spec

        check_model_spec(model)


def _load(model, tokenizer, trust_remote_code: bool, quantized: bool = False):
    """A loaded (model, tokenizer) as given, or loaded from a spec (with `quantized`, GPTQ folders too)."""
    if model is None or isinstance(model, str):
        if quantized:
            return load_any(model, trust_remote_code)
        from compress.model import load_model

        return load_model(model, trust_remote_code=trust_remote_code)
    if tokenizer is None:
        raise CompressError("pass the tokenizer together with an already loaded model")
    return model, tokenizer


def score_model(
    model: Any = None,
    tokenizer: Any = None,
    *,
    scorers: str | Sequence[str] = DEFAULT_SCORERS,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    calib: str = "wikitext2-valid",
    calib_samples: int = 16,
    calib_seq_len: int = 256,
    seed: int = 0,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
):
    """`compress score`: per-layer scores of a model; with `out`, writes scores.json/.csv/.png and settings.json.

    model: hub id, local folder, .gguf file, None (the bundled SmolLM2-135M), or a loaded model + tokenizer.
    Returns the LayerScores.
    """
    from compress import scorers as registry
    from compress.outputs import check_writable

    names = registry.resolve(scorers)
    _check_model(model)
    if out is not None:
        check_writable(Path(out))
    calib_root, texts, tokens = None, None, None
    if registry.needs_calib(names):  # read the text before the (slow) model load, so data errors come first
        from compress.data import calibration_texts
        from compress.data import data_dir as resolve_data_dir

        calib_root = resolve_data_dir(data_dir)
        texts = calibration_texts(calib, calib_root)
    model, tokenizer = _load(model, tokenizer, trust_remote_code)
    started = time.perf_counter()
    if texts is not None:
        from compress.data import calibration_samples

        tokens = calibration_samples(tokenizer, texts, n_samples=calib_samples, seq_len=calib_seq_len, seed=seed)
    table = registry.score(model, names, tokens, settings, progress=progress)
    elapsed = time.perf_counter() - started
    if out is not None:
        from compress.model import model_label
        from compress.outputs import write_folder
        from compress.plot import plot_scores

        resolved = {
            "command": "score",
            "model": str(getattr(model.config, "name_or_path", "")),
            "scorers": names,
            "settings": registry.resolved_settings(names, settings),
            "calib": calib if tokens is not None else None,
            "calib_samples": calib_samples if tokens is not None else None,
            "calib_seq_len": calib_seq_len if tokens is not None else None,
            "seed": seed,
            "data_dir": str(calib_root) if calib_root else None,
            "seconds": round(elapsed, 3),
            "versions": versions(),
        }
        write_folder(Path(out), {
            "scores.json": table.to_json(),
            "scores.csv": table.to_csv(),
            "settings.json": json.dumps(resolved, indent=1),
            "scores.png": lambda p: plot_scores(table, p, f"{model_label(model)}: per-layer scores"),
        })
    return table


def wikitext2_ppl(
    model: Any = None,
    tokenizer: Any = None,
    *,
    seq_len: int | None = None,
    max_windows: int | None = None,
    batch_size: int = 1,
    data_dir: str | Path | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
):
    """`compress ppl`: WikiText-2 raw test perplexity (see compress.perplexity). Returns a Perplexity."""
    from compress.data import data_dir as resolve_data_dir
    from compress.data import wikitext2_test_text
    from compress.perplexity import perplexity

    _check_model(model)
    text = wikitext2_test_text(resolve_data_dir(data_dir))  # before the model load: data errors come first
    model, tokenizer = _load(model, tokenizer, trust_remote_code)
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    return perplexity(model, ids, seq_len=seq_len, max_windows=max_windows, batch_size=batch_size,
                      progress=progress)


def load_any(model: str | None, trust_remote_code: bool = False, device: str = "cpu"):
    """(model, tokenizer) of anything compress reads or writes, on `device`: a GPTQ folder of `compress run`
    (through GPTQModel, which reads per-layer `dynamic` widths) or any model `load_model` takes."""
    from compress.model import check_model_spec, is_quantized_folder, load_model

    if model is not None and is_quantized_folder(model):
        from compress.quant.gptq import load_quantized

        return load_quantized(model, device=device)
    check_model_spec(model)
    return load_model(model, trust_remote_code=trust_remote_code, device=device)


def generate(
    model: Any = None,
    tokenizer: Any = None,
    *,
    prompt: str,
    max_new_tokens: int = 64,
    decode_skip: float = 0.0,
    skip_layers: Sequence[int] = (),
    trust_remote_code: bool = False,
) -> dict:
    """`compress generate`: greedy generation; with decode_skip (a fraction) or skip_layers, the new tokens
    skip those layers while the prompt runs through all (Unified Layer Skipping, compress.skipping; the
    fraction picks ULS's balanced pattern). Returns {"text", "new_tokens", "seconds", "tokens_per_s",
    "skipped"}."""
    import torch

    from compress.layer_selection import check_drop, drop_count, uls_drop
    from compress.model import decoder_layers
    from compress.skipping import skipping

    if not 0 <= decode_skip < 1:
        raise CompressError(f"--decode-skip is the fraction of layers to skip, in [0, 1); got {decode_skip:g}")
    if decode_skip and skip_layers:
        raise CompressError("give --decode-skip or --skip-layers, not both")
    if max_new_tokens < 1:
        raise CompressError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    model, tokenizer = _load(model, tokenizer, trust_remote_code, quantized=True)
    n_layers = len(decoder_layers(model))
    skipped = (check_drop(list(skip_layers), n_layers) if skip_layers
               else uls_drop(n_layers, drop_count(n_layers, drop_ratio=decode_skip)))
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(next(model.parameters()).device)
    started = time.perf_counter()
    with skipping(model, skipped, mode="decode"), torch.inference_mode():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    seconds = time.perf_counter() - started
    new = out[0, ids.shape[1]:]
    return {"text": tokenizer.decode(new, skip_special_tokens=True), "new_tokens": new.numel(),
            "seconds": seconds, "tokens_per_s": new.numel() / seconds, "skipped": skipped}
