from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from paced_cli.common import run_stage
from stages import weight as stage


def weight(
    ctx: typer.Context,
    scores: Annotated[Path, typer.Option(help="Scores artifact: `paced score` output, or any Parquet with problem_id, sample_index, correct.")],
    out: Annotated[Path, typer.Option(help="Output weights Parquet file (an earlier one of the same command is rewritten; one made with other options needs --overwrite).")],
    alpha: Annotated[float, typer.Option(help="alpha in w(p) = p^alpha (1-p)^beta; must be >= 0.")] = 1.0,
    beta: Annotated[float, typer.Option(help="beta in w(p) = p^alpha (1-p)^beta; must be >= 0.")] = 1.0,
    scheme: Annotated[str, typer.Option(help="beta (Paced), uniform (w = 1, plain distillation) or hard-filter (w = 1 iff 0 < p < 1).")] = "beta",
    normalize: Annotated[str, typer.Option(help="mean: rescale so the mean weight over all problems is 1; none: raw kernel values.")] = "mean",
    plot: Annotated[Optional[Path], typer.Option(help="Also draw the pass-rate histogram and the weight curve to this PNG.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace weights (and plot) that paced wrote with other options or scores; never a file paced did not write.")] = False,
) -> None:
    """Per-problem pass rate p and weight w(p) from scores (fast: rerun it alone with a new alpha, beta)."""
    run_stage(
        lambda: stage.WeightConfig(scores=scores, out=out, alpha=alpha, beta=beta, scheme=scheme, normalize=normalize, plot=plot, overwrite=overwrite),
        stage.run,
        ctx,
    )
