#!/usr/bin/env bash
# Paced in miniature, as a regime map: where does weighting problems by p(1-p) help a student
# learn from a teacher, and where does it not? On fixed-width addition written `answer-lsb`
# (examples/task.py: operands the usual way round, the answer units first, so answer digit i is
# predicted 7 + 2i tokens after the first operand's digit i), one 2-layer teacher with full
# attention that reads each problem's reference solution (the paper's privileged context:
# flawless with it), and 2-layer students that do not, whose attention sees 7 tokens per layer
# (reach 12 tokens back): the operand digits of answer digits 0-2 are in sight, those of answer
# digits 3-4 are not, so 1-3 digit sums are within a student's reach and 4-5 digit sums are not,
# whatever it is taught.
# Each student stops pretraining at 30 % greedy accuracy, so its pass rates spread. Two regimes,
# the same students and teacher, differing only in which problems they train and are tested on:
#
#   capacity   1-5 digits: the paper's premise, a large share of the problems out of reach
#   learnable  1-REACH digits (3): every problem within reach, a problem at p = 0 is one the
#              student has not learned yet
#
# Per regime and seed (each seed its own student pretraining seed, data order and rollouts):
#   the student's pass rates (K samples at temperature 1) on the training problems and on the
#   test problems (to group the results by what the base student could do), then one
#   distillation run per method, budgets read off the same run (--export-steps, constant
#   learning rate after warm-up, equal steps and batch for every method):
#     uniform    forward KL, every problem weighted 1
#     hard       forward KL on the problems with 0 < p < 1 (hard filter)
#     akl        AKL (Wu et al.), every problem weighted 1
#     paced      forward KL weighted by p(1-p), pass rates measured once on the base student
#     paced_post the same with the posterior weights (paced weight --estimator posterior, Jeffreys prior)
#     paced_2s   the two-stage schedule at the same total steps: paced for STEPS/2 (its export), then
#                reverse KL for STEPS/2 on one fresh rollout per problem of that student, its pass
#                rates re-estimated (as examples/recipes/distill_qwen3.sh does)
#     paced_re   the same, pass rates re-estimated every STEPS/ROUNDS steps (rollout, score,
#                weight, then distill --init the previous round): the same total steps; its
#                first round is paced's first STEPS/ROUNDS steps (that export of paced's run)
#   and a greedy evaluation of every budget on the held-out problems and the retention skill.
#   Per regime, `paced snr` on the first seed's base student (the paper's Figure 3), run beside
#   the seed pipelines.
#
# The primary comparison is named here, before any result: PRIMARY below. examples/report.py
# states it at the top of the report, then prints every cell, including those where Paced loses.
#
#   bash examples/reproduce.sh               # the full map (see docs/reproduce/report.md for its time)
#   PACED_QUICK=1 bash examples/reproduce.sh # a reduced run (CI): every step, tiny sizes
#   JOBS=1 bash examples/reproduce.sh        # one seed at a time (JOBS pipelines run side by side)
#
# Resumable: every stage is a paced job or a cached model, finished outputs are reused, so an
# interrupted run continues where it stopped. Writes $WORK/report.md (examples/report.py).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/reproduce}
PRIMARY="capacity paced uniform"   # regime, method, baseline: at the longest budget, headline accuracy
if [ "${PACED_QUICK:-0}" = 1 ]; then
  TRAIN=${TRAIN:-240} TEST=${TEST:-8} RETAIN=${RETAIN:-12} K=${K:-4} STEPS=${STEPS:-8} BUDGETS=${BUDGETS:-4}
  ROUNDS=${ROUNDS:-2} BATCH=${BATCH:-16} SNR_PROBLEMS=${SNR_PROBLEMS:-40}
  SEEDS_CAPACITY=${SEEDS_CAPACITY:-"0 1"} SEEDS_LEARNABLE=${SEEDS_LEARNABLE:-"0"}
  JOBS=${JOBS:-3}   # every pipeline at once: they are short, and the last would run alone on one core
  # Tiny models (train_tiny.py --quick); answers least significant digit first, which the
  # quick students learn in a few hundred steps, so that every method has problems to train on.
  MODEL_FLAGS=${MODEL_FLAGS:-"--quick"} TEACHER_STEPS=${TEACHER_STEPS:-12} ORDER=${ORDER:-lsb}
  TEACHER_FLAGS=${TEACHER_FLAGS-}   # empty: the quick teacher's recipe as it is
  STUDENT_FLAGS=${STUDENT_FLAGS-}   # the quick student as it is (a window is tested in tests/test_task.py)
