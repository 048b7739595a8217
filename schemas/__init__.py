"""Artifact schemas (one module per artifact) and the one place that reads and writes them.

Schemas never import stages.
"""

from schemas import eval_results, problems, rollouts, scores, teacher_logits, train_log, weights
from schemas import snr
from schemas.base import ArtifactSchema, Column, InputError
from schemas.io import Artifact, fingerprint, provenance, read, read_header, table_from_columns, write_file
from schemas.jobs import Job

PROBLEMS = problems.SCHEMA
ROLLOUTS = rollouts.SCHEMA
SCORES = scores.SCHEMA
WEIGHTS = weights.SCHEMA
TEACHER_LOGITS = teacher_logits.SCHEMA
TRAIN_LOG = train_log.SCHEMA
EVAL_RESULTS = eval_results.SCHEMA
EVAL_SUMMARY = eval_results.SUMMARY
SNR = snr.SCHEMA

ALL = [PROBLEMS, ROLLOUTS, SCORES, WEIGHTS, TEACHER_LOGITS, TRAIN_LOG, EVAL_RESULTS, EVAL_SUMMARY]
ALL += [SNR, snr.PROBLEMS]

__all__ = [
    "ALL",
    "PROBLEMS",
    "ROLLOUTS",
    "SCORES",
    "WEIGHTS",
    "TEACHER_LOGITS",
    "TRAIN_LOG",
    "EVAL_RESULTS",
    "EVAL_SUMMARY",
    "Artifact",
    "ArtifactSchema",
    "Column",
    "InputError",
    "Job",
    "fingerprint",
    "provenance",
    "read",
    "read_header",
    "table_from_columns",
    "write_file",
]


def render_docs() -> str:
    """The column reference in docs/artifacts.md, generated from the schemas themselves."""
    lines = [
        "# Artifacts and their columns",
        "",
        "Generated from `schemas/` by `python -m schemas > docs/artifacts.md`; a test keeps the two equal.",
        "",
        "Every artifact is Parquet. Small ones (weights) are one file; long stages write a",
        "directory of `part-NNNNN.parquet` files with `_job.parquet` (written first) and",
        "`_manifest.parquet` (written last, when the artifact is complete), Parquet files of the",
        "artifact's schema with no rows and their record in the `paced.record` metadata, so a job",
        "directory (sharded or not) holds only Parquet files of one schema. An eval `--out` holds",
        "its responses in `results/` and its summary beside them. Open any with one polars call:",
        "",
        "```python",
        "import polars as pl",
        'weights = pl.read_parquet("weights.parquet")',
        'rollouts = pl.read_parquet("rollouts")',
        'responses = pl.read_parquet("eval/results")',
        'summary = pl.read_parquet("eval/summary.parquet")',
        "```",
        "",
        "Every data file (a part of a job, a single-file artifact) carries `paced.schema`,",
        "`paced.schema_version` and `paced.provenance` (the command, resolved options, versions",
        "and input fingerprints) in its key-value metadata: `pyarrow.parquet.read_schema(path).metadata`;",
        "a job's own records (`_job.parquet`, `_manifest.parquet`) carry `paced.schema`,",
        "`paced.schema_version` and `paced.record` (the manifest's holds the provenance). A single-file artifact also",
        "carries `paced.key` (the options and inputs it was made from) and `paced.content` (a",
        "digest of its rows; a plot's, of its pixels): a file whose content no longer matches was",
        "changed after paced wrote it and is yours, never replaced, even with `--overwrite`; a",
        "part of a finished job is checked against the sha256 its manifest records. Inputs from",
        "other tools need only the right columns: strings may be `string` or `large_string`,",
        "integers any width that holds the values, and extra columns are kept.",
        "",
    ]
    for s in ALL:
        lines += [f"## {s.name} (version {s.version})", "", s.doc, ""]
        lines += [f"Unique key: {' + '.join(f'`{k}`' for k in s.key)}.", ""]
        lines += ["| column | type | nullable | meaning |", "|---|---|---|---|"]
        for c in s.columns:
            lines.append(f"| `{c.name}` | `{c.type}` | {'yes' if c.nullable else 'no'} | {c.doc} |")
        lines.append("")
    return "\n".join(lines)
