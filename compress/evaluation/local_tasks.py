"""lm-eval tasks on the local data dir: which tasks exist, which files each reads, and a TaskManager for them.

The task YAMLs ship as package data in compress/evaluation/tasks/ (one per task, lm-eval's standard config with `dataset_path: json` and the
local file, as each shared/data/<dataset>/README.md gives it). Their data paths are written
`${COMPRESS_DATA_DIR}/...`; lm-eval does not expand variables, so `local_task_manager` copies the folder into a
temporary one with the data dir filled in and indexes only those tasks (`include_defaults=False`: a local
`arc_easy` can never fall back to the hub's). With no data dir, the standard hub tasks of the same names run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from compress.errors import CompressError

# task -> data files it reads, relative to the data dir. The names are lm-eval's standard task names, except
# hellaswag_approx: the data dir holds HellaSwag only in llama.cpp's text form (no ctx_b split).
LOCAL_TASKS: dict[str, tuple[str, ...]] = {
    "wikitext": ("wikitext2/wikitext-2-raw-v1_document_level_test.jsonl",),
    "arc_easy": ("arc_easy/ARC-Easy_test.jsonl", "arc_easy/ARC-Easy_validation.jsonl"),
    "arc_challenge": ("arc_challenge/ARC-Challenge_test.jsonl",),
    "piqa": ("piqa/piqa_validation.jsonl",),
    "winogrande": ("winogrande/dev.jsonl",),
    "boolq": ("boolq/boolq_superglue_validation.jsonl",),
    "lambada_openai": ("lambada_openai/lambada_test.jsonl",),
    "hellaswag_approx": ("hellaswag/hellaswag_val_full.txt.bz2",),
}
HUB_TASKS = ("wikitext", "arc_easy", "arc_challenge", "piqa", "winogrande", "boolq", "lambada_openai", "hellaswag")
DEFAULT_TASKS = tuple(LOCAL_TASKS)

# The metric a table leads with, and whether higher is better (for recovery: compressed / baseline, or its
# inverse for perplexities). arc_challenge and hellaswag are usually quoted as acc_norm, the others as acc.
PRIMARY_METRIC: dict[str, tuple[str, bool]] = {
    "wikitext": ("word_perplexity", False),
    "arc_easy": ("acc", True),
    "arc_challenge": ("acc_norm", True),
    "piqa": ("acc", True),
    "winogrande": ("acc", True),
    "boolq": ("acc", True),
    "lambada_openai": ("acc", True),
    "hellaswag_approx": ("acc_norm", True),
    "hellaswag": ("acc_norm", True),
}
DATA_DIR_TOKEN = "${COMPRESS_DATA_DIR}"
TASKS_DIR_ENV = "COMPRESS_TASKS_DIR"


def tasks_dir() -> Path:
    """The task YAMLs shipped with the package (compress/evaluation/tasks), or $COMPRESS_TASKS_DIR to try edited
    copies."""
    path = Path(os.environ.get(TASKS_DIR_ENV) or Path(__file__).resolve().parent / "tasks")
    if not (path / "arc_easy.yaml").is_file():
        raise CompressError(f"no lm-eval task YAMLs at {path}: reinstall compress, or point {TASKS_DIR_ENV} at "
                            f"a folder of them")
    return path


def check_tasks(names: list[str] | tuple[str, ...], local: bool) -> list[str]:
    """The task names, validated against the local (data dir) or hub set; duplicates dropped, order kept."""
    valid = tuple(LOCAL_TASKS) if local else HUB_TASKS
    out: list[str] = []
    for name in names:
        if name not in valid:
            hint = ""
            if local and name == "hellaswag":
                hint = " (the data dir holds HellaSwag only in llama.cpp's text form: use hellaswag_approx)"
            elif not local and name in LOCAL_TASKS:
                hint = " (it reads the data dir: pass --data-dir or set COMPRESS_DATA_DIR)"
            raise CompressError(f"unknown task {name!r}{hint}; valid: {', '.join(valid)}")
        if name not in out:
            out.append(name)
    if not out:
        raise CompressError(f"no tasks given; valid: {', '.join(valid)}")
    return out


def check_task_files(names: list[str], data_root: Path) -> None:
    """Every data file the tasks read exists (one error naming the first missing one and its task)."""
    from compress.files import note_read

    for name in names:
        for relative in LOCAL_TASKS[name]:
            if not (data_root / relative).is_file():
                raise CompressError(f"task {name} needs {relative} in the data dir {data_root}: it is missing")
            note_read(data_root / relative)  # lm-eval reads it: a recipe's fingerprint hashes it


def render_tasks(names: list[str], data_root: Path, into: Path) -> Path:
    """Copy the YAMLs of `names` (and every helper .py) into `into`, the data dir written in. Returns `into`."""
    check_task_files(names, data_root)
    source = tasks_dir()
    into.mkdir(parents=True, exist_ok=True)
    for helper in source.glob("*.py"):
        shutil.copy2(helper, into / helper.name)
    for name in names:
        text = (source / f"{name}.yaml").read_text(encoding="utf-8")
        (into / f"{name}.yaml").write_text(text.replace(DATA_DIR_TOKEN, str(Path(data_root).resolve())),
                                           encoding="utf-8")
    return into


def local_task_manager(names: list[str], data_root: Path, into: Path):
    """An lm-eval TaskManager that knows only the rendered local tasks `names`."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(render_tasks(names, data_root, into)), include_defaults=False)
