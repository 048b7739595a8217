"""The benchmark suite: one command, one markdown table.

    python -m bench                       # everything, over an hour on 2 cores (each section's time: bench/results.md)
    python -m bench --quick               # smaller models and data, about 5 minutes
    python -m bench --only rollout,weight # some sections (names below), --only may repeat
    python -m bench --only savings --task-dir runs/my-task

Sections: distill (1: throughput and memory vs TRL), storage (2: teacher-logit bytes and
truncation), floor (3: distance from a plain step), rollout (4), weight (5: reweighting cost),
savings (6: compute saved by weight-0 problems), adaptive (7: rollout --min-samples),
sweep (8: a 3 x 3 alpha/beta sweep against nine TRL runs), busy (9: a stage's speed beside one
other busy process), sparse (10: teacher logits as top-k, drawn tokens or both, at equal
bytes), sparse-steps (11: the drawn-token student's gap to dense against sequences per step),
sparse-seeds (12: section 10's primary comparison over replicates, with its interval),
sparse-trained (13: section 12 on an English-text teacher trained longer, of lower entropy).
Every figure is a ratio, or a number beside the floor it is compared with, measured side by
side in this run on this machine; each is the median of several runs after a warm-up, printed
with its spread. The table goes to
stdout and, with the date, machine and library versions, to `--out` (bench/results.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import common

SECTIONS = {
    "distill": ("bench.distill", "section"),
    "storage": ("bench.storage", "section"),
    "floor": ("bench.distill", "section_floor"),
    "rollout": ("bench.rollout", "section"),
    "weight": ("bench.weight", "section"),
    "savings": ("bench.savings", "section"),
    "adaptive": ("bench.adaptive", "section"),
    "sweep": ("bench.sweep", "section"),
    "busy": ("bench.busy", "section"),
    "sparse": ("bench.sparse", "section"),
    "sparse-steps": ("bench.sparse", "section_steps"),
    "sparse-seeds": ("bench.sparse", "section_seeds"),
    "sparse-trained": ("bench.sparse", "section_trained"),
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller models and data (about 5 minutes); for a smoke run")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help=f"run only these sections, comma-separated or repeated: {', '.join(SECTIONS)}")
    ap.add_argument("--out", type=Path, default=common.ROOT / "bench" / "results.md",
                    help="where the markdown report is written (default bench/results.md)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in every measurement (default 1: on a shared machine, more threads spin "
                         "against other jobs and timings vary tenfold); give the core count on a dedicated machine")
    ap.add_argument("--task-dir", type=Path, default=None,
                    help="section savings: a real task's problems.parquet, weights.parquet, sequences, teacher/ and student/")
    args = ap.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"--only {', '.join(unknown)}: no such section; use {', '.join(SECTIONS)}")
    if args.task_dir is not None and not args.task_dir.is_dir():
        ap.error(f"--task-dir {args.task_dir}: no such directory")
    if "distill" in names or "sweep" in names:
        missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
        if missing:
            ap.error(f"sections distill and sweep compare against TRL, and {', '.join(missing)} is not installed: "
                     f"pip install -e '.[bench]' (or leave it out with --only)")
    if args.threads < 1:
        ap.error(f"--threads {args.threads}: must be at least 1")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    common.set_threads(args.threads)
    started = time.perf_counter()
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    machine, versions = common.machine(), common.versions()
    sections: list[common.Section] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="paced-bench-") as work:
        ctx = common.Context(quick=args.quick, work=Path(work), task_dir=args.task_dir)
        for name in args.names:
            module, func = SECTIONS[name]
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            try:
                section = getattr(importlib.import_module(module), func)(ctx)
            except Exception as e:  # noqa: BLE001 - one failed section must not lose the others' results
                traceback.print_exc()
                section = common.Section(name, name)
                section.add("FAILED", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200])
                failed.append(name)
            section.seconds = time.perf_counter() - t
            print(f"bench: {name} {'FAILED' if name in failed else 'done'} in {section.seconds:.0f} s", file=sys.stderr, flush=True)
            sections.append(section)
    total = time.perf_counter() - started
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = common.render(sections)
    head = [
        f"# paced benchmarks{' (--quick)' if args.quick else ''}",
        "",
        f"- date: {when}",
        f"- command: `{' '.join(['python -m bench', *(sys.argv[1:] if argv is None else argv)])}`",
        f"- machine: {machine}; load average {load_end:.1f} at the end",
        f"- versions: {versions}",
        "- sections: " + ", ".join(f"{s.name} {s.seconds:.0f} s" for s in sections) + f"; total {total:.0f} s",
        "",
    ]
    report = "\n".join(head) + "\n" + table + "\n"
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(report)
    tmp.replace(args.out)
    print(f"bench: wrote {args.out}", file=sys.stderr)
    if failed:
        print(f"bench: section(s) {', '.join(failed)} failed (traceback above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