fi
TRAIN=${TRAIN:-6000}            # training problems (1-5 digits)
TEST=${TEST:-500}               # held-out problems per digit count (all 25 of 1 digit)
RETAIN=${RETAIN:-200}           # retention skill (copying) problems
K=${K:-8}                       # samples per problem for pass rates
STEPS=${STEPS:-1000}            # distillation steps: the longest budget
BUDGETS=${BUDGETS:-"250,500"}   # shorter budgets, exported from the same runs
ROUNDS=${ROUNDS:-4}             # paced_re: pass rates re-estimated every STEPS/ROUNDS steps
BATCH=${BATCH:-32}
LR=${LR:-5e-4}
WARMUP=${WARMUP:-50}
SEEDS_CAPACITY=${SEEDS_CAPACITY:-"0 1 2 3 4 5"}
SEEDS_LEARNABLE=${SEEDS_LEARNABLE:-"0 1 2 3"}   # the secondary regime: fewer seeds, so that the map fits 75 minutes
METHODS=${METHODS:-"uniform hard akl paced paced_post paced_2s paced_re"}
SNR_PROBLEMS=${SNR_PROBLEMS:-1000}
TEACHER_STEPS=${TEACHER_STEPS:-1000}
MODEL_FLAGS=${MODEL_FLAGS:-}
JOBS=${JOBS:-2}                 # seed pipelines side by side
export OMP_NUM_THREADS=${THREADS:-1}   # torch threads per pipeline
ORDER=${ORDER:-answer-lsb}       # examples/task.py --order (the windows above assume answer-lsb)
PAD=${PAD:-fixed}                # examples/task.py --pad: problem writes harder sums longer
TEACHER_CONTEXT=${TEACHER_CONTEXT:-reference}   # the teacher reads each problem's reference solution
                                                # (the paper's privileged context); none: it does not
# train_tiny.py teacher options: 2 layers, every example reads the reference (it is only ever used
# with it), and it trains until it reads it without a mistake on 200 fresh problems (at most
# TEACHER_STEPS steps)
TEACHER_FLAGS=${TEACHER_FLAGS-"--teacher-layers 2 --teacher-reference-fraction 1 --teacher-stop-at 1"}
case $PAD in labelled) MAX_NEW=14 ;; *) MAX_NEW=8 ;; esac   # the answer (digits, letters), end of sequence, one to spare
DATA=$WORK/data TEACHER=$WORK/teacher/teacher
TRAIN_P=$DATA/train.parquet TEST_P=$DATA/test.parquet
REGIME_TEST=$TEST_P REGIME_LOGITS=$WORK/shared/teacher_logits   # set per regime by pipeline()
if [ $((STEPS % ROUNDS)) != 0 ]; then echo "reproduce.sh: STEPS=$STEPS is not a multiple of ROUNDS=$ROUNDS" >&2; exit 2; fi
case " $METHODS " in *" paced_2s "*)
  case ",$BUDGETS," in *",$((STEPS / 2)),"*) ;; *) echo "reproduce.sh: paced_2s starts from paced's export at STEPS/2 = $((STEPS / 2)): add it to BUDGETS=$BUDGETS" >&2; exit 2 ;; esac
  case " $METHODS " in *" paced "*) ;; *) echo "reproduce.sh: paced_2s needs paced in METHODS (its first stage)" >&2; exit 2 ;; esac ;;
