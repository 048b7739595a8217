#!/usr/bin/env bash
#SBATCH --job-name=paced-rollout
#SBATCH --array=0-7
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=logs/%x-%A_%a.out
# A Slurm array: each task samples one shard of the problems into the same --out, with the
# same command as on one machine plus --shard I/N. Every shard is a resumable job: a requeued
# or rerun task continues where it stopped. Downstream stages read --out as one artifact once
# every shard is done (and name the missing ones before that), so chain them after the array:
#
#   export PROBLEMS=dapo17k.parquet STUDENT=Qwen/Qwen3-1.7B OUT=runs/rollouts
#   jid=$(sbatch --parsable examples/slurm_rollout.sh)
#   sbatch --dependency=afterok:$jid --wrap "paced score --rollouts $OUT --problems $PROBLEMS \
#     --out runs/scores && paced weight --scores runs/scores --out runs/weights.parquet"
#
# Hardware: one GPU per task (the student samples K = 8 answers per problem); on CPU (tests)
# it runs as is with SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT set by hand.
set -euo pipefail
: "${PROBLEMS:?set PROBLEMS}" "${STUDENT:?set STUDENT}" "${OUT:?set OUT}"
I=${SLURM_ARRAY_TASK_ID:?run under sbatch --array, or set SLURM_ARRAY_TASK_ID}
N=${SLURM_ARRAY_TASK_COUNT:-8}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-8192}

paced rollout --problems "$PROBLEMS" --model "$STUDENT" --out "$OUT" --shard "$I/$N" \
  --samples "${K:-8}" --temperature 1.0 --max-new-tokens "$MAX_NEW_TOKENS" --seed "${SEED:-0}" \
  --prompt-suffix " Let's think step by step and output the final answer within \\boxed{}."
