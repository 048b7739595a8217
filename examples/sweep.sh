#!/usr/bin/env bash
# An alpha/beta sweep, the way paced makes it cheap: what every setting shares is paid once,
# each setting pays only for a weights file and a distill run that skips its zero-weight problems.
#
#   bash examples/sweep.sh                    # 3 x 3 settings on the quickstart's models
#   GRID="0.5 1 2 4" bash examples/sweep.sh   # another grid (alpha and beta each over GRID)
#   PACED_QUICK=1 bash examples/sweep.sh      # a reduced run (CI): every step, tiny sizes
#
# Once: the student's pass rates (rollout K, score), the teacher's answers, and one
# teacher-logits pass over the problems any setting trains on. Every kernel p^alpha (1-p)^beta
# with alpha, beta > 0 is zero exactly at p = 0 and p = 1, so they all train on the problems
# with 0 < p < 1: the hard filter's weights are that support (--weights skips the rest).
# Per setting: paced weight --alpha A --beta B, paced distill (the same steps, batch, learning
# rate and seed for all), paced eval (greedy, held-out problems). Then one table (polars),
# printed and written to $WORK/sweep.parquet.
#
# Models: the quickstart's (examples/quickstart.sh trains them into runs/quickstart/models;
# train_tiny.py reuses them, or trains them here the first time).
# Resumable: every stage is a paced job or a cached model; a rerun continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${WORK:-runs/sweep}
if [ "${PACED_QUICK:-0}" = 1 ]; then
  TRAIN=300 TEST=12 RETAIN=12 K=4 STEPS=8 BATCH=16 ORDER=lsb MODEL_FLAGS=--quick
  MODELS=${MODELS:-$WORK/models}
else
  # examples/quickstart.sh's task and models (the primary regime of examples/reproduce.sh)
  TRAIN=6000 TEST=500 RETAIN=200 K=8 STEPS=1000 BATCH=32 ORDER=answer-lsb
  MODEL_FLAGS="--teacher-steps 1000 --teacher-layers 2 --teacher-reference-fraction 1 --teacher-stop-at 1
    --student-window 7 --student-stop-at 0.3 --student-steps 2500 --student-reference-fraction 0"
  MODELS=${MODELS:-runs/quickstart/models}
fi
TEACHER_CONTEXT=${TEACHER_CONTEXT:-reference}
GRID=${GRID:-"0.5 1 2"}
LR=${LR:-5e-4}
MAX_NEW=8
DATA=$WORK/data
mkdir -p "$WORK"
started=$(date +%s)

python examples/task.py --out "$DATA" --seed 0 --train "$TRAIN" --test-per-digit "$TEST" --retain "$RETAIN" --order $ORDER >/dev/null
# shellcheck disable=SC2086
python examples/train_tiny.py --out "$MODELS" --order $ORDER $MODEL_FLAGS >/dev/null
STUDENT=$MODELS/student TEACHER=$MODELS/teacher

done_dir() { [ -f "$1/_manifest.parquet" ] || [ -f "$1/summary.parquet" ]; }  # a finished job, or eval
# --- Once ----------------------------------------------------------------------------------
ROLLOUTS=$(paced rollout --problems "$DATA/train.parquet" --model "$STUDENT" --out "$WORK/rollouts" \
  --samples "$K" --temperature 1.0 --max-new-tokens $MAX_NEW --batch-size 64 --part-size 2048)
SCORES=$(paced score --rollouts "$ROLLOUTS" --problems "$DATA/train.parquet" --out "$WORK/scores" --verifier exact)
SUPPORT=$(paced weight --scores "$SCORES" --out "$WORK/support.parquet" --scheme hard-filter)
# The teacher reads each problem's reference solution (--context reference); the student never does.
# --threads 2, as the quickstart: the teacher's log-probs differ in their last bits with torch's
# thread count, which paced otherwise takes from the idle cores, and the README's table was made so.
TEACHER_SEQ=$(paced rollout --problems "$DATA/train.parquet" --model "$TEACHER" --out "$WORK/teacher_rollouts" \
  --samples 1 --temperature 0 --max-new-tokens $MAX_NEW --context "$TEACHER_CONTEXT" --batch-size 64 --part-size 2048)
TL=$(paced teacher-logits --problems "$DATA/train.parquet" --sequences "$TEACHER_SEQ" --teacher "$TEACHER" \
  --context "$TEACHER_CONTEXT" --weights "$SUPPORT" --out "$WORK/teacher_logits" --top-k 16 --batch-size 64 --part-size 2048 --threads 2)
once=$(( $(date +%s) - started ))

# --- Per setting ---------------------------------------------------------------------------
for a in $GRID; do
  for b in $GRID; do
    s=$(date +%s) name=a${a}_b${b}
    [ -f "$WORK/$name.seconds" ] && continue
    W=$(paced weight --scores "$SCORES" --out "$WORK/w_$name.parquet" --alpha "$a" --beta "$b")
    done_dir "$WORK/student_$name" || paced distill --student "$STUDENT" --teacher-logits "$TL" --weights "$W" \
      --out "$WORK/student_$name" --loss fkl --lr "$LR" --max-steps "$STEPS" --batch-size "$BATCH" \
      --micro-batch-size "$BATCH" --schedule constant --warmup-steps $((STEPS / 40)) --save-steps 250 --resume \
      --seed 0 >/dev/null
    echo $(( $(date +%s) - s )) > "$WORK/$name.seconds.tmp"   # weight + distill
    done_dir "$WORK/eval_$name" || paced eval --model "$WORK/student_$name" --problems "$DATA/test.parquet" \
      --out "$WORK/eval_$name" --samples 1 --temperature 0 --max-new-tokens $MAX_NEW --verifier exact \
      --batch-size 256 --part-size 4096 >/dev/null
    mv "$WORK/$name.seconds.tmp" "$WORK/$name.seconds"
  done
done

# --- One table -----------------------------------------------------------------------------
python - "$WORK" "$GRID" "$once" $(( $(date +%s) - started )) <<'EOF'
import sys
from pathlib import Path

import polars as pl

work, grid, once, total = Path(sys.argv[1]), sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4])
rows = []
for a in grid:
    for b in grid:
        name = f"a{a}_b{b}"
        s = pl.read_parquet(work / f"eval_{name}" / "summary.parquet").sort("benchmark")
        log = pl.read_parquet(work / f"student_{name}" / "train_log.parquet")
        w = pl.read_parquet(work / f"w_{name}.parquet")
        rows.append({"alpha": float(a), "beta": float(b), "trained": w.filter(pl.col("weight") > 0).height,
                     "max weight": w["weight"].max(), "epochs": log["problems"].sum() / max(w.filter(pl.col("weight") > 0).height, 1),
                     **{b_: 100 * acc for b_, acc in zip(s["benchmark"], s["accuracy_mean"])},
                     "seconds": int((work / f"{name}.seconds").read_text())})
table = pl.DataFrame(rows)
table.write_parquet(work / "sweep.parquet")
pl.Config.set_tbl_rows(100)
pl.Config.set_tbl_cols(100)
pl.Config.set_float_precision(1)
print(f"alpha/beta sweep: {len(rows)} settings; shared work (rollouts, scores, teacher logits) {once} s once; "
      f"weight + distill per setting in `seconds`; whole run {total} s. Greedy test accuracy in %.")
print(table)
EOF
