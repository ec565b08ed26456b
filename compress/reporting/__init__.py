"""`compress report` (folders): report.md with each output folder's layers, evaluation and benchmark, and the
quality / size / speed trade-off across folders."""
