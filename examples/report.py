"""The report of examples/reproduce.sh: tables over seeds and plots, as markdown.

    python examples/report.py runs/reproduce

Reads every `seed*/eval_<method>/summary.parquet`, the sweep's evals, the train logs and the
SNR artifact; writes `<work>/report.md`, `<work>/accuracy.png` and `<work>/training.png`.
Forgetting is computed against the same seed's base evaluation on the retention set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
from pathlib import Path

import polars as pl

DISTILL = [("base", "base student"), ("fkl", "forward KL"), ("hard_fkl", "hard-filter forward KL"), ("akl", "AKL"),
           ("paced_fkl", "Paced forward KL"), ("paced_two_stage", "Paced two-stage (FKL, then RKL)")]
SELF = [("base", "base student"), ("self_rkl", "reverse KL"), ("self_hard_rkl", "hard-filter reverse KL"),
        ("self_paced_rkl", "Paced reverse KL")]


def load(work: Path) -> pl.DataFrame:
    """One row per (seed, method, benchmark) with accuracy and the retain flag."""
    frames = []
    for summary in work.glob("seed*/eval_*/summary.parquet"):
        seed = int(summary.parent.parent.name.removeprefix("seed"))
        method = summary.parent.name.removeprefix("eval_")
        frames.append(pl.read_parquet(summary).select("benchmark", "accuracy_mean", "retain", "problems", "samples")
                      .with_columns(seed=pl.lit(seed), method=pl.lit(method)))
    return pl.concat(frames) if frames else pl.DataFrame()


def per_seed(df: pl.DataFrame) -> pl.DataFrame:
    """Per seed and method: accuracy per benchmark, the mean over held-out ones, forgetting."""
    held = df.filter(~pl.col("retain")).group_by("seed", "method").agg(mean=pl.col("accuracy_mean").mean())
    retain = df.filter(pl.col("retain")).select("seed", "method", retain=pl.col("accuracy_mean"))
    base = retain.filter(pl.col("method") == "base").select("seed", base_retain=pl.col("retain"))
    out = held.join(retain, on=["seed", "method"], how="left").join(base, on="seed", how="left")
    return out.with_columns(
        forgetting=pl.when(pl.col("base_retain") > 0)
        .then((pl.col("base_retain") - pl.col("retain")) / pl.col("base_retain") * 100)
        .otherwise(None)
    )


def ms(values: list[float], scale: float = 100.0) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = statistics.fmean(values) * scale
    s = statistics.pstdev(values) * scale if len(values) > 1 else 0.0
    return f"{m:.1f} ± {s:.1f}"


def method_table(df: pl.DataFrame, seeds: pl.DataFrame, methods: list[tuple[str, str]]) -> list[str]:
    benches = sorted(df.filter(~pl.col("retain"))["benchmark"].unique().to_list())
    lines = ["| method | " + " | ".join(benches) + " | mean | forgetting % |", "|---|" + "---:|" * (len(benches) + 2)]
    for key, label in methods:
        sub = df.filter(pl.col("method") == key)
        if sub.is_empty():
            continue
        cells = [ms(sub.filter(pl.col("benchmark") == b)["accuracy_mean"].to_list()) for b in benches]
        s = seeds.filter(pl.col("method") == key)
        forgetting = "-" if key == "base" else ms(s["forgetting"].to_list(), scale=1.0)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ms(s['mean'].to_list())} | {forgetting} |")
    return lines


def sweep_table(work: Path) -> list[str]:
    rows = {}
    for summary in (work / "sweep").glob("eval_a*_b*/summary.parquet"):
        a, b = summary.parent.name.removeprefix("eval_a").split("_b")
        s = pl.read_parquet(summary).filter(~pl.col("retain"))
        rows[(float(a), float(b))] = s["accuracy_mean"].mean()
    if not rows:
        return []
    alphas = sorted({a for a, _ in rows})
    betas = sorted({b for _, b in rows})
    lines = ["", "## alpha, beta sweep (Paced forward KL, one seed, same rollouts and scores)", "",
             "mean held-out accuracy (%); rows alpha, columns beta", "",
             "| alpha \\ beta | " + " | ".join(f"{b:g}" for b in betas) + " |", "|---|" + "---:|" * len(betas)]
    for a in alphas:
        lines.append(f"| {a:g} | " + " | ".join(f"{rows[(a, b)] * 100:.1f}" if (a, b) in rows else "-" for b in betas) + " |")
    return lines


def plots(work: Path, seeds: pl.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [(k, l) for k, l in DISTILL + SELF[1:] if not seeds.filter(pl.col("method") == k).is_empty()]
    fig, ax = plt.subplots(figsize=(10, 4))
    means = [statistics.fmean(seeds.filter(pl.col("method") == k)["mean"].to_list()) * 100 for k, _ in order]
    stds = [statistics.pstdev(seeds.filter(pl.col("method") == k)["mean"].to_list()) * 100 for k, _ in order]
    colors = ["#888" if k == "base" else "#c33" if "paced" in k else "#69c" for k, _ in order]
    ax.bar(range(len(order)), means, yerr=stds, color=colors, capsize=4)
    ax.set_xticks(range(len(order)), [l for _, l in order], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean held-out accuracy (%)")
    ax.set_title("accuracy by method (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(work / "accuracy.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    first = sorted(work.glob("seed*"))[0] if list(work.glob("seed*")) else None
    if first is not None:
        for k, label in order:
            log = first / k / "train_log.parquet"
            if log.exists():
                t = pl.read_parquet(log)
                ax.plot(t["step"], t["loss"].rolling_mean(25, min_samples=1), label=label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("weighted loss (rolling mean of 25)")
        ax.set_title(f"training curves ({first.name})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(work / "training.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    args = ap.parse_args()
    work = args.work
    df = load(work)
    seeds = per_seed(df)
    n_seeds = seeds["seed"].n_unique()
    samples = df["samples"][0]
    lines = [
        "# Paced in miniature: the paper's tables on 2 CPU cores",
        "",
        f"Generated by `bash examples/reproduce.sh` ({dt.date.today()}, {os.cpu_count()} cores, {platform.machine()}). "
        f"Accuracy in %, mean ± std over {n_seeds} seed(s) of the per-seed accuracy (each the mean over "
        f"{samples} samples per problem). Forgetting: relative drop on the retention skill against the base student.",
        "",
        "## Distillation (teacher -> student, forward-KL family)",
        "",
        *method_table(df, seeds, DISTILL),
        "",
        "## Self-distillation (the student, shown the reference solution, as its own teacher; reverse KL)",
        "",
        *method_table(df, seeds, SELF),
        *sweep_table(work),
        "",
        "## Plots",
        "",
        "![accuracy by method](accuracy.png)",
        "",
        "![pass rates and the weight curve](pass_rates.png)",
        "",
        "![training curves](training.png)",
        "",
    ]
    if (work / "snr.parquet").exists():
        snr = pl.read_parquet(work / "snr.parquet")
        per_problem = snr["estimator"][0] == "per-problem"
        what = ("the mean over the bin's problems of each problem's SNR over its K rollouts, with a 95% bootstrap "
                "interval; SNR - 1/K removes the noise floor of K rollouts" if per_problem else
                "the pooled statistic: one SNR over the bin's problems; SNR - 1/n removes the noise floor of a bin of n problems")
        debiased_name = "SNR - 1/K" if per_problem else "SNR - 1/n"
        lines += ["## Gradient SNR by pass rate (the paper's Figure 3)", "", "![SNR](snr.png)", "",
                  f"Estimator `{snr['estimator'][0]}`: {what} (see docs/artifacts.md).", "",
                  f"| bin | problems | mean p | SNR | 95% interval | normalised SNR | {debiased_name} | status |",
                  "|---|---:|---:|---:|---|---:|---:|---|"]

        def num(x, fmt):
            return "-" if x is None else format(x, fmt)

        for r in snr.iter_rows(named=True):
            interval = "-" if r["snr_ci_low"] is None else f"[{r['snr_ci_low']:.4g}, {r['snr_ci_high']:.4g}]"
            lines.append(f"| [{r['lo']:.1f}, {r['hi']:.1f}) | {r['problems']} | {num(r['mean_pass_rate'], '.2f')} | "
                         f"{num(r['snr'], '.4g')} | {interval} | {num(r['snr_normalized'], '.3f')} | "
                         f"{num(r['snr_debiased'], '.4g')} | {r['status']} |")
    plots(work, seeds)
    (work / "report.md").write_text("\n".join(lines) + "\n")
    print(work / "report.md")


if __name__ == "__main__":
    main()
