# What the real-model recipes share (sourced by distill_qwen3.sh and self_distill_math.sh, from
# the repository root, after they set WORK, MAX_MODEL_LEN and MAX_NEW_TOKENS): the settings both
# take from the environment, the problems files of the benchmarks, the engine options, and the
# functions that sample, resume and evaluate. Every setting is an environment variable with a
# default; the recipes' headers document them.

DATA=${DATA:-$WORK/data}
BACKEND=${BACKEND:-vllm}                  # sampling engine of rollout and eval
TL_BACKEND=${TL_BACKEND:-hf}              # engine of teacher-logits
TP=${TP:-1}
GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.9}
DTYPE=${DTYPE:-}                          # empty: auto (bf16 on GPU)
K=${K:-8}
VERIFIER=${VERIFIER:-math}
WORKERS=${WORKERS:-8}                     # verifier processes of score and eval
TOP_K=${TOP_K:-32}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.1}
MAX_GRAD_NORM=${MAX_GRAD_NORM:-1.0}
BATCH=${BATCH:-256}
MICRO_BATCH=${MICRO_BATCH:-4}
TL_BATCH=${TL_BATCH:-4}
EVAL_SAMPLES=${EVAL_SAMPLES:-8}
EVAL_TEMPERATURE=${EVAL_TEMPERATURE:-0.6}
EVAL_TOP_P=${EVAL_TOP_P:-0.8}
EVAL_TOP_K=${EVAL_TOP_K:-20}
EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-$MAX_NEW_TOKENS}
EVAL_VERIFIER=${EVAL_VERIFIER:-math}
MMLU_LIMIT=${MMLU_LIMIT:-1000}
SEED=${SEED:-0}
CHAT_KWARGS=${CHAT_KWARGS:-}              # --chat-template-kwargs of rollout and eval (teacher-logits inherits them)
TEMPLATE=(); if [ -n "$CHAT_KWARGS" ]; then TEMPLATE=(--chat-template-kwargs "$CHAT_KWARGS"); fi
mkdir -p "$WORK/eval" "$DATA"

# --- Problems files (prompts carry the paper's suffix: no --prompt-suffix below) ---------------
prepare() {  # prepare DATASET FILE [prepare_data options]: build FILE unless it exists
  local name=$1 file=$2; shift 2
  [ -f "$file" ] && return 0
  python examples/prepare_data.py "$name" --out "$file" ${PREPARE_LOCAL:+--local "$PREPARE_LOCAL/$name"} "$@" >/dev/null
}
prepare math500 "$DATA/math500.parquet"
prepare aime2024 "$DATA/aime2024.parquet"
prepare aime2025 "$DATA/aime2025.parquet"
prepare mmlu "$DATA/mmlu.parquet" --limit "$MMLU_LIMIT" --seed "$SEED"
BENCHMARKS=(--problems "$DATA/math500.parquet" --problems "$DATA/aime2024.parquet"
  --problems "$DATA/aime2025.parquet" --problems "$DATA/mmlu.parquet" --retain mmlu)

engine() {  # engine BACKEND: sets ENGINE, the engine options of rollout, eval and teacher-logits
  ENGINE=(--backend "$1")
  if [ "$1" = vllm ]; then
    ENGINE+=(--tensor-parallel-size "$TP" --gpu-memory-utilization "$GPU_MEM_UTIL" --max-model-len "$MAX_MODEL_LEN")
  fi
  if [ -n "$DTYPE" ]; then ENGINE+=(--dtype "$DTYPE"); fi
}
engine "$TL_BACKEND"; TLGEN=("${ENGINE[@]}")
engine "$BACKEND"; GEN=("${ENGINE[@]}")

sample() {  # sample MODEL OUT SAMPLES: rollouts of the training problems at temperature 1.0 (the paper's)
  paced rollout --problems "$TRAIN" --model "$1" --out "$2" --samples "$3" --temperature 1.0 \
    --max-new-tokens "$MAX_NEW_TOKENS" --seed "$SEED" "${GEN[@]}" "${TEMPLATE[@]}"
}
resume() {  # --resume when a distill run was started in $1 (a finished one is left as it is)
  if [ -f "$1/_job.parquet" ] || [ -f "$1/_job.json" ]; then echo --resume; fi
}
evaluate() {  # evaluate MODEL OUT [--baseline DIR]
  local model=$1 out=$2; shift 2
  paced eval --model "$model" "${BENCHMARKS[@]}" --out "$out" --samples "$EVAL_SAMPLES" \
    --temperature "$EVAL_TEMPERATURE" --top-p "$EVAL_TOP_P" --top-k "$EVAL_TOP_K" --max-new-tokens "$EVAL_MAX_NEW_TOKENS" \
    --verifier "$EVAL_VERIFIER" --workers "$WORKERS" --seed "$SEED" "${GEN[@]}" "${TEMPLATE[@]}" "$@"
}