esac
ROUND=$((STEPS / ROUNDS))
REGIMES=${REGIMES:-"capacity learnable"}   # started in this order: the longest pipelines first
# train_tiny.py student options (2 layers, hidden 128 by default); one student per seed, shared by the regimes
# (no reference in its prompts: a student never reads one, and a reference prompt is 188 tokens)
STUDENT_FLAGS=${STUDENT_FLAGS-"--student-window 7 --student-stop-at 0.3 --student-steps 2500 --student-reference-fraction 0"}
REACH=${REACH:-3}               # learnable: problems of 1-REACH digits only (training and test)
seeds_of() { case $1 in capacity) echo "$SEEDS_CAPACITY" ;; learnable) echo "$SEEDS_LEARNABLE" ;; esac; }
# Each regime's problems and the teacher's logits on them.
train_of() { case $1 in capacity) echo "$TRAIN_P" ;; learnable) echo "$DATA/reach$REACH/train.parquet" ;; esac; }
test_of() { case $1 in capacity) echo "$TEST_P" ;; learnable) echo "$DATA/reach$REACH/test.parquet" ;; esac; }
rollouts_of() { case $1 in capacity) echo "$WORK/shared/teacher_rollouts" ;; learnable) echo "$WORK/shared/reach${REACH}_teacher_rollouts" ;; esac; }
logits_of() { case $1 in capacity) echo "$WORK/shared/teacher_logits" ;; learnable) echo "$WORK/shared/reach${REACH}_teacher_logits" ;; esac; }
mkdir -p "$WORK"
LOG=$WORK/reproduce.log
set -E
trap 'echo "reproduce.sh: a step failed (exit $?); the end of $LOG:" >&2; tail -n 25 "$LOG" >&2' ERR
say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
started=$(date +%s)

done_dir() { [ -f "$1/_manifest.parquet" ] || [ -f "$1/summary.parquet" ]; }  # a finished job, or eval
rollout() {  # rollout MODEL PROBLEMS OUT SAMPLES TEMPERATURE SEED [CONTEXT]
  done_dir "$3" || paced rollout --problems "$2" --model "$1" --out "$3" --samples "$4" --temperature "$5" \
    --max-new-tokens $MAX_NEW --seed "$6" --context "${7:-none}" --batch-size 64 --part-size 2048 >/dev/null 2>>"$LOG"
}
teacher_logits() {  # teacher_logits PROBLEMS SEQUENCES OUT [WEIGHTS]: the teacher's top-k logits on SEQUENCES
  done_dir "$3" || OMP_NUM_THREADS=${TL_THREADS:-$OMP_NUM_THREADS} paced teacher-logits --problems "$1" --sequences "$2" \
    --teacher "$TEACHER" --context "$TEACHER_CONTEXT" ${4:+--weights "$4"} --out "$3" --top-k 16 \
    --batch-size 64 --part-size 2048 >/dev/null 2>>"$LOG"
}
pass_rates() {  # pass_rates MODEL PROBLEMS DIR SEED [SCHEMES]: DIR/rollouts, DIR/scores, DIR/w_SCHEME.parquet
  mkdir -p "$3"
  rollout "$1" "$2" "$3/rollouts" "$K" 1.0 "$4"
  done_dir "$3/scores" || paced score --rollouts "$3/rollouts" --problems "$2" --out "$3/scores" --verifier exact >/dev/null 2>>"$LOG"
  local scheme
  for scheme in ${5:-uniform hard paced post}; do
    [ -f "$3/w_$scheme.parquet" ] || case $scheme in
      uniform) paced weight --scores "$3/scores" --out "$3/w_uniform.parquet" --scheme uniform >/dev/null 2>>"$LOG" ;;
      hard) paced weight --scores "$3/scores" --out "$3/w_hard.parquet" --scheme hard-filter >/dev/null 2>>"$LOG" ;;
      paced) paced weight --scores "$3/scores" --out "$3/w_paced.parquet" --alpha 1 --beta 1 >/dev/null 2>>"$LOG" ;;
      post) paced weight --scores "$3/scores" --out "$3/w_post.parquet" --alpha 1 --beta 1 --estimator posterior >/dev/null 2>>"$LOG" ;;
    esac
  done
}
trainable() {  # trainable WEIGHTS: whether any problem has weight > 0
  python -c "import polars as pl, sys; sys.exit(0 if pl.read_parquet(sys.argv[1])['weight'].gt(0).any() else 1)" "$1"
}
distill() {  # distill STUDENT START WEIGHTS OUT LOSS MAX_STEPS SEED EXPORTS [TEACHER_LOGITS]: START is STUDENT or an earlier run (--init)
  local student=$1 start=$2 w=$3 out=$4 loss=$5 steps=$6 seed=$7 exports=$8 logits=${9:-$REGIME_LOGITS}
  { done_dir "$out" || [ -f "$out.none" ]; } && return 0
  # No problem to train on (a hard filter without a frontier; every problem solved, or none):
  # the run would leave START unchanged, and every budget of it evaluates START.
  if ! trainable "$w"; then echo "$start" > "$out.none"; say "$out: no problem with weight > 0 in $w; it stays $start"; return 0; fi
  local init=(); [ "$start" != "$student" ] && init=(--init "$start")
  paced distill --student "$student" "${init[@]}" --teacher-logits "$logits" --weights "$w" \
    --out "$out" --loss "$loss" --lr "$LR" --max-steps "$steps" --batch-size "$BATCH" --micro-batch-size "$BATCH" \
    --schedule constant --warmup-steps "$WARMUP" --seed "$seed" --save-steps 250 --resume ${exports:+--export-steps "$exports"} \
    >/dev/null 2>>"$LOG"
}
has_export() {  # has_export METHOD STEP: METHOD runs and exports its model at STEP (< STEPS)
  case " $METHODS " in *" $1 "*) case ",$BUDGETS," in *",$2,"*) return 0 ;; esac ;; esac
  return 1
}
model_at() {  # model_at RUN [BUDGET]: the model a distill run (or one that had nothing to train) gives at BUDGET
  if [ -f "$1.none" ]; then cat "$1.none"; elif [ -n "${2:-}" ]; then echo "$1/step-$2"; else echo "$1"; fi
}
evaluate() {  # evaluate MODEL OUT [CONTEXT]: greedy, so neighbouring budgets differ by training, not by sampling
  done_dir "$2" && return 0
  local cmd=(eval --model "$1" --problems "$REGIME_TEST" --problems "$DATA/retain.parquet" --retain copy
    --out "$2" --samples 1 --temperature 0 --max-new-tokens "$MAX_NEW" --seed 0 --context "${3:-none}" --verifier exact
    --batch-size 256 --part-size 4096)
  # Inside a pipeline, queued in $EVALS and run by run_evals in one process (examples/paced_many.py):
  # starting paced costs more than evaluating a tiny model.
  if [ -n "${EVALS:-}" ]; then printf '%q ' "${cmd[@]}" >> "$EVALS"; echo >> "$EVALS"
  else paced "${cmd[@]}" >/dev/null 2>>"$LOG"; fi
}
run_evals() {  # run_evals: the evaluations queued in $EVALS
  [ -s "$EVALS" ] && python examples/paced_many.py "$EVALS" >/dev/null 2>>"$LOG"
  rm -f "$EVALS"
}

