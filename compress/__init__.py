"""compress: score every decoder layer of a causal LM, then treat layers differently.

Every command is one function of the same shape, `compress.<command>(model, config, *, out=..., ...)`, taking a
model spec (or, for score/ppl/generate, a loaded model with its tokenizer) and the command's frozen config, and
returning a typed result:

    score(model, ScoreConfig())      -> LayerScores       `compress score`
    run(model, RunConfig(), out=)    -> RunResult         `compress run`
    finetune(model, FinetuneConfig(), out=) -> FinetuneResult  `compress finetune`
    evaluate(model, EvalConfig())    -> EvalResult        `compress eval`
    bench(model, BenchConfig())      -> BenchResult       `compress bench`
    report(folders, out=)            -> Path              `compress report`
    ppl(model, PplConfig())          -> Perplexity        `compress ppl`
    generate(model, GenerateConfig(), prompt=) -> Generation  `compress generate`
    recipe(path_or_dict, out=)       -> RecipeResult      `compress run RECIPE.yaml`

Submodules import torch lazily, so `import compress` stays cheap.
"""

__version__ = "0.1.0"

from compress.api import bench, evaluate, finetune, generate, ppl, recipe, report, run, score
from compress.benchmark.config import BenchConfig
from compress.bits.planner import BitsConfig
from compress.depth.choose import DepthConfig
from compress.depth.generate import GenerateConfig
from compress.errors import CompressError
from compress.evaluation.lmeval import EvalConfig
from compress.evaluation.perplexity import PplConfig
from compress.training.train import FinetuneConfig
from compress.pipeline.runner import RunConfig
from compress.plan import LayerDecision, Plan
from compress.quant.gptq import GPTQConfig
from compress.scorers.command import ScoreConfig
from compress.scores import LayerScores

__all__ = ["BenchConfig", "BitsConfig", "CompressError", "DepthConfig", "EvalConfig", "FinetuneConfig",
           "GPTQConfig", "GenerateConfig", "LayerDecision", "LayerScores", "Plan", "PplConfig", "RunConfig",
           "ScoreConfig", "bench", "evaluate", "finetune", "generate", "ppl", "recipe", "report", "run", "score"]
