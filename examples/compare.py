"""Print the quickstart's comparison: greedy accuracy per difficulty for each model and budget.

    python examples/compare.py runs/quickstart [--seconds N]

Reads `<work>/eval_base` and `<work>/eval_<method>_<steps>` (their summary.parquet), the
weights and the distill train logs, prints a markdown table on stdout and writes it to
`<work>/report.md`. "all" is the accuracy over every held-out problem (each difficulty weighs
its number of problems); forgetting is the relative drop on the retention skill against the
base student.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
from pathlib import Path

import polars as pl

ORDER = ["base", "uniform", "hard-filter", "akl", "paced", "paced-two-stage"]


def runs(work: Path) -> list[tuple[str, int]]:
    """(method, steps) of every finished evaluation: base first, then each method by budget."""
    found = []
    for p in work.glob("eval_*"):
        if not (p / "summary.parquet").exists():
            continue
        name = p.name.removeprefix("eval_")
        method, _, steps = name.rpartition("_")
        found.append((method, int(steps)) if steps.isdigit() and method else (name, 0))
    return sorted(found, key=lambda r: (ORDER.index(r[0]) if r[0] in ORDER else len(ORDER), r[0], r[1]))


def accuracy_table(work: Path) -> list[str]:
    found = runs(work)
    summaries = {r: pl.read_parquet(work / ("eval_" + (f"{r[0]}_{r[1]}" if r[1] else r[0])) / "summary.parquet")
                 for r in found}
    first = summaries[found[0]]
    held = first.filter(~pl.col("retain"))["benchmark"].to_list()
    retain = first.filter(pl.col("retain"))["benchmark"].to_list()
    sizes = ", ".join(f"{b} {n}" for b, n in zip(first["benchmark"], first["problems"]))
    lines = [
        f"greedy accuracy (%) on held-out problems ({sizes})",
        "",
        "| model | steps | " + " | ".join(held) + " | all | " + " | ".join(f"{b} (retention)" for b in retain) + " |",
        "|---|---:|" + "---:|" * (len(held) + 1 + len(retain)),
    ]
    for (method, steps), s in summaries.items():
        rows = {r["benchmark"]: r for r in s.iter_rows(named=True)}
        h = s.filter(~pl.col("retain"))
        overall = (h["accuracy_mean"] * h["problems"]).sum() / h["problems"].sum()
        kept = []
        for b in retain:
            text = f"{rows[b]['accuracy_mean'] * 100:.1f}"
            if rows[b]["forgetting_pct"] is not None:
                text += f" (forgetting {rows[b]['forgetting_pct']:.1f} %)"
            kept.append(text)
        lines.append(f"| {method} | {steps or '-'} | " + " | ".join(f"{rows[b]['accuracy_mean'] * 100:.1f}" for b in held)
                     + f" | {overall * 100:.1f} | " + " | ".join(kept) + " |")
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
    lines += ["", "One seed shows what one student did, not whether Paced beats uniform: for that, the paired seeds "
              "and intervals of examples/reproduce.sh (docs/reproduce/report.md).", "", footer]
    text = "\n".join(lines)
    print(text)
    (args.work / "report.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
