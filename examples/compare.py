"""Print the quickstart's comparison: accuracy per benchmark for each model, and forgetting.

    python examples/compare.py runs/quickstart [--seconds N]

Reads `<work>/eval_<method>/summary.parquet` (base first, then the others in the order
found: uniform, paced, ...), the weights and the distill train logs, prints a markdown table
on stdout and writes it to `<work>/report.md`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
from pathlib import Path

import polars as pl

ORDER = ["base", "uniform", "hard-filter", "akl", "paced", "paced-two-stage"]


def methods(work: Path) -> list[str]:
    found = [p.name.removeprefix("eval_") for p in work.glob("eval_*") if (p / "summary.parquet").exists()]
    return sorted(found, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))


def cell(row: dict) -> str:
    return f"{row['accuracy_mean'] * 100:.1f} ± {row['accuracy_std'] * 100:.1f}"


def accuracy_table(work: Path) -> list[str]:
    names = methods(work)
    summaries = {m: pl.read_parquet(work / f"eval_{m}" / "summary.parquet") for m in names}
    benchmarks = summaries[names[0]]["benchmark"].to_list()
    samples = summaries[names[0]]["samples"][0]
    lines = [
        f"accuracy (%) on held-out problems, mean ± std over {samples} samples per problem",
        "",
        "| benchmark | problems | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for b in benchmarks:
        rows = {m: s.filter(pl.col("benchmark") == b).row(0, named=True) for m, s in summaries.items()}
        first = rows[names[0]]
        label = b + (" (retention)" if first["retain"] else "")
        cells = []
        for m in names:
            text = cell(rows[m])
            if rows[m]["retain"] and rows[m]["forgetting_pct"] is not None:
                text += f" (forgetting {rows[m]['forgetting_pct']:.1f} %)"
            cells.append(text)
        lines.append(f"| {label} | {first['problems']} | " + " | ".join(cells) + " |")
    held_out = [b for b in benchmarks if not summaries[names[0]].filter(pl.col("benchmark") == b)["retain"][0]]
    means = []
    for m in names:
        s = summaries[m].filter(pl.col("benchmark").is_in(held_out))
        means.append(f"{s['accuracy_mean'].mean() * 100:.1f}")
    lines.append("| mean over difficulties | | " + " | ".join(means) + " |")
    return lines


def weights_lines(work: Path) -> list[str]:
    path = work / "weights_paced.parquet"
    if not path.exists():
        return []
    w = pl.read_parquet(path)
    n = w.height
    unsolved = w.filter(pl.col("pass_rate") == 0).height
    mastered = w.filter(pl.col("pass_rate") == 1).height
    frontier = n - unsolved - mastered
    return [
        "",
        f"student pass rates on {n:,} training problems: {unsolved:,} unsolved (p = 0), "
        f"{frontier:,} at the frontier (0 < p < 1), {mastered:,} mastered (p = 1); Paced trains on "
        f"the {frontier:,} ({frontier / n:.0%}), uniform on all.",
    ]


def training_lines(work: Path) -> list[str]:
    out = []
    for log in sorted(work.glob("student_*/train_log.parquet")):
        t = pl.read_parquet(log)
        out.append(
            f"- {log.parent.name.removeprefix('student_')}: {t.height} steps, weighted loss "
            f"{t['loss'][0]:.4f} -> {t['loss'][-1]:.4f}, {t['seconds'].sum():.0f} s"
        )
    return ["", "distillation:", *out] if out else []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--seconds", type=int, default=None, help="wall time of the whole run, to report")
    args = ap.parse_args()
    lines = accuracy_table(args.work) + weights_lines(args.work) + training_lines(args.work)
    machine = f"{os.cpu_count()} cores, {platform.machine()}"
    stamp = dt.datetime.now().strftime("%Y-%m-%d")
    footer = f"{stamp}, {machine}" + (f", {args.seconds} s in all" if args.seconds is not None else "")
    lines += ["", footer]
    text = "\n".join(lines)
    print(text)
    (args.work / "report.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
