"""Section `adaptive`: what `paced rollout --min-samples K0` saves, and what it changes in the weights.

    python -m bench --only adaptive [--quick]

Two measurements, each against the plain K = 8 run:

- synthetic: 200,000 problems (20,000 with --quick) whose true pass rates spread from hopeless
  to mastered (45 % Beta(0.3, 6), 45 % uniform, 10 % Beta(6, 0.3)), K = 8 Bernoulli outcomes each.
  The adaptive rule is applied to the same draws (its first K0 are the plain run's first K0), so
  every difference is the rule's: the samples it saves, how many problems' weights it changes,
  and the error of the weights against the true kernel w(p) = p(1-p), beside the plain run's.
- a 1-layer msb student (examples/train_tiny.py, 1-layer hidden-64, `--order msb`: the quickstart's
  student until 2026-12-03; trained here, about 40 s) on 6,000 training problems (1,000 with --quick): the real commands, `paced
  rollout` K = 8 seed 0, K = 8 seed 1, and K = 8 --min-samples 4 seed 0, each scored (`exact`)
  and weighted (p(1-p), plug-in, unnormalised). Response tokens generated are counted from the
  artifacts. The adaptive run's samples are the seed-0 plain run's samples of the same problem
  and index (checked and printed), so its weights differ from that run's by the rule alone, as
  in the synthetic rows; two K = 8 runs with different seeds differ by sampling alone: that
  difference is printed beside the adaptive run's, as the yardstick.
"""

from __future__ import annotations

import subprocess
import sys

from bench.common import ROOT, Context, Section

K, K0S = 8, (2, 4)


def kernel(c, k):
    p = c / k
    return p * (1 - p)


def synthetic(sec: Section, n: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    kind = rng.random(n)
    p = np.where(kind < 0.45, rng.beta(0.3, 6, n), np.where(kind < 0.9, rng.random(n), rng.beta(6, 0.3, n)))
    draws = rng.random((n, K)) < p[:, None]
    full_c = draws.sum(1)
    w_full, w_true = kernel(full_c, K), p * (1 - p)
    rmse_full = float(np.sqrt(np.mean((w_full - w_true) ** 2)))
    sec.add(f"synthetic ({n:,} problems, K = {K}): weight error of the plain run, RMSE vs the true p(1-p)", f"{rmse_full:.4f}", runs=1)
    for k0 in K0S:
        c0 = draws[:, :k0].sum(1)
        more = (c0 > 0) & (c0 < k0)
        k = np.where(more, K, k0)
        c = np.where(more, full_c, c0)
        w = kernel(c, k)
        drawn = int(k.sum())
        changed = w != w_full
        lost = (w == 0) & (w_full > 0)
        sec.add(f"synthetic, --min-samples {k0}: samples drawn / plain K = {K}", f"{drawn / (n * K):.3f}",
                runs=1)
        sec.add(f"synthetic, --min-samples {k0}: problems whose weight differs from the plain run's / weight mass they "
                f"held there / mean abs difference", f"{changed.mean():.1%} / {w_full[changed].sum() / w_full.sum():.1%} / "
                f"{np.abs(w - w_full).mean():.4f}", runs=1)
        sec.add(f"synthetic, --min-samples {k0}: problems set to weight 0 that the plain run weighs > 0",
                f"{lost.mean():.1%}", runs=1)
        sec.add(f"synthetic, --min-samples {k0}: weight error, RMSE vs the true p(1-p) (plain run {rmse_full:.4f})",
                f"{float(np.sqrt(np.mean((w - w_true) ** 2))):.4f}", runs=1)


def paced(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "paced_cli", *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"paced {args[0]} failed:\n{r.stderr[-2000:]}")
    return r.stderr


def quickstart(sec: Section, ctx: Context) -> None:
    import polars as pl

    d = ctx.work / "adaptive"
    d.mkdir(parents=True, exist_ok=True)
    train = 1000 if ctx.quick else 6000
    subprocess.run([sys.executable, str(ROOT / "examples" / "task.py"), "--out", str(d / "data"), "--seed", "0",
                    "--train", str(train), "--test-per-digit", "10", "--retain", "10", "--order", "msb"],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, str(ROOT / "examples" / "train_tiny.py"), "--out", str(d / "models"), "--only", "student",
                    "--order", "msb", "--teacher-steps", "1000", "--student-layers", "1", "--student-hidden", "64",
                    "--threads", "1"], check=True, capture_output=True)
    problems, student = d / "data" / "train.parquet", d / "models" / "student"
    common = ["--problems", problems, "--model", student, "--samples", K, "--temperature", "1", "--max-new-tokens", "8",
              "--batch-size", "64", "--part-size", "2048"]
    runs = {"plain": ["--seed", "0"], "other seed": ["--seed", "1"], "adaptive": ["--seed", "0", "--min-samples", "4",
                                                                                 "--verifier", "exact"]}
    w, tokens, samples, drawn = {}, {}, {}, {}
    for name, extra in runs.items():
        out = d / name.replace(" ", "_")
        out.mkdir(exist_ok=True)
        paced("rollout", *common, *extra, "--out", out / "rollouts")
        paced("score", "--rollouts", out / "rollouts", "--problems", problems, "--out", out / "scores", "--verifier", "exact")
        paced("weight", "--scores", out / "scores", "--out", out / "w.parquet", "--normalize", "none")
        r = pl.read_parquet(out / "rollouts" / "part-*.parquet", columns=["problem_id", "sample_index", "completion_token_ids"])
        drawn[name] = r
        tokens[name] = int(r["completion_token_ids"].list.len().sum())
        samples[name] = r.height
        w[name] = pl.read_parquet(out / "w.parquet").select("problem_id", "weight").sort("problem_id")["weight"].to_numpy()
    n = len(w["plain"])
    import numpy as np

    label = f"1-layer msb student ({n:,} problems, K = {K})"
    same = drawn["adaptive"].join(drawn["plain"], on=["problem_id", "sample_index"], how="left", suffix="_plain")
    sec.add(f"{label}, --min-samples 4: samples equal to the plain seed-0 run's sample of the same problem and index",
            f"{(same['completion_token_ids'] == same['completion_token_ids_plain']).mean():.1%}", runs=1)
    sec.add(f"{label}, --min-samples 4: samples / response tokens drawn, over the plain run's",
            f"{samples['adaptive'] / samples['plain']:.3f} / {tokens['adaptive'] / tokens['plain']:.3f}", runs=1)
    for name in ("adaptive", "other seed"):
        diff = w[name] != w["plain"]
        what = "--min-samples 4, seed 0" if name == "adaptive" else "plain K = 8, seed 1 (sampling noise alone)"
        sec.add(f"{label}, {what}: problems whose weight differs from seed 0's plain run / mean abs difference / "
                f"weights > 0", f"{diff.mean():.1%} / {np.abs(w[name] - w['plain']).mean():.4f} / "
                f"{(w[name] > 0).sum():,} (plain {(w['plain'] > 0).sum():,})", runs=1)


def section(ctx: Context) -> Section:
    sec = Section("adaptive", "7. adaptive sampling")
    synthetic(sec, 20_000 if ctx.quick else 200_000)
    quickstart(sec, ctx)
    sec.notes.append(
        "--min-samples K0 draws K0 samples per problem and the other K - K0 only where 0 < c < K0. The synthetic rows "
        "apply the rule to the same draws as the plain run, so their differences are the rule's alone; so do the 1-layer msb "
        "student's real runs (every adaptive sample is the plain seed-0 run's), printed beside two plain runs that differ only in "
        "their seed.")
    return sec
