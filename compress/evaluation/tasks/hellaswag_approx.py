"""HellaSwag validation from the llama.cpp text form (shared/data/hellaswag/README.md), for hellaswag_approx.yaml.

The file has 6 lines per item: "<activity_label>: <ctx>", the gold index, then 4 endings. lm-eval's standard
task builds query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()); ctx_b is not separate
here, so the context is used as written (about 3,236 contexts keep a lower-case last fragment) and lm-eval's
own `preprocess` is applied to it and to the endings. Scores are close to, not equal to, lm-eval hellaswag.
"""

from __future__ import annotations

import bz2

import datasets
from lm_eval.tasks.hellaswag.utils import preprocess


def load(path: str, **_metadata) -> datasets.DatasetDict:
    """`custom_dataset` of the task: {"validation": rows of query, choices, label}."""
    with bz2.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    if len(lines) % 6:
        raise ValueError(f"{path}: {len(lines)} lines, not whole 6-line HellaSwag records")
    rows = [{"query": preprocess(lines[k]), "choices": [preprocess(e) for e in lines[k + 2 : k + 6]],
             "label": int(lines[k + 1])} for k in range(0, len(lines), 6)]
    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)})
