"""Depth decisions. One word each: *removal* takes layers out of the checkpoint (remove), *bypass* skips them
at run time while decoding (bypass). Which layers: pure selection rules (select) and the policies that score
a loaded model to apply them (choose: DepthConfig). `compress generate` decodes with layers bypassed
(generate)."""
