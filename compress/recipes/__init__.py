"""Recipes: one YAML file runs stages of existing commands in order (fine-tune, remove, heal, quantize), then
eval and bench, into DIR/NN-<stage>/ folders; resumable through per-stage fingerprints.

    spec         the file format, checked whole before any stage starts (Recipe, load_recipe, parse_recipe)
    stages       the operations a stage may name, their config classes, input/output kinds
    fingerprint  what a stage was made from, hashed
    execute      run_recipe: skip up-to-date stages, run the rest, recipe.yaml and report.md
"""
