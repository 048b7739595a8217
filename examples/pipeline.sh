#!/usr/bin/env bash
# rollout -> score -> weight on a tiny problems file, with a tiny randomly initialised model.
#
#   bash examples/pipeline.sh            # about a minute on 2 CPU cores
#   MODEL=Qwen/Qwen3-1.7B PROBLEMS=my_problems.parquet bash examples/pipeline.sh   # a real student
#
# Each command prints its output path on stdout, so stages chain with $(...). A random model
# solves almost nothing, so most weights come out 0 here: examples/quickstart.sh trains a
# tiny student that has a spread of pass rates.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/pipeline}
PROBLEMS=${PROBLEMS:-examples/data/tiny_problems.parquet}
mkdir -p "$WORK"
if [ -z "${MODEL:-}" ]; then
  MODEL=$WORK/tiny-student
  [ -d "$MODEL" ] || python examples/tiny_model.py --out "$MODEL" >/dev/null
fi

ROLLOUTS=$(paced rollout --problems "$PROBLEMS" --model "$MODEL" --out "$WORK/rollouts" \
  --samples 8 --temperature 1.0 --max-new-tokens 32 \
  --prompt-suffix " Let's think step by step and output the final answer within \\boxed{}.")
SCORES=$(paced score --rollouts "$ROLLOUTS" --problems "$PROBLEMS" --out "$WORK/scores" --verifier math)
WEIGHTS=$(paced weight --scores "$SCORES" --out "$WORK/weights.parquet" --alpha 1 --beta 1 --plot "$WORK/weights.png")

python - "$WEIGHTS" <<'PY'
import sys

import polars as pl

print(pl.read_parquet(sys.argv[1]).sort("problem_id"))
PY
