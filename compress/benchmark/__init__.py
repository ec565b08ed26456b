"""`compress bench`: the command and its output files (command), the settings (config), what both workers share
(measure), the transformers worker (hf), the vLLM worker (vllm), pure statistics (stats), tables and plot
(tables)."""
