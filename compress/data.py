"""Real text for calibration and evaluation, read from a data dir (layout of ../shared/data).

Evaluation text is the WikiText-2 raw *test* split. Calibration text is kept apart from it: the default
calibration source is the WikiText-2 *valid* split (the tokenized variant, detokenized), never the test split.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from compress.errors import CompressError
from compress.files import jsonl_texts, read_text

if TYPE_CHECKING:
    import torch

DATA_DIR_ENV = "COMPRESS_DATA_DIR"

# Files inside the data dir (see ../shared/data/README.md for their provenance).
WIKITEXT2_TEST_RAW = "wikitext2/wiki.test.raw"
WIKITEXT2_VALID_TOKENS = "wikitext2/tokenized/valid.txt"
BOOLQ_DEV = "boolq/dev.jsonl"

# Named calibration sources; a path to a .txt or .jsonl file is accepted as well.
CALIB_SOURCES = ("wikitext2-valid", "boolq-passages")
DEFAULT_CALIB = "wikitext2-valid"


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """--data-dir if given, else $COMPRESS_DATA_DIR, else None (then the hub is tried)."""
    value = explicit or os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise CompressError(f"data dir {path} does not exist: pass --data-dir DIR or set {DATA_DIR_ENV}")
    return path


def _data_file(root: Path, relative: str) -> Path:
    path = root / relative
    if not path.is_file():
        raise CompressError(
            f"data dir {root} has no {relative}: point --data-dir (or {DATA_DIR_ENV}) at a folder laid out "
            f"like shared/data"
        )
    return path


def _hub_rows(name: str, config: str, split: str, field: str) -> list[str]:
    """Rows of a hub dataset through `datasets`, or the one error that names both ways to get the data."""
    help_text = (
        f"no data dir: pass --data-dir DIR or set {DATA_DIR_ENV} to a folder laid out like shared/data "
        f"(e.g. ../shared/data), or go online so {name} can be read from the Hugging Face hub"
    )
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise CompressError(help_text)
    try:
        from datasets import load_dataset

        return list(load_dataset(name, config, split=split)[field])
    except Exception as e:  # any network or hub failure ends in the same advice
        raise CompressError(f"{help_text} ({type(e).__name__})") from e


def wikitext2_rows(split: str, root: Path | None) -> list[str]:
    """The Hugging Face line-level rows of WikiText-2 raw ("" for blank lines), as GPTQ-style code joins them."""
    if root is None:
        return _hub_rows("Salesforce/wikitext", "wikitext-2-raw-v1", split, "text")
    if split == "test":
        raw = read_text(_data_file(root, WIKITEXT2_TEST_RAW), "data file")
        # Exact inverse of the .raw layout: blank lines are " \n" in the file and "" in the HF rows.
        return [line if line.strip() else "" for line in raw.splitlines(keepends=True)]
    if split == "validation":
        tokens = read_text(_data_file(root, WIKITEXT2_VALID_TOKENS), "data file")
        return [detokenize_wikitext(line) if line.strip() else "" for line in tokens.splitlines(keepends=True)]
    raise CompressError(f"unknown WikiText-2 split {split!r}: use test or validation")


def wikitext2_test_text(root: Path | None) -> str:
    """The evaluation text: WikiText-2 raw test rows joined with "\\n\\n" (the GPTQ / AWQ convention)."""
    return "\n\n".join(wikitext2_rows("test", root))


def detokenize_wikitext(text: str) -> str:
    """Undo WikiText's word-level tokenization (lm-eval's wikitext_detokenizer rules, abridged)."""
    text = text.replace("s '", "s'")
    text = re.sub(r"/' [0-9]/", r"/'[0-9]/", text)
    for a, b in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "), (" . ", ". "),
                 (" ! ", "! "), (" ? ", "? "), (" , ", ", "), ("= = = =", "===="), ("= = =", "==="),
                 ("= =", "=="), (" \n", "\n"), ("\n ", "\n"), (" n't", "n't"), (" 's", "'s")):
        text = text.replace(a, b)
    text = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", text)
    text = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", text)
    text = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", text)
    text = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', text)
    return text


def _file_texts(path: Path) -> list[str]:
    """A .txt file is one text; a .jsonl file gives one text per line from its string "text" field. A file that
    is not UTF-8, is empty, or has a line without a string "text" is refused by name (and line)."""
    if path.suffix == ".txt":
        return [read_text(path, "calibration file")]
    if path.suffix == ".jsonl":
        return [text for _, text in jsonl_texts(path, "text") if text.strip()]
    raise CompressError(f"calibration file {path} must be .txt or .jsonl")


def _is_wikitext2_test(path: Path) -> bool:
    """Any file form of the WikiText-2 test split: raw, document-level jsonl, or tokenized."""
    path = path.resolve()
    return path.name in ("wiki.test.raw", "wiki.test.tokens", "wikitext-2-raw-v1_document_level_test.jsonl") or (
        path.name == "test.txt" and path.parent.name == "tokenized" and path.parent.parent.name == "wikitext2"
    )


def calibration_texts(source: str = DEFAULT_CALIB, root: Path | None = None) -> list[str]:
    """Texts to calibrate on. Never the WikiText-2 test split: that is the evaluation text."""
    path = Path(source).expanduser()
    if source not in CALIB_SOURCES and (path.suffix in (".txt", ".jsonl") or path.exists()):
        if not path.is_file():
            raise CompressError(f"calibration file {source} does not exist")
        if _is_wikitext2_test(path):
            raise CompressError("refusing to calibrate on the WikiText-2 test split: it is the evaluation text")
        return _file_texts(path)
    if source == "wikitext2-valid":
        return ["\n\n".join(wikitext2_rows("validation", root))]
    if source == "boolq-passages":
        if root is None:
            return _hub_rows("google/boolq", None, "validation", "passage")  # type: ignore[arg-type]
        return [text for _, text in jsonl_texts(_data_file(root, BOOLQ_DEV), "passage")]
    raise CompressError(
        f"unknown calibration source {source!r}: use one of {', '.join(CALIB_SOURCES)} or a .txt/.jsonl path"
    )


def calibration_samples(
    tokenizer, texts: list[str], *, n_samples: int, seq_len: int, seed: int = 0
) -> torch.Tensor:
    """(n_samples, seq_len) int64 token ids: windows cut at seeded random offsets of the joined texts."""
    import torch

    ids = tokenizer("\n\n".join(texts), return_tensors="pt").input_ids[0]
    if ids.numel() <= seq_len:
        raise CompressError(f"calibration text has {ids.numel()} tokens, fewer than --calib-seq-len {seq_len}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (n_samples,), generator=gen)
    return torch.stack([ids[s : s + seq_len] for s in starts.tolist()])
