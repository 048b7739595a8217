"""What every command shares: how a stage is run, and how failures become exit codes.

Exit codes (DESIGN.md): 0 success, 2 bad input or usage, 1 runtime failure. On success the
output path, alone, goes to stdout; everything else goes to stderr.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Callable, TypeVar

import typer

from schemas import InputError
from stages.common import console

C = TypeVar("C")


def run_stage(make_config: Callable[[], C], run: Callable[[C], Path]) -> None:
    try:
        config = make_config()
        out = run(config)
    except InputError as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted:[/] finished parts are kept; rerun the same command to resume",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as e:  # a runtime failure: say what happened, keep the traceback
        if os.environ.get("PACED_DEBUG") == "1":
            traceback.print_exc()
        else:
            console.print(traceback.format_exc(limit=-3), soft_wrap=True, markup=False)
        console.print(f"[bold red]failed:[/] {type(e).__name__}: {e}", soft_wrap=True)
        raise typer.Exit(1) from None
    sys.stdout.write(f"{out}\n")
    sys.stdout.flush()
