#!/usr/bin/env bash
# The README's eval and bench tables (issue 6): SmolLM2-135M-Instruct unquantized vs mixed 3.25-bit GPTQ vs
# 25 % of the layers removed, through the user's own commands. Run alone from the project root:
#
#     COMPRESS_DATA_DIR=../shared/data bash eval/compare_smollm2.sh [LIMIT] [TASKS]
#
# Checkpoints go to runs/ (not committed); eval.json/.md, bench.json/.md/.png, plan.json, stats.json and
# report.md of each are copied to eval/results/compare-smollm2/<run>/. LIMIT = documents per lm-eval task
# (default 100; wikitext has 62 documents, so 100 is all of it). TASKS = the tasks scored at batch 16
# (default: every default task but wikitext); wikitext then runs at batch 1, since lm-eval scores its whole
# articles in rolling windows of the model's context (8192 tokens for SmolLM2) and 16 such windows would need
# ~25 GB of logits. A model folder's eval.json is reused task by task, so the second call runs only wikitext.
# Each other step is skipped when its output exists.
set -euo pipefail
LIMIT=${1:-100}
TASKS=${2:-arc_easy,arc_challenge,piqa,winogrande,boolq,lambada_openai,hellaswag_approx}
RUNS=runs/compare-smollm2
OUT=eval/results/compare-smollm2
mkdir -p "$RUNS" "$OUT"
compress() { python -m compress "$@"; }

# 1. the three checkpoints (the float one saved as compress saves every run, so all three are run folders)
[ -d "$RUNS/fp32" ] || compress run --bits 16 --max-windows 8 --out "$RUNS/fp32"
[ -d "$RUNS/mixed3.25" ] || compress run --bits mixed --avg-bits 3.25 --bit-choices 2,3,4,8 --allocator layers --rounding gptq \
    --scorer sensitivity --max-windows 8 --out "$RUNS/mixed3.25"
[ -d "$RUNS/skip25" ] || compress run --skip 0.25 --skip-policy bi --bits 16 --max-windows 8 --out "$RUNS/skip25"

# 2. lm-eval, every default task, recovery against the float run (whose results are reused after its own)
for run in fp32 mixed3.25 skip25; do
  baseline=(); [ "$run" = fp32 ] || baseline=(--baseline "$RUNS/fp32")
  compress eval "$RUNS/$run" "${baseline[@]}" --limit "$LIMIT" --tasks "$TASKS"
  compress eval "$RUNS/$run" "${baseline[@]}" --limit "$LIMIT" --tasks "wikitext,$TASKS" --batch-size 1
done

# 3. bench: each compressed model against the float one in the same invocation
for run in mixed3.25 skip25; do
  [ -f "$RUNS/$run/bench.json" ] || compress bench "$RUNS/$run" --baseline "$RUNS/fp32"
done

# 4. one report over the three, and the small files into eval/results
compress report "$RUNS/fp32" "$RUNS/mixed3.25" "$RUNS/skip25" --out "$OUT"
for run in fp32 mixed3.25 skip25; do
  mkdir -p "$OUT/$run"
  for f in eval.json eval.md bench.json bench.md bench.png plan.json stats.json settings.json; do
    [ -f "$RUNS/$run/$f" ] && cp "$RUNS/$run/$f" "$OUT/$run/"
  done
done
echo "wrote $OUT/report.md"
