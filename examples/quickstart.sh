#!/usr/bin/env bash
# Paced, whole and on 2 CPU cores, in the regime the paper's premise is about: a tiny 1-layer
# student learns fixed-width addition (answers most significant digit first) from a 4-layer
# teacher, with uniform weights and with Paced weights, and both are evaluated at three budgets.
#
#   bash examples/quickstart.sh                  # about 10 minutes on 2 cores (4 of them train the models, once)
#   PACED_QUICK=1 bash examples/quickstart.sh    # a reduced run (CI): every step, tiny sizes
#
# One seed shows what one student did, not whether Paced beats uniform: for that, the paired
# seeds and intervals of examples/reproduce.sh (docs/reproduce/report.md).
#
# Steps (each a real `paced` command; artifacts under $WORK):
#   1. the task (examples/task.py) and the two models, pretrained from scratch and cached
#      (examples/train_tiny.py)
#   2. student rollouts (K = 8, temperature 1) -> score -> weight: the pass rates
#   3. teacher sequences (greedy) -> teacher-logits
#   4. distill with uniform weights, and with Paced weights p(1-p): constant learning rate after
#      a warm-up, budgets of 500, 1000 and 2000 steps read off one run each (--export-steps)
#   5. eval every budget greedily on held-out problems (per difficulty) and on a retention
#      skill, and print the comparison
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/quickstart}
if [ "${PACED_QUICK:-0}" = 1 ]; then
  TRAIN=300 TEST=12 RETAIN=24 K=4 STEPS=12 BUDGETS=4,8 BATCH=16 MODEL_FLAGS=--quick ORDER=lsb
else
  TRAIN=6000 TEST=500 RETAIN=200 K=8 STEPS=2000 BUDGETS=500,1000 BATCH=32 ORDER=msb
  MODEL_FLAGS="--teacher-steps 1000 --student-layers 1 --student-hidden 64"
fi
LR=${LR:-5e-4}
MAX_NEW=8   # 6 answer digits and the end-of-sequence token
DATA=$WORK/data MODELS=$WORK/models
mkdir -p "$WORK"
started=$(date +%s)

python examples/task.py --out "$DATA" --seed 0 --train "$TRAIN" --test-per-digit "$TEST" --retain "$RETAIN" --order $ORDER >/dev/null
# shellcheck disable=SC2086
python examples/train_tiny.py --out "$MODELS" --order $ORDER $MODEL_FLAGS >/dev/null
STUDENT=$MODELS/student TEACHER=$MODELS/teacher

# 2. How often does the student solve each training problem?
ROLLOUTS=$(paced rollout --problems "$DATA/train.parquet" --model "$STUDENT" --out "$WORK/rollouts" \
  --samples "$K" --temperature 1.0 --max-new-tokens $MAX_NEW --batch-size 64 --part-size 1024)
SCORES=$(paced score --rollouts "$ROLLOUTS" --problems "$DATA/train.parquet" --out "$WORK/scores" --verifier exact)
PACED_W=$(paced weight --scores "$SCORES" --out "$WORK/weights_paced.parquet" --alpha 1 --beta 1 \
  --plot "$WORK/weights_paced.png")
UNIFORM_W=$(paced weight --scores "$SCORES" --out "$WORK/weights_uniform.parquet" --scheme uniform)

# 3. What the teacher would say, on its own answers. All problems: the uniform run needs them.
TEACHER_SEQ=$(paced rollout --problems "$DATA/train.parquet" --model "$TEACHER" --out "$WORK/teacher_rollouts" \
  --samples 1 --temperature 0 --max-new-tokens $MAX_NEW --batch-size 128 --part-size 2048)
TL=$(paced teacher-logits --problems "$DATA/train.parquet" --sequences "$TEACHER_SEQ" --teacher "$TEACHER" \
  --out "$WORK/teacher_logits" --top-k 16 --batch-size 64 --part-size 2048)

# 4. Distill: the same steps, learning rate and batch; only the weights differ.
for name in uniform paced; do
  weights=$UNIFORM_W; [ $name = paced ] && weights=$PACED_W
  paced distill --student "$STUDENT" --teacher-logits "$TL" --weights "$weights" --out "$WORK/student_$name" \
    --loss fkl --lr "$LR" --max-steps "$STEPS" --batch-size "$BATCH" --micro-batch-size "$BATCH" \
    --schedule constant --warmup-steps $((STEPS / 40)) --save-steps 500 --export-steps "$BUDGETS" >/dev/null
done

# 5. Evaluate, greedily: held-out sums per digit count, and the retention skill (forgetting).
evaluate() {  # evaluate NAME MODEL
  paced eval --model "$2" --problems "$DATA/test.parquet" --problems "$DATA/retain.parquet" --retain copy \
    --out "$WORK/eval_$1" --samples 1 --temperature 0 --max-new-tokens $MAX_NEW \
    --verifier exact --batch-size 256 --part-size 4096 ${3:+--baseline "$3"} >/dev/null
}
evaluate base "$STUDENT"
for name in uniform paced; do
  for b in ${BUDGETS//,/ }; do evaluate "${name}_$b" "$WORK/student_$name/step-$b" "$WORK/eval_base"; done
  evaluate "${name}_$STEPS" "$WORK/student_$name" "$WORK/eval_base"
done

python examples/compare.py "$WORK" --seconds $(( $(date +%s) - started ))