student_of() {  # student_of SEED: the seed's student, shared by the regimes and the SNR jobs: trained by
  # whichever job gets there first (the others wait on the lock, then reuse it); prints its path
  local M=$WORK/students/seed$1
  mkdir -p "$M"
  # shellcheck disable=SC2086
  flock "$M/.lock" python examples/train_tiny.py --out "$M" --only student --order $ORDER --pad $PAD --student-seed "$1" \
    --threads "$OMP_NUM_THREADS" $MODEL_FLAGS $STUDENT_FLAGS >/dev/null 2>>"$LOG" || return  # (errexit is off in $(...))
  echo "$M/student"
}
re_round_model() {  # re_round_model R: paced_re's model after round R (round 1: paced's export, when it has one)
  if [ "$1" = 1 ] && has_export paced "$ROUND"; then model_at "$S/paced" "$ROUND"; else model_at "$S/paced_re/round$1"; fi
}

pipeline() {  # pipeline REGIME SEED: one student, its pass rates, every method at every budget
  local regime=$1 seed=$2 S=$WORK/$1/seed$2 student
  # What distill and evaluate read (bash locals are seen by the functions this one calls).
  local train REGIME_TEST REGIME_LOGITS EVALS=$S/evals.txt
  train=$(train_of "$regime") REGIME_TEST=$(test_of "$regime") REGIME_LOGITS=$(logits_of "$regime")
  mkdir -p "$S"
  rm -f "$EVALS"   # a queue an interrupted run left: what it held is queued again below unless done
  student=$(student_of "$seed")
  ln -sfn "../../students/seed$seed" "$S/models"
  pass_rates "$student" "$train" "$S/base" "$seed"
  pass_rates "$student" "$REGIME_TEST" "$S/test_rates" "$seed" uniform   # groups the test problems by the base student's p
  evaluate "$student" "$S/eval_base"
  local m
  for m in $METHODS; do
    case $m in
      uniform) distill "$student" "$student" "$S/base/w_uniform.parquet" "$S/$m" fkl "$STEPS" "$seed" "$BUDGETS" ;;
      hard) distill "$student" "$student" "$S/base/w_hard.parquet" "$S/$m" fkl "$STEPS" "$seed" "$BUDGETS" ;;
      akl) distill "$student" "$student" "$S/base/w_uniform.parquet" "$S/$m" akl "$STEPS" "$seed" "$BUDGETS" ;;
      paced) distill "$student" "$student" "$S/base/w_paced.parquet" "$S/$m" fkl "$STEPS" "$seed" "$BUDGETS" ;;
      paced_post) distill "$student" "$student" "$S/base/w_post.parquet" "$S/$m" fkl "$STEPS" "$seed" "$BUDGETS" ;;
      paced_2s)
        local half=$((STEPS / 2)) first two=$S/paced_2s
        first=$(model_at "$S/paced" "$half")
        mkdir -p "$two"
        pass_rates "$first" "$train" "$two/rates" "$((seed * 100 + 50))" paced
        rollout "$first" "$train" "$two/onpolicy" 1 1.0 "$((seed * 100 + 51))"
        if trainable "$two/rates/w_paced.parquet"; then
          teacher_logits "$train" "$two/onpolicy" "$two/teacher_logits" "$two/rates/w_paced.parquet"
        fi
        distill "$student" "$first" "$two/rates/w_paced.parquet" "$two/stage2" rkl "$half" "$seed" "" "$two/teacher_logits" ;;
      paced_re)
        local r=1 model=$student rates=$S/base
        mkdir -p "$S/paced_re"
        while [ $r -le $ROUNDS ]; do
          if [ $r -gt 1 ]; then rates=$S/paced_re/rates$r; pass_rates "$model" "$train" "$rates" "$((seed * 100 + r))" paced; fi
          # Round 1 trains what paced's run trains in its first ROUND steps: that export, when there is one.
          if [ $r -gt 1 ] || ! has_export paced "$ROUND"; then
            distill "$student" "$model" "$rates/w_paced.parquet" "$S/paced_re/round$r" fkl "$ROUND" "$((seed * 100 + r))" ""
          fi
          model=$(re_round_model $r) r=$((r + 1))
        done ;;
      *) echo "reproduce.sh: unknown method $m in METHODS" >&2; exit 2 ;;
    esac
  done
  # Every budget of every method: the exports of one run (paced_re: the end of each round).
  local b
  for m in $METHODS; do
    for b in ${BUDGETS//,/ } $STEPS; do
      if [ "$m" = paced_re ]; then
        if [ $((b % ROUND)) = 0 ]; then evaluate "$(re_round_model $((b / ROUND)))" "$S/eval_${m}_$b"; fi
      elif [ "$m" = paced_2s ]; then   # before STEPS/2 it is paced
        if [ "$b" = "$STEPS" ]; then evaluate "$(model_at "$S/paced_2s/stage2")" "$S/eval_${m}_$b"; fi
      elif [ "$b" = "$STEPS" ]; then evaluate "$(model_at "$S/$m")" "$S/eval_${m}_$b"
      else evaluate "$(model_at "$S/$m" "$b")" "$S/eval_${m}_$b"; fi
    done
  done
  run_evals
  touch "$S/.done"
}

