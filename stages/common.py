"""What several stages share: the stderr console, progress bars and summary tables."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
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
console = Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def progress(description: str, total: int, unit: str = "items") -> Iterator[Progress]:
    """One rich progress bar with throughput and ETA, on stderr."""
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
        disable=os.environ.get("PACED_NO_PROGRESS") == "1",
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
