#!/usr/bin/env bash
# Paced, whole and on 2 CPU cores, in the regime the paper's premise is about: the capacity
# regime of examples/reproduce.sh, its seed 0. A 2-layer student whose attention sees 7 tokens
# per layer learns fixed-width addition (operands the usual way round, answers units first), so
# 4-5 digit sums are out of its reach, from a 2-layer teacher with full attention that reads each
# problem's reference solution (the paper's privileged context; flawless with it), with uniform
# weights and with Paced weights; both are evaluated at three budgets.
#
#   bash examples/quickstart.sh                  # see README.md for its time on 2 cores
#   PACED_QUICK=1 bash examples/quickstart.sh    # a reduced run (CI): every step, tiny sizes
#
# One seed shows what one student did, not whether Paced beats uniform: for that, the paired
# seeds and intervals of examples/reproduce.sh (docs/reproduce/report.md).
#
# Steps (each a real `paced` command; artifacts under $WORK), two at a time where they do not
# depend on each other, with the thread counts of reproduce.sh (so the artifacts are its seed 0's):
#   1. the task (examples/task.py) and the two models, pretrained from scratch and cached
#      (examples/train_tiny.py)
#   2. student rollouts (K = 8, temperature 1) -> score -> weight: the pass rates
#   3. teacher sequences (greedy, the teacher reading the reference) -> teacher-logits
#   4. distill with uniform weights, and with Paced weights p(1-p): constant learning rate after
#      a warm-up, budgets of 250, 500 and 1000 steps read off one run each (--export-steps)
#   5. eval every budget greedily on held-out problems (per difficulty) and on a retention
#      skill, and print the comparison
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/quickstart}
if [ "${PACED_QUICK:-0}" = 1 ]; then
  TRAIN=300 TEST=12 RETAIN=24 K=4 STEPS=12 BUDGETS=4,8 BATCH=16 WARMUP=0 MODEL_FLAGS=--quick ORDER=lsb
else
  # examples/reproduce.sh's settings, so that this is its capacity regime's seed 0
  TRAIN=6000 TEST=500 RETAIN=200 K=8 STEPS=1000 BUDGETS=250,500 BATCH=32 WARMUP=50 ORDER=answer-lsb
  MODEL_FLAGS="--teacher-steps 1000 --teacher-layers 2 --teacher-reference-fraction 1 --teacher-stop-at 1
    --student-window 7 --student-stop-at 0.3 --student-steps 2500 --student-reference-fraction 0"
fi
LR=${LR:-5e-4}
MAX_NEW=8   # 6 answer digits and the end-of-sequence token
DATA=$WORK/data MODELS=$WORK/models LOGS=$WORK/logs
mkdir -p "$WORK" "$LOGS"
started=$(date +%s)
# A failed step stops the steps running beside it: each side-by-side lane and the command it runs.
stop_lanes() { local lane; for lane in $(jobs -p); do pkill -TERM -P "$lane" 2>/dev/null; kill "$lane" 2>/dev/null; done; true; }
trap stop_lanes EXIT
say() { echo "[$(date +%H:%M:%S)] $*" >&2; }
# logged NAME CMD...: CMD with its progress and summaries in $LOGS/NAME.log (two steps run side by
# side, and their progress bars would interleave); on failure, the end of that log.
logged() {
  local name=$1; shift
  "$@" 2> "$LOGS/$name.log" || { local rc=$?; echo "quickstart.sh: $name failed (exit $rc); the end of $LOGS/$name.log:" >&2
                                 tail -n 20 "$LOGS/$name.log" >&2; return $rc; }
}

python examples/task.py --out "$DATA" --seed 0 --train "$TRAIN" --test-per-digit "$TEST" --retain "$RETAIN" --order $ORDER >/dev/null
STUDENT=$MODELS/student TEACHER=$MODELS/teacher
ROLLOUTS=$WORK/rollouts SCORES=$WORK/scores TEACHER_SEQ=$WORK/teacher_rollouts TL=$WORK/teacher_logits
PACED_W=$WORK/weights_paced.parquet UNIFORM_W=$WORK/weights_uniform.parquet
export OMP_NUM_THREADS=1   # one thread per step, two steps side by side

