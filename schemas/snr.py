"""snr: one row per pass-rate bin, the gradient signal-to-noise ratio by pass rate (Figure 3);
snr_problems: one row per measured problem, its own SNR over its rollouts."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from schemas.base import ArtifactSchema, Column, quote_rows

ESTIMATORS = ("per-problem", "pooled")
FIT_KEY = "kernel_fit"  # the provenance entry of the beta kernel fitted to the SNR by bin (both files)


def read_fit(path, option: str) -> dict:
    """The kernel fit stored in an snr artifact, for `paced weight --from-snr` (InputError if none)."""
    from schemas import io
    from schemas.base import InputError

    art = io.read(path, SCHEMA, option=option)
    fit = (art.provenance or {}).get(FIT_KEY)
    if fit is None:
        raise InputError(f"{option} {path}: has no kernel fit (made by an older paced); rerun the paced snr command that made it")
    if fit["status"] != "ok":
        raise InputError(f"{option} {path}: no kernel was fitted ({fit['status']}); give --alpha and --beta instead")
    return fit


def _broken(frame: pl.DataFrame, rules: list[tuple[pl.Expr, str]], key: tuple[str, ...]) -> list[str]:
    problems = []
    for bad, rule in rules:
        bad = bad.fill_null(False)
        if frame.select(bad.sum()).item():
            problems.append(f"{rule}; rows {quote_rows(frame, bad, key)} break it")
    return problems


def _consistent(frame: pl.DataFrame) -> list[str]:
    ok = pl.col("status") == "ok"
    per_problem = pl.col("estimator") == "per-problem"
    ci = pl.col("snr_ci_low").is_not_null()
    rules = [
        (pl.col("bin") != pl.int_range(pl.len()).cast(pl.Int32), "'bin' must count 0, 1, 2, ... in row order"),
        (pl.col("lo").is_nan() | pl.col("hi").is_nan() | (pl.col("lo") < 0) | (pl.col("hi") > 1) | (pl.col("lo") >= pl.col("hi")),
         "'lo' < 'hi' must lie in [0, 1]"),
        (pl.col("problems") < 0, "'problems' must be >= 0"),
        (~pl.col("estimator").is_in(list(ESTIMATORS)), f"'estimator' must be one of {', '.join(ESTIMATORS)}"),
        (pl.col("estimator") != pl.col("estimator").first(), "'estimator' must be the same in every row"),
        (ok != pl.col("snr").is_not_null(), "'snr' must be set exactly where 'status' is 'ok'"),
        (pl.col("snr").is_nan() | (pl.col("snr") < 0), "'snr' must be a number >= 0"),
        (pl.col("snr_normalized").is_nan() | (pl.col("snr_normalized") > 1), "'snr_normalized' must be a number <= 1"),
        (per_problem & (pl.col("snr_normalized") < 0), "'snr_normalized' must be >= 0 for the per-problem estimator"),
        (pl.col("snr_normalized").is_not_null() & pl.col("snr").is_null(), "'snr_normalized' needs an 'snr'"),
        (pl.col("snr_debiased").is_not_null() != pl.col("snr").is_not_null(), "'snr_debiased' must be set exactly where 'snr' is"),
        (pl.col("snr_debiased").is_nan() | (pl.col("snr_debiased") > pl.col("snr")), "'snr_debiased' must be a number <= 'snr'"),
        (ci != pl.col("snr_ci_high").is_not_null(), "'snr_ci_low' and 'snr_ci_high' must be set together"),
        (ci & ~(per_problem & ok & (pl.col("problems") >= 2)),
         "a bootstrap interval needs the per-problem estimator, status 'ok' and 'problems' >= 2"),
        (ci & (pl.col("snr_ci_low").is_nan() | pl.col("snr_ci_high").is_nan() | (pl.col("snr_ci_low") > pl.col("snr_ci_high"))),
         "'snr_ci_low' <= 'snr_ci_high' must be numbers"),
    ]
    return _broken(frame, rules, ("bin",))


SCHEMA = ArtifactSchema(
    name="snr",
    version=3,
    doc=(
        "One row per pass-rate bin, written by `paced snr`; the paper's Figure 3. With the "
        "`per-problem` estimator (the default), each measured problem i has its own "
        "SNR_i = ‖mean_k g_k‖² / tr Cov_k g_k over the gradients g_1..g_K of the distillation "
        "loss on each of its K rollouts, at one parameter (the output embedding by default); a "
        "bin's `snr` is the mean of SNR_i over its problems, with a percentile-bootstrap 95% "
        "interval. Those per-problem values are a second file beside this one, "
        "`<out stem>.problems.parquet` (schema `snr_problems`, version 1: `problem_id`, "
        "`pass_rate`, `bin`, `num_rollouts`, `signal`, `noise`, `snr`, `snr_debiased`, "
        "`status`). With the secondary `pooled` estimator a bin's `snr` is one "
        "‖mean g‖² / tr Cov g over one gradient per problem (all its sequences together): it "
        "measures how alike the bin's problems are and reads about 1/n with no signal. A bin "
        "without an SNR has null values and says why in `status`. The provenance also holds "
        "`kernel_fit`: the Beta kernel p^alpha (1-p)^beta fitted to the bins (weighted least "
        "squares of log snr_debiased on log p and log(1-p) over the bins inside (0, 1); "
        "`status`, `alpha`, `beta`, `alpha_ci`, `beta_ci`, `log_scale`, `bins_used`, `dof`, "
        "`weighting`), which `paced weight --from-snr` uses."
    ),
    columns=(
        Column("bin", pa.int32(), "Bin index, from 0 (lowest pass rates)."),
        Column("lo", pa.float64(), "Lower edge of the bin: it holds lo <= p < hi."),
        Column("hi", pa.float64(), "Upper edge of the bin; the last bin also holds p = 1."),
        Column(
            "problems",
            pa.int32(),
            "n: problems of the bin in the statistic (per-problem: those with an SNR_i; pooled: "
            "those whose gradient was measured).",
        ),
        Column("mean_pass_rate", pa.float64(), "Mean pass rate of those problems; null when there are none.", nullable=True),
        Column(
            "snr",
            pa.float64(),
            "per-problem: the mean of SNR_i over the bin's problems; pooled: ‖mean g‖² / tr Cov g "
            "over their gradients, with the unbiased (n - 1) covariance. Null unless status is 'ok'.",
            nullable=True,
        ),
        Column(
            "snr_ci_low",
            pa.float64(),
            "per-problem: lower end of the 95% percentile-bootstrap interval of the bin's mean "
            "SNR_i (2,000 resamples of its problems, seeded by the run's --seed and the bin); "
            "null for the pooled estimator and for bins of fewer than 2 problems.",
            nullable=True,
        ),
        Column("snr_ci_high", pa.float64(), "Upper end of that interval; null where snr_ci_low is.", nullable=True),
        Column(
            "snr_normalized",
            pa.float64(),
            "The bin's value divided by the largest over the bins (1 for the largest), as the "
            "paper plots it: per-problem, snr; pooled, snr_debiased (the raw pooled SNR carries a "
            "1/n floor that differs between bins), which can make it < 0. Null where snr is, or "
            "when the largest value is not > 0.",
            nullable=True,
        ),
        Column(
            "snr_debiased",
            pa.float64(),
            "The SNR without its noise floor: ‖mean of m noisy gradients‖² keeps tr Cov / m of "
            "their noise. per-problem: the mean of SNR_i - 1/K_i (K_i rollouts); pooled: snr - 1/n. "
            "It can be < 0 where the signal is below the noise; null where snr is.",
            nullable=True,
        ),
        Column(
            "status",
            pa.string(),
            "'ok', or why the bin has no SNR: 'empty'; per-problem: 'no problem with an SNR' (its "
            "problems' rollouts gave identical gradients); pooled: 'too few problems (n=1)' or "
            "'identical gradients (tr Cov = 0)'.",
        ),
        Column("estimator", pa.string(), "'per-problem' (the paper's Figure 3) or 'pooled', as chosen by --estimator."),
    ),
    key=("bin",),
    checks=(_consistent,),
)


def _problems_consistent(frame: pl.DataFrame) -> list[str]:
    ok = pl.col("status") == "ok"
    rules = [
        (pl.col("pass_rate").is_nan() | (pl.col("pass_rate") < 0) | (pl.col("pass_rate") > 1), "'pass_rate' must lie in [0, 1]"),
        (pl.col("bin") < 0, "'bin' must be >= 0"),
        (pl.col("num_rollouts") < 1, "'num_rollouts' must be >= 1"),
        (ok != pl.col("snr").is_not_null(), "'snr' must be set exactly where 'status' is 'ok'"),
        (ok & (pl.col("num_rollouts") < 2), "an SNR needs 'num_rollouts' >= 2"),
        (pl.col("snr").is_nan() | (pl.col("snr") < 0), "'snr' must be a number >= 0"),
        (pl.col("snr_debiased").is_not_null() != pl.col("snr").is_not_null(), "'snr_debiased' must be set exactly where 'snr' is"),
        ((pl.col("snr_debiased") - (pl.col("snr") - 1 / pl.col("num_rollouts"))).abs() > 1e-9 * (1 + pl.col("snr")),
         "'snr_debiased' must equal snr - 1/num_rollouts"),
        (pl.col("signal").is_nan() | (pl.col("signal") < 0), "'signal' must be a number >= 0"),
        (pl.col("noise").is_nan() | (pl.col("noise") < 0), "'noise' must be a number >= 0"),
    ]
    return _broken(frame, rules, ("problem_id",))


PROBLEMS = ArtifactSchema(
    name="snr_problems",
    version=1,
    doc=(
        "One row per measured problem, written by `paced snr` (per-problem estimator) beside its "
        "--out as `<out stem>.problems.parquet`: the problem's gradient SNR over its K rollouts, "
        "SNR_i = ‖mean_k g_k‖² / tr Cov_k g_k, g_k the gradient of rollout k's mean token "
        "distillation loss at the measured parameter. Problems with fewer than 2 rollouts are "
        "not measured (the run's summary counts them)."
    ),
    columns=(
        Column("problem_id", pa.string(), "The problem."),
        Column("pass_rate", pa.float64(), "The student's pass rate p (from --weights)."),
        Column("bin", pa.int32(), "Its pass-rate bin: the `bin` of the snr file beside it."),
        Column("num_rollouts", pa.int32(), "K: its rollouts (teacher_logits rows), each one gradient."),
        Column("signal", pa.float64(), "‖mean_k g_k‖², the squared norm of the mean gradient."),
        Column(
            "noise",
            pa.float64(),
            "tr Cov_k g_k = Σ_k ‖g_k - mean g‖² / (K - 1), the unbiased trace of the covariance.",
            nullable=True,
        ),
        Column("snr", pa.float64(), "signal / noise; null unless status is 'ok'.", nullable=True),
        Column(
            "snr_debiased",
            pa.float64(),
            "snr - 1/K: signal overestimates ‖E g‖² by tr Cov / K; can be < 0. Null where snr is.",
            nullable=True,
        ),
        Column("status", pa.string(), "'ok', or 'identical gradients (tr Cov = 0)' (its rollouts gave the same gradient)."),
    ),
    key=("problem_id",),
    checks=(_problems_consistent,),
)
