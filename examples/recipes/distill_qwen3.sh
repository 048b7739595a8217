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
# Hyperparameters: those known from the authors' setup (docs/method.md): lr 1e-6, weight decay 0.1,
# gradient clipping 1.0, 256 problems per optimizer step, K = 8 rollouts at temperature 1.0,
# responses up to 8,192 tokens, alpha = beta = 1, mean-normalised weights, evaluation at
# temperature 0.6, top-p 0.8 and top-k 20, 8 samples per problem. Not public, our choices: one epoch per stage, top-32 teacher logits,
# re-estimated pass rates before stage 2 (REESTIMATE=0 keeps the stage-1 weights), and Qwen3's
# thinking mode (THINKING=1, its chat template's default, passed explicitly as
# --chat-template-kwargs '{"enable_thinking": true}' so every artifact records it): the paper does
# not name the mode, and its 8,192-token responses are sized for thinking. THINKING=0 turns it off
# for rollouts, teacher scoring (teacher-logits inherits the rollouts' setting) and evaluation:
# shorter responses, for a quicker, weaker run. The paper's
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
STUDENT=${STUDENT:-Qwen/Qwen3-1.7B}
TEACHER=${TEACHER:-Qwen/Qwen3-8B}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-10240}     # prompt + response
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-8192}
LR=${LR:-1e-6}
EPOCHS1=${EPOCHS1:-1}
EPOCHS2=${EPOCHS2:-1}
LORA_R=${LORA_R:-0}
REESTIMATE=${REESTIMATE:-1}
THINKING=${THINKING:-1}
if [ "$THINKING" = 1 ]; then CHAT_KWARGS='{"enable_thinking": true}'; else CHAT_KWARGS='{"enable_thinking": false}'; fi
. examples/recipes/common.sh              # the other settings, benchmarks, engine, sample, evaluate

if [ -z "${TRAIN:-}" ]; then
  TRAIN=$DATA/dapo${TRAIN_LIMIT:+-$TRAIN_LIMIT}.parquet
  prepare dapo "$TRAIN" ${TRAIN_LIMIT:+--limit "$TRAIN_LIMIT" --seed "$SEED"}
fi
DISTILL=(--lr "$LR" --weight-decay "$WEIGHT_DECAY" --max-grad-norm "$MAX_GRAD_NORM" --batch-size "$BATCH"
  --micro-batch-size "$MICRO_BATCH" --gradient-checkpointing --lora-r "$LORA_R" --seed "$SEED")

pass_rates() {  # pass_rates MODEL DIR -> Paced weights (alpha = beta = 1) of MODEL's pass rates
  local ro sc
  ro=$(sample "$1" "$2/student_rollouts" "$K")
  sc=$(paced score --rollouts "$ro" --problems "$TRAIN" --out "$2/scores" --verifier "$VERIFIER" --workers "$WORKERS")
  paced weight --scores "$sc" --out "$2/weights.parquet" --alpha 1 --beta 1 --scheme beta --normalize mean \
    --plot "$2/weights.png"
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
