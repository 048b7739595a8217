"""Section `weight`: how long `paced weight` takes on a large scores artifact, against the floor
of reading it and against the same computation written naively with pandas.

    python -m bench --only weight [--quick]         # 1 M and 10 M problems (--quick: 100 k and 1 M)
    python -m bench.weight --problems 1000000 --samples 8 --runs 3

Writes synthetic scores (K samples per problem, pass rates spread over [0, 1], rows grouped
by problem as `paced score` writes them, so the stage takes its fast path: see
`schemas.base.key_runs`) to a temporary directory, then times the whole stage
(`weight.run`: read + validate + aggregate + write + summary) and the floor (polars reading
the same file), alternated, median of `--runs` after a warm-up; and the naive pandas version
(read_parquet, groupby, the kernel applied per problem with `Series.apply`, write). Each size
runs in its own interpreter, so 80 M rows leave no memory behind; one extra stage run under
cProfile says where the stage's time goes.
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


def make_scores(path: Path, problems: int, samples: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    p = np.repeat(rng.random(problems), samples)
    pl.DataFrame(
        {
            "problem_id": pl.Series(np.repeat(np.arange(problems), samples)).cast(pl.String),
            "sample_index": np.tile(np.arange(samples, dtype=np.int32), problems),
            "correct": rng.random(problems * samples) < p,
        }
    ).write_parquet(path)


def timed(fn, runs: int) -> list[float]:
    return list(common.timed(fn, runs).values)


def naive_pandas(scores: Path, out: Path, alpha: float = 1.0, beta: float = 1.0) -> None:
    """The weights artifact's columns the way a notebook would compute them."""
    import pandas as pd

    df = pd.read_parquet(scores, columns=["problem_id", "sample_index", "correct"])
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
        scores = Path(d) / "scores.parquet"
        make_scores(scores, problems, samples)
        config = weight.WeightConfig(scores=scores, out=Path(d) / "weights.parquet")
        fns = {"stage": lambda: weight.run(config), "floor": lambda: pl.read_parquet(scores)}
        if has_pandas():
            fns["pandas"] = lambda: naive_pandas(scores, Path(d) / "naive.parquet")
        t = common.timed_together(fns, runs)
        prof = cProfile.Profile()
        prof.runcall(weight.run, config)
    stats = pstats.Stats(prof).stats  # {(file, line, func): (cc, nc, tt, ct, callers)}
    cum = {f"{Path(f).parent.name}/{Path(f).name}:{fn}": ct for (f, _, fn), (_, _, _, ct, _) in stats.items()}
    return {"stage": list(t["stage"].values), "floor": list(t["floor"].values), "pandas": list(t["pandas"].values) if "pandas" in t else None,
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
        s = {k: common.Stat(tuple(v[k])) for k in ("stage", "floor", "pandas") if v[k] is not None}
        size = f"{problems / 1e6:g} M" if problems >= 1_000_000 else f"{problems // 1000} k"
        big = problems == 10_000_000
        sec.add(f"paced weight, {size} problems x 8: s", f"{s['stage'].median:.2f}", common.spread(s["stage"]), runs,
                "< 3 s" if big else "", (s["stage"].median < 3) if big else None)
        sec.add(f"  floor: pl.read_parquet of the scores, {size}: s", f"{s['floor'].median:.2f}", common.spread(s["floor"]), runs)
        r = common.ratio(s["stage"], s["floor"])
        sec.add(f"  ratio paced weight / read, {size}", f"{r.median:.1f}", common.spread(r, "{:.1f}"), runs,
                "<= 2" if big else "", (r.median <= 2) if big else None)
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

    from rich.console import Console

    from stages import weight

    quiet = Console(file=open(os.devnull, "w"))
    weight.console = quiet  # time the work, not the terminal
    with tempfile.TemporaryDirectory() as d:
        scores = Path(d) / "scores.parquet"
        make_scores(scores, args.problems, args.samples)
        config = weight.WeightConfig(scores=scores, out=Path(d) / "weights.parquet")
        stage = timed(lambda: weight.run(config), args.runs)
        floor = timed(lambda: pl.read_parquet(scores), args.runs)
    med_s, med_f = statistics.median(stage), statistics.median(floor)
    print(f"paced weight, {args.problems:,} problems x {args.samples} samples, {args.runs} runs after a warm-up")
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; polars {pl.__version__}\n")
    print("| what | median s | min-max s |")
    print("|---|---:|---:|")
    print(f"| paced weight (read, validate, aggregate, write) | {med_s:.3f} | {min(stage):.3f}-{max(stage):.3f} |")
    print(f"| floor: pl.read_parquet of the scores | {med_f:.3f} | {min(floor):.3f}-{max(floor):.3f} |")
    print(f"| ratio weight / floor | {med_s / med_f:.2f} | |")


if __name__ == "__main__":
    main()
