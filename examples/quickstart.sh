#!/usr/bin/env bash
# Paced, whole and on 2 CPU cores: a tiny student learns fixed-width addition from a tiny
# teacher, with uniform weights and with Paced weights, and both are evaluated against it.
#
#   bash examples/quickstart.sh                  # about 5.5 minutes on 2 cores (4 of them train the models, once)
#   PACED_QUICK=1 bash examples/quickstart.sh    # a reduced run (CI): every step, tiny sizes
#
# Steps (each a real `paced` command; artifacts under $WORK):
#   1. the task (examples/task.py) and the two models, pretrained from scratch and cached
#      (examples/train_tiny.py)
#   2. student rollouts (K = 8, temperature 1) -> score -> weight: the pass rates
#   3. teacher sequences (greedy) -> teacher-logits
#   4. distill with uniform weights, and with Paced weights p(1-p)
#   5. eval base, uniform and Paced on held-out problems (per difficulty) and on a retention
#      skill, 8 samples each, and print the comparison
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/quickstart}
if [ "${PACED_QUICK:-0}" = 1 ]; then
  TRAIN=300 TEST=12 RETAIN=24 K=4 STEPS=12 BATCH=16 EVAL_SAMPLES=2 MODELS_FLAG=--quick
else
  TRAIN=6000 TEST=200 RETAIN=200 K=8 STEPS=${STEPS:-150} BATCH=32 EVAL_SAMPLES=8 MODELS_FLAG=
fi
LR=${LR:-1e-3}
MAX_NEW=8   # 6 answer digits and the end-of-sequence token
DATA=$WORK/data MODELS=$WORK/models
mkdir -p "$WORK"
started=$(date +%s)

python examples/task.py --out "$DATA" --seed 0 --train "$TRAIN" --test-per-digit "$TEST" --retain "$RETAIN" >/dev/null
python examples/train_tiny.py --out "$MODELS" $MODELS_FLAG >/dev/null
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
    --schedule cosine --warmup-steps $((STEPS / 20)) --save-steps 500 >/dev/null
done

# 5. Evaluate: held-out sums per digit count, and the retention skill (forgetting).
evaluate() {  # evaluate NAME MODEL [BASELINE]
  paced eval --model "$2" --problems "$DATA/test.parquet" --problems "$DATA/retain.parquet" --retain copy \
    --out "$WORK/eval_$1" --samples "$EVAL_SAMPLES" --temperature 0.6 --top-p 0.95 --max-new-tokens $MAX_NEW \
    --verifier exact --batch-size 128 --part-size 1024 ${3:+--baseline "$3"} >/dev/null
}
evaluate base "$STUDENT"
evaluate uniform "$WORK/student_uniform" "$WORK/eval_base"
evaluate paced "$WORK/student_paced" "$WORK/eval_base"

python examples/compare.py "$WORK" --seconds $(( $(date +%s) - started ))
