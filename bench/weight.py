"""How long `paced weight` takes on a large scores artifact, against reading it alone.

    python -m bench.weight --problems 1000000 --samples 8 --runs 3

Writes synthetic scores (K samples per problem, pass rates spread over [0, 1]) to a temporary
directory, then times the whole stage (read + validate + aggregate + write + summary) and the
floor (polars reading the same file), median of `--runs` after a warm-up, side by side.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

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
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


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
