"""The accuracy table of a recipe: one column per evaluated model, one row per benchmark.

    python examples/recipes/report.py base=runs/x/eval/base "Paced FKL"=runs/x/eval/stage1 ...

Each argument is NAME=DIR, DIR an `paced eval --out`. Prints a markdown table on stdout:
accuracy (%) as mean ± std over sample indices, the gain over the first column, and for
retention benchmarks (`--retain`) the forgetting the eval computed against its baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl


def main(argv: list[str]) -> int:
    if not argv or any("=" not in a for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    runs = [a.split("=", 1) for a in argv]
    summaries = {name: pl.read_parquet(Path(d) / "summary.parquet") for name, d in runs}
    names = list(summaries)
    first = summaries[names[0]]
    samples = first["samples"][0]
    lines = [
        f"accuracy (%), mean ± std over {samples} samples per problem",
        "",
        "| benchmark | problems | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for bench in first["benchmark"].to_list():
        rows = {}
        for name, s in summaries.items():
            hit = s.filter(pl.col("benchmark") == bench)
            rows[name] = hit.row(0, named=True) if hit.height else None
        base = rows[names[0]]
        cells = []
        for name in names:
            r = rows[name]
            if r is None:
                cells.append("-")
                continue
            text = f"{r['accuracy_mean'] * 100:.1f} ± {r['accuracy_std'] * 100:.1f}"
            if name != names[0]:
                text += f" ({(r['accuracy_mean'] - base['accuracy_mean']) * 100:+.1f})"
            if r["retain"] and r.get("forgetting_pct") is not None:
                text += f", forgetting {r['forgetting_pct']:.1f} %"
            cells.append(text)
        label = bench + (" (retention)" if base["retain"] else "")
        lines.append(f"| {label} | {base['problems']} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
