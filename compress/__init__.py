"""compress: score every decoder layer of a causal LM, then treat layers differently.

Public API (mirrors the CLI): load_model, decoder_layers, score, score_model, LayerScores, wikitext2_ppl
(`compress score` / `compress ppl`); run, RunConfig, make_plan, Plan, load_quantized (`compress run`);
choose_layers, remove_layers (`compress run --skip`); generate, skipping (`compress generate --decode-skip`).
Submodules import torch lazily, so `import compress` stays cheap.
"""

__version__ = "0.1.0"

from compress.api import generate, score_model, wikitext2_ppl
from compress.errors import CompressError
from compress.model import decoder_layers, load_model
from compress.pipeline import RunConfig, make_plan, run
from compress.plan import Plan
from compress.scorers import SCORERS, score
from compress.removal import remove_layers
from compress.scores import LayerScores
from compress.skip_policy import choose_layers
from compress.skipping import skipping

__all__ = ["CompressError", "LayerScores", "Plan", "RunConfig", "SCORERS", "choose_layers", "decoder_layers",
           "generate", "load_model", "load_quantized", "make_plan", "remove_layers", "run", "score", "score_model",
           "skipping", "wikitext2_ppl"]


def load_quantized(path):
    """(model, tokenizer) of a GPTQ folder written by `compress run`, on CPU, through GPTQModel."""
    from compress.quant.gptq import load_quantized as load

    return load(path)
