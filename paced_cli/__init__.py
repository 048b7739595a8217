"""The `paced` command line: one thin command per stage, each calling `stages.<name>.run(config)`."""

from __future__ import annotations

from typing import Annotated

from stages import threads

threads.bounded_wait()  # before anything imports torch: OpenMP reads it once, when it loads

import typer  # noqa: E402

from paced_cli.eval import eval_ as eval_command  # noqa: E402
from paced_cli.inspect import inspect  # noqa: E402
from paced_cli.distill import distill  # noqa: E402
from paced_cli.rollout import rollout  # noqa: E402
from paced_cli.score import score  # noqa: E402
from paced_cli.snr import snr  # noqa: E402
from paced_cli.teacher_logits import teacher_logits  # noqa: E402
from paced_cli.weight import weight  # noqa: E402

app = typer.Typer(
    name="paced",
    help="Paced: distillation at the frontier of student competence (arXiv 2603.11178).\n\n"
    "Each command reads artifacts, writes one artifact to --out and prints its path on stdout.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from schemas.io import paced_version

        typer.echo(f"paced {paced_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Paced: distillation at the frontier of student competence (arXiv 2603.11178)."""


app.command("rollout")(rollout)
app.command("score")(score)
app.command("weight")(weight)
app.command("teacher-logits")(teacher_logits)
app.command("distill")(distill)
app.command("eval")(eval_command)
app.command("snr")(snr)
app.command("inspect")(inspect)


def main() -> None:
    try:
        app()
    except SystemExit as e:  # typer always ends with sys.exit(code)
        from stages import backends

        # An engine that must not see the interpreter's teardown (vLLM's) ends the process here.
        backends.end_process(e.code if isinstance(e.code, int) else (0 if e.code is None else 1))
        raise
