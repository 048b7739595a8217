#!/usr/bin/env bash
# The paper's tables in miniature, on the quickstart task, over several seeds:
#
#   distillation (teacher -> student, forward-KL family):
#     base | forward KL | hard-filter forward KL | AKL | Paced forward KL | Paced two-stage (FKL then RKL)
#   self-distillation (the student is its own teacher, given the reference solution; reverse KL):
#     reverse KL | hard-filter reverse KL | Paced reverse KL
#   an alpha, beta sweep in {0.5, 1, 2}^2 of Paced forward KL, reusing the same rollouts and scores
#   (only weight, distill and eval rerun), and `paced snr` (the paper's Figure 3).
#
#   bash examples/reproduce.sh                       # hours on 2 CPU cores; resumable: rerun to continue
#   SEEDS="0" STEPS=300 SWEEP=0 bash examples/reproduce.sh   # a smaller run
#   PACED_QUICK=1 bash examples/reproduce.sh         # a reduced run (CI): every step, tiny sizes
#
# Writes $WORK/report.md with the tables and PNG plots (examples/report.py). Every stage is a
# resumable paced job and finished outputs are reused, so an interrupted run continues.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/reproduce}
if [ "${PACED_QUICK:-0}" = 1 ]; then
  SEEDS=${SEEDS:-"0"} STEPS=${STEPS:-8} BATCH=${BATCH:-16} K=${K:-4} TRAIN=${TRAIN:-200} TEST=${TEST:-6}
  RETAIN=${RETAIN:-12} EVAL_SAMPLES=${EVAL_SAMPLES:-2} SWEEP_VALUES=${SWEEP_VALUES:-"1 2"}
  MODELS_FLAG=${MODELS_FLAG:---quick} SNR_PROBLEMS=${SNR_PROBLEMS:-100}
  # The reduced-mode teacher is a barely trained checkpoint: a small learning rate keeps the
  # stage-1 student near the base one, so the two-stage run still finds problems to weight.
  LR=${LR:-1e-5}
fi
SEEDS=${SEEDS:-"0 1 2"}
STEPS=${STEPS:-150}
BATCH=${BATCH:-32}
LR=${LR:-1e-3}
K=${K:-8}
TRAIN=${TRAIN:-6000}
TEST=${TEST:-200}
RETAIN=${RETAIN:-200}
EVAL_SAMPLES=${EVAL_SAMPLES:-8}
SWEEP=${SWEEP:-1}
SWEEP_VALUES=${SWEEP_VALUES:-"0.5 1 2"}   # alpha and beta each take these values
SNR_PROBLEMS=${SNR_PROBLEMS:-2000}
MODELS_FLAG=${MODELS_FLAG:-}
MAX_NEW=8
DATA=$WORK/data MODELS=$WORK/models
mkdir -p "$WORK/base" "$WORK/sweep"
# Each stage's log (progress, summary tables, errors) goes to one file; a failure shows its end.
LOG=$WORK/reproduce.log
set -E
trap 'echo "reproduce.sh: a step failed (exit $?); the end of $LOG:" >&2; tail -n 25 "$LOG" >&2' ERR

python examples/task.py --out "$DATA" --seed 0 --train "$TRAIN" --test-per-digit "$TEST" --retain "$RETAIN" >/dev/null
python examples/train_tiny.py --out "$MODELS" $MODELS_FLAG >/dev/null 2> >(tee -a "$LOG" >&2)
STUDENT=$MODELS/student TEACHER=$MODELS/teacher
TRAIN_P=$DATA/train.parquet

done_dir() { [ -f "$1/_manifest.json" ]; }

rollout() {  # rollout MODEL OUT SAMPLES TEMPERATURE SEED [extra...]
  local model=$1 out=$2 k=$3 temp=$4 seed=$5; shift 5
  done_dir "$out" || paced rollout --problems "$TRAIN_P" --model "$model" --out "$out" --samples "$k" \
    --temperature "$temp" --max-new-tokens $MAX_NEW --seed "$seed" --batch-size 64 --part-size 1024 "$@" >/dev/null 2>>"$LOG"
  echo "$out"
}
weights() {  # weights SCORES OUT [weight options]
  local scores=$1 out=$2; shift 2
  [ -f "$out" ] || paced weight --scores "$scores" --out "$out" "$@" >/dev/null 2>>"$LOG"
  echo "$out"
}
pass_rates() {  # pass_rates MODEL DIR SEED -> scores dir
  local ro
  mkdir -p "$2"
  ro=$(rollout "$1" "$2/rollouts" "$K" 1.0 "$3")
  done_dir "$2/scores" || paced score --rollouts "$ro" --problems "$TRAIN_P" --out "$2/scores" --verifier exact >/dev/null 2>>"$LOG"
  echo "$2/scores"
}
tlogits() {  # tlogits SEQUENCES OUT TEACHER [extra...]
  local seqs=$1 out=$2 teacher=$3; shift 3
  done_dir "$out" || paced teacher-logits --problems "$TRAIN_P" --sequences "$seqs" --teacher "$teacher" --out "$out" \
    --top-k 16 --batch-size 64 --part-size 2048 "$@" >/dev/null 2>>"$LOG"
  echo "$out"
}
distill() {  # distill OUT TL WEIGHTS SEED LOSS [extra...]
  local out=$1 tl=$2 w=$3 seed=$4 loss=$5; shift 5
  done_dir "$out" || paced distill --student "$STUDENT" --teacher-logits "$tl" --weights "$w" --out "$out" \
    --loss "$loss" --lr "$LR" --max-steps "$STEPS" --batch-size "$BATCH" --micro-batch-size "$BATCH" \
    --schedule cosine --warmup-steps $((STEPS / 20)) --seed "$seed" --save-steps 500 --overwrite "$@" >/dev/null 2>>"$LOG"
  echo "$out"
}
evaluate() {  # evaluate MODEL OUT SEED
  done_dir "$2" || paced eval --model "$1" --problems "$DATA/test.parquet" --problems "$DATA/retain.parquet" \
    --retain copy --out "$2" --samples "$EVAL_SAMPLES" --temperature 0.6 --top-p 0.95 --max-new-tokens $MAX_NEW \
    --seed "$3" --verifier exact --batch-size 128 --part-size 1024 >/dev/null 2>>"$LOG"
}

