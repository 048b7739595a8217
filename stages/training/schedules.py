"""Learning-rate schedules: linear warmup, then cosine decay to 0 or constant."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "constant")


def lr_lambda(total: int, warmup: int, schedule: str):
    """The LambdaLR factor of each step for a run of `total` steps."""
    def f(step: int) -> float:  # step counts from 0 (LambdaLR), learning rate of step + 1
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress_ = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))

    return f
