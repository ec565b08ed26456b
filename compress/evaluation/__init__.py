"""Measuring quality: WikiText-2 perplexity (perplexity; `compress ppl`), lm-eval on local data with recovery
against a baseline (lmeval; `compress eval`), the local task set and its YAMLs shipped in tasks/ (local_tasks).
"""
