"""Checkpoints of a distill run: everything `--resume` needs, each written aside and renamed
into place, `state.json` last (a folder without it is not a checkpoint); and the loadable
models that `--export-steps` asks for.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa

import schemas
from schemas import InputError

CHECKPOINTS = "checkpoints"


def found(out: Path) -> list[tuple[int, Path]]:
    """The complete checkpoints in a run directory, (step, folder), oldest first."""
    d = out / CHECKPOINTS
    if not d.exists():
        return []
    found = [(int(p.name.split("-")[1]), p) for p in d.iterdir()
             if schemas.outputs.STEP.fullmatch(p.name) and (p / schemas.outputs.CHECKPOINT_STATE).exists()]
    return sorted(found)


def export_model(job: schemas.Job, step: int, model, tokenizer, log: list[dict], prov: dict) -> None:
    """A loadable model at `step` (safetensors, tokenizer) as <dir>/step-N, with the train log of
    steps 1..N beside it, so that it is a distill output `--init` accepts (a two-stage schedule
    can start from a budget of a longer run): written aside, recorded as the job's own, renamed
    into place (a resumed run writes the same one again)."""
    name = f"step-{step}"
    tmp = schemas.outputs.temp_path(job.dir / name)
    shutil.rmtree(tmp, ignore_errors=True)
    with schemas.outputs.writing(job.dir / name):  # a full disk: exit 2 naming it (safetensors' own error otherwise)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        table = pl.DataFrame(log, schema=log_schema()).to_arrow().cast(schemas.TRAIN_LOG.arrow)
        schemas.write_file(tmp / "train_log.parquet", table, schemas.TRAIN_LOG, prov)
    job.adopt([name])
    if (job.dir / name).exists():  # a resumed run's earlier export of this step: replaced if it holds only that
        kept = schemas.outputs.foreign_inside(job.dir / name)
        if kept:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(f"--out {job.dir}: {name} holds files paced did not write ({', '.join(kept[:5])}); "
                             f"move them out and rerun to resume")
        shutil.rmtree(job.dir / name)
    os.replace(tmp, job.dir / name)


def rng_state() -> dict:
    import torch

    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def save_checkpoint(out: Path, step: int, model, optimizer, scheduler, log: list[dict], keep: int = 2,
                    rng_ranks: list[dict] | None = None) -> None:
    """Everything a resumed run needs, written to a temporary folder and renamed into place.

    `rng_ranks`: under a launcher, every process's RNG state (gathered to the main process,
    the only one that writes); rank 0's is also the top-level state a 1-process resume uses.
    """
    import torch
    from safetensors.torch import save_model

    d = out / CHECKPOINTS
    d.mkdir(exist_ok=True)
    tmp = schemas.outputs.temp_path(d / f"step-{step}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with schemas.outputs.writing(d / f"step-{step}"):
            save_model(model, str(tmp / "model.safetensors"))
            with open(tmp / "optim.pt", "wb") as f:  # a Python file: a failed write surfaces as its OSError
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, f)
            finish_checkpoint(out, tmp, step, log, rng_ranks, keep)
    except BaseException:  # a full disk, Ctrl-C: no half-written checkpoint left
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def finish_checkpoint(out: Path, tmp: Path, step: int, log: list[dict], rng_ranks: list[dict] | None, keep: int,
                       fmt: str | None = None) -> None:
    """RNG, train log and state.json (last: complete) into `tmp`, then rename it into place."""
    import torch

    rng = rng_state() if rng_ranks is None else dict(rng_ranks[0], ranks=rng_ranks)
    with open(tmp / "rng.pt", "wb") as f:
        torch.save(rng, f)
    pl.DataFrame(log, schema=log_schema()).write_parquet(tmp / "train_log.parquet")
    state = {"step": step} if fmt is None else {"step": step, "format": fmt}
    state["files"] = sorted(os.listdir(tmp))  # what it holds: a file of the user's put in it is kept
    (tmp / "state.json").write_text(json.dumps(state))  # written last: complete
    _fsync_tree(tmp)  # on the disk before the rename: a node lost after it leaves a whole checkpoint
    d = out / CHECKPOINTS
    final = d / f"step-{step}"
    if final.exists():  # a resumed run's earlier checkpoint of this step
        remove(final)
    if final.exists():
        os.replace(final, d / f"step-{step}.kept-{os.getpid()}")  # the user's files in it, kept aside
    os.replace(tmp, final)
    for _, old in found(out)[:-keep]:
        remove(old)


def _fsync_tree(d: Path) -> None:
    """Flush the files of folder `d` and the folder itself to the disk."""
    for p in [*(f for f in sorted(d.rglob("*")) if f.is_file() and not f.is_symlink()), d]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove(path: Path) -> None:
    """Delete checkpoint folder `path`: what it recorded holding (`schemas.outputs.checkpoint_files`);
    anything else, a file of the user's, is kept with the folder. A checkpoint of an earlier paced,
    which records nothing, is deleted whole; a folder with no state.json is no checkpoint: kept."""
    files = schemas.outputs.checkpoint_files(path)
    if files is None:
        if (path / schemas.outputs.CHECKPOINT_STATE).is_file():  # an earlier paced's: it lists nothing
            shutil.rmtree(path, ignore_errors=True)
        else:  # empty: what a removal killed between its state.json and its rmdir left, nobody's files
            with contextlib.suppress(OSError):
                path.rmdir()
        return  # no state.json: no checkpoint (what a removal left of one, the user's files): kept
    for name in sorted(files - {schemas.outputs.CHECKPOINT_STATE}) + [schemas.outputs.CHECKPOINT_STATE]:
        p = path / name  # state.json last: killed midway, the list is there for the next removal
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    try:
        path.rmdir()
    except OSError:  # the user's files are left in it
        pass


def clear(out: Path) -> list[str]:
    """Delete a run's checkpoints (`remove` each, and paced's unfinished ones) and then the folder
    if nothing else is left in it; return what was kept (the user's), as "checkpoints/NAME"."""
    d = out / CHECKPOINTS
    if not d.is_dir() or d.is_symlink():
        return []
    for e in sorted(d.iterdir()):
        if e.is_symlink() or not e.is_dir():
            continue
        if schemas.outputs.STEP.fullmatch(e.name):
            remove(e)
        elif schemas.outputs.STEP_TEMP.fullmatch(e.name):  # one being written when a run was killed
            shutil.rmtree(e, ignore_errors=True)
    try:
        d.rmdir()
    except OSError:
        return [f"{CHECKPOINTS}/{e.name}" for e in sorted(d.iterdir())]
    return []


class Damaged(InputError):
    """A checkpoint whose files do not load: cut short (a node lost before its writes reached the
    disk), or changed since."""


def _damage(e: BaseException) -> bool:
    """Whether `e` is what a reader raises on a file cut short or garbled (not an I/O error of
    the disk, running out of memory or a state dict another torch does not take: those are
    raised as they are, for checkpoints that are whole)."""
    import pickle

    from polars.exceptions import ComputeError
    from safetensors import SafetensorError

    if isinstance(e, (SafetensorError, EOFError, pickle.UnpicklingError, json.JSONDecodeError, ComputeError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("PytorchStreamReader" in text or "zip archive" in text)


@contextlib.contextmanager
def loading(path: Path):
    """Loading checkpoint `path`: a file of it cut short or garbled is `Damaged`, naming the
    checkpoint and the cause (torch's, safetensors', JSON's or Parquet's own error otherwise, a
    traceback). Any other failure is raised as it is."""
    try:
        yield
    except Exception as e:
        if isinstance(e, InputError) or not _damage(e):
            raise
        raise Damaged(f"--resume: checkpoint {path} is damaged ({type(e).__name__}: {str(e)[:200]})") from None


def load_checkpoint(path: Path, model, optimizer, scheduler, rank: int = 0, world: int = 1) -> tuple[int, list[dict]]:
    import torch
    from safetensors.torch import load_model

    if not (path / "model.safetensors").exists():
        raise InputError(
            f"--resume: checkpoint {path} was written under accelerate launch with FSDP or DeepSpeed; "
            f"resume it under the same launch configuration"
        )
    with loading(path):
        load_model(model, str(path / "model.safetensors"))
        state = torch.load(path / "optim.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    return load_rng_and_log(path, rank, world)


def load_rng_and_log(path: Path, rank: int, world: int) -> tuple[int, list[dict]]:
    with loading(path):
        return _load_rng_and_log(path, rank, world)


def _load_rng_and_log(path: Path, rank: int, world: int) -> tuple[int, list[dict]]:
    import torch

    rng = torch.load(path / "rng.pt", weights_only=True)
    if len(rng.get("ranks") or []) == world:  # this process's own state, saved by the same launch shape
        rng = rng["ranks"][rank]
    torch.set_rng_state(rng["torch"])
    random.setstate(_as_random_state(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    step = json.loads((path / "state.json").read_text())["step"]
    return step, pl.read_parquet(path / "train_log.parquet", glob=False).to_dicts()


def _as_random_state(s):
    return (s[0], tuple(s[1]), s[2])


def log_schema() -> dict:
    return {c.name: pl.from_arrow(pa.array([], type=c.type)).dtype for c in schemas.TRAIN_LOG.columns}
