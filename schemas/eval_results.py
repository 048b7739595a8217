"""eval results: one row per generated response, and one summary row per benchmark."""

from __future__ import annotations

import pyarrow as pa

from schemas.base import ArtifactSchema, Column

SCHEMA = ArtifactSchema(
    name="eval_results",
    version=1,
    doc="One row per evaluated response; `paced eval` writes them as parts of its --out directory.",
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
    version=1,
    doc=(
        "One row per benchmark, `<out>/summary.parquet`: accuracy as mean and std over sample "
        "indices (the paper's 8-sample mean), and with --baseline the gain and forgetting."
    ),
    columns=(
        Column("benchmark", pa.string(), "Benchmark name."),
        Column("model", pa.string(), "The evaluated model."),
        Column("problems", pa.int32(), "Problems in the benchmark."),
        Column("samples", pa.int32(), "Responses per problem."),
        Column("accuracy_mean", pa.float64(), "Mean over sample indices of the accuracy of that sample index."),
        Column("accuracy_std", pa.float64(), "Population std over sample indices of that accuracy (0 for one sample)."),
        Column("retain", pa.bool_(), "Whether the benchmark is a retention set (--retain)."),
        Column("baseline_accuracy", pa.float64(), "The baseline's accuracy_mean (with --baseline).", nullable=True),
        Column("gain", pa.float64(), "accuracy_mean - baseline_accuracy, in accuracy points (with --baseline).", nullable=True),
        Column(
            "forgetting_pct",
            pa.float64(),
            "For retention sets: relative drop (baseline - accuracy) / baseline * 100 (with --baseline).",
            nullable=True,
        ),
    ),
    key=("benchmark",),
)
