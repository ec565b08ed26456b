"""The Python API: each `compress <command>` is one function of the same shape,

    compress.<command>(model, config, *, out=..., data_dir=..., ...) -> a typed result

`model` is a model spec (hub id, local folder, .gguf file, a compress output folder, or None for the bundled
SmolLM2-135M-Instruct); score, ppl, generate and evaluate also take an already loaded model with its
tokenizer. `config`
is the command's frozen config (the CLI is built from the same dataclasses). Bad input raises CompressError.
Nothing below this module imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from compress.benchmark.config import BenchConfig
from compress.depth.generate import GenerateConfig
from compress.errors import CompressError
from compress.evaluation.lmeval import EvalConfig
from compress.evaluation.perplexity import PplConfig
from compress.training.train import FinetuneConfig
from compress.pipeline.runner import RunConfig
from compress.scorers.command import ScoreConfig

if TYPE_CHECKING:
    from compress.benchmark.command import BenchResult
    from compress.depth.generate import Generation
    from compress.evaluation.lmeval import EvalResult
    from compress.evaluation.perplexity import Perplexity
    from compress.training.train import FinetuneResult
    from compress.pipeline.runner import RunResult
    from compress.recipes.execute import RecipeResult
    from compress.scores import LayerScores

BUNDLED = "SmolLM2-135M-Instruct (bundled default)"


def _load(model, tokenizer, trust_remote_code: bool, quantized: bool = False):
    """A loaded (model, tokenizer) as given, or loaded from a spec (with `quantized`, GPTQ folders too)."""
    if model is None or isinstance(model, (str, Path)):
        from compress.model import load_any, load_model

        spec = None if model is None else str(model)
        return load_any(spec, trust_remote_code) if quantized else load_model(spec, trust_remote_code=trust_remote_code)
    if tokenizer is None:
        raise CompressError("pass the tokenizer together with an already loaded model")
    return model, tokenizer


def _check(model) -> None:
    if model is None or isinstance(model, (str, Path)):
        from compress.model import check_model_spec

        check_model_spec(None if model is None else str(model))


def score(model: Any = None, config: ScoreConfig = ScoreConfig(), *, out: str | Path | None = None,
          tokenizer: Any = None, data_dir: str | Path | None = None, trust_remote_code: bool = False,
          progress: bool = True, overwrite: bool = False) -> LayerScores:
    """`compress score`: per-layer scores; with `out` (new or empty, or `overwrite`), scores.json/.csv/.png and
    settings.json are written."""
    from compress.outputs import claim_output
    from compress.scorers import needs_calib
    from compress.scorers.command import score_folder

    _check(model)
    if out is not None:
        claim_output(out, overwrite=overwrite, source=model if isinstance(model, (str, Path)) else None)
    root = texts = None
    if needs_calib(list(config.scorers)):  # read the text before the (slow) model load
        from compress.data import calibration_texts
        from compress.data import data_dir as resolve_data_dir

        root = resolve_data_dir(data_dir)
        texts = calibration_texts(config.calib, root)
    model, tokenizer = _load(model, tokenizer, trust_remote_code)
    return score_folder(model, tokenizer, config, Path(out) if out is not None else None, root, texts, progress)


def ppl(model: Any = None, config: PplConfig = PplConfig(), *, tokenizer: Any = None,
        data_dir: str | Path | None = None, trust_remote_code: bool = False, progress: bool = True) -> Perplexity:
    """`compress ppl`: WikiText-2 raw test perplexity (compress.evaluation.perplexity)."""
    from compress.data import data_dir as resolve_data_dir
    from compress.data import wikitext2_test_text
    from compress.evaluation.perplexity import perplexity

    _check(model)
    text = wikitext2_test_text(resolve_data_dir(data_dir))  # before the model load: data errors come first
    model, tokenizer = _load(model, tokenizer, trust_remote_code)
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    return perplexity(model, ids, seq_len=config.seq_len, max_windows=config.max_windows,
                      batch_size=config.batch_size, progress=progress)


def generate(model: Any = None, config: GenerateConfig = GenerateConfig(), *, prompt: str, tokenizer: Any = None,
             trust_remote_code: bool = False) -> Generation:
    """`compress generate`: greedy generation; the new tokens bypass config.decode_skip / skip_layers."""
    from compress.depth.generate import check_prompt, generate_text

    check_prompt(prompt)  # before the model load
    _check(model)
    model, tokenizer = _load(model, tokenizer, trust_remote_code, quantized=True)
    return generate_text(model, tokenizer, prompt, config)


def run(model: str | None = None, config: RunConfig = RunConfig(), *, out: str | Path,
        data_dir: str | Path | None = None, progress: bool = True, overwrite: bool = False) -> RunResult:
    """`compress run`: [remove layers] -> score -> plan -> GPTQ -> one output folder (compress.pipeline)."""
    from compress.pipeline.runner import run as run_pipeline

    return run_pipeline(model, config, out, data_dir=data_dir, progress=progress, overwrite=overwrite)


def finetune(model: str | None = None, config: FinetuneConfig = FinetuneConfig(), *, out: str | Path,
             data_dir: str | Path | None = None, progress: bool = True, overwrite: bool = False) -> FinetuneResult:
    """`compress finetune`: LLR or uniform-LR fine-tuning, full or LoRA/QLoRA (compress.training)."""
    from compress.training.train import run_finetune

    return run_finetune(model, config, out, data_dir=data_dir, progress=progress, overwrite=overwrite)


def evaluate(model: Any = None, config: EvalConfig = EvalConfig(), *, out: str | Path | None = None,
             baseline: str | None = None, tokenizer: Any = None, data_dir: str | Path | None = None,
             trust_remote_code: bool = False, overwrite: bool = False) -> EvalResult:
    """`compress eval`: lm-eval tasks with recovery against `baseline` (compress.evaluation). A loaded model
    (with `tokenizer`) is evaluated as it is in memory; a model folder's earlier eval.json is reused."""
    from compress.evaluation.lmeval import run_eval

    if not (model is None or isinstance(model, (str, Path))):
        if tokenizer is None:
            raise CompressError("pass the tokenizer together with an already loaded model")
        model = (model, tokenizer)
    elif model is not None:
        model = str(model)
    return run_eval(model, config, baseline=baseline, data_dir=data_dir, out=Path(out) if out else None,
                    trust_remote_code=trust_remote_code, overwrite=overwrite)


