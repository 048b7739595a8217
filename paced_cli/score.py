"""`paced score`: its options are the fields of `stages.score.ScoreConfig`."""

from __future__ import annotations

from paced_cli.build import command
from stages import score as stage

score = command(stage.ScoreConfig, stage.run, "Check each response's answer against the gold answer, each check bounded in time.", "score", uses_torch=False)
