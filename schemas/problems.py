"""problems: one row per training or evaluation problem (the input of every pipeline)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from schemas.base import ArtifactSchema, Column, quote_rows


def _non_empty(frame: pl.DataFrame) -> list[str]:
    problems = []
    if frame.height == 0:
        problems.append("the problems file has no rows; it needs at least one problem")
    for name in ("problem_id", "prompt"):
        empty = pl.col(name).str.len_bytes() == 0
        if frame.select(empty.sum()).item():
            problems.append(
                f"column {name!r} is empty in rows {quote_rows(frame, empty, ('problem_id',))}; "
                f"every problem needs a non-empty {name}"
            )
    return problems


SCHEMA = ArtifactSchema(
    name="problems",
    version=1,
    doc="One row per problem. Any Parquet file with these columns is a valid problems file.",
    columns=(
        Column("problem_id", pa.string(), "Unique identifier of the problem."),
        Column("prompt", pa.string(), "The problem text shown to the model."),
        Column("answer", pa.string(), "The gold final answer, compared by the verifier."),
        Column(
            "reference",
            pa.string(),
            "An expert reference solution; used as privileged context by `--context reference`.",
            nullable=True,
        ),
    ),
    key=("problem_id",),
    checks=(_non_empty,),
)