def bench(model: str | None = None, config: BenchConfig = BenchConfig(), *, out: str | Path | None = None,
          baseline: str | None = None, data_dir: str | Path | None = None,
          trust_remote_code: bool = False, overwrite: bool = False) -> BenchResult:
    """`compress bench`: latency, throughput, memory and size, each model in its own process (compress.benchmark)."""
    from compress.benchmark.command import run_bench

    return run_bench(model, config, baseline=baseline, data_dir=data_dir, out=Path(out) if out else None,
                     trust_remote_code=trust_remote_code, overwrite=overwrite)


def recipe(recipe: str | Path | dict, *, out: str | Path, data_dir: str | Path | None = None,
           progress: bool = True) -> RecipeResult:
    """`compress run RECIPE.yaml`: the recipe's stages into out/NN-<stage>/, skipping those whose fingerprint
    is current (compress.recipes). `recipe`: a YAML file, or the same structure as a dict."""
    from compress.recipes.execute import run_recipe
    from compress.recipes.spec import load_recipe, parse_recipe

    spec = parse_recipe(recipe) if isinstance(recipe, dict) else load_recipe(recipe)
    return run_recipe(spec, out, data_dir=data_dir, progress=progress)


def report(runs: Sequence[str | Path], *, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """`compress report`: report.md and figures of output folders; returns the report's path."""
    from compress.reporting.folders import write_report

    return write_report([Path(r) for r in runs], Path(out) if out else None, overwrite=overwrite)
