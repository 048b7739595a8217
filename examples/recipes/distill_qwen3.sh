#!/usr/bin/env bash
# Paced distillation, the paper's distillation track: Qwen3-8B teacher -> Qwen3-1.7B student on
# DAPO-Math-17k. Stage 1: forward KL on the teacher's responses, Paced weights w(p) = p(1-p)
# from the base student's pass rates. Stage 2 (the two-stage schedule): reverse KL on fresh
# rollouts of the stage-1 student, with its pass rates re-estimated. The base student, stage 1
# and stage 2 are evaluated on MATH-500, AIME 2024, AIME 2025 and an MMLU subset (retention:
# forgetting against the base student).
#
# Hardware assumed (times are rough estimates, not measurements):
#   GPUs     one 80 GB GPU (A100 80GB, H100) runs every stage, one process at a time. The
#            sampling stages (rollout, eval) are most of the time; they take --shard I/N to
#            spread over more GPUs (see examples/slurm_rollout.sh).
#   Memory   sampling (vLLM, bf16): the 8B teacher needs ~16 GB of weights plus KV cache;
#            teacher-logits (transformers, bf16): ~17 GB plus activations at 8,192 tokens;
#            distill: full fine-tune of the 1.7B student, float32 weights, gradients and AdamW
#            states ~27 GB plus checkpointed activations: fits 80 GB (on a 40 GB GPU set
#            LORA_R=64, which needs `pip install peft`). Host: 64 GB RAM, ~50 GB of disk.
#   Time     about 30-40 GPU-hours on one H100: each K = 8 pass over DAPO-Math-17k's ~17.4 k
#            problems generates ~0.5 B tokens (Qwen3 thinks before it answers; responses are
#            capped at 8,192 tokens), and there are two, plus the teacher's responses and three
#            evaluations. teacher-logits and distill take an hour or two each.
#   Backend  BACKEND=vllm (default; `pip install -e ".[vllm]"`) samples with vLLM: TP (tensor
#            parallel size), GPU_MEM_UTIL, MAX_MODEL_LEN tune it. BACKEND=hf uses transformers
#            (slow on real models; the tests run this script with it on tiny models).
#            teacher-logits runs on transformers (TL_BACKEND=hf, default: top-k of the full
#            softmax, chunked over positions) or on vLLM's prompt log-probs (TL_BACKEND=vllm).
#            distill always trains with transformers/PyTorch, bf16 autocast on CUDA.
#   Data     `pip install datasets` and network access to the Hugging Face hub, once: the
#            problems files are built by examples/prepare_data.py into $DATA and reused. Offline,
#            set PREPARE_LOCAL to a folder holding dapo, math500, aime2024, aime2025 and mmlu
#            (each a file or folder in the hub layout, see prepare_data.py --help).
#
# Hyperparameters: those known from the authors' setup (PAPER.md): lr 1e-6, weight decay 0.1,
# gradient clipping 1.0, 256 problems per optimizer step, K = 8 rollouts at temperature 1.0,
# responses up to 8,192 tokens, alpha = beta = 1, mean-normalised weights, evaluation at
# temperature 0.6 and top-p 0.8 (paced eval has no top-k: the authors' top-k 20 is not applied),
# 8 samples per problem. Not public, our choices: one epoch per stage, top-32 teacher logits,
# re-estimated pass rates before stage 2 (REESTIMATE=0 keeps the stage-1 weights). The paper's
# teacher is Qwen3-8B after GRPO training: set TEACHER to your own checkpoint if you have one.
#
#   bash examples/recipes/distill_qwen3.sh
#   WORK=/scratch/paced TRAIN_LIMIT=2000 bash examples/recipes/distill_qwen3.sh     # a subset
#
# Every stage is a resumable job: after a crash or preemption rerun the same command; finished
# artifacts are kept and an interrupted distill continues from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${WORK:-runs/distill_qwen3}
DATA=${DATA:-$WORK/data}
STUDENT=${STUDENT:-Qwen/Qwen3-1.7B}
TEACHER=${TEACHER:-Qwen/Qwen3-8B}
BACKEND=${BACKEND:-vllm}                  # sampling engine of rollout and eval
TL_BACKEND=${TL_BACKEND:-hf}              # engine of teacher-logits
TP=${TP:-1}
GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.9}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-10240}     # prompt + response
DTYPE=${DTYPE:-}                          # empty: auto (bf16 on GPU)
K=${K:-8}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-8192}
VERIFIER=${VERIFIER:-math}
WORKERS=${WORKERS:-8}                     # verifier processes of score and eval
TOP_K=${TOP_K:-32}
LR=${LR:-1e-6}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.1}
MAX_GRAD_NORM=${MAX_GRAD_NORM:-1.0}
BATCH=${BATCH:-256}
MICRO_BATCH=${MICRO_BATCH:-4}
EPOCHS1=${EPOCHS1:-1}
EPOCHS2=${EPOCHS2:-1}
LORA_R=${LORA_R:-0}
REESTIMATE=${REESTIMATE:-1}
TL_BATCH=${TL_BATCH:-4}
EVAL_SAMPLES=${EVAL_SAMPLES:-8}
EVAL_TEMPERATURE=${EVAL_TEMPERATURE:-0.6}
EVAL_TOP_P=${EVAL_TOP_P:-0.8}
EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-$MAX_NEW_TOKENS}
EVAL_VERIFIER=${EVAL_VERIFIER:-math}
MMLU_LIMIT=${MMLU_LIMIT:-1000}
SEED=${SEED:-0}
mkdir -p "$WORK/eval" "$DATA"

