"""Section `weight`: how long `paced weight` takes on a large scores artifact, against the floors
of reading it (and of the I/O the stage cannot avoid) and against the same computation
written naively with pandas.

    python -m bench --only weight [--quick]         # 1 M and 10 M problems (--quick: 100 k and 1 M)
    python -m bench.weight --problems 1000000 --samples 8 --runs 3

The scores are what `paced score` writes: a job directory of parts of 4,096 rows (its default
`--part-size`) with a manifest, written by `schemas.Job`; every column of the scores schema
(`extracted` holds a short answer, null with `reason = "no_answer"` for 5 % of the rows); ids
of the shape `examples/prepare_data.py` gives (`dapo-` and 12 characters); K samples per
problem, pass rates spread over [0, 1], rows grouped by problem, so the stage takes its fast
path (`schemas.base.key_runs`). Timed, alternated, the median of `--runs` after a warm-up:

- the whole stage (`weight.run`: read + validate + aggregate + write + summary);
- floor: polars reading the artifact's parts, every column (the issue's floor);
- I/O floor: polars reading only the three columns the stage needs, plus pyarrow writing a
  frame of the weights artifact's shape (one row per problem, zstd): the least the stage
  must do to give its output;
- naive pandas: read_parquet, groupby, the kernel applied per problem with `Series.apply`,
  write.

Each size runs in its own interpreter, so 80 M rows leave no memory behind; one extra stage
run under cProfile says where the stage's time goes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from bench import common

os.environ.setdefault("PACED_NO_PROGRESS", "1")


PART_ROWS = 4096  # `paced score --part-size` default


def problem_ids(problems: int) -> pl.Series:
    """Distinct ids of the shape examples/prepare_data.py gives (`dapo-` and 12 digits):
    multiplication by an odd number not divisible by 5 permutes Z/10^12."""
    return "dapo-" + pl.Series((np.arange(problems, dtype=np.int64) * 2654435761) % 10**12).cast(pl.String).str.zfill(12)


def make_scores(path: Path, problems: int, samples: int, seed: int = 0) -> Path:
    """A scores job directory as `paced score` writes it (see the module docstring)."""
    import schemas

    rng = np.random.default_rng(seed)
    n = problems * samples
    p = np.repeat(rng.random(problems), samples)
    no_answer = rng.random(n) < 0.05
    ids = problem_ids(problems)
    frame = pl.DataFrame(
        {
            "problem_id": ids.gather(np.repeat(np.arange(problems), samples)),
            "sample_index": np.tile(np.arange(samples, dtype=np.int32), problems),
            "correct": (rng.random(n) < p) & ~no_answer,
            "extracted": pl.Series(rng.integers(0, 1000, n)).cast(pl.String),
            "no_answer": no_answer,
        }
    ).select(
        "problem_id", "sample_index", "correct",
        extracted=pl.when("no_answer").then(None).otherwise("extracted"),
        reason=pl.when("no_answer").then(pl.lit("no_answer")).otherwise(None),
    )
    job = schemas.Job(path, schemas.SCORES, {"bench": [problems, samples, seed]}, schemas.provenance("score", {}))
    job.check()
    job.start()
    parts = (n + PART_ROWS - 1) // PART_ROWS
    for i in range(parts):
        job.write(i, frame.slice(i * PART_ROWS, PART_ROWS).to_arrow().cast(schemas.SCORES.arrow))
    job.finish(parts)
    return path


def io_floor(scores: Path, out: Path, problems: int) -> None:
    """Read the three columns the stage needs; write a frame of the weights artifact's shape."""
    import pyarrow.parquet as pq

    import schemas

    pl.read_parquet(scores / "part-*.parquet", columns=["problem_id", "sample_index", "correct"])
    rng = np.random.default_rng(1)
    ids = problem_ids(problems)
    num_correct = rng.integers(0, 9, problems).astype(np.int32)
    pass_rate = num_correct / 8
    table = pl.DataFrame({"problem_id": ids, "num_samples": np.full(problems, 8, np.int32), "num_correct": num_correct,
                          "pass_rate": pass_rate, "weight": pass_rate * (1 - pass_rate)}).to_arrow().cast(schemas.WEIGHTS.arrow)
    pq.write_table(table, out, compression="zstd", use_dictionary=[c for c in table.column_names if c != "problem_id"])


def naive_pandas(scores: Path, out: Path, alpha: float = 1.0, beta: float = 1.0) -> None:
    """The weights artifact's columns the way a notebook would compute them."""
    import pandas as pd

    df = pd.read_parquet(scores, columns=["problem_id", "sample_index", "correct"])  # a directory: all its parts
    g = df.groupby("problem_id", sort=False)["correct"].agg(["size", "sum"])
    w = pd.DataFrame({"problem_id": g.index, "num_samples": g["size"].astype("int32").to_numpy(),
                      "num_correct": g["sum"].astype("int32").to_numpy()})
    w["pass_rate"] = w["num_correct"] / w["num_samples"]
    w["weight"] = w["pass_rate"].apply(lambda p: p**alpha * (1.0 - p) ** beta)
    w["weight"] *= len(w) / w["weight"].sum()
    w.to_parquet(out, index=False)


def has_pandas() -> bool:
    import importlib.util

    return importlib.util.find_spec("pandas") is not None


