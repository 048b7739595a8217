"""The `paced` command line: one thin command per stage, each calling `stages.<name>.run(config)`."""

from __future__ import annotations

from typing import Annotated

from stages import threads

threads.bounded_wait()  # before anything imports torch: OpenMP reads it once, when it loads

import importlib  # noqa: E402
import sys  # noqa: E402

import typer  # noqa: E402

# name: (module, callback). A command's module is imported only when the command runs (or for
# the whole app): `paced weight` and `paced score` then start without importing torch.
COMMANDS = {
    "rollout": ("paced_cli.rollout", "rollout"),
    "score": ("paced_cli.score", "score"),
    "weight": ("paced_cli.weight", "weight"),
    "teacher-logits": ("paced_cli.teacher_logits", "teacher_logits"),
    "distill": ("paced_cli.distill", "distill"),
    "eval": ("paced_cli.eval", "eval_"),
    "snr": ("paced_cli.snr", "snr"),
    "inspect": ("paced_cli.inspect", "inspect"),
}


def _version(value: bool) -> None:
    if value:
        from schemas.io import paced_version

        typer.echo(f"paced {paced_version()}")
        raise typer.Exit()


def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Paced: distillation at the frontier of student competence (arXiv 2603.11178)."""


def make_app(only: str | None = None) -> typer.Typer:
    """The `paced` app with every command, or with `only` that one (what `main` runs when the
    command line names it)."""
    app = typer.Typer(
        name="paced",
        help="Paced: distillation at the frontier of student competence (arXiv 2603.11178).\n\n"
        "Each command reads artifacts, writes one artifact to --out and prints its path on stdout.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    for name, (module, callback) in COMMANDS.items():
        if only in (None, name):
            app.command(name)(getattr(importlib.import_module(module), callback))
    return app


def __getattr__(name: str):
    if name == "app":  # `paced_cli.app`: the whole app, built on first use
        globals()["app"] = make_app()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def exit_code(e: SystemExit) -> int:
    """The exit status a SystemExit gives the process (typer ends every command with one)."""
    return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in COMMANDS else None
    try:
        make_app(command)()
    except SystemExit as e:  # typer always ends with sys.exit(code)
        from stages import backends

        # An engine that must not see the interpreter's teardown (vLLM's) ends the process here.
        backends.end_process(exit_code(e))
        raise
