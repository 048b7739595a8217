"""`paced weight`: its options are the fields of `stages.weight.WeightConfig`."""

from __future__ import annotations

from paced_cli.build import command
from stages import weight as stage

weight = command(stage.WeightConfig, stage.run, 'Per-problem pass rate p and weight w(p) from scores (fast: rerun it alone with a new alpha, beta).', "weight", uses_torch=False)
