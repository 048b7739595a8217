"""What several stages share: the stderr console, progress bars and summary tables."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# stdout carries only the output path, so shell pipelines can capture it; all else is stderr.
# markup off: a path, prompt or benchmark name with [brackets] (`[/INST]`) is printed as it is;
# the few styled lines ask for markup themselves (`notice`, the CLI's errors) and escape what they quote.
console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def notice(kind: str, message: str) -> None:
    """A `warning:` or `note:` line, its kind in yellow; `message` is printed as it is."""
    console.print(f"[yellow]{kind}:[/] {escape(message)}", markup=True, soft_wrap=True)


@contextmanager
def progress(description: str, total: int, unit: str = "items", *, shown: bool = True) -> Iterator[Progress]:
    """One rich progress bar with throughput and ETA, on stderr (not `shown`: counted, never drawn,
    as in the processes of a launch other than the main one)."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not shown or os.environ.get("PACED_NO_PROGRESS") == "1",
    )
    with bar:
        bar.add_task(description, total=total, rate="")
        yield bar


def advance(bar: Progress, n: int, unit: str) -> None:
    task = bar.tasks[0]
    bar.advance(task.id, n)
    speed = task.speed
    bar.update(task.id, rate=f"{speed:,.1f} {unit}/s" if speed else "")


def summary_table(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


MAX_SHARDS = 99_999  # shard-IIIII-of-NNNNN


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`--shard I/N` -> (I, N), checked; None when not sharded."""
    from schemas import InputError

    if text is None:
        return None
    import re

    m = re.fullmatch(r"([0-9]+)/([0-9]+)", text)  # ASCII digits only (int() takes " 1" and other scripts' digits)
    if m is None:
        raise InputError(f"--shard {text}: write it as I/N, e.g. 0/8 for the first of 8 shards")
    i, n = int(m.group(1)), int(m.group(2))
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard {text}: need 0 <= I < N (shards are numbered from 0)")
    if n > MAX_SHARDS:
        raise InputError(f"--shard {text}: at most {MAX_SHARDS:,} shards (their folders are numbered with five digits)")
    return i, n


def shard_of(problem_id: str, count: int) -> int:
    """The shard a problem belongs to: a stable hash, the same on every machine and version."""
    import hashlib

    return int.from_bytes(hashlib.sha256(problem_id.encode()).digest()[:8], "little") % count


def select_shard(frame, shard: tuple[int, int] | None):
    """The rows of `frame` (with a problem_id column) that belong to `shard`."""
    import polars as pl

    if shard is None:
        return frame
    i, n = shard
    return frame.filter(pl.col("problem_id").map_elements(lambda p: shard_of(p, n), return_dtype=pl.Int64) == i)


def shard_out(out, shard: tuple[int, int] | None, schema, overwrite: bool = False):
    """Where a job of `schema` writes: --out itself, or its shard's directory inside it (--out
    then holds that job's shards alone; the job makes it with its shard: `schemas.Job`)."""
    from pathlib import Path

    from schemas.io import shard_name

    out = Path(out)
    if shard is None:
        return out
    from schemas import InputError
    from schemas.outputs import JOB_FILE, check_shard_root, record_path, refuse_link

    if out.is_symlink() and not out.exists():
        raise InputError(f"--out {out}: is a broken symbolic link; remove it or give another path")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; with --shard, --out is the directory that holds every shard")
    if record_path(out, JOB_FILE):
        raise InputError(f"--out {out}: holds an unsharded job; give the shards a directory of their own")
    if overwrite:
        refuse_link(out, "--out")
    if not out.exists() and not out.parent.is_dir():
        raise InputError(f"--out {out}: parent directory {out.parent} does not exist or is not a directory; create it first")
    check_shard_root(out, schema.name, shard[1])
    return out / shard_name(*shard)
