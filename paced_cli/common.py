"""What every command shares: how a stage is run, and how failures become exit codes.

Exit codes: 0 success, 2 bad input or usage, 1 runtime failure. On success the
output path, alone, goes to stdout; everything else goes to stderr.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Callable, TypeVar

import typer
from rich.markup import escape

from schemas import InputError
from schemas.jobs import abandoned_on_failure
from stages.common import console

C = TypeVar("C")
_WHERE_TO_WRITE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES)
# A path of the wrong shape: a file where a directory is expected or the reverse, a link that
# loops, a name too long. Always the user's to fix, wherever a stage meets it (stages check
# the paths they know first, with a better message; this names the rest).
_PATH_SHAPE = (errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG)


def _interrupt(signum, frame):  # noqa: ARG001
    # SIGTERM (a scheduler's stop, `kill`) takes the same clean path as Ctrl-C: parts already
    # written are complete by construction, the lock is released, and the user is told how
    # to resume.
    raise KeyboardInterrupt


def command_line(ctx: typer.Context | None) -> str:
    """The command as the user could retype it: its name and every non-default option."""
    if ctx is None:
        return shlex.join(["paced", *sys.argv[1:]])
    parts = ["paced", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if not param.opts or not param.opts[0].startswith("-") or value is None or value == param.default or value is False:
            continue
        flag = max(param.opts, key=len)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            parts += [flag] if v is True else [flag, str(v)]
    return shlex.join(parts)


def run_stage(make_config: Callable[[], C], run: Callable[..., Path], ctx: typer.Context | None = None) -> None:
    """Build the config, run the stage with the command line (for its provenance), print the
    output path; every failure becomes its exit code and message."""
    signal.signal(signal.SIGTERM, _interrupt)
    command = command_line(ctx)
    try:
        config = make_config()
        with abandoned_on_failure():  # a run refused or failed mid-job leaves a new or empty --out as it was
            out = run(config, command)
    except InputError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True, markup=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted:[/] finished parts and checkpoints are kept; rerun the same "
            "command to resume (for distill, add --resume)",
            soft_wrap=True, markup=True,
        )
        raise typer.Exit(130) from None
    except OSError as e:
        if e.errno in _PATH_SHAPE:
            console.print(
                f"[bold red]error:[/] {escape(str(e.filename or 'a path'))}: {e.strerror}; check the path "
                f"(a file where a directory is expected, or the reverse, or a symbolic link that loops)",
                soft_wrap=True, markup=True,
            )
            raise typer.Exit(2) from None
        if e.errno not in _WHERE_TO_WRITE:
            raise
        # The output location cannot take the artifact: the user's to fix, like bad input.
        # Writes are atomic, so nothing partial is left at the final name.
        console.print(
            f"[bold red]error:[/] cannot write {escape(str(e.filename or 'the output'))}: {e.strerror}; free space "
            f"or choose another --out (finished parts of a job are kept; rerun to resume; for distill, add --resume)",
            soft_wrap=True, markup=True,
        )
        raise typer.Exit(2) from None
    except typer.Exit:
        raise
    except Exception as e:  # a runtime failure: say what happened, keep the traceback
        if isinstance(e, RuntimeError) and str(e).startswith("Symlink loop from "):  # pathlib's resolve(), Python < 3.13
            console.print(
                f"[bold red]error:[/] {escape(str(e).removeprefix('Symlink loop from ').strip(chr(39)))}: is a symbolic link "
                f"that loops back to itself; remove it or give another path",
                soft_wrap=True, markup=True,
            )
            raise typer.Exit(2) from None
        if os.environ.get("PACED_DEBUG") == "1":
            traceback.print_exc()
        else:
            console.print(traceback.format_exc(limit=-3), soft_wrap=True, markup=False)
        console.print(f"[bold red]failed:[/] {type(e).__name__}: {escape(str(e))}", soft_wrap=True, markup=True)
        raise typer.Exit(1) from None
    if out is not None:  # a stage that writes no artifact (inspect) printed its report itself
        sys.stdout.write(f"{out}\n")
    sys.stdout.flush()
