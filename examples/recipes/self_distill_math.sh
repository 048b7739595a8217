#!/usr/bin/env bash
# Paced self-distillation, the paper's reverse-KL track: Qwen2.5-Math-7B-Instruct is its own
# teacher. The teacher is the same model given privileged context (`--context reference`: the
# problem's reference in its prompt, the paper's Figure 2); the student sees only the problem.
# Both score the student's own responses (on-policy), and the student is trained with reverse KL
# weighted by Paced weights w(p) = p(1-p) of its pass rates. Training data: DAPO-Math-17k, which
# has no worked solutions, so the privileged context is the gold answer ("The final answer is
# $\boxed{...}$.", prepare_data.py --answer-as-reference; docs/method.md: "the expert solution or the
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
# Hyperparameters: from the authors' setup (docs/method.md): K = 8 rollouts at temperature 1.0,
# alpha = beta = 1, mean-normalised weights, weight decay 0.1, gradient clipping 1.0, 256
# problems per optimizer step, evaluation at temperature 0.6, top-p 0.8 and top-k 20, 8 samples
# per problem. lr: 1e-6 (theirs) for a full fine-tune; with LoRA the default is
# 1e-5, our choice (LoRA usually wants a larger rate). Not public, our choices: one epoch and one
# on-policy round (ROUNDS=2 or more: each round re-estimates the pass rates of the current
# student and rolls it out again, the teacher staying the base model with the reference), one
# on-policy response per problem (SEQ_SAMPLES), top-32 teacher logits. No chat template
# variables: Qwen2.5-Math's template has no thinking switch (CHAT_KWARGS passes some to rollout
# and eval for a model whose template has variables).
#
#   bash examples/recipes/self_distill_math.sh
#   ROUNDS=2 LORA_R=0 LR=1e-6 bash examples/recipes/self_distill_math.sh    # full fine-tune, big GPU
#
# Every stage is a resumable job: after a crash or preemption rerun the same command; finished
# artifacts are kept and an interrupted distill continues from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${WORK:-runs/self_distill_math}
MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B-Instruct}
TEACHER=${TEACHER:-$MODEL}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-4096}
SEQ_SAMPLES=${SEQ_SAMPLES:-1}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-3072}
LORA_R=${LORA_R:-64}
if [ "$LORA_R" = 0 ]; then LR=${LR:-1e-6}; else LR=${LR:-1e-5}; fi
EPOCHS=${EPOCHS:-1}
ROUNDS=${ROUNDS:-1}
. examples/recipes/common.sh              # the other settings, benchmarks, engine, sample, evaluate

if [ -z "${TRAIN:-}" ]; then
  TRAIN=$DATA/dapo-answer-ref${TRAIN_LIMIT:+-$TRAIN_LIMIT}.parquet
  prepare dapo "$TRAIN" --answer-as-reference ${TRAIN_LIMIT:+--limit "$TRAIN_LIMIT" --seed "$SEED"}
fi
DISTILL=(--lr "$LR" --weight-decay "$WEIGHT_DECAY" --max-grad-norm "$MAX_GRAD_NORM" --batch-size "$BATCH"
  --micro-batch-size "$MICRO_BATCH" --gradient-checkpointing --lora-r "$LORA_R" --epochs "$EPOCHS" --seed "$SEED")

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
