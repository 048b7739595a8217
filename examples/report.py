"""The report of examples/reproduce.sh: the regime map, as markdown.

    python examples/report.py runs/reproduce --primary "capacity paced uniform" --steps 2000

Reads what reproduce.sh wrote under WORK (per regime and seed: the base student's pass rates
on the training and test problems, the greedy evaluation of every method at every budget, the
training logs; per regime the SNR artifact) and writes WORK/report.md and WORK/accuracy.png.
In this order: the primary comparison as named before the run; each regime's preconditions
(is it what it claims?); the primary result; then every cell. Differences are paired by seed
(the same student, rollouts and test set), with a 95 % t-interval and the minimum detectable
effect of the design (about 80 % power, two-sided 5 %: the usual (t(0.975) + t(0.80)) sd / sqrt(n),
whose power is 79.5 % at 6 pairs).
"""

from __future__ import annotations

import argparse
import json
import datetime as dt
import math
import os
import platform
import re
import statistics
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from schemas.io import META_PROVENANCE  # noqa: E402
from stages.snr import describe_fit, fit_kernel, problems_path  # noqa: E402
from stages.stats import paired, t_quantile  # noqa: E402

# Each regime's label; main() adds the student's size, read from its config.
REGIMES = {"capacity": "capacity-limited", "learnable": "learnable"}
METHODS = {"uniform": "uniform FKL", "hard": "hard filter FKL", "akl": "AKL", "paced": "Paced FKL",
           "paced_post": "Paced FKL, posterior weights", "paced_2s": "Paced FKL → RKL (two-stage)",
           "paced_re": "Paced FKL, re-estimated"}
# What each regime must show before its results mean what its name says.
FLAWLESS = 0.98          # the teacher's greedy accuracy on every test difficulty
CAPACITY_ZERO = 0.25     # capacity: share of training problems the base student never solves (p = 0), at least
CAPACITY_FRONTIER = 0.10  # capacity: share on the frontier (0 < p < 1), at least
CAPACITY_REACH = 0.15    # capacity: uniform distillation's accuracy on the hardest difficulty, below, at the longest budget
LEARNABLE_REACH = 0.50   # learnable: the same accuracy, at least


def pts(x: float | None, sign: bool = False) -> str:
    """A share as accuracy points with one decimal."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x * 100:+.1f}" if sign else f"{x * 100:.1f}"


def interval(s: dict) -> str:
    return "-" if s["lo"] is None else f"[{pts(s['lo'], True)}, {pts(s['hi'], True)}]"


# Reading what reproduce.sh wrote.

def difficulty(problem_id: pl.Expr) -> pl.Expr:
    return problem_id.str.extract(r"-(\d+)d-", 1).cast(pl.Int32)


def group_of(p: pl.Expr) -> pl.Expr:
    return pl.when(p == 0).then(pl.lit("p = 0")).when(p == 1).then(pl.lit("p = 1")).otherwise(pl.lit("0 < p < 1"))


def seeds_of(work: Path, regime: str) -> list[int]:
    return sorted(int(d.name.removeprefix("seed")) for d in (work / regime).glob("seed*") if (d / ".done").exists())


def results(work: Path) -> pl.DataFrame:
    """One row per (regime, seed, method, budget, problem) with `correct`, the benchmark, whether it
    is a retention problem, its difficulty and the base student's pass-rate group on it."""
    frames = []
    for regime in REGIMES:
        for seed in seeds_of(work, regime):
            sdir = work / regime / f"seed{seed}"
            rates = pl.read_parquet(sdir / "test_rates" / "w_uniform.parquet").select(
                "problem_id", group=group_of(pl.col("pass_rate")))
            for e in sorted(sdir.glob("eval_*")):
                name = e.name.removeprefix("eval_")
                method, budget = ("base", 0) if name == "base" else (name.rsplit("_", 1)[0], int(name.rsplit("_", 1)[1]))
                retain = set(pl.read_parquet(e / "summary.parquet").filter(pl.col("retain"))["benchmark"].to_list())
                df = pl.read_parquet(e / "results", columns=["problem_id", "benchmark", "correct"])
                frames.append(df.join(rates, on="problem_id", how="left").with_columns(
                    regime=pl.lit(regime), seed=pl.lit(seed), method=pl.lit(method), budget=pl.lit(budget),
                    retain=pl.col("benchmark").is_in(list(retain)), digits=difficulty(pl.col("problem_id"))))
    return pl.concat(frames, how="diagonal_relaxed")


