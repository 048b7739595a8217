"""eval results: one row per generated response, and one summary row per benchmark."""

from __future__ import annotations

import pyarrow as pa

from schemas.base import ArtifactSchema, Column

SCHEMA = ArtifactSchema(
    name="eval_results",
    version=1,
    doc=(
        "One row per evaluated response; `paced eval` writes them as a job directory `<out>/results` "
        "(an earlier paced wrote them into `<out>` itself, beside the summary: still read as --baseline)."
    ),
    columns=(
        Column("problem_id", pa.string(), "The problem."),
        Column("sample_index", pa.int32(), "Which of the --samples responses."),
        Column("benchmark", pa.string(), "The problem's `benchmark` column, else the problems file's name."),
        Column("correct", pa.bool_(), "The verifier's verdict."),
        Column("extracted", pa.string(), "The extracted answer; null when none.", nullable=True),
        Column("reason", pa.string(), "Why no normal verdict (no_answer, timeout, error: ...); null otherwise.", nullable=True),
        Column("completion", pa.string(), "The response text."),
        Column("finish_reason", pa.string(), "`stop` or `length`."),
    ),
    key=("problem_id", "sample_index"),
)

SUMMARY = ArtifactSchema(
    name="eval_summary",
    version=2,
    doc=(
        "One row per benchmark, `<out>/summary.parquet`: accuracy as mean and std over sample "
        "indices (the paper's 8-sample mean), pass@k and maj@k, and with --baseline the gains "
        "and forgetting. Version 2 added k, pass_at_k, maj_at_k and their baseline and gain "
        "columns; a version-1 summary is rewritten by rerunning its `paced eval` (the responses "
        "are kept)."
    ),
    columns=(
        Column("benchmark", pa.string(), "Benchmark name."),
        Column("model", pa.string(), "The evaluated model."),
        Column("problems", pa.int32(), "Problems in the benchmark."),
        Column("samples", pa.int32(), "Responses per problem."),
        Column("accuracy_mean", pa.float64(), "Mean over sample indices of the accuracy of that sample index."),
        Column("accuracy_std", pa.float64(), "Population std over sample indices of that accuracy (0 for one sample)."),
        Column("k", pa.int32(), "k of pass@k and maj@k (--at-k, default --samples)."),
        Column("pass_at_k", pa.float64(), "Mean over problems of the unbiased pass@k estimate 1 - C(n-c, k) / C(n, k) from c correct of n responses (Chen et al. 2021).", nullable=True),
        Column("maj_at_k", pa.float64(), "Share of problems whose majority answer over responses 0..k-1 is correct: votes by answer, equal answers (as the verifier judges: math-verify's equality for math) voting together (responses without one do not vote; none at all counts as wrong), ties to the answer given first; null when the verifier extracts no answers (module:function).", nullable=True),
        Column("retain", pa.bool_(), "Whether the benchmark is a retention set (--retain)."),
        Column("baseline_accuracy", pa.float64(), "The baseline's accuracy_mean (with --baseline).", nullable=True),
        Column("gain", pa.float64(), "accuracy_mean - baseline_accuracy, a fraction like both (0.05 is 5 accuracy points; the console shows points) (with --baseline).", nullable=True),
        Column("baseline_pass_at_k", pa.float64(), "The baseline's pass@k at the same k, from its responses (with --baseline; null when it has fewer than k per problem).", nullable=True),
        Column("pass_at_k_gain", pa.float64(), "pass_at_k - baseline_pass_at_k (with --baseline).", nullable=True),
        Column("baseline_maj_at_k", pa.float64(), "The baseline's maj@k at the same k, from its responses (with --baseline; null when it has fewer than k per problem).", nullable=True),
        Column("maj_at_k_gain", pa.float64(), "maj_at_k - baseline_maj_at_k (with --baseline).", nullable=True),
        Column(
            "forgetting_pct",
            pa.float64(),
            "For retention sets: relative drop (baseline - accuracy) / baseline * 100 (with --baseline).",
            nullable=True,
        ),
    ),
    key=("benchmark",),
)
