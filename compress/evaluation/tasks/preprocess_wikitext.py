"""lm-eval's own wikitext functions, imported by wikitext.yaml's `!function` tags."""

from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer

__all__ = ["process_results", "wikitext_detokenizer"]
