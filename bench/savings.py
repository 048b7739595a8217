"""Section `savings`: the compute Paced's weighting saves by skipping weight-0 problems.

    python -m bench --only savings [--quick]
    python -m bench --only savings --task-dir runs/my-task

With `--task-dir DIR`, a real task's artifacts: `DIR/problems.parquet`, `DIR/weights.parquet`
(`paced weight` output), `DIR/sequences` (the teacher sequences: a rollouts artifact, file or
directory, or a problems file with references), and the models `DIR/teacher` and
`DIR/student`. Without it, a synthetic task on the `--quick` workload's models: problems whose
student pass rates spread like the ones measured in ENVIRONMENT.md (most unsolved, a few
mastered, the rest in between), K = 8 synthetic scores each, weights from the real
`weight.run` (p(1-p), mean-normalised), and one teacher response per problem of 32 to 160
tokens.

Both pipelines run through the real stages: all problems (teacher-logits without
`--weights`, distill with uniform weights: plain distillation) against Paced's
(teacher-logits `--weights`, distill with the weights), one epoch, alternated, the median of
several runs after a warm-up.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench import workload
from bench.common import Context, Section, Stat, ratio, spread
from bench.distill import LR, write_uniform_weights

TOP_K = 32
BATCH = 8
# Shares of problems by student pass rate, after ENVIRONMENT.md's 6000-problem measurement
# (3304 with p = 0, 2629 with 0 < p < 1, 67 with p = 1), rounded so a few are mastered.
UNSOLVED, MASTERED = 0.5, 0.05


def synthetic(ctx: Context) -> dict[str, Path]:
    import numpy as np
    import polars as pl

    from stages import models, weight

    w = workload.build(workload.QUICK, ctx.work)
    d = ctx.work / "savings"
    d.mkdir(parents=True, exist_ok=True)
    n = 32 if ctx.quick else 96
    rng = np.random.default_rng(0)
    kind = rng.random(n)
    p = np.where(kind < UNSOLVED, 0.0, np.where(kind < UNSOLVED + MASTERED, 1.0, rng.uniform(0.05, 0.95, n)))
    ids = [f"s{i:04d}" for i in range(n)]
    correct = rng.random((n, 8)) < p[:, None]
    pl.DataFrame({
        "problem_id": np.repeat(ids, 8), "sample_index": np.tile(np.arange(8, dtype=np.int32), n),
        "correct": correct.reshape(-1),
    }).write_parquet(d / "scores.parquet")
    weight.run(weight.WeightConfig(scores=d / "scores.parquet", out=d / "weights.parquet"))

    gen = workload.TextGen(seed=2)
    tokenizer = models.load_tokenizer(str(w.teacher))
    lengths = rng.integers(32, 161, n)
    stream = workload.token_stream(tokenizer, gen, int(lengths.sum()))
    cuts = np.concatenate([[0], np.cumsum(lengths - 1)])
    responses = [stream[cuts[i] : cuts[i + 1]] + [tokenizer.eos_token_id] for i in range(n)]
    workload.write_problems(d / "problems.parquet", ids, gen.sentences(n, words=(8, 14)))
    workload.write_sequences(d / "sequences.parquet", ids, responses, tokenizer, w.teacher)
    return {"problems": d / "problems.parquet", "weights": d / "weights.parquet", "sequences": d / "sequences.parquet",
            "teacher": w.teacher, "student": w.student, "dir": d}


def from_task_dir(task: Path, work: Path) -> dict[str, Path]:
    from schemas import InputError

    task = Path(task)
    need = {"problems": task / "problems.parquet", "weights": task / "weights.parquet", "sequences": task / "sequences",
            "teacher": task / "teacher", "student": task / "student"}
    if not need["sequences"].exists() and (task / "sequences.parquet").exists():
        need["sequences"] = task / "sequences.parquet"
    missing = [f"{k} ({v})" for k, v in need.items() if not v.exists()]
    if missing:
        raise InputError(
            f"--task-dir {task}: lacks {', '.join(missing)}; it needs problems.parquet, weights.parquet, "
            f"sequences (a rollouts artifact or sequences.parquet), and the model directories teacher/ and student/"
        )
    d = work / "savings"
    d.mkdir(parents=True, exist_ok=True)
    return need | {"dir": d}


def section(ctx: Context) -> Section:
    import polars as pl

    from stages import distill
    from stages import teacher_logits as tl

    sec = Section("savings", "6. savings from the weights")
    task = from_task_dir(ctx.task_dir, ctx.work) if ctx.task_dir else synthetic(ctx)
    d: Path = task["dir"]
    weights = pl.read_parquet(task["weights"])
    uniform = write_uniform_weights(weights["problem_id"].to_list(), d / "uniform.parquet")
    runs = 2 if ctx.quick else 3
    calls = {"n": 0}
    result: dict[str, list] = {"tl_all": [], "tl_w": [], "d_all": [], "d_w": []}
    tokens: dict[str, int] = {}

    def stage_tl(key: str, weights_path: Path | None) -> Path:
        t = time.perf_counter()
        out = tl.run(tl.TeacherLogitsConfig(problems=task["problems"], sequences=task["sequences"], teacher=str(task["teacher"]),
                                            out=d / f"{key}-{calls['n']}", top_k=TOP_K, weights=weights_path, overwrite=True))
        result[key].append(time.perf_counter() - t)
        tokens[key] = int(pl.read_parquet(Path(out) / "part-*.parquet", columns=["token_ids"])["token_ids"].list.len().sum())
        return out

    def stage_distill(key: str, tl_dir: Path, weights_path: Path) -> None:
        t = time.perf_counter()
        out = distill.run(distill.DistillConfig(
            student=str(task["student"]), teacher_logits=tl_dir, weights=weights_path, out=d / f"{key}-{calls['n']}",
            loss="fkl", lr=LR, epochs=1, batch_size=BATCH, micro_batch_size=BATCH, schedule="constant", save_steps=0,
            overwrite=True))
        result[key].append(time.perf_counter() - t)
        tokens[key] = int(pl.read_parquet(Path(out) / "train_log.parquet")["tokens"].sum())

    for i in range(runs + 1):  # the first round is the warm-up
        calls["n"] = i
        stage_distill("d_all", stage_tl("tl_all", None), uniform)
        stage_distill("d_w", stage_tl("tl_w", task["weights"]), task["weights"])
    s = {k: Stat(tuple(v[1:])) for k, v in result.items()}

    zero = int((weights["weight"] == 0).sum())
    sec.add("problems with weight 0", f"{zero / weights.height:.1%}", f"{zero} of {weights.height}", "1")
    skipped_tl = 1 - tokens["tl_w"] / tokens["tl_all"]
    skipped_d = 1 - tokens["d_w"] / tokens["d_all"]
    sec.add("teacher-logits tokens skipped (weight-0 problems)", f"{skipped_tl:.1%}", f"{tokens['tl_all'] - tokens['tl_w']:,} of {tokens['tl_all']:,}", "1")
    sec.add("distill tokens skipped (weight-0 problems)", f"{skipped_d:.1%}", f"{tokens['d_all'] - tokens['d_w']:,} of {tokens['d_all']:,}", "1")
    for name, a, b in (("teacher-logits", "tl_all", "tl_w"), ("distill", "d_all", "d_w")):
        saved = ratio(s[b], s[a]).map(lambda x: 1 - x)
        sec.add(f"{name} wall time, all problems / weighted: s", f"{s[a].median:.2f} / {s[b].median:.2f}",
                f"{spread(s[a])} / {spread(s[b])}", runs)
        sec.add(f"{name} wall time saved", f"{saved.median:.1%}", f"{saved.lo:.1%}-{saved.hi:.1%}", runs)
    both_all = Stat(tuple(x + y for x, y in zip(s["tl_all"].values, s["d_all"].values)))
    both_w = Stat(tuple(x + y for x, y in zip(s["tl_w"].values, s["d_w"].values)))
    saved = ratio(both_w, both_all).map(lambda x: 1 - x)
    sec.add("teacher-logits + distill wall time saved", f"{saved.median:.1%}", f"{saved.lo:.1%}-{saved.hi:.1%}", runs)
    source = f"--task-dir {ctx.task_dir}" if ctx.task_dir else (
        f"synthetic: {weights.height} problems, {UNSOLVED:.0%} unsolved (p = 0) and {MASTERED:.0%} mastered (p = 1) by "
        f"construction, the rest p ~ U(0.05, 0.95), K = 8 sampled scores, so some in-between problems also land on "
        f"p = 0 or 1; one teacher response of 32-160 tokens each; the --quick workload's models")
    sec.notes.append(
        f"{source}. One epoch, batch {BATCH}, top-k {TOP_K}. Wall time is each stage call end to end (inputs, model "
        f"load, work, output); distill on all problems uses uniform weights (plain distillation)."
    )
    return sec
