"""A typer command derived from a stage's config dataclass: each option is written once, as a
field made with `stages.options.option` (its type, default, help and command-line names)."""

from __future__ import annotations

import contextlib
import inspect
import types
import typing
from dataclasses import MISSING, Field
from typing import Annotated, Any, Callable, Optional

import typer

from paced_cli.common import run_stage
from stages import options, threads
from stages.options import ENGINE


def with_threads(run: Callable[..., Any], n: int | None) -> Callable[..., Any]:
    """`run`, with torch's threads chosen first (after the config is built: bad options exit 2
    before anything is measured)."""
    def run_with_threads(config: Any, command: str | None = None) -> Any:
        threads.configure(n)
        return run(config, command)

    return run_with_threads


def _required(f: Field) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def command(config_cls: type, run: Callable[..., Any], doc: str, name: str,
            around: Callable[[], contextlib.AbstractContextManager] | None = None,
            uses_torch: bool = True) -> Callable[..., None]:
    """The typer callback of one stage: its options are `config_cls`'s option fields, required
    ones first, then the others in declaration order; it builds the config and runs the stage
    through `run_stage` (exit codes, messages), inside `around()` when given. A stage that
    `uses_torch` also takes --threads (stages.threads), chosen once its options are valid."""
    hints = typing.get_type_hints(config_cls)
    fields = options.declared(config_cls)
    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
    factories = {}
    for f in [f for f in fields if _required(f)] + [f for f in fields if not _required(f)]:
        tp = hints[f.name]
        if isinstance(tp, types.UnionType):  # `X | None`, as typer reads it
            tp = typing.Union[tp.__args__]
        default: Any = inspect.Parameter.empty
        if f.default_factory is not MISSING:  # a list option: absent on the command line means the factory's value
            tp, default = Optional[tp], None
            factories[f.name] = f.default_factory
        elif f.default is not MISSING:
            default = f.default
        info = (typer.Argument(help=f.metadata["help"]) if f.metadata.get("argument")
                else typer.Option(*f.metadata["flags"], help=f.metadata["help"], rich_help_panel=f.metadata.get("panel")))
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[tp, info], default=default))

    if uses_torch:  # the one option that is not the stage's: where it runs, not what it makes
        params.append(inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[int], typer.Option(help=threads.HELP, min=1, rich_help_panel=ENGINE)]))

    def callback(ctx: typer.Context, **given: Any) -> None:
        n_threads = given.pop("threads", None)
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
        for k, factory in factories.items():
            if values[k] is None:
                values[k] = factory()
        with around() if around is not None else contextlib.nullcontext():
            run_stage(lambda: config_cls(**values), with_threads(run, n_threads) if uses_torch else run, ctx)

    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in params}
    callback.__doc__ = doc
    callback.__name__ = callback.__qualname__ = name
    callback.config_cls, callback.uses_torch = config_cls, uses_torch  # type: ignore[attr-defined]  # (for the tests)
    return callback
