"""scores: one row per generated response, with the verifier's verdict."""

from __future__ import annotations

import pyarrow as pa

from schemas.base import ArtifactSchema, Column

SCHEMA = ArtifactSchema(
    name="scores",
    version=1,
    doc="One row per scored response; `paced score` writes one row per rollout.",
    columns=(
        Column("problem_id", pa.string(), "The problem the response answers."),
        Column("sample_index", pa.int32(), "Which of the K samples of the problem."),
        Column("correct", pa.bool_(), "Whether the verifier accepted the response's answer."),
        Column(
            "extracted",
            pa.string(),
            "The answer the verifier extracted from the response; null when none was found.",
            nullable=True,
        ),
        Column(
            "reason",
            pa.string(),
            "Why a response was not checked normally: `no_answer`, `timeout` or `error: ...`; "
            "null when the verifier ran to a verdict.",
            nullable=True,
        ),
    ),
    key=("problem_id", "sample_index"),
)
