"""Fine-tuning with layerwise learning rates: the α -> LR map (lr_map), the per-matrix scheduler (schedule),
AdamW / Muon (optim), the training loop and `compress finetune` (train), the LR heat map (heatmap)."""

OPTIMIZERS = ("adamw", "muon")  # --optimizer: AdamW, or Muon for hidden matrices + AdamW for the rest
