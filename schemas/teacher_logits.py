"""teacher_logits: per scored sequence, the teacher's top-k distribution at every response token."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from schemas.base import ArtifactSchema, Column, quote_rows


def _aligned(frame: pl.DataFrame) -> list[str]:
    n = pl.col("token_ids").list.len()
    bad = (
        (pl.col("topk_ids").list.len() != n)
        | (pl.col("topk_logprobs").list.len() != n)
        | (pl.col("tail_logprob").list.len() != n)
        | (pl.col("target_logprobs").list.len() != n)
        | (n == 0)
    )
    if frame.select(bad.sum()).item():
        return [
            "token_ids, topk_ids, topk_logprobs, tail_logprob and target_logprobs must have one "
            f"non-empty entry per response token; rows {quote_rows(frame, bad, ('problem_id', 'sample_index'))} "
            "do not; regenerate them with paced teacher-logits"
        ]
    return []


SCHEMA = ArtifactSchema(
    name="teacher_logits",
    version=1,
    doc=(
        "One row per sequence the student will be trained on: the response tokens and, at each, "
        "the teacher's top-k token ids and their true log-probabilities under the teacher's full "
        "softmax, plus the log of the remaining mass (the tail bucket). Losses are computed on "
        "these k + 1 buckets."
    ),
    columns=(
        Column("problem_id", pa.string(), "The problem."),
        Column("sample_index", pa.int32(), "Which sequence of the problem (0 for a reference solution)."),
        Column(
            "prompt_token_ids",
            pa.list_(pa.int32()),
            "The student's prompt (no privileged context), rendered with the shared tokenizer's chat template.",
        ),
        Column("token_ids", pa.list_(pa.int32()), "The response tokens, teacher-forced."),
        Column(
            "topk_ids",
            pa.list_(pa.list_(pa.int32())),
            "Per response token: the teacher's k most likely next-token ids, most likely first.",
        ),
        Column(
            "topk_logprobs",
            pa.list_(pa.list_(pa.float16())),
            "Per response token: the teacher's log-probabilities of topk_ids (full softmax, float16).",
        ),
        Column(
            "tail_logprob",
            pa.list_(pa.float32()),
            "Per response token: log of the teacher's probability mass outside topk_ids.",
        ),
        Column(
            "target_logprobs",
            pa.list_(pa.float32()),
            "Per response token: the teacher's log-probability of the actual token.",
        ),
    ),
    key=("problem_id", "sample_index"),
    checks=(_aligned,),
)