python examples/task.py --out "$DATA" --seed 0 --train "$TRAIN" --test-per-digit "$TEST" --retain "$RETAIN" --order $ORDER --pad $PAD >/dev/null
mkdir -p "$DATA/reach$REACH"
for split in train test; do   # the learnable regime's problems: those of 1-REACH digits
  [ -f "$DATA/reach$REACH/$split.parquet" ] || python -c "import polars as pl, sys; pl.read_parquet(sys.argv[1]).filter(pl.col('digits') <= int(sys.argv[3])).write_parquet(sys.argv[2])" \
    "$DATA/$split.parquet" "$DATA/reach$REACH/$split.parquet" "$REACH"
done
say "teacher (trained once, reused by every student)"
# shellcheck disable=SC2086
python examples/train_tiny.py --out "$WORK/teacher" --only teacher --order $ORDER --pad $PAD --teacher-steps "$TEACHER_STEPS" \
  --threads 2 $MODEL_FLAGS $TEACHER_FLAGS >/dev/null 2>>"$LOG"
say "the teacher's answers and logits on each regime's training problems (shared by every method)"
mkdir -p "$WORK/shared"
evaluate "$TEACHER" "$WORK/shared/eval_teacher" "$TEACHER_CONTEXT"
for regime in $REGIMES; do
  rollout "$TEACHER" "$(train_of "$regime")" "$(rollouts_of "$regime")" 1 0 0 "$TEACHER_CONTEXT"
  TL_THREADS=2 teacher_logits "$(train_of "$regime")" "$(rollouts_of "$regime")" "$(logits_of "$regime")"
