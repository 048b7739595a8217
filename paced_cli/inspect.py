"""`paced inspect`: its options are the fields of `stages.inspect.InspectConfig`."""

from __future__ import annotations

from paced_cli.build import command
from stages import inspect as stage

inspect = command(stage.InspectConfig, stage.run, "Describe an artifact: schema, rows, parts, whether finished, what made it and from what (back to the problems file), and its first rows.", "inspect", uses_torch=False)
