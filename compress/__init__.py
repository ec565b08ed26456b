"""compress: score every decoder layer of a causal LM, then treat layers differently.

Public API (mirrors the CLI): load_model, decoder_layers, score, score_model, LayerScores, perplexity,
wikitext2_ppl. Submodules import torch lazily, so `import compress` stays cheap.
"""

from compress.api import score_model, wikitext2_ppl
from compress.errors import CompressError
from compress.model import decoder_layers, load_model
from compress.scorers import SCORERS, score
from compress.scores import LayerScores

__all__ = ["CompressError", "LayerScores", "SCORERS", "decoder_layers", "load_model", "score", "score_model",
           "wikitext2_ppl"]
__version__ = "0.1.0"
