"""`paced eval`: its options are the fields of `stages.eval.EvalConfig`."""

from __future__ import annotations

from paced_cli.build import command
from stages import eval as stage

eval_ = command(stage.EvalConfig, stage.run, 'Accuracy per benchmark over K samples, with gain and forgetting against a baseline (resumable).', "eval_")
