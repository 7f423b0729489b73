#!/usr/bin/env bash
# Train the composer on the corpus in the composer's condition (docs/music_v2.md,
# "Corpus in the composer's condition") with the shipped model's settings, then print
# its held-out bits per character and, beside the shipped model, bits per note on the
# same melodies. Usage: scripts/train_composer_condition.sh [NAME] [extra train-generator options]
# e.g. scripts/train_composer_condition.sh cond --device cuda   (on a GPU)
#      scripts/train_composer_condition.sh cond --no-bf16       (CPUs without native bf16)
set -euo pipefail
cd "$(dirname "$0")/.."
NAME="${1:-composer_condition}"
shift || true
PY=.venv/bin/python
nice "$PY" -m st_agent train-generator --name "$NAME" --corpus condition \
  --max-steps 850 --batch-size 32 --block-size 256 --n-layer 4 --n-embd 256 --n-head 4 \
  --vocab-size 800 --threads 1 "$@"
nice "$PY" benchmarks/bench_bits.py --checkpoint "runs/$NAME" --corpus condition
nice "$PY" benchmarks/bench_bits.py --compare st_agent/music/assets/composer "runs/$NAME"
