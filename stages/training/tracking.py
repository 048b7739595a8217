"""Where distill's training curves go besides train_log.parquet: `--report-to` and `--plot`.

- `tensorboard`: event files under `<out>/tensorboard/` (torch's SummaryWriter; needs the
  `tensorboard` package). A resumed run purges the events at and after its first step, so a
  crash's re-done steps are not drawn twice.
- `wandb`: a run in the project `$WANDB_PROJECT` (default `paced`), its files under
  `<out>/wandb/`, with the id derived from --out's job key so a resumed run continues the same
  wandb run; `WANDB_MODE=offline` keeps it on disk (`wandb sync` uploads it later).
- `--plot PNG`: loss, forward and reverse KL, learning rate and mean weight per step, drawn from
  the train log when the run finishes.

Every step's row of train_log.parquet is logged as it is, under `train/<column>`, at its step.
Only the main process of a launch reports.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from schemas import InputError

REPORT_TO = ("none", "tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
LOGGED = ("loss", "fkl", "rkl", "lr", "grad_norm", "tokens", "problems", "weight_sum", "mean_weight", "visited", "seconds")
INSTALL = {"tensorboard": "pip install tensorboard (or pip install 'paced[tracking]')",
           "wandb": "pip install wandb (or pip install 'paced[tracking]')"}


def option_problems(report_to: str) -> list[str]:
    """--report-to's problems, before anything loads: an unknown name, a missing package."""
    if report_to not in REPORT_TO:
        return [f"--report-to {report_to}: use one of {', '.join(REPORT_TO)}"]
    if report_to != "none" and importlib.util.find_spec(report_to) is None:
        return [f"--report-to {report_to}: the {report_to} package is not installed; {INSTALL[report_to]}"]
    return []


class Tracker:
    """Logs train_log rows to the chosen service; a no-op for `none`."""

    def __init__(self, report_to: str, out: Path, job_key: str, options: dict[str, Any], first_step: int) -> None:
        self.kind, self._writer, self._run = report_to, None, None
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(out / TENSORBOARD_DIR), purge_step=first_step if first_step > 1 else None)
        elif report_to == "wandb":
            import wandb

            made = not (out / WANDB_DIR).exists()
            (out / WANDB_DIR).mkdir(exist_ok=True)
            run_id = "paced-" + hashlib.sha256(job_key.encode()).hexdigest()[:16]
            try:
                self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "paced"), dir=str(out), id=run_id,
                                       resume="allow", config=options, name=out.name)
            except Exception as e:  # not logged in, no network, a bad WANDB_* setting: wandb's own errors
                if made:  # what this failed start wrote (its debug logs), in the folder it made
                    shutil.rmtree(out / WANDB_DIR, ignore_errors=True)
                first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                raise InputError(
                    f"--report-to wandb: wandb could not start a run ({type(e).__name__}: {first}); log in "
                    f"(`wandb login` or WANDB_API_KEY), or set WANDB_MODE=offline to keep the run on disk "
                    f"and `wandb sync` it later"
                ) from None

    def log(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        if self._writer is not None:
            for k in LOGGED:
                self._writer.add_scalar(f"train/{k}", float(row[k]), step)
        elif self._run is not None:
            self._run.log({f"train/{k}": row[k] for k in LOGGED}, step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        elif self._run is not None:
            self._run.finish()


PLOT_KIND = "distill-plot"


def plot(log: list[dict[str, Any]], path: Path, title: str, key: str, *, overwrite: bool) -> None:
    """Loss, KLs, learning rate and mean weight per step, to a PNG marked as paced's (the
    run's key), written aside and moved in."""
    from schemas.outputs import save_figure

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in log]
    fig, axes = plt.subplots(3, 1, figsize=(7, 7.5), sharex=True)
    ax = axes[0]
    ax.plot(steps, [r["loss"] for r in log], label="loss (minimised)", color="#222")
    ax.plot(steps, [r["fkl"] for r in log], label="forward KL", color="#2a6", alpha=0.8)
    ax.plot(steps, [r["rkl"] for r in log], label="reverse KL", color="#c33", alpha=0.8)
    ax.set_ylabel("per token, weighted")
    ax.legend(frameon=False)
    ax.set_title(title, fontsize=10)
    axes[1].plot(steps, [r["lr"] for r in log], color="#36c")
    axes[1].set_ylabel("learning rate")
    axes[2].plot(steps, [r["mean_weight"] for r in log], color="#a60")
    axes[2].set_ylabel("mean weight per step")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, path, PLOT_KIND, key, overwrite=overwrite)
    plt.close(fig)