teacher_side() {  # 1. the teacher; 3. its answers, reading each problem's reference solution
  # shellcheck disable=SC2086
  logged teacher python examples/train_tiny.py --out "$MODELS" --only teacher --order $ORDER $MODEL_FLAGS --threads 1 >/dev/null
  # What the teacher would say, on its own answers. All problems: the uniform run needs them.
  # The teacher reads each problem's reference solution (--context reference); the student never does.
  logged teacher_rollouts paced rollout --problems "$DATA/train.parquet" --model "$TEACHER" --out "$TEACHER_SEQ" \
    --samples 1 --temperature 0 --max-new-tokens $MAX_NEW --context reference --batch-size 64 --part-size 2048 >/dev/null
}
student_side() {  # 1. the student; 2. how often does it solve each training problem?
  # shellcheck disable=SC2086
  logged student python examples/train_tiny.py --out "$MODELS" --only student --order $ORDER $MODEL_FLAGS --threads 1 >/dev/null
  logged rollouts paced rollout --problems "$DATA/train.parquet" --model "$STUDENT" --out "$ROLLOUTS" \
    --samples "$K" --temperature 1.0 --max-new-tokens $MAX_NEW --batch-size 64 --seed 0 --part-size 2048 >/dev/null
  logged score paced score --rollouts "$ROLLOUTS" --problems "$DATA/train.parquet" --out "$SCORES" --verifier exact >/dev/null
  logged weights_paced paced weight --scores "$SCORES" --out "$PACED_W" --alpha 1 --beta 1 --plot "$WORK/weights_paced.png" >/dev/null
  logged weights_uniform paced weight --scores "$SCORES" --out "$UNIFORM_W" --scheme uniform >/dev/null
}
say "1-3. the teacher (then its answers) and the student (then its pass rates) side by side; logs in $LOGS"
teacher_side & teacher=$!
student_side & student=$!
wait $teacher; wait $student
say "3. the teacher's top-k logits on its answers"
logged teacher_logits paced teacher-logits --problems "$DATA/train.parquet" --sequences "$TEACHER_SEQ" --teacher "$TEACHER" \
  --context reference --out "$TL" --top-k 16 --batch-size 64 --part-size 2048 --threads 2 >/dev/null

# 4. Distill: the same steps, learning rate and batch; only the weights differ. The two runs go
# side by side, one thread each.
say "4. distill with uniform and with Paced weights, side by side"
runs=()
for name in uniform paced; do
  weights=$UNIFORM_W; [ $name = paced ] && weights=$PACED_W
  logged "distill_$name" paced distill --student "$STUDENT" --teacher-logits "$TL" --weights "$weights" --out "$WORK/student_$name" \
    --loss fkl --lr "$LR" --max-steps "$STEPS" --batch-size "$BATCH" --micro-batch-size "$BATCH" \
    --schedule constant --warmup-steps $WARMUP --seed 0 --save-steps 250 --export-steps "$BUDGETS" >/dev/null &
  runs+=($!)
done
for run in "${runs[@]}"; do wait "$run"; done

# 5. Evaluate, greedily: held-out sums per digit count, and the retention skill (forgetting).
say "5. evaluate every budget"
evaluate() {  # evaluate NAME MODEL [BASELINE]
  logged "eval_$1" paced eval --model "$2" --problems "$DATA/test.parquet" --problems "$DATA/retain.parquet" --retain copy \
    --out "$WORK/eval_$1" --samples 1 --temperature 0 --max-new-tokens $MAX_NEW --seed 0 \
    --verifier exact --batch-size 256 --part-size 4096 ${3:+--baseline "$3"} >/dev/null
}
evaluate base "$STUDENT"
runs=()
for name in uniform paced; do   # the two methods side by side
  for b in ${BUDGETS//,/ } $STEPS; do
    model=$WORK/student_$name/step-$b; [ "$b" = "$STEPS" ] && model=$WORK/student_$name
    evaluate "${name}_$b" "$model" "$WORK/eval_base"
  done &
  runs+=($!)
done
for run in "${runs[@]}"; do wait "$run"; done

python examples/compare.py "$WORK" --seconds $(( $(date +%s) - started ))
