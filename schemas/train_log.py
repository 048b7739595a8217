"""train_log: one row per optimizer step of `paced distill`."""

from __future__ import annotations

import pyarrow as pa

from schemas.base import ArtifactSchema, Column

SCHEMA = ArtifactSchema(
    name="train_log",
    version=2,
    doc="One row per optimizer step of `paced distill`, written to `<out>/train_log.parquet`.",
    columns=(
        Column("step", pa.int32(), "Optimizer step, from 1."),
        Column("epoch", pa.int32(), "Epoch of the step, from 0."),
        Column("loss", pa.float64(), "The weighted batch loss that was minimised: sum_i w_i L_i / N."),
        Column("fkl", pa.float64(), "Weighted forward KL(teacher || student), same reduction."),
        Column("rkl", pa.float64(), "Weighted reverse KL(student || teacher), same reduction; NaN when the teacher logits are sampled or hybrid (draws give no estimate of it)."),
        Column("lr", pa.float64(), "Learning rate used for the step."),
        Column("grad_norm", pa.float64(), "Gradient norm before clipping."),
        Column("tokens", pa.int64(), "Response tokens in the step."),
        Column("problems", pa.int32(), "Problems (N) in the step."),
        Column("weight_sum", pa.float64(), "Sum of the step's problem weights."),
        Column(
            "mean_weight", pa.float64(),
            "weight_sum / problems: the step's loss scale against uniform training (weight-0 problems are "
            "never batched, so with mean-normalised weights it is about N / N_nonzero, not 1).",
        ),
        Column("visited", pa.int32(), "Distinct problems trained on from step 1 through this step."),
        Column("seconds", pa.float64(), "Wall time of the step."),
    ),
    key=("step",),
)
