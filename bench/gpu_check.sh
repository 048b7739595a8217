#!/usr/bin/env bash
# GPU check: the tiny pipeline (rollout -> teacher-logits -> distill) on one CUDA GPU in bf16,
# through the real commands, and the tokens per second of each stage.
#
#   bash bench/gpu_check.sh                  # one CUDA GPU and a CUDA build of PyTorch
#   DEVICE=cuda:1 bash bench/gpu_check.sh    # another GPU
#   DEVICE=cpu bash bench/gpu_check.sh       # dry run on CPU (float32, smaller sizes), ~1-2 min
#
# Needs: paced installed (pip install -e .), PyTorch with CUDA for DEVICE=cuda. Nothing is
# downloaded: the student (Qwen2 architecture) and teacher (Llama) are random models built by
# examples/tiny_model.py with a shared tokenizer, the problems are generated additions.
#
# What runs and what is timed (wall time of each command, so start-up and model load count):
#   rollout         the student samples K responses per problem   (--device, --dtype bfloat16)
#   teacher-logits  the teacher scores those responses, top-k 32   (--device, --dtype bfloat16)
#   distill         forward KL, one epoch, uniform weights          (--device: bf16 autocast on
#                   CUDA with float32 master weights; distill has no --dtype option)
# Token counts come from the artifacts: generated tokens (completion_token_ids), scored response
# tokens (teacher_logits token_ids) and trained tokens (train_log.parquet `tokens`). distill
# also reports the rate over its optimizer steps alone (train_log `seconds`).
# Weights are written directly (uniform, w = 1): score and weight are not part of the check.
#
# Sizes (env): N problems, K samples, MAX_NEW_TOKENS, HIDDEN/LAYERS/HEADS of the student (the
# teacher is 1.5x wider), ROLLOUT_BATCH, BATCH (distill problems per step), DTYPE.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cpu ]; then
  DTYPE=${DTYPE:-float32}; N=${N:-6}; K=${K:-2}; MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-16}
  HIDDEN=${HIDDEN:-64}; LAYERS=${LAYERS:-2}; HEADS=${HEADS:-2}; ROLLOUT_BATCH=${ROLLOUT_BATCH:-8}; BATCH=${BATCH:-4}
else
  DTYPE=${DTYPE:-bfloat16}; N=${N:-256}; K=${K:-8}; MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-256}
  HIDDEN=${HIDDEN:-512}; LAYERS=${LAYERS:-8}; HEADS=${HEADS:-8}; ROLLOUT_BATCH=${ROLLOUT_BATCH:-32}; BATCH=${BATCH:-16}
fi
WORK=${WORK:-runs/gpu_check/$(date +%Y%m%d-%H%M%S)-$$}
if [ -e "$WORK/rollouts" ]; then
  echo "gpu_check: $WORK already holds a run (its finished stages would be skipped, not timed); choose a new WORK" >&2
  exit 2
fi

python - "$DEVICE" "$DTYPE" <<'PY' >&2
import sys

import torch

device, dtype = sys.argv[1], sys.argv[2]
print(f"gpu_check: torch {torch.__version__} (CUDA build {torch.version.cuda}), device {device}, dtype {dtype}")
if device.startswith("cuda"):
    if not torch.cuda.is_available():
        print(f"gpu_check: DEVICE={device} but torch.cuda.is_available() is False; install a CUDA build "
              f"of PyTorch, check the driver, or run DEVICE=cpu for a dry run")
        sys.exit(2)
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        print(f"gpu_check: DEVICE={device} but only {torch.cuda.device_count()} CUDA device(s) are visible")
        sys.exit(2)
    print(f"gpu_check: {torch.cuda.get_device_name(index)}, "
          f"{torch.cuda.get_device_properties(index).total_memory / 2**30:.0f} GiB")
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        print("gpu_check: this GPU has no bfloat16 support; rerun with DTYPE=float16")
        sys.exit(2)
PY
mkdir -p "$WORK"

# Models (shared tokenizer: tiny_model.py trains the same one every time) and problems.
python examples/tiny_model.py --out "$WORK/student" --arch qwen2 --hidden "$HIDDEN" --layers "$LAYERS" --heads "$HEADS" --seed 0 >/dev/null
python examples/tiny_model.py --out "$WORK/teacher" --arch llama --hidden $((HIDDEN * 3 / 2)) --layers "$LAYERS" \
  --heads $((HEADS * 3 / 2)) --seed 1 >/dev/null
python - "$WORK" "$N" <<'PY'
import sys

import polars as pl

work, n = sys.argv[1], int(sys.argv[2])
ids = [f"g{i}" for i in range(n)]
pl.DataFrame({
    "problem_id": ids,
    "prompt": [f"What is {i} + {2 * i + 1}?" for i in range(n)],
    "answer": [str(3 * i + 1) for i in range(n)],
    "reference": [None] * n,
}, schema={"problem_id": pl.String, "prompt": pl.String, "answer": pl.String, "reference": pl.String}).write_parquet(f"{work}/problems.parquet")
pl.DataFrame({"problem_id": ids, "num_samples": [2] * n, "num_correct": [1] * n, "pass_rate": [0.5] * n,
              "weight": [1.0] * n}).write_parquet(f"{work}/weights.parquet")
PY

now() { python -c 'import time; print(time.time())'; }
T0=$(now)
RO=$(paced rollout --problems "$WORK/problems.parquet" --model "$WORK/student" --out "$WORK/rollouts" --samples "$K" \
  --temperature 1.0 --max-new-tokens "$MAX_NEW_TOKENS" --batch-size "$ROLLOUT_BATCH" --device "$DEVICE" --dtype "$DTYPE")
T1=$(now)
TL=$(paced teacher-logits --problems "$WORK/problems.parquet" --sequences "$RO" --teacher "$WORK/teacher" \
  --out "$WORK/teacher_logits" --top-k 32 --device "$DEVICE" --dtype "$DTYPE")
T2=$(now)
ST=$(paced distill --student "$WORK/student" --teacher-logits "$TL" --weights "$WORK/weights.parquet" --out "$WORK/distilled" \
  --loss fkl --lr 1e-4 --epochs 1 --batch-size "$BATCH" --save-steps 0 --device "$DEVICE")
T3=$(now)

python - "$RO" "$TL" "$ST" "$T0" "$T1" "$T2" "$T3" <<'PY'
import sys
from pathlib import Path

import polars as pl

ro, tl, st = (Path(p) for p in sys.argv[1:4])
t0, t1, t2, t3 = (float(t) for t in sys.argv[4:8])


def parts(d: Path, column: str) -> int:
    frame = pl.read_parquet(sorted(d.rglob("part-*.parquet")), columns=[column])
    return int(frame.select(pl.col(column).list.len().sum()).item())


generated = parts(ro, "completion_token_ids")
scored = parts(tl, "token_ids")
log = pl.read_parquet(st / "train_log.parquet")
trained, step_seconds = int(log["tokens"].sum()), float(log["seconds"].sum())
print(f"rollout: {generated:,} generated tokens in {t1 - t0:.1f} s = {generated / (t1 - t0):,.0f} tokens/s")
print(f"teacher-logits: {scored:,} response tokens in {t2 - t1:.1f} s = {scored / (t2 - t1):,.0f} tokens/s")
print(f"distill: {trained:,} trained tokens in {t3 - t2:.1f} s = {trained / (t3 - t2):,.0f} tokens/s "
      f"({trained / step_seconds:,.0f} tokens/s over its {log.height} optimizer steps alone)")
print("(wall time of each command: start-up and model load included)")
PY
