from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from paced_cli.common import run_stage
from stages import score as stage


def score(
    ctx: typer.Context,
    rollouts: Annotated[Path, typer.Option(help="Rollouts artifact (`paced rollout` output, or Parquet with problem_id, sample_index, completion).")],
    problems: Annotated[Path, typer.Option(help="The problems file the rollouts answer (for the gold `answer`).")],
    out: Annotated[Path, typer.Option(help="Output directory of the scores artifact (resumable job).")],
    verifier: Annotated[str, typer.Option(help="math (math-verify equivalence), exact (normalised string), regex:PATTERN (first group), or module:function (your fn(completion, problem_row) -> bool).")] = "math",
    timeout: Annotated[float, typer.Option(help="Seconds one check may take; past it the check is killed and scores false with reason 'timeout'.")] = 5.0,
    workers: Annotated[int, typer.Option(help="Checker processes.")] = 2,
    part_size: Annotated[int, typer.Option(help="Responses per output part: the unit of resumption.")] = 4096,
    shard: Annotated[Optional[str], typer.Option(help="Run one shard I/N of the job (problems split by a stable hash of problem_id) into --out/shard-I-of-N; downstream stages read --out as one artifact once every shard is done.")] = None,
    allow_stale: Annotated[bool, typer.Option(help="Accept inputs made from another problems file than the others (normally refused as stale).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an unfinished or different scores job in --out instead of refusing.")] = False,
) -> None:
    """Check each response's answer against the gold answer, each check bounded in time."""
    run_stage(
        lambda: stage.ScoreConfig(rollouts=rollouts, problems=problems, out=out, verifier=verifier, timeout=timeout,
                                  workers=workers, part_size=part_size, allow_stale=allow_stale, shard=shard, overwrite=overwrite),
        stage.run,
        ctx,
    )