def child(problems: int, samples: int, runs: int) -> dict:
    """One size, in its own interpreter (see bench.common.in_child)."""
    import cProfile
    import pstats

    from rich.console import Console

    from stages import weight

    weight.console = Console(file=open(os.devnull, "w"))  # time the work, not the terminal
    with tempfile.TemporaryDirectory(prefix="paced-bench-weight-") as d:
        scores = make_scores(Path(d) / "scores", problems, samples)
        config = weight.WeightConfig(scores=scores, out=Path(d) / "weights.parquet")
        posterior = weight.WeightConfig(scores=scores, out=Path(d) / "posterior.parquet", estimator="posterior")
        fns = {"stage": lambda: weight.run(config), "posterior": lambda: weight.run(posterior),
               "floor": lambda: pl.read_parquet(scores / "part-*.parquet"),
               "io_floor": lambda: io_floor(scores, Path(d) / "io.parquet", problems)}
        if has_pandas():
            fns["pandas"] = lambda: naive_pandas(scores, Path(d) / "naive.parquet")
        t = common.timed_together(fns, runs)
        prof = cProfile.Profile()
        prof.runcall(weight.run, config)
    stats = pstats.Stats(prof).stats  # {(file, line, func): (cc, nc, tt, ct, callers)}
    cum = {f"{Path(f).parent.name}/{Path(f).name}:{fn}": ct for (f, _, fn), (_, _, _, ct, _) in stats.items()}
    return {"stage": list(t["stage"].values), "posterior": list(t["posterior"].values), "floor": list(t["floor"].values),
            "io_floor": list(t["io_floor"].values),
            "pandas": list(t["pandas"].values) if "pandas" in t else None,
            "profile": [(name, cum[name]) for name in PROFILED if name in cum]}


# The stage's parts, outermost first: where the time of `weight.run` goes.
PROFILED = (
    "stages/weight.py:run",
    "schemas/io.py:read",
    "schemas/base.py:key_runs",
    "schemas/base.py:_duplicates",
    "stages/weight.py:compute",
    "stages/weight.py:counts",
    "schemas/io.py:write_file",
    "stages/weight.py:report",
)


def section(ctx: common.Context) -> common.Section:
    sec = common.Section("weight", "5. weight")
    runs = 3
    for problems in (100_000, 1_000_000) if ctx.quick else (1_000_000, 10_000_000):
        res = common.in_child("bench.weight:child", problems=problems, samples=8, runs=runs)
        v = res.value
        s = {k: common.Stat(tuple(v[k])) for k in ("stage", "posterior", "floor", "io_floor", "pandas") if v[k] is not None}
        size = f"{problems / 1e6:g} M" if problems >= 1_000_000 else f"{problems // 1000} k"
        big = problems == 10_000_000
        sec.add(f"paced weight, {size} problems x 8: s", f"{s['stage'].median:.2f}", common.spread(s["stage"]), runs,
                "< 3 s" if big else "", (s["stage"].median < 3) if big else None)
        sec.add(f"paced weight --estimator posterior, {size} problems x 8: s", f"{s['posterior'].median:.2f}",
                common.spread(s["posterior"]), runs)
        rpost = common.ratio(s["posterior"], s["stage"])
        sec.add(f"  ratio posterior / plug-in estimator, {size}", f"{rpost.median:.2f}", common.spread(rpost), runs)
        sec.add(f"  floor: pl.read_parquet of the scores (every column), {size}: s", f"{s['floor'].median:.2f}", common.spread(s["floor"]), runs)
        r = common.ratio(s["stage"], s["floor"])
        sec.add(f"  ratio paced weight / read, {size}", f"{r.median:.1f}", common.spread(r, "{:.1f}"), runs,
                "<= 2" if big else "", (r.median <= 2) if big else None)
        sec.add(f"  I/O floor: read the 3 columns used + write the weights rows, {size}: s", f"{s['io_floor'].median:.2f}",
                common.spread(s["io_floor"]), runs)
        rio = common.ratio(s["stage"], s["io_floor"])
        sec.add(f"  ratio paced weight / I/O floor, {size}", f"{rio.median:.1f}", common.spread(rio, "{:.1f}"), runs)
        if "pandas" in s:
            sec.add(f"  naive pandas (read, groupby, apply), {size}: s", f"{s['pandas'].median:.2f}", common.spread(s["pandas"]), runs)
            rp = common.ratio(s["stage"], s["pandas"])
            sec.add(f"  ratio paced weight / naive pandas, {size}", f"{rp.median:.2f}", common.spread(rp), runs)
        else:
            sec.add(f"  naive pandas (read, groupby, apply), {size}", "n/a (pandas not installed: pip install -e '.[bench]')")
        sec.notes.append(
            f"{size} problems (peak RSS of its child {common.mib(res.max_rss)}): cProfile of one more stage run, "
            f"cumulative seconds: " + "; ".join(f"`{name}` {ct:.2f}" for name, ct in v["profile"])
            + " (`read` includes the unique-key check of problem_id + sample_index: `key_runs`, the fast path for "
            "rows grouped by problem, and `_duplicates`, whose hashing runs only when that fails; `compute` includes "
            "`counts`, the per-problem aggregation)"
        )
    return sec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    v = child(args.problems, args.samples, args.runs)
    print(f"paced weight, {args.problems:,} problems x {args.samples} samples, {args.runs} runs after a warm-up")
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; polars {pl.__version__}\n")
    print("| what | median s | min-max s |")
    print("|---|---:|---:|")
    names = {"stage": "paced weight (read, validate, aggregate, write)", "floor": "floor: pl.read_parquet of the scores",
             "io_floor": "I/O floor: read 3 columns + write the weights rows", "pandas": "naive pandas"}
    for key, name in names.items():
        if v[key] is not None:
            print(f"| {name} | {statistics.median(v[key]):.3f} | {min(v[key]):.3f}-{max(v[key]):.3f} |")
    print(f"| ratio weight / floor | {statistics.median(v['stage']) / statistics.median(v['floor']):.2f} | |")
    print("\nwhere the stage's time goes (cProfile, cumulative s): "
          + "; ".join(f"{name} {ct:.2f}" for name, ct in v["profile"]))


if __name__ == "__main__":
    main()
