from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from paced_cli.common import run_stage
from paced_cli.options import TrustRemoteCode
from stages import snr as stage


def snr(
    ctx: typer.Context,
    student: Annotated[str, typer.Option(help="Student model whose gradients are measured: a local directory or a hub id.")],
    teacher_logits: Annotated[Path, typer.Option(help="teacher_logits artifact on the student's K rollouts per problem (paced teacher-logits --sequences <student rollouts>); build it WITHOUT --weights so problems with p = 0 and p = 1 are present.")],
    weights: Annotated[Path, typer.Option(help="Weights artifact (`paced weight` output): only pass_rate is used; problems of weight 0 are measured too.")],
    out: Annotated[Path, typer.Option(help="Output snr Parquet file: one row per pass-rate bin (the same command rewrites its own file; one made with other options needs --overwrite). The per-problem estimator also writes each problem's SNR beside it, to <out stem>.problems.parquet.")],
    bins: Annotated[int, typer.Option(help="Equal-width pass-rate bins over [0, 1] (p = 1 falls in the last).")] = 10,
    estimator: Annotated[str, typer.Option(help="per-problem: each problem's SNR over its K rollouts, averaged per bin with a bootstrap 95% interval (the paper's Figure 3). pooled: one SNR per bin over one gradient per problem, minus 1/n (how alike the bin's problems are).")] = "per-problem",
    param: Annotated[Optional[str], typer.Option(help="Parameter to take the gradient at, by its model.named_parameters() name (default: the output embedding weight, lm_head.weight; tied to the input embedding in some models).")] = None,
    loss: Annotated[str, typer.Option(help="Distillation loss whose gradient is measured: fkl, rkl or akl (as in distill).")] = "fkl",
    mu: Annotated[float, typer.Option(help="AKL: teacher cumulative mass that defines the head.")] = 0.5,
    plot: Annotated[Optional[Path], typer.Option(help="Also draw normalised SNR per bin to this PNG (the paper's Figure 3).")] = None,
    max_problems: Annotated[Optional[int], typer.Option(help="Measure a seeded random subset of this many problems, drawn from each bin in proportion (for big data sets).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the --max-problems subset and the bootstrap intervals.")] = 0,
    micro_batch_size: Annotated[Optional[int], typer.Option(help="--estimator pooled: sequences per forward pass (default 4); a problem's gradient accumulates over its micro-batches. The per-problem estimator needs each rollout's gradient alone and runs one sequence per pass.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N. The model runs in float32.")] = "auto",
    trust_remote_code: TrustRemoteCode = False,
    overwrite: Annotated[bool, typer.Option(help="Replace snr files (and plot) that paced wrote with other options or inputs; never a file paced did not write.")] = False,
) -> None:
    """Gradient signal-to-noise ratio per pass-rate bin (the paper's Figure 3 diagnostic)."""
    run_stage(
        lambda: stage.SnrConfig(
            student=student, teacher_logits=teacher_logits, weights=weights, out=out, bins=bins, estimator=estimator,
            param=param, loss=loss, mu=mu, plot=plot, max_problems=max_problems, seed=seed, micro_batch_size=micro_batch_size,
            device=device, trust_remote_code=trust_remote_code, overwrite=overwrite,
        ),
        stage.run,
        ctx,
    )
