"""`paced teacher-logits`: its options are the fields of `stages.teacher_logits.TeacherLogitsConfig`."""

from __future__ import annotations

from paced_cli.build import command
from stages import teacher_logits as stage

teacher_logits = command(stage.TeacherLogitsConfig, stage.run, "Store the teacher's top-k log-probabilities on every response token (resumable).", "teacher_logits")