def per_seed(res: pl.DataFrame) -> pl.DataFrame:
    """Per (regime, seed, method, budget): headline (mean over all test problems), per difficulty, retention."""
    test = res.filter(~pl.col("retain"))
    keys = ["regime", "seed", "method", "budget"]
    out = test.group_by(keys).agg(headline=pl.col("correct").mean())
    by_d = test.group_by([*keys, "digits"]).agg(acc=pl.col("correct").mean()).pivot(
        on="digits", index=keys, values="acc")
    by_d = by_d.rename({c: f"d{c}" for c in by_d.columns if c not in keys})
    by_g = test.group_by([*keys, "group"]).agg(acc=pl.col("correct").mean()).pivot(on="group", index=keys, values="acc")
    retain = res.filter(pl.col("retain")).group_by(keys).agg(retain=pl.col("correct").mean())
    return out.join(by_d, on=keys).join(by_g, on=keys, how="left").join(retain, on=keys, how="left").sort(keys)


def train_rates(work: Path, regime: str, seed: int) -> pl.DataFrame:
    return pl.read_parquet(work / regime / f"seed{seed}" / "base" / "w_paced.parquet").with_columns(
        digits=difficulty(pl.col("problem_id")), group=group_of(pl.col("pass_rate")))


def student_size(work: Path, regime: str) -> str | None:
    """'L-layer, hidden-H student' from the first seed's student config, or None without one."""
    for seed in seeds_of(work, regime):
        path = work / regime / f"seed{seed}" / "models" / "student" / "config.json"
        if path.exists():
            c = json.loads(path.read_text())
            heads = c.get("num_attention_heads")
            window = c.get("sliding_window") if c.get("use_sliding_window") else None
            return (f"{c['num_hidden_layers']}-layer, hidden-{c['hidden_size']}"
                    + (f", {heads}-head" if heads and heads != 4 else "")
                    + (f", {window}-token window" if window else "") + " student")
    return None


def pretrained(model: Path) -> dict | None:
    """examples/train_tiny.py's record of a model (steps run, seconds), None for another model."""
    path = model / "train_config.json"
    return json.loads(path.read_text()) if path.exists() else None


def digit_range(work: Path, regime: str) -> str | None:
    """'problems of LO-HI digits': what the regime's first seed trained on."""
    for seed in seeds_of(work, regime):
        d = train_rates(work, regime, seed)["digits"]
        return f"problems of {d.min()}-{d.max()} digits"
    return None


def value(table: pl.DataFrame, column: str, **where) -> list[float]:
    t = table
    for k, v in where.items():
        t = t.filter(pl.col(k) == v)
    return t.sort("seed")[column].to_list() if column in t.columns else []


# The report.


