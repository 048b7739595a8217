"""snr: one row per pass-rate bin, the gradient signal-to-noise ratio of its problems (Figure 3)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from schemas.base import ArtifactSchema, Column, quote_rows


def _consistent(frame: pl.DataFrame) -> list[str]:
    key = ("bin",)
    ok = pl.col("status") == "ok"
    rules = [
        (pl.col("bin") != pl.int_range(pl.len()).cast(pl.Int32), "'bin' must count 0, 1, 2, ... in row order"),
        (pl.col("lo").is_nan() | pl.col("hi").is_nan() | (pl.col("lo") < 0) | (pl.col("hi") > 1) | (pl.col("lo") >= pl.col("hi")),
         "'lo' < 'hi' must lie in [0, 1]"),
        (pl.col("problems") < 0, "'problems' must be >= 0"),
        (ok != pl.col("snr").is_not_null(), "'snr' must be set exactly where 'status' is 'ok'"),
        (pl.col("snr").is_nan() | (pl.col("snr") < 0), "'snr' must be a number >= 0"),
        (pl.col("snr_normalized").is_nan() | (pl.col("snr_normalized") < 0) | (pl.col("snr_normalized") > 1),
         "'snr_normalized' must lie in [0, 1]"),
        (pl.col("snr_normalized").is_not_null() & pl.col("snr").is_null(), "'snr_normalized' needs an 'snr'"),
        (pl.col("snr_debiased").is_not_null() != pl.col("snr").is_not_null(), "'snr_debiased' must be set exactly where 'snr' is"),
        (pl.col("snr_debiased").is_nan() | (pl.col("snr_debiased") > pl.col("snr")), "'snr_debiased' must be a number <= 'snr'"),
    ]
    problems = []
    for bad, rule in rules:
        bad = bad.fill_null(False)
        if frame.select(bad.sum()).item():
            problems.append(f"{rule}; rows {quote_rows(frame, bad, key)} break it")
    return problems


SCHEMA = ArtifactSchema(
    name="snr",
    version=2,
    doc=(
        "One row per pass-rate bin, written by `paced snr`: the signal-to-noise ratio "
        "SNR = ‖E[g]‖² / tr Cov[g] of the per-problem distillation-loss gradients g at one "
        "parameter (the output embedding by default), over the problems whose pass rate falls "
        "in the bin; the paper's Figure 3. A bin with fewer than 2 problems, or whose "
        "gradients do not vary, has no SNR (null) and says why in `status`."
    ),
    columns=(
        Column("bin", pa.int32(), "Bin index, from 0 (lowest pass rates)."),
        Column("lo", pa.float64(), "Lower edge of the bin: it holds lo <= p < hi."),
        Column("hi", pa.float64(), "Upper edge of the bin; the last bin also holds p = 1."),
        Column("problems", pa.int32(), "Problems in the bin whose gradient was measured."),
        Column("mean_pass_rate", pa.float64(), "Mean pass rate of those problems; null for an empty bin.", nullable=True),
        Column(
            "snr",
            pa.float64(),
            "‖mean g‖² / tr Cov g, with the unbiased (n - 1) covariance over the bin's problems; "
            "null unless status is 'ok'.",
            nullable=True,
        ),
        Column(
            "snr_normalized",
            pa.float64(),
            "snr divided by the largest snr over the bins (1 for the largest); null where snr is.",
            nullable=True,
        ),
        Column(
            "snr_debiased",
            pa.float64(),
            "snr - 1/n: ‖mean g‖² overestimates ‖E[g]‖² by tr Cov / n (the mean of n noisy "
            "gradients keeps 1/n of their noise), so a bin of few problems shows a floor of 1/n "
            "even with no signal. This estimates ‖E[g]‖² / tr Cov without that floor; it can be "
            "< 0 where the signal is below the noise. Compare bins of very different sizes with "
            "this column; null where snr is.",
            nullable=True,
        ),
        Column(
            "status",
            pa.string(),
            "'ok', or why the bin has no SNR: 'empty', 'too few problems (n=1)', or "
            "'identical gradients (tr Cov = 0)'.",
        ),
    ),
    key=("bin",),
    checks=(_consistent,),
)
