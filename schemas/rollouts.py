"""rollouts: one row per generated response (K per problem)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from schemas.base import ArtifactSchema, Column, quote_rows

FINISH_REASONS = ("stop", "length")


def _finish_reasons(frame: pl.DataFrame) -> list[str]:
    bad = ~pl.col("finish_reason").is_in(list(FINISH_REASONS))
    if frame.select(bad.sum()).item():
        return [
            f"column 'finish_reason' must be one of {', '.join(FINISH_REASONS)}; rows "
            f"{quote_rows(frame, bad, ('problem_id', 'sample_index'))} are not"
        ]
    return []


SCHEMA = ArtifactSchema(
    name="rollouts",
    version=1,
    doc="One row per generated response; `paced rollout` writes K rows per problem.",
    columns=(
        Column("problem_id", pa.string(), "The problem this response answers."),
        Column("sample_index", pa.int32(), "0..K-1: which of the K samples of the problem."),
        Column("completion", pa.string(), "The decoded response text (special tokens removed)."),
        Column(
            "completion_token_ids",
            pa.list_(pa.int32()),
            "The response token ids, including the end-of-sequence token when it was generated.",
        ),
        Column("finish_reason", pa.string(), "`stop` (end-of-sequence token) or `length` (hit --max-new-tokens)."),
        Column("model", pa.string(), "The model that generated the response: a hub id as given to --model, a local directory by its absolute path."),
    ),
    key=("problem_id", "sample_index"),
    checks=(_finish_reasons,),
)
