"""`paced rollout`: its options are the fields of `stages.rollout.RolloutConfig`."""

from __future__ import annotations

from paced_cli.build import command
from stages import rollout as stage

rollout = command(stage.RolloutConfig, stage.run, 'Sample K responses per problem (resumable: rerun the same command after a crash).', "rollout")
