#!/usr/bin/env bash
# Paced self-distillation, the paper's reverse-KL track: Qwen2.5-Math-7B-Instruct is its own
# teacher. The teacher is the same model given privileged context (`--context reference`: the
# problem's reference in its prompt, the paper's Figure 2); the student sees only the problem.
# Both score the student's own responses (on-policy), and the student is trained with reverse KL
# weighted by Paced weights w(p) = p(1-p) of its pass rates. Training data: DAPO-Math-17k, which
# has no worked solutions, so the privileged context is the gold answer ("The final answer is
# $\boxed{...}$.", prepare_data.py --answer-as-reference; PAPER.md: "the expert solution or the
# answer"). Point TRAIN at a problems file with real `reference` solutions to use those instead.
# Evaluates the base model and the result on MATH-500, AIME 2024, AIME 2025 and an MMLU subset
# (retention: forgetting against the base model).
#
# Hardware assumed (times are rough estimates, not measurements):
#   GPUs     one 80 GB GPU (A100 80GB, H100), one stage at a time; rollout and eval take
#            --shard I/N to spread over more GPUs (see examples/slurm_rollout.sh).
#   Memory   sampling (vLLM, bf16): ~15 GB of weights plus KV cache; teacher-logits
#            (transformers, bf16): ~15 GB plus activations; distill: paced trains on one device
#            with float32 master weights, so a full fine-tune of 7.6 B parameters needs ~122 GB
#            for weights, gradients and AdamW states alone. The default is therefore LoRA
#            (LORA_R=64, `pip install peft`; the adapters are merged into the saved model):
#            ~30 GB of float32 weights plus checkpointed activations. LORA_R=0 (full fine-tune)
#            needs a GPU with more memory than that (an H200's 141 GB may fit it; untested).
#            Host: 64 GB RAM, ~60 GB of disk.
#   Time     about 5-8 GPU-hours per round on one H100: the K = 8 pass over DAPO-Math-17k's
#            ~17.4 k problems (~0.1 B generated tokens at this model's response lengths) is most
#            of it; teacher-logits, distill and the two evaluations take about an hour each or less.
#   Context  the model's context is 4,096 tokens (max_position_embeddings): responses are capped
#            at MAX_NEW_TOKENS=3072, not the 8,192 of the Qwen3 recipe. The teacher's prompt (the
#            problem with its reference) plus the response must fit too: with long worked
#            solutions as references, lower MAX_NEW_TOKENS.
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
# Hyperparameters: from the authors' setup (PAPER.md): K = 8 rollouts at temperature 1.0,
# alpha = beta = 1, mean-normalised weights, weight decay 0.1, gradient clipping 1.0, 256
# problems per optimizer step, evaluation at temperature 0.6 and top-p 0.8 (paced eval has no
# top-k), 8 samples per problem. lr: 1e-6 (theirs) for a full fine-tune; with LoRA the default is
# 1e-5, our choice (LoRA usually wants a larger rate). Not public, our choices: one epoch and one
# on-policy round (ROUNDS=2 or more: each round re-estimates the pass rates of the current
# student and rolls it out again, the teacher staying the base model with the reference), one
# on-policy response per problem (SEQ_SAMPLES), top-32 teacher logits.
#
#   bash examples/recipes/self_distill_math.sh
#   ROUNDS=2 LORA_R=0 LR=1e-6 bash examples/recipes/self_distill_math.sh    # full fine-tune, big GPU
#
# Every stage is a resumable job: after a crash or preemption rerun the same command; finished
# artifacts are kept and an interrupted distill continues from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${WORK:-runs/self_distill_math}
DATA=${DATA:-$WORK/data}
MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B-Instruct}
TEACHER=${TEACHER:-$MODEL}
BACKEND=${BACKEND:-vllm}                  # sampling engine of rollout and eval
TL_BACKEND=${TL_BACKEND:-hf}              # engine of teacher-logits
TP=${TP:-1}
GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.9}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-4096}
DTYPE=${DTYPE:-}                          # empty: auto (bf16 on GPU)
K=${K:-8}
SEQ_SAMPLES=${SEQ_SAMPLES:-1}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-3072}
VERIFIER=${VERIFIER:-math}
WORKERS=${WORKERS:-8}
TOP_K=${TOP_K:-32}
LORA_R=${LORA_R:-64}
if [ "$LORA_R" = 0 ]; then LR=${LR:-1e-6}; else LR=${LR:-1e-5}; fi
WEIGHT_DECAY=${WEIGHT_DECAY:-0.1}
MAX_GRAD_NORM=${MAX_GRAD_NORM:-1.0}
BATCH=${BATCH:-256}
MICRO_BATCH=${MICRO_BATCH:-4}
EPOCHS=${EPOCHS:-1}
ROUNDS=${ROUNDS:-1}
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
  TRAIN=$DATA/dapo-answer-ref${TRAIN_LIMIT:+-$TRAIN_LIMIT}.parquet
  prepare dapo "$TRAIN" --answer-as-reference ${TRAIN_LIMIT:+--limit "$TRAIN_LIMIT" --seed "$SEED"}
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
  --micro-batch-size "$MICRO_BATCH" --gradient-checkpointing --lora-r "$LORA_R" --epochs "$EPOCHS" --seed "$SEED")

sample() {  # sample MODEL OUT SAMPLES: the student's own responses at temperature 1.0
  paced rollout --problems "$TRAIN" --model "$1" --out "$2" --samples "$3" --temperature 1.0 \
    --max-new-tokens "$MAX_NEW_TOKENS" --seed "$SEED" "${GEN[@]}"
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

# --- On-policy rounds: pass rates -> weights -> own responses -> privileged teacher -> RKL ------
CURRENT=$MODEL
INIT=()
for ((round = 1; round <= ROUNDS; round++)); do
  R=$WORK/round$round
  mkdir -p "$R"
  RO=$(sample "$CURRENT" "$R/student_rollouts" "$K")
  SC=$(paced score --rollouts "$RO" --problems "$TRAIN" --out "$R/scores" --verifier "$VERIFIER" --workers "$WORKERS")
  W=$(paced weight --scores "$SC" --out "$R/weights.parquet" --alpha 1 --beta 1 --scheme beta --normalize mean \
    --plot "$R/weights.png")
  SEQ=$(sample "$CURRENT" "$R/onpolicy_rollouts" "$SEQ_SAMPLES")
  TL=$(paced teacher-logits --problems "$TRAIN" --sequences "$SEQ" --teacher "$TEACHER" --context reference \
    --out "$R/teacher_logits" --top-k "$TOP_K" --weights "$W" --batch-size "$TL_BATCH" "${TLGEN[@]}")
  CURRENT=$(paced distill --student "$MODEL" ${INIT[@]+"${INIT[@]}"} --teacher-logits "$TL" --weights "$W" --out "$R/student" \
    --loss rkl "${DISTILL[@]}" $(resume "$R/student"))
  INIT=(--init "$CURRENT")
done

# --- Evaluation: the base model and the self-distilled one; forgetting on MMLU ------------------
E0=$(evaluate "$MODEL" "$WORK/eval/base")
E1=$(evaluate "$CURRENT" "$WORK/eval/paced_rkl" --baseline "$E0")
python examples/recipes/report.py "base=$E0" "Paced RKL=$E1" | tee "$WORK/report.md"
echo "$CURRENT"
