"""weights: one row per problem, its pass rate and its training weight."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from schemas.base import ArtifactSchema, Column, quote_rows


MAX_WEIGHT = 1e12  # the losses, their gradients and its norm are float32 (3.4e38 at most; squares of 1e19 overflow)


def _ranges(frame: pl.DataFrame) -> list[str]:
    key = ("problem_id",)
    rules = [
        (pl.col("num_samples") <= 0, "'num_samples' must be at least 1"),
        (pl.col("num_correct") < 0, "'num_correct' must be at least 0"),
        (pl.col("num_correct") > pl.col("num_samples"), "'num_correct' must not exceed 'num_samples'"),
        (
            pl.col("pass_rate").is_nan() | (pl.col("pass_rate") < 0) | (pl.col("pass_rate") > 1),
            "'pass_rate' must lie in [0, 1]",
        ),
        (
            (pl.col("num_samples") > 0)
            & ((pl.col("pass_rate") - pl.col("num_correct") / pl.col("num_samples")).abs() > 1e-9),
            "'pass_rate' must be num_correct / num_samples (snr and the summaries group problems by it; "
            "an estimate of your own belongs in 'weight')",
        ),
        (
            pl.col("weight").is_nan() | pl.col("weight").is_infinite() | (pl.col("weight") < 0),
            "'weight' must be a finite number >= 0",
        ),
        (
            pl.col("weight") > MAX_WEIGHT,
            f"'weight' must be at most {MAX_WEIGHT:g} (the losses are float32; scale the weights down, "
            f"e.g. paced weight --normalize mean)",
        ),
    ]
    problems = []
    for bad, rule in rules:
        if frame.select(bad.fill_null(False).sum()).item():
            problems.append(f"{rule}; rows {quote_rows(frame, bad.fill_null(False), key)} break it")
    return problems


SCHEMA = ArtifactSchema(
    name="weights",
    version=1,
    doc="One row per problem; `paced weight` derives it from scores without a model, in about a second per million problems (bench section 5).",
    columns=(
        Column("problem_id", pa.string(), "The problem."),
        Column("num_samples", pa.int32(), "K: how many responses were scored."),
        Column("num_correct", pa.int32(), "How many of them the verifier accepted."),
        Column("pass_rate", pa.float64(), "p = num_correct / num_samples, in [0, 1]."),
        Column(
            "weight",
            pa.float64(),
            "The per-problem training weight: w(p) = p^alpha (1-p)^beta for `--scheme beta`, "
            "after `--normalize`. Multiplies the problem's whole distillation loss.",
        ),
    ),
    key=("problem_id",),
    checks=(_ranges,),
)