done

snr() {  # snr REGIME: Figure 3 on the first seed's base student (the seed's student, trained here if not yet)
  # K rollouts of SNR_PROBLEMS training problems, the teacher's logits on each, each problem's
  # gradient SNR at lm_head over them, and the Beta kernel fitted to the bin means (paced snr --fit).
  local regime=$1 seed R=$WORK/$1/snr student
  seed=$(seeds_of "$regime"); seed=${seed%% *}
  mkdir -p "$R"
  student=$(student_of "$seed")
  [ -f "$R/problems.parquet" ] || python -c "import pyarrow.parquet as pq, sys; t = pq.read_table(sys.argv[1]); pq.write_table(t.slice(0, int(sys.argv[3])), sys.argv[2])" \
    "$(train_of "$regime")" "$R/problems.parquet" "$SNR_PROBLEMS"
  pass_rates "$student" "$R/problems.parquet" "$R" "$seed" paced
  teacher_logits "$R/problems.parquet" "$R/rollouts" "$R/teacher_logits"
  [ -f "$R/snr.parquet" ] || paced snr --student "$student" --teacher-logits "$R/teacher_logits" \
    --weights "$R/w_paced.parquet" --out "$R/snr.parquet" --plot "$WORK/snr_$regime.png" --fit >/dev/null 2>>"$LOG"
}

# The seed pipelines and the SNR jobs, JOBS at a time (each one torch thread by default): the
# capacity pipelines, the SNR jobs, then the learnable pipelines (the longest first).
failed=0 running=0
jobs_list() {
  local regime seed
  for seed in $SEEDS_CAPACITY; do case " $REGIMES " in *" capacity "*) echo "pipeline capacity $seed" ;; esac; done
  for regime in $REGIMES; do echo "snr $regime"; done
  for seed in $SEEDS_LEARNABLE; do case " $REGIMES " in *" learnable "*) echo "pipeline learnable $seed" ;; esac; done
}
mapfile -t queue < <(jobs_list)
for entry in "${queue[@]}"; do
  read -r job regime seed <<< "$entry"
  if [ "$job" = pipeline ]; then
    [ -f "$WORK/$regime/seed$seed/.done" ] && continue
    say "start $regime seed $seed"
  else
    [ -f "$WORK/$regime/snr/snr.parquet" ] && continue
    say "start $regime snr"
  fi
  $job "$regime" ${seed:+"$seed"} < /dev/null &
  running=$((running + 1))
  if [ $running -ge "$JOBS" ]; then wait -n || failed=1; running=$((running - 1)); fi
done
while [ $running -gt 0 ]; do wait -n || failed=1; running=$((running - 1)); done
[ $failed = 0 ] || { echo "reproduce.sh: a seed pipeline or SNR job failed; the end of $LOG:" >&2; tail -n 25 "$LOG" >&2; exit 1; }

say "done in $(( $(date +%s) - started )) s"
# The report's wall time is the sum over the invocations that made the run (a resumed or repeated
# run adds its own), so a rerun of a finished map does not report its few seconds as the map's.
echo $(( $(date +%s) - started )) >> "$WORK/wall_seconds"
python examples/report.py "$WORK" --primary "$PRIMARY" --steps "$STEPS" --seconds "$(awk '{s += $1} END {print s}' "$WORK/wall_seconds")" \
  --invocations "$(wc -l < "$WORK/wall_seconds")"