def preconditions(work: Path, cells: pl.DataFrame, steps: int) -> tuple[list[str], dict]:
    lines, verdicts = ["## 1. Preconditions: is each regime what it claims?", ""], {}
    teacher = work / "shared" / "eval_teacher" / "summary.parquet"
    t = pl.read_parquet(teacher).filter(~pl.col("retain")).sort("benchmark")
    worst = t["accuracy_mean"].min()
    meta = pq.read_schema(teacher).metadata or {}
    options = json.loads(meta.get(META_PROVENANCE, b"{}")).get("options", {})
    reads = (" reading each problem's reference solution (`--context reference`, the paper's privileged-context "
             "teacher; the students never see it)") if options.get("context") == "reference" else ""
    record = pretrained(work / "teacher" / "teacher")
    trained = f" It pretrained for {record['steps_run']:,} steps ({record['train_seconds']:.0f} s)." if record else ""
    lines += [
        f"**The teacher** (shared by both regimes){reads}, greedy accuracy on the test problems: "
        + ", ".join(f"{b} {pts(a)} %" for b, a in zip(t["benchmark"], t["accuracy_mean"])) + "." + trained + " "
        + (f"Flawless (at least {pts(FLAWLESS)} % on every difficulty): **holds**." if worst >= FLAWLESS
           else f"Flawless (at least {pts(FLAWLESS)} % on every difficulty): **does not hold** (worst {pts(worst)} %)."),
        "",
    ]
    for regime, label in REGIMES.items():
        seeds = seeds_of(work, regime)
        if not seeds:
            continue
        rows = []
        for s in seeds:
            r = train_rates(work, regime, s)
            hardest = r["digits"].max()
            share = lambda df, g: df.filter(pl.col("group") == g).height / max(df.height, 1)  # noqa: E731
            h = r.filter(pl.col("digits") == hardest)
            reach = value(cells, f"d{hardest}", regime=regime, method="uniform", budget=steps, seed=s)
            base_h = value(cells, f"d{hardest}", regime=regime, method="base", budget=0, seed=s)
            student = pretrained(work / regime / f"seed{s}" / "models" / "student")
            rows.append({"seed": s, "steps": student["steps_run"] if student else None, "zero": share(r, "p = 0"), "frontier": share(r, "0 < p < 1"), "one": share(r, "p = 1"),
                         "h_zero": share(h, "p = 0"), "h_frontier": share(h, "0 < p < 1"),
                         "base_h": base_h[0] if base_h else None, "reach": reach[0] if reach else None,
                         "hardest": hardest})
        hardest = rows[0]["hardest"]
        lines += [f"**{label}** ({len(seeds)} seeds). Training problems by the base student's pass rate (K samples at "
                  f"temperature 1), and the hardest difficulty ({hardest} digits) before and after uniform distillation "
                  f"for {steps} steps (greedy, test):", "",
                  "| seed | student's pretraining steps | p = 0 | 0 < p < 1 | p = 1 | "
                  f"{hardest}d: p = 0 | {hardest}d: 0 < p < 1 | {hardest}d base | {hardest}d uniform at {steps} |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for x in rows:
            lines.append(f"| {x['seed']} | {'-' if x['steps'] is None else format(x['steps'], ',')} | {pts(x['zero'])} | {pts(x['frontier'])} | {pts(x['one'])} | {pts(x['h_zero'])} | "
                         f"{pts(x['h_frontier'])} | {pts(x['base_h'])} | {pts(x['reach'])} |")
        zero = statistics.fmean(x["zero"] for x in rows)
        frontier = statistics.fmean(x["frontier"] for x in rows)
        reach = [x["reach"] for x in rows if x["reach"] is not None]
        reach_mean = statistics.fmean(reach) if reach else float("nan")
        if regime == "capacity":
            checks = [(f"p = 0 on at least {pts(CAPACITY_ZERO)} % of the training problems", zero >= CAPACITY_ZERO, pts(zero)),
                      (f"a frontier (0 < p < 1) of at least {pts(CAPACITY_FRONTIER)} %", frontier >= CAPACITY_FRONTIER,
                       pts(frontier)),
                      (f"uniform distillation leaves {hardest} digits below {pts(CAPACITY_REACH)} % at {steps} steps",
                       reach_mean < CAPACITY_REACH, pts(reach_mean))]
        else:
            checks = [(f"uniform distillation takes {hardest} digits to at least {pts(LEARNABLE_REACH)} % at {steps} steps",
                       reach_mean >= LEARNABLE_REACH, pts(reach_mean))]
        ok = all(c[1] for c in checks)
        verdicts[regime] = ok
        lines += ["", "Preconditions (means over seeds): " + "; ".join(
            f"{what}: {got} % → **{'holds' if held else 'does not hold'}**" for what, held, got in checks) + ".", "",
            f"So this regime **{'is' if ok else 'is not'}** what its name claims"
            + ("." if ok else "; read its results as a regime of its own, not as a test of the paper's premise."), ""]
    return lines, verdicts


def primary_section(cells: pl.DataFrame, primary: list[str], steps: int, verdicts: dict) -> list[str]:
    regime, method, base = primary
    seeds = sorted(set(value(cells, "seed", regime=regime, method=method, budget=steps))
                   & set(value(cells, "seed", regime=regime, method=base, budget=steps)))
    a = cells.filter((pl.col("regime") == regime) & (pl.col("budget") == steps))
    m = {r["seed"]: r["headline"] for r in a.filter(pl.col("method") == method).iter_rows(named=True)}
    u = {r["seed"]: r["headline"] for r in a.filter(pl.col("method") == base).iter_rows(named=True)}
    diffs = [m[s] - u[s] for s in seeds]
    st = paired(diffs)
    lines = ["## 2. The primary result", "",
             f"| seed | {METHODS.get(method, method)} | {METHODS.get(base, base)} | difference |", "|---:|---:|---:|---:|"]
    lines += [f"| {s} | {pts(m[s])} | {pts(u[s])} | {pts(d, True)} |" for s, d in zip(seeds, diffs)]
    if st["n"] < 2:
        return lines + ["", f"Only {st['n']} seed(s): no interval."]
    lines += ["", f"Mean difference {pts(st['mean'], True)} points, 95 % t-interval {interval(st)} ({st['n']} paired seeds, "
              f"sd {pts(st['sd'])}); the smallest effect this design detects with about 80 % power is {pts(st['mde'])} points.",
              ""]
    sign = ("Paced is ahead" if st["lo"] > 0 else "Paced is behind" if st["hi"] < 0 else
            "the interval contains 0: no difference is shown either way")
    lines.append(f"Plainly: in the {REGIMES[regime]} regime at {steps} steps, {sign}"
                 + ("" if verdicts.get(regime) else " (and the regime's preconditions do not hold, see section 1)") + ".")
    return lines + [""]


def map_section(cells: pl.DataFrame, res: pl.DataFrame, steps: int) -> list[str]:
    res_sizes = (res.filter((pl.col("method") == "base") & ~pl.col("retain"))
                 .group_by("regime", "seed", "group").agg(n=pl.len()))
    lines = ["## 3. Every cell", "",
             "Headline: greedy accuracy over all test problems (mean over seeds, in %); per difficulty the same on its "
             "problems; groups: the test problems by the base student's pass rate on them; retain: the retention skill "
             "(copying), which the base student has and distillation does not train. Each method's difference from "
             "uniform is paired by seed.", ""]
    for regime, label in REGIMES.items():
        r = cells.filter(pl.col("regime") == regime)
        if r.is_empty():
            continue
        # The columns this regime has values in (the cells of every regime share one table).
        digits = sorted(int(c[1:]) for c in r.columns if re.fullmatch(r"d\d+", c) and r[c].is_not_null().any())
        groups = [g for g in ("p = 0", "0 < p < 1", "p = 1") if g in r.columns and r[g].is_not_null().any()]
        lines += [f"### {label}", "",
                  "| budget | method | headline | − uniform, 95 % interval | MDE | "
                  + " | ".join(f"{d}d" for d in digits) + " | " + " | ".join(groups) + " | retain |",
                  "|---:|---|---:|---|---:|" + "---:|" * (len(digits) + len(groups) + 1)]
        budgets = sorted(b for b in r["budget"].unique().to_list() if b > 0)
        for b in [0, *budgets]:
            for method in (["base"] if b == 0 else list(METHODS)):
                c = r.filter((pl.col("budget") == b) & (pl.col("method") == method))
                if c.is_empty():
                    continue
                diff = "-"
                mde = "-"
                if b and method != "uniform":
                    u = {x["seed"]: x["headline"] for x in r.filter((pl.col("budget") == b) & (pl.col("method") == "uniform"))
                         .iter_rows(named=True)}
                    d = [x["headline"] - u[x["seed"]] for x in c.iter_rows(named=True) if x["seed"] in u]
                    st = paired(d)
                    diff = f"{pts(st['mean'], True)} {interval(st)}"
                    mde = pts(st["mde"])

                def mean(col: str) -> str:
                    vals = [v for v in c[col].to_list() if v is not None] if col in c.columns else []
                    return pts(statistics.fmean(vals)) if vals else "-"

                lines.append(f"| {b or '-'} | {METHODS.get(method, 'base student')} | {mean('headline')} | {diff} | {mde} | "
                             + " | ".join(mean(f"d{d}") for d in digits) + " | "
                             + " | ".join(mean(g) for g in groups) + f" | {mean('retain')} |")
        sizes = res_sizes.filter(pl.col("regime") == regime)
        lines += ["", "Test problems per group (mean over seeds): " + ", ".join(
            f"{g} {sizes.filter(pl.col('group') == g)['n'].mean() or 0:,.0f}" for g in groups) + ".", ""]
    return lines


def stability_section(res: pl.DataFrame) -> list[str]:
    """Do neighbouring budgets of one run agree? The share of test problems with the same greedy
    verdict at two successive budgets (mean over seeds), and the headline's largest fall."""
    lines = ["### Neighbouring budgets", "",
             "Share of the test problems with the same verdict at two successive budgets of one run, mean over "
             "seeds (low values mark a run still learning fast, or an unstable one); and the largest fall of the "
             "headline between them over the seeds, in points.", ""]
    test = res.filter(~pl.col("retain") & (pl.col("budget") > 0))
    for regime, label in REGIMES.items():
        r = test.filter(pl.col("regime") == regime)
        if r.is_empty():
            continue
        budgets = sorted(r["budget"].unique().to_list())
        pairs = list(zip(budgets, budgets[1:]))
        lines += [f"**{label}**", "", "| method | " + " | ".join(f"{a} → {b}" for a, b in pairs) + " |",
                  "|---|" + "---|" * len(pairs)]
        for method in METHODS:
            m = r.filter(pl.col("method") == method)
            if m.is_empty():
                continue
            cells = []
            for a, b in pairs:
                x = m.filter(pl.col("budget") == a).select("seed", "problem_id", ca="correct")
                y = m.filter(pl.col("budget") == b).select("seed", "problem_id", cb="correct")
                j = x.join(y, on=["seed", "problem_id"])
                if j.is_empty():  # a method evaluated at fewer budgets (the two-stage schedule: the longest only)
                    cells.append("-")
                    continue
                per_seed = j.group_by("seed").agg(same=(pl.col("ca") == pl.col("cb")).mean(),
                                                  fall=pl.col("ca").mean() - pl.col("cb").mean())
                cells.append(f"{per_seed['same'].mean():.3f} (fall ≤ {max(per_seed['fall'].max(), 0) * 100:.1f})")
            if any(c != "-" for c in cells):
                lines.append(f"| {METHODS[method]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def weighting_section(work: Path, steps: int) -> list[str]:
    lines = ["## 4. What each weighting did", "",
             "From the training logs (longest budget; paced_re sums its rounds, the two-stage schedule its two stages, "
             "and gives the mean of their trained problems): problems with weight > 0, the share of "
             "the training problems ever visited, epochs per trained problem, and the mean weight per step (the loss "
             "scale against uniform). Means over seeds.", ""]
    for regime, label in REGIMES.items():
        seeds = seeds_of(work, regime)
        if not seeds:
            continue
        lines += [f"**{label}**", "", "| method | trained problems | visited | epochs per trained problem | mean weight per step |",
                  "|---|---:|---:|---:|---:|"]
        for method in METHODS:
            trained, visited, epochs, weight = [], [], [], []
            for s in seeds:
                sdir = work / regime / f"seed{s}"
                two = sdir / "paced_2s" / "stage2" / "train_log.parquet"
                logs = (sorted((sdir / "paced_re").glob("round*/train_log.parquet"), key=lambda p: int(p.parent.name[5:]))
                        if method == "paced_re" else [sdir / "paced" / "train_log.parquet", two]
                        if method == "paced_2s" else [sdir / method / "train_log.parquet"])
                # paced_re's first round, when reproduce.sh took it from paced's run (its export)
                first_from_paced = method == "paced_re" and logs and not (sdir / "paced_re" / "round1").exists()
                if first_from_paced:
                    logs.insert(0, sdir / "paced" / "train_log.parquet")
                if not logs or not all(p.exists() for p in logs):
                    continue
                total = pl.read_parquet(sdir / "base" / "w_uniform.parquet").height
                w = {"uniform": "w_uniform", "akl": "w_uniform", "hard": "w_hard", "paced": "w_paced",
                     "paced_post": "w_post"}.get(method)
                if w:
                    trained.append(pl.read_parquet(sdir / "base" / f"{w}.parquet").filter(pl.col("weight") > 0).height)
                else:
                    rounds = ([sdir / "base", sdir / "paced_2s" / "rates"] if method == "paced_2s" else
                              [sdir / "base"] + sorted((sdir / "paced_re").glob("rates*"), key=lambda p: int(p.name[5:])))
                    trained.append(statistics.fmean(pl.read_parquet(p / "w_paced.parquet").filter(pl.col("weight") > 0).height
                                                    for p in rounds))
                frames = [pl.read_parquet(p) for p in logs]
                if method == "paced_2s":  # its first stage: the paced run up to where the second starts
                    frames[0] = frames[0].filter(pl.col("step") <= steps - frames[1].height)
                elif first_from_paced:  # paced's first round: as many steps as each later round
                    frames[0] = frames[0].filter(pl.col("step") <= frames[1].height)
                log = pl.concat(frames)
                visited.append(min(sum(f["visited"].max() for f in frames), total) / total)
                epochs.append(log["problems"].sum() / max(trained[-1], 1))
                weight.append(log["mean_weight"].mean())
            if trained:
                note = (" (mean over rounds)" if method == "paced_re" else " (mean over stages)" if method == "paced_2s"
                        else "")
                lines.append(f"| {METHODS[method]} | {statistics.fmean(trained):.0f}{note} | "
                             f"{pts(statistics.fmean(visited))} %"
                             f"{' (at most; per-round counts summed)' if method in ('paced_re', 'paced_2s') else ''} | "
                             f"{statistics.fmean(epochs):.1f} | {statistics.fmean(weight):.2f} |")
        lines.append("")
    return lines


def snr_section(work: Path) -> list[str]:
    lines = ["## 5. Gradient SNR by pass rate (the paper's Figure 3), per regime", "",
             "`paced snr` on the first seed's base student: each problem's SNR at lm_head over its K rollouts (forward KL "
             "on the teacher's logits), averaged per pass-rate bin, normalised by the largest bin mean; 95 % bootstrap "
             "intervals (see docs/artifacts.md). Beside it, the median SNR_i of each bin (from the per-problem values "
             "`paced snr` writes beside its table), normalised the same way: a few problems whose K rollouts give "
             "near-identical gradients have SNR_i in the millions and decide a bin's mean, not its median.", ""]
    for regime, label in REGIMES.items():
        path = work / regime / "snr" / "snr.parquet"
        if not path.exists():
            continue
        snr = pl.read_parquet(path)
        fit = fit_kernel(snr.to_dicts())
        lines += [f"**{label}**", "", f"![SNR, {regime}](snr_{regime}.png)", "",
                  f"The Beta kernel p^α (1−p)^β fitted to these bin means (`paced snr --fit`: weighted least squares on "
                  f"log(SNR − 1/K) over the bins inside (0, 1)): {describe_fit(fit)}.", "",
                  "| bin | problems | mean p | SNR (mean) | 95 % interval | normalised | median SNR_i | median, normalised "
                  "| status |", "|---|---:|---:|---:|---|---:|---:|---:|---|"]

        def num(x, fmt):
            return "-" if x is None else format(x, fmt)

        per_problem = problems_path(path)
        medians = ({} if not per_problem.exists() else dict(
            pl.read_parquet(per_problem).filter(pl.col("snr").is_not_null()).group_by("bin").agg(pl.col("snr").median()).iter_rows()))
        top = max(medians.values(), default=None)
        for x in snr.iter_rows(named=True):
            ci = "-" if x["snr_ci_low"] is None else f"[{x['snr_ci_low']:.4g}, {x['snr_ci_high']:.4g}]"
            med = medians.get(x["bin"])
            close = "]" if x["bin"] == snr.height - 1 else ")"  # the last bin holds p = 1
            lines.append(f"| [{x['lo']:.1f}, {x['hi']:.1f}{close} | {x['problems']} | {num(x['mean_pass_rate'], '.2f')} | "
                         f"{num(x['snr'], '.4g')} | {ci} | {num(x['snr_normalized'], '.3f')} | {num(med, '.4g')} | "
                         f"{num(med / top if med is not None and top else None, '.3f')} | {x['status']} |")
        lines.append("")
    return lines


def plot(work: Path, cells: pl.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = [r for r in REGIMES if not cells.filter(pl.col("regime") == r).is_empty()]
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.5 * len(regimes), 4), squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        r = cells.filter(pl.col("regime") == regime)
        base = statistics.fmean(r.filter(pl.col("method") == "base")["headline"].to_list()) * 100
        for method, label in METHODS.items():
            c = r.filter(pl.col("method") == method).group_by("budget").agg(
                m=pl.col("headline").mean() * 100, s=pl.col("headline").std() * 100).sort("budget")
            if c.is_empty():
                continue
            ax.errorbar([0, *c["budget"].to_list()], [base, *c["m"].to_list()], yerr=[0, *c["s"].fill_null(0).to_list()],
                        label=label, capsize=3, marker="o", lw=2.2 if "paced" in method else 1.2)
        ax.set_title(REGIMES[regime])
        ax.set_xlabel("distillation steps")
        ax.set_ylabel("greedy test accuracy (%), mean ± sd over seeds")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(work / "accuracy.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--primary", default="capacity paced uniform", help="regime, method, baseline")
    ap.add_argument("--steps", type=int, required=True, help="the longest budget (the primary comparison's)")
    ap.add_argument("--seconds", type=int, default=None,
                    help="the run's wall time, for the header (summed over its invocations, when resumed)")
    ap.add_argument("--invocations", type=int, default=1, help="how many invocations of reproduce.sh made the run")
    args = ap.parse_args()
    work, primary = args.work, args.primary.split()
    if len(primary) != 3 or primary[0] not in REGIMES or primary[1] not in METHODS or primary[2] not in METHODS:
        ap.error(f"--primary {args.primary!r}: 'REGIME METHOD BASELINE', regimes {list(REGIMES)}, methods {list(METHODS)}")
    for regime in REGIMES:
        about = [x for x in (student_size(work, regime), digit_range(work, regime)) if x]
        if about:
            REGIMES[regime] = f"{REGIMES[regime]} ({'; '.join(about)})"
    res = results(work)
    cells = per_seed(res)
    pre, verdicts = preconditions(work, cells, args.steps)
    took = (f", {args.seconds / 60:.0f} minutes" + (f" of wall time over {args.invocations} invocations (resumed or repeated)"
                                                   if args.invocations > 1 else "")) if args.seconds else ""
    lines = [
        "# Paced in miniature: a regime map",
        "",
        f"Generated by `bash examples/reproduce.sh` ({dt.date.today()}, {os.cpu_count()} cores, {platform.machine()}"
        f"{took}). Accuracy in %, greedy (one answer per problem), on held-out problems of the difficulties each "
        "regime trains on.",
        "",
        "## 0. The primary comparison, named before the run",
        "",
        f"Regime **{primary[0]}**, {METHODS[primary[1]]} − {METHODS[primary[2]]}, headline accuracy (all test problems) "
        f"at the longest budget ({args.steps} steps), paired by seed, 95 % t-interval. Everything else is secondary.",
        "",
        *pre,
        *primary_section(cells, primary, args.steps, verdicts),
        *map_section(cells, res, args.steps),
        "![accuracy by budget](accuracy.png)",
        "",
        *stability_section(res),
        *weighting_section(work, args.steps),
        *snr_section(work),
    ]
    plot(work, cells)
    (work / "report.md").write_text("\n".join(lines) + "\n")
    print(work / "report.md")


if __name__ == "__main__":
    main()
