"""teacher_logits: per scored sequence, the teacher's distribution at every response token, kept sparse.

Version 2 stores one representation for all of `paced teacher-logits --logits topk|sampled|hybrid`:
the top-k ids with their exact log-probabilities (k = 0 for `sampled`), then S draws from the
teacher's remaining mass (S = 0 for `topk`), kept as their distinct ids with the mass each
stands for (`sample_logmass`), and the teacher's entropy. `stages/training/data.py` turns both
into the buckets the losses take. Version 1 (top-k only, no sample or entropy columns) is
still read, as `topk`.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from schemas.base import ArtifactSchema, Column, quote_rows

DRAWS = ("sample_ids", "sample_logmass", "entropy")  # the columns version 2 added


def with_draws(t: pa.Table) -> pa.Table:
    """A part (or a read of some of its columns, `token_ids` among them) with the columns version 2
    added: a version-1 part (top-k only) has no draws and no entropy, so they are empty and null."""
    n = pc.list_value_length(t["token_ids"]).to_pylist()
    for name, kind in (("sample_ids", pa.int32()), ("sample_logmass", pa.float32())):
        if name not in t.column_names:
            t = t.append_column(name, pa.array([[[] for _ in range(m)] for m in n], pa.list_(pa.list_(kind))))
    if "entropy" not in t.column_names:
        t = t.append_column("entropy", pa.nulls(t.num_rows, pa.list_(pa.float32())))
    return t


# The columns that hold one entry per response token (token_ids).
PER_TOKEN = ("topk_ids", "topk_logprobs", "tail_logprob", "target_logprobs", "sample_ids", "sample_logmass", "entropy")


def misaligned(table: pa.Table) -> pa.ChunkedArray:
    """Per row: True when a per-token column (those of PER_TOKEN the table holds) has not one
    entry per response token, or there is no response token. The one check that both reading
    an artifact (below) and distill's streaming loader (on raw parts) run."""
    n = pc.list_value_length(table["token_ids"])
    bad = pc.equal(n, 0)
    for name in PER_TOKEN:
        if name in table.column_names:
            bad = pc.or_(bad, pc.not_equal(pc.list_value_length(table[name]), n))
    return bad


def misaligned_problem(keys: pl.DataFrame, bad: pa.ChunkedArray, columns: list[str]) -> str | None:
    """What is wrong with the rows `misaligned` flags (None when none is), named by their key
    (`keys`: problem_id and sample_index); `columns`: the table's, whose per-token ones it compared."""
    if not pc.any(bad).as_py():
        return None
    return (
        f"token_ids and {', '.join(c for c in PER_TOKEN if c in columns)} must have one "
        f"non-empty entry per response token; rows {quote_rows(keys, pl.from_arrow(bad), ('problem_id', 'sample_index'))} "
        "do not; regenerate them with paced teacher-logits"
    )


def _aligned(frame: pl.DataFrame) -> list[str]:
    columns = [c for c in PER_TOKEN if c in frame.columns]
    problem = misaligned_problem(frame, misaligned(frame.select("token_ids", *columns).to_arrow()), columns)
    return [problem] if problem else []


V1 = ArtifactSchema(
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

SCHEMA = ArtifactSchema(
    name="teacher_logits",
    version=2,
    doc=(
        "One row per sequence the student will be trained on: the response tokens and, at each, a "
        "sparse view of the teacher's distribution. `--logits topk` (version 1's content): the k most "
        "likely ids with their true log-probabilities under the full softmax and the log of the "
        "remaining mass (the tail bucket). `sampled`: no top-k (tail_logprob = 0: all mass is 'rest'), "
        "S ids drawn from the teacher's distribution, each with the mass it stands for. `hybrid`: the "
        "top-k, then S draws from the rest. Draws are kept as distinct ids with their estimated mass "
        "(count / S of the rest's mass; with --sample-temperature importance-weighted, then "
        "normalised), an unbiased estimate of the teacher's probability of each token at temperature "
        "1, so the forward-KL gradient computed on them is unbiased (Anshumann et al., ACL 2025). "
        "--draw-scheme systematic (the default) spaces the S draws evenly through the teacher's "
        "cumulative distribution from one uniform, so a token's count is the floor or ceiling of S "
        "times its mass (less variance in each token's mass, though not for every sum of them); multinomial draws them independently (the paper's); the "
        "columns are the same. "
        "Losses are computed on the top-k buckets, then the sampled ones (or the tail bucket when "
        "there are none). Version 1 (no sample_ids, sample_logmass, entropy) is still read. "
        "distill and snr check each position as they read it (so a file from another tool is held to "
        "the same): the top-k masses and the tail's sum to 1 (within 0.02: float16 rounding), the draws' "
        "masses to the tail's (within 0.1 %), and no id appears twice among its top-k and draws."
    ),
    columns=V1.columns + (
        Column(
            "sample_ids",
            pa.list_(pa.list_(pa.int32())),
            "Per response token: the distinct ids drawn from the teacher's mass outside topk_ids, most drawn first; empty for --logits topk.",
        ),
        Column(
            "sample_logmass",
            pa.list_(pa.list_(pa.float32())),
            "Per response token: log of the teacher mass each of sample_ids stands for (they sum to exp(tail_logprob)).",
        ),
        Column(
            "entropy",
            pa.list_(pa.float32()),
            "Per response token: the teacher's entropy in nats over its full softmax (what makes a sparse view "
            "lossy); null where the backend cannot see the full distribution (vLLM).",
            nullable=True,
        ),
    ),
    key=("problem_id", "sample_index"),
    checks=(_aligned,),
    older=(V1,),
)