# Shared by every method and seed: the base student's pass rates and the teacher's answers.
SCORES=$(pass_rates "$STUDENT" "$WORK/base" 0)
UNIFORM=$(weights "$SCORES" "$WORK/base/w_uniform.parquet" --scheme uniform)
HARD=$(weights "$SCORES" "$WORK/base/w_hard.parquet" --scheme hard-filter)
PACED=$(weights "$SCORES" "$WORK/base/w_paced.parquet" --alpha 1 --beta 1 --plot "$WORK/pass_rates.png")
TSEQ=$(rollout "$TEACHER" "$WORK/base/teacher_rollouts" 1 0 0)
TL=$(tlogits "$TSEQ" "$WORK/base/teacher_logits" "$TEACHER")

# The paper's Figure 3 on the base student: each problem's gradient SNR at lm_head over the K
# rollouts its pass rate comes from (the teacher's logits on them), averaged per pass-rate bin.
SNR_TL=$(tlogits "$WORK/base/rollouts" "$WORK/base/snr_teacher_logits" "$TEACHER")
[ -f "$WORK/snr.parquet" ] || paced snr --student "$STUDENT" --teacher-logits "$SNR_TL" --weights "$PACED" \
  --out "$WORK/snr.parquet" --plot "$WORK/snr.png" --max-problems "$SNR_PROBLEMS" >/dev/null 2>>"$LOG"

for seed in $SEEDS; do
  S=$WORK/seed$seed
  mkdir -p "$S"
  evaluate "$STUDENT" "$S/eval_base" "$seed"
  # Distillation track, forward-KL family.
  evaluate "$(distill "$S/fkl" "$TL" "$UNIFORM" "$seed" fkl)" "$S/eval_fkl" "$seed"
  evaluate "$(distill "$S/hard_fkl" "$TL" "$HARD" "$seed" fkl)" "$S/eval_hard_fkl" "$seed"
  evaluate "$(distill "$S/akl" "$TL" "$UNIFORM" "$seed" akl)" "$S/eval_akl" "$seed"
  STAGE1=$(distill "$S/paced_fkl" "$TL" "$PACED" "$seed" fkl)
  evaluate "$STAGE1" "$S/eval_paced_fkl" "$seed"
  # Two-stage: re-estimate pass rates of the stage-1 student, reverse KL on its own samples.
  S1_SCORES=$(pass_rates "$STAGE1" "$S/stage1_passrates" "$seed")
  S1_W=$(weights "$S1_SCORES" "$S/stage1_passrates/w_paced.parquet" --alpha 1 --beta 1)
  ONPOLICY=$(rollout "$STAGE1" "$S/stage1_onpolicy" 1 1.0 "$seed")
  TL2=$(tlogits "$ONPOLICY" "$S/stage1_tl" "$TEACHER" --weights "$S1_W")
  evaluate "$(distill "$S/paced_two_stage" "$TL2" "$S1_W" "$seed" rkl --init "$STAGE1")" "$S/eval_paced_two_stage" "$seed"
  # Self-distillation track: the student, shown the reference solution, teaches itself.
  SELF_SEQ=$(rollout "$STUDENT" "$S/self_onpolicy" 1 1.0 "$seed")
  SELF_TL=$(tlogits "$SELF_SEQ" "$S/self_tl" "$STUDENT" --context reference)
  evaluate "$(distill "$S/self_rkl" "$SELF_TL" "$UNIFORM" "$seed" rkl)" "$S/eval_self_rkl" "$seed"
  evaluate "$(distill "$S/self_hard_rkl" "$SELF_TL" "$HARD" "$seed" rkl)" "$S/eval_self_hard_rkl" "$seed"
  evaluate "$(distill "$S/self_paced_rkl" "$SELF_TL" "$PACED" "$seed" rkl)" "$S/eval_self_paced_rkl" "$seed"
done

if [ "$SWEEP" = 1 ]; then  # one seed: only weight, distill and eval rerun
  seed=${SEEDS%% *}
  for a in $SWEEP_VALUES; do for b in $SWEEP_VALUES; do
    W=$(weights "$SCORES" "$WORK/sweep/w_a${a}_b${b}.parquet" --alpha "$a" --beta "$b")
    evaluate "$(distill "$WORK/sweep/a${a}_b${b}" "$TL" "$W" "$seed" fkl)" "$WORK/sweep/eval_a${a}_b${b}" "$seed"
  done; done
fi

python examples/report.py "$WORK"
