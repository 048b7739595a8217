"""`paced distill`: its options are the fields of `stages.distill.DistillConfig`."""

from __future__ import annotations

import contextlib
import os

from paced_cli.build import command
from stages import distill as stage

DOC = """Distill the teacher into the student with one weight per problem (fkl, rkl or akl).

Runs unchanged under `accelerate launch` (DDP, FSDP, DeepSpeed): --batch-size stays the
global batch, split across the processes, and only the main process writes and prints.
"""


def _main_process_stdout():
    """Under a launcher every process runs this command; only the main one (RANK 0) prints the
    output path on stdout, so `out=$(accelerate launch ... paced distill ...)` gets it once."""
    if int(os.environ.get("RANK", "0") or 0) == 0:
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(open(os.devnull, "w"))  # noqa: SIM115 (the process ends with the command)


distill = command(stage.DistillConfig, stage.run, DOC, "distill", around=_main_process_stdout)
