"""`compress run` (runner): [remove layers] -> score -> plan bits -> GPTQ (or save) -> perplexity before/after,
one output folder. Recipes that chain stages belong here next."""
