"""lm-eval's own winogrande functions, imported by winogrande.yaml's `!function` tags."""

from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_choice, doc_to_target, doc_to_text

__all__ = ["doc_to_choice", "doc_to_target", "doc_to_text"]