# --- Problems files (prompts carry the paper's suffix: no --prompt-suffix below) ---------------
prepare() {  # prepare DATASET FILE [prepare_data options]: build FILE unless it exists
  local name=$1 file=$2; shift 2
  [ -f "$file" ] && return 0
  python examples/prepare_data.py "$name" --out "$file" ${PREPARE_LOCAL:+--local "$PREPARE_LOCAL/$name"} "$@" >/dev/null
}
if [ -z "${TRAIN:-}" ]; then
  TRAIN=$DATA/dapo${TRAIN_LIMIT:+-$TRAIN_LIMIT}.parquet
  prepare dapo "$TRAIN" ${TRAIN_LIMIT:+--limit "$TRAIN_LIMIT" --seed "$SEED"}
fi
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
DISTILL=(--lr "$LR" --weight-decay "$WEIGHT_DECAY" --max-grad-norm "$MAX_GRAD_NORM" --batch-size "$BATCH"
  --micro-batch-size "$MICRO_BATCH" --gradient-checkpointing --lora-r "$LORA_R" --seed "$SEED")

sample() {  # sample MODEL OUT SAMPLES: rollouts at temperature 1.0 (the paper's)
  paced rollout --problems "$TRAIN" --model "$1" --out "$2" --samples "$3" --temperature 1.0 \
    --max-new-tokens "$MAX_NEW_TOKENS" --seed "$SEED" "${GEN[@]}"
}
pass_rates() {  # pass_rates MODEL DIR -> Paced weights (alpha = beta = 1) of MODEL's pass rates
  local ro sc
  ro=$(sample "$1" "$2/student_rollouts" "$K")
  sc=$(paced score --rollouts "$ro" --problems "$TRAIN" --out "$2/scores" --verifier "$VERIFIER" --workers "$WORKERS")
  paced weight --scores "$sc" --out "$2/weights.parquet" --alpha 1 --beta 1 --scheme beta --normalize mean \
    --plot "$2/weights.png"
}
resume() {  # --resume when a distill run was started in $1 (a finished one is left as it is)
  if [ -f "$1/_job.json" ]; then echo --resume; fi
}
evaluate() {  # evaluate MODEL OUT [--baseline DIR]
  local model=$1 out=$2; shift 2
  paced eval --model "$model" "${BENCHMARKS[@]}" --out "$out" --samples "$EVAL_SAMPLES" \
    --temperature "$EVAL_TEMPERATURE" --top-p "$EVAL_TOP_P" --max-new-tokens "$EVAL_MAX_NEW_TOKENS" \
    --verifier "$EVAL_VERIFIER" --workers "$WORKERS" --seed "$SEED" "${GEN[@]}" "$@"
}

# --- Stage 1: forward KL on the teacher's responses, weighted by the base student ---------------
S1_DIR=$WORK/stage1
mkdir -p "$S1_DIR"
W1=$(pass_rates "$STUDENT" "$S1_DIR")
TSEQ=$(sample "$TEACHER" "$S1_DIR/teacher_rollouts" 1)
TL1=$(paced teacher-logits --problems "$TRAIN" --sequences "$TSEQ" --teacher "$TEACHER" --out "$S1_DIR/teacher_logits" \
  --top-k "$TOP_K" --weights "$W1" --batch-size "$TL_BATCH" "${TLGEN[@]}")
S1=$(paced distill --student "$STUDENT" --teacher-logits "$TL1" --weights "$W1" --out "$S1_DIR/student" \
  --loss fkl --epochs "$EPOCHS1" "${DISTILL[@]}" $(resume "$S1_DIR/student"))

# --- Stage 2: reverse KL on the stage-1 student's own rollouts (on-policy) ----------------------
S2_DIR=$WORK/stage2
mkdir -p "$S2_DIR"
if [ "$REESTIMATE" = 1 ]; then W2=$(pass_rates "$S1" "$S2_DIR"); else W2=$W1; fi
SSEQ=$(sample "$S1" "$S2_DIR/onpolicy_rollouts" 1)
TL2=$(paced teacher-logits --problems "$TRAIN" --sequences "$SSEQ" --teacher "$TEACHER" --out "$S2_DIR/teacher_logits" \
  --top-k "$TOP_K" --weights "$W2" --batch-size "$TL_BATCH" "${TLGEN[@]}")
S2=$(paced distill --student "$STUDENT" --init "$S1" --teacher-logits "$TL2" --weights "$W2" --out "$S2_DIR/student" \
  --loss rkl --epochs "$EPOCHS2" "${DISTILL[@]}" $(resume "$S2_DIR/student"))

# --- Evaluation: base student, stage 1, stage 2; forgetting on MMLU against the base ------------
E0=$(evaluate "$STUDENT" "$WORK/eval/base")
E1=$(evaluate "$S1" "$WORK/eval/stage1" --baseline "$E0")
E2=$(evaluate "$S2" "$WORK/eval/stage2" --baseline "$E0")
python examples/recipes/report.py "base student=$E0" "Paced FKL=$E1" "Paced FKL -> RKL=$E2" | tee "$WORK/report.md"
echo "$S2"
