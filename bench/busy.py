"""Section 9: a stage's speed when the machine is shared (stages.threads).

`paced distill` trains a model of train_tiny's default teacher size (Qwen2, hidden 128, 4 layers, 4
heads) for a few steps, alone on the machine ("quiet") and beside one busy single-threaded
process ("busy": `while True: pass`), with four ways of running torch's threads:

- paced as it is: OpenMP threads spin at most 1,000 times before they sleep
  (GOMP_SPINCOUNT=1000, set by paced_cli before torch loads) and torch takes the idle cores
  measured at the start;
- the same waiting at one thread per core: a job that starts after paced chose its threads;
- passive waiting (OMP_WAIT_POLICY=PASSIVE) at one thread per core;
- as before stages.threads: libgomp's default waiting (GOMP_SPINCOUNT=300000, its documented
  default) at one thread per core.

The figures are each way's busy step rate over its quiet one (how much of its speed a stage
keeps when one other job runs) and its quiet rate over the old way's. Step times come from
train_log.parquet's `seconds` (model loading and start-up excluded), median over the steps
after the first two, pooled over the repeats; the ways alternate within each repeat.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT, Context, Section

BATCH = 16


def paced(*args, env: dict[str, str]) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "paced_cli", *map(str, args)], cwd=ROOT, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"paced {args[0]} failed:\n{r.stderr[-2000:]}")
    return r


def prepare(d: Path, env: dict[str, str]) -> dict[str, Path]:
    """The model, its teacher logits on its own greedy responses, uniform weights."""
    import polars as pl

    from stages import tiny_model

    model = tiny_model.build(d / "model", arch="qwen2", hidden=128, layers=4, heads=4, seed=0)
    problems = d / "problems.parquet"
    n = 64
    pl.DataFrame({"problem_id": [f"p{i}" for i in range(n)], "prompt": [f"What is {i} + {2 * i}?" for i in range(n)],
                  "answer": [str(3 * i) for i in range(n)],
                  "reference": [f"{i} + {2 * i} = {3 * i}" for i in range(n)]}).write_parquet(problems)
    paced("rollout", "--problems", problems, "--model", model, "--out", d / "rollouts", "--samples", "1",
          "--temperature", "0", "--max-new-tokens", "48", "--batch-size", "16", env=env)
    paced("score", "--rollouts", d / "rollouts", "--problems", problems, "--out", d / "scores", "--verifier", "exact",
          "--workers", "1", env=env)
    paced("weight", "--scores", d / "scores", "--out", d / "weights.parquet", "--scheme", "uniform", env=env)
    paced("teacher-logits", "--problems", problems, "--sequences", d / "rollouts", "--teacher", model,
          "--out", d / "teacher_logits", "--top-k", "16", env=env)
    return {"model": model, "tl": d / "teacher_logits", "weights": d / "weights.parquet"}


def step_times(inputs: dict[str, Path], out: Path, steps: int, env: dict[str, str], extra: list[str]) -> tuple[list[float], str]:
    """The step times of one distill run after the first two, and the threads line it logged."""
    import polars as pl

    r = paced("distill", "--student", inputs["model"], "--teacher-logits", inputs["tl"], "--weights", inputs["weights"],
              "--out", out, "--max-steps", steps, "--batch-size", BATCH, "--micro-batch-size", BATCH, "--save-steps", "0",
              *extra, env=env)
    seconds = pl.read_parquet(out / "train_log.parquet")["seconds"].to_list()[2:]
    logged = next((line.strip() for line in r.stderr.splitlines() if line.strip().startswith("threads:")), "")
    return seconds, logged


def section(ctx: Context) -> Section:
    sec = Section("busy", "9. shared machine")
    d = ctx.work / "busy"
    d.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    base |= {"PACED_NO_PROGRESS": "1"}
    inputs = prepare(d, base | {"OMP_NUM_THREADS": "1"})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    steps, repeats = (10, 1) if ctx.quick else (24, 3)
    all_cores = ["--threads", str(cores)]
    ways = {
        "paced (spin <= 1,000, threads from the idle cores)": (base, []),
        f"paced's waiting at {cores} threads (another job starts later)": (base, all_cores),
        f"passive waiting at {cores} threads": (base | {"OMP_WAIT_POLICY": "PASSIVE"}, all_cores),
        f"before: libgomp's default waiting at {cores} threads": (base | {"GOMP_SPINCOUNT": "300000"}, all_cores),
    }
    times: dict[tuple[str, str], list[float]] = {}
    logs: dict[str, str] = {}
    n = 0
    for condition in ("quiet", "busy"):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition == "busy" else None
        try:
            for _ in range(repeats):
                for way, (env, extra) in ways.items():
                    n += 1
                    t, logged = step_times(inputs, d / f"distill_{n}", steps, env, extra)
                    times.setdefault((way, condition), []).extend(t)
                    logs.setdefault(f"{condition}, {way}", logged)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    rate = {k: 1 / statistics.median(v) for k, v in times.items()}
    before = next(w for w in ways if w.startswith("before"))
    for way in ways:
        kept = rate[way, "busy"] / rate[way, "quiet"]
        default = way.startswith("paced (")
        sec.add(f"distill, train_tiny default teacher size, batch {BATCH}: {way}: steps/s busy / quiet",
                f"{kept:.2f}x", f"{rate[way, 'busy']:.2f} / {rate[way, 'quiet']:.2f} steps/s", runs=repeats,
                goal=">= 0.4x" if default else "", met=(kept >= 0.4) if default else None)
    for way in ways:
        if way != before:
            sec.add(f"{way}: quiet steps/s over the old way's", f"{rate[way, 'quiet'] / rate[before, 'quiet']:.2f}x",
                    runs=repeats)
    chosen = "; ".join(f"{c}: {logs[f'{c}, {w}']}" for w in ways if w.startswith("paced (") for c in ("quiet", "busy"))
    sec.notes.append(
        f"{repeats} distill run(s) of {steps} steps per cell; step rate = 1 / median step time after each run's first "
        f"two steps (train_log.parquet), runs pooled. busy: one other process spinning in Python for the whole run. "
        f"What paced chose: {chosen}.")
    return sec
