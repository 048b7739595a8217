"""Section `sweep`: a 3 x 3 alpha/beta sweep, priced end to end against TRL.

    python -m bench --only sweep [--quick]

The user's loop is "rerun only `weight` with a new alpha, beta". paced pays once for what every
setting shares, and per setting only for a weight file and a distill run that skips its
zero-weight problems:

- once: `paced rollout` (K = 8) and `paced score` of the student on the problems, and one
  `paced teacher-logits --weights` over the problems any setting trains on (every kernel with
  alpha, beta > 0 is zero exactly at p = 0 and p = 1, so the settings share one support);
- per setting (alpha, beta in {0.5, 1, 2}^2): `paced weight` and `paced distill` (forward KL).

TRL has no pass-rate weighting, so its nearest equivalent of the sweep is nine GKDTrainer runs
(lmbda 0, beta 0: forward KL on the teacher's fixed responses) of the same student, teacher,
steps and batch, each running the teacher online on every batch.

The workload is the bench's (random tiny models, `bench/workload.py`): the student solves
nothing, so the pass rates that weight the problems are synthetic (scores drawn as in section
6: half the problems unsolved, 5 % mastered, the rest between), written over the real `paced
score` output; the rollout and score commands still run and are timed. Both sides run in their
own interpreter, one after the other, each command through its public entry point; the table
gives the totals, their ratio, and the teacher forward passes (sequences through the teacher).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

from bench import workload
from bench.common import Context, Section, in_child
from bench.distill import LR, child_trl
from bench.savings import MASTERED, UNSOLVED

GRID = (0.5, 1.0, 2.0)
STEPS = 8
TOP_K = 32
K = 8


def synthetic_scores(problem_ids: list[str], path: Path) -> None:
    """Scores as `paced score` writes them, with pass rates spread as in section 6."""
    import numpy as np

    import schemas

    rng = np.random.default_rng(0)
    n = len(problem_ids)
    kind = rng.random(n)
    p = np.where(kind < UNSOLVED, 0.0, np.where(kind < UNSOLVED + MASTERED, 1.0, rng.uniform(0.05, 0.95, n)))
    correct = (rng.random((n, K)) < p[:, None]).reshape(-1).tolist()
    cols = {"problem_id": [i for i in problem_ids for _ in range(K)], "sample_index": [k for _ in problem_ids for k in range(K)],
            "correct": correct, "extracted": [None] * (n * K), "reason": [None] * (n * K)}
    schemas.write_file(path, schemas.table_from_columns(cols, schemas.SCORES), schemas.SCORES,
                       schemas.provenance("score", {"synthetic": True}))


def child_paced(student: str, teacher: str, problems: str, sequences: str, batch: int, work: str) -> dict:
    import polars as pl

    from stages import distill, rollout, score, teacher_logits, weight

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rollout.run(rollout.RolloutConfig(problems=Path(problems), model=student, out=work / "rollouts", samples=K,
                                      max_new_tokens=32, batch_size=batch))
    score.run(score.ScoreConfig(rollouts=work / "rollouts", problems=Path(problems), out=work / "scores", verifier="exact"))
    ids = pl.read_parquet(problems)["problem_id"].to_list()
    synthetic_scores(ids, work / "synthetic_scores.parquet")
    shared_w = weight.run(weight.WeightConfig(scores=work / "synthetic_scores.parquet", out=work / "support.parquet"))
    tl = teacher_logits.run(teacher_logits.TeacherLogitsConfig(
        problems=Path(problems), sequences=Path(sequences), teacher=teacher, out=work / "tl", top_k=TOP_K,
        weights=shared_w, batch_size=batch))
    once = time.perf_counter() - t0
    teacher_sequences = pl.read_parquet(work / "tl" / "part-*.parquet", columns=["problem_id"]).height
    per = []
    for a in GRID:
        for b in GRID:
            gc.collect()
            t = time.perf_counter()
            w = weight.run(weight.WeightConfig(scores=work / "synthetic_scores.parquet", out=work / f"w_{a}_{b}.parquet",
                                               alpha=a, beta=b))
            distill.run(distill.DistillConfig(
                student=student, teacher_logits=tl, weights=w, out=work / f"s_{a}_{b}", loss="fkl", lr=LR,
                batch_size=batch, micro_batch_size=batch, max_steps=STEPS, schedule="constant", save_steps=0))
            per.append(time.perf_counter() - t)
    trained = pl.read_parquet(shared_w).filter(pl.col("weight") > 0).height
    return {"once": once, "per": per, "teacher_sequences": teacher_sequences, "trained": trained, "problems": len(ids)}


def child_trl_sweep(student: str, teacher: str, tl: str, batch: int, work: str) -> dict:
    """Nine GKDTrainer runs; each `child_trl` call times its run after a one-step warm-up run."""
    return {"per": [child_trl(student, teacher, tl, batch, STEPS, 1, str(Path(work) / f"run{i}"))["seconds"][0]
                    for i in range(len(GRID) ** 2)]}


def section(ctx: Context) -> Section:
    from stages import teacher_logits as tl

    sec = Section("sweep", "8. alpha/beta sweep vs TRL")
    w = workload.main(ctx)
    batch = w.size.batch
    d = ctx.work / "sweep"
    d.mkdir(parents=True, exist_ok=True)
    # TRL trains on the same sequences as paced (all problems: it cannot weight them).
    all_tl = tl.run(tl.TeacherLogitsConfig(problems=w.problems, sequences=w.sequences, teacher=str(w.teacher),
                                           out=d / "all_tl", top_k=TOP_K, batch_size=batch))
    paced = in_child("bench.sweep:child_paced", student=str(w.student), teacher=str(w.teacher), problems=str(w.problems),
                     sequences=str(w.sequences), batch=batch, work=str(d / "paced")).value
    trl = in_child("bench.sweep:child_trl_sweep", student=str(w.student), teacher=str(w.teacher), tl=str(all_tl),
                   batch=batch, work=str(d / "trl"))
    # child_trl makes a one-step warm-up run before each timed run: count only the timed ones.
    trl_total = sum(trl.value["per"])
    runs = len(GRID) ** 2
    paced_total = paced["once"] + sum(paced["per"])
    sec.add(f"paced, once: rollout K = {K} + score + teacher-logits over the shared support, s", f"{paced['once']:.1f}", runs=1)
    sec.add(f"paced, per setting: weight + distill ({STEPS} steps), s, median of {runs}",
            f"{sorted(paced['per'])[runs // 2]:.1f}", f"{min(paced['per']):.1f}-{max(paced['per']):.1f}", runs)
    sec.add(f"paced, the whole {runs}-setting sweep, s", f"{paced_total:.1f}", runs=1)
    sec.add(f"TRL GKDTrainer, {runs} runs of {STEPS} steps (each with a one-step warm-up before it, not counted), s",
            f"{trl_total:.1f}", runs=1)
    sec.add("time ratio TRL / paced, whole sweep", f"{trl_total / paced_total:.2f}x", runs=1)
    teacher_trl = runs * STEPS * batch
    sec.add("teacher forward passes (sequences): paced / TRL", f"{paced['teacher_sequences']:,} / {teacher_trl:,} "
            f"({1 - paced['teacher_sequences'] / teacher_trl:.0%} saved)", runs=1)
    sec.notes.append(
        f"{w.describe()}; {paced['problems']} problems, {paced['trained']} with 0 < p < 1 (synthetic pass rates); "
        f"batch {batch}, {STEPS} steps per run, forward KL, top-k {TOP_K}. TRL's sweep has no weights, so its nine runs train the same thing; what it would cost to add a weighting "
        "to it is not measured. The two sides ran one after the other, once each.")
    return sec
