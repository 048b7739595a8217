#!/usr/bin/env bash
# The paper's two-stage schedule: forward KL on teacher sequences, then reverse KL on fresh
# rollouts of the stage-1 student ("mode coverage, then consolidation"), Paced weights in both.
#
#   bash examples/two_stage.sh                         # tiny random models, CPU, about a minute
#   STUDENT=Qwen/Qwen3-1.7B TEACHER=Qwen/Qwen3-8B PROBLEMS=dapo17k.parquet \
#     MAX_NEW_TOKENS=8192 LR=1e-6 EPOCHS=1 bash examples/two_stage.sh     # real models, GPU
#
# REESTIMATE=1 (default) re-measures the pass rates of the stage-1 student before stage 2;
# REESTIMATE=0 keeps the stage-1 weights. The paper leaves this choice open. A random tiny
# model solves almost nothing (every weight 0): examples/quickstart.sh trains real ones.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/two_stage}
PROBLEMS=${PROBLEMS:-examples/data/tiny_problems.parquet}
K=${K:-8}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-24}
TOP_K=${TOP_K:-32}
LR=${LR:-1e-3}
EPOCHS=${EPOCHS:-2}
BATCH=${BATCH:-4}
REESTIMATE=${REESTIMATE:-1}
VERIFIER=${VERIFIER:-math}
SUFFIX=${SUFFIX:-" Let's think step by step and output the final answer within \\boxed{}."}
mkdir -p "$WORK"
if [ -z "${STUDENT:-}" ]; then
  STUDENT=$WORK/tiny-student
  [ -d "$STUDENT" ] || python examples/tiny_model.py --out "$STUDENT" --seed 0 >/dev/null
fi
if [ -z "${TEACHER:-}" ]; then
  TEACHER=$WORK/tiny-teacher
  [ -d "$TEACHER" ] || python examples/tiny_model.py --out "$TEACHER" --hidden 96 --heads 3 --seed 1 >/dev/null
fi
sample() {  # sample MODEL OUT SAMPLES TEMPERATURE
  paced rollout --problems "$PROBLEMS" --model "$1" --out "$2" --samples "$3" --temperature "$4" \
    --max-new-tokens "$MAX_NEW_TOKENS" --prompt-suffix "$SUFFIX"
}
pass_rates() {  # pass_rates MODEL STAGE -> weights path
  local ro sc
  ro=$(sample "$1" "$WORK/$2/student_rollouts" "$K" 1.0)
  sc=$(paced score --rollouts "$ro" --problems "$PROBLEMS" --out "$WORK/$2/scores" --verifier "$VERIFIER")
  paced weight --scores "$sc" --out "$WORK/$2/weights.parquet" --alpha 1 --beta 1
}

# Stage 1: forward KL on the teacher's own responses, weighted by the base student's pass rates.
mkdir -p "$WORK/stage1" "$WORK/stage2"
W1=$(pass_rates "$STUDENT" stage1)
TSEQ=$(sample "$TEACHER" "$WORK/stage1/teacher_rollouts" 1 0)
TL1=$(paced teacher-logits --problems "$PROBLEMS" --sequences "$TSEQ" --teacher "$TEACHER" \
  --out "$WORK/stage1/teacher_logits" --top-k "$TOP_K" --weights "$W1")
S1=$(paced distill --student "$STUDENT" --teacher-logits "$TL1" --weights "$W1" --out "$WORK/stage1/student" \
  --loss fkl --lr "$LR" --epochs "$EPOCHS" --batch-size "$BATCH")

# Stage 2: reverse KL on the stage-1 student's own rollouts (on-policy), teacher logits on them.
if [ "$REESTIMATE" = 1 ]; then W2=$(pass_rates "$S1" stage2); else W2=$W1; fi
SSEQ=$(sample "$S1" "$WORK/stage2/onpolicy_rollouts" 1 1.0)
TL2=$(paced teacher-logits --problems "$PROBLEMS" --sequences "$SSEQ" --teacher "$TEACHER" \
  --out "$WORK/stage2/teacher_logits" --top-k "$TOP_K" --weights "$W2")
S2=$(paced distill --student "$STUDENT" --init "$S1" --teacher-logits "$TL2" --weights "$W2" \
  --out "$WORK/stage2/student" --loss rkl --lr "$LR" --epochs "$EPOCHS" --batch-size "$BATCH")

echo "$S2"
