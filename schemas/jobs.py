"""The job protocol: a resumable job directory written part by part.

    rollouts/
      _job.parquet         what the job is (schema, options, input fingerprints); written first
      _lock.parquet        the process writing it (a second run of the same job is refused);
                           removed when it ends
      part-00000.parquet   each part written to a hidden temporary name, then renamed
      _manifest.parquet    written last, only when every part is done: the artifact is complete

The three bookkeeping files are Parquet files of the artifact's own schema with no rows, their
record in the key-value metadata (`schemas.io.record_table`): the directory holds only Parquet
files of one schema, so polars reads it in one call (`pl.read_parquet("rollouts")`), even one
whose writer was killed. A rerun with the same options skips the finished parts; `schemas.io`
reads a finished job (its manifest, parts and shards) as one artifact. A job directory of an
earlier paced (`_job.json`, `_lock`, `_manifest.json`) is read as before, and its bookkeeping
is rewritten in Parquet when it resumes.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import socket
import sys
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas import outputs
from schemas.base import ArtifactSchema, InputError
from schemas.io import (
    _atomic_write_parquet,
    _atomic_write_record,
    _load_record,
    _with_metadata,
    hash_options,
    record_table,
    shard_disagreements,
)
from schemas.outputs import JOB_FILE, LEGACY, LOCK_FILE, MANIFEST_FILE, load_record, part_name, record_path


def _read_lock(lock: Path) -> dict[str, Any] | None:
    """The holder a lock file names ({"pid": int, "host": ..., "since": ...}), or None when it
    names none: absent, or damaged (not a record, no whole pid)."""
    if not lock.is_file():
        return None
    try:
        holder = load_record(lock)
        int(holder["pid"])
    except (OSError, ValueError, TypeError, KeyError):  # no valid holder
        return None
    return holder


def _lock_holder(d: Path) -> dict[str, Any] | None:
    """The live process holding job directory `d`'s lock (or an earlier paced's `_lock`), or
    None if it is free or its holder is dead."""
    for lock in (d / LOCK_FILE, d / LEGACY[LOCK_FILE]):
        holder = _holder_alive(_read_lock(lock))
        if holder is not None:
            return holder | {"lock": lock}
    return None


_EXCLUSIVE: set[str] = set()  # the directories this process holds `_exclusive` on


@contextlib.contextmanager
def _exclusive(d: Path):
    """Hold `d` against this machine's other paced processes while judging a lock in it dead and
    removing it: a lock is removed as dead only by one process at a time, so two runs that both
    found a dead run's lock do not both take it over (one removing the lock the other has just
    taken, both then writing the job). An advisory `flock` on the directory, released when the
    block ends (or the process dies); where the file system has none (some network file
    systems), the block runs without it, as before. Reentrant within a process."""
    key = os.path.abspath(d)
    if key in _EXCLUSIVE:
        yield
        return
    try:
        import fcntl

        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held: another run is judging or removing what it holds there
            sys.stderr.write(f"note: waiting for another paced process of this machine to finish with {d} "
                             f"(it is taking over a dead run's lock there, or removing a replaced job)\n")
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # not supported here
            pass
        _EXCLUSIVE.add(key)
        try:
            yield
        finally:
            _EXCLUSIVE.discard(key)
    finally:
        os.close(fd)  # releases the flock


def _drop_dead_lock(d: Path) -> None:
    """Remove from job directory `d` a lock of this machine's whose process is dead (a run killed
    after it finished its job, or during a swap): a finished artifact carries no lock."""
    lock = d / LOCK_FILE
    if not lock.is_file():
        return
    with _exclusive(d):
        holder = _read_lock(lock)
        if holder is not None and holder.get("host") == socket.gethostname() and _holder_alive(holder) is None and not _mine(holder):
            with contextlib.suppress(OSError):
                lock.unlink()


def _writer_alive(tmp: Path) -> bool:
    """Whether the temporary file `tmp` (`.NAME.tmp-PID...`) belongs to another live process
    on this machine: one that is about to take the lock or rename it into place."""
    pid = outputs.temp_writer(tmp.name)
    return pid is not None and process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine is alive (and not this one)."""
    return _holder_alive({"pid": pid, "host": socket.gethostname()}) is not None


def _slurm_task() -> dict[str, Any] | None:
    """This process's Slurm task and how often Slurm restarted it: `task` is the array task (or
    the job), its step and its rank in the step, the same across a requeue, which reruns the
    task, on another node maybe, after its earlier run is gone; `restart` is SLURM_RESTART_COUNT,
    which only a requeue raises (two tasks of one allocation differ in step or rank)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    where = ".".join(os.environ.get(k, "-") for k in ("SLURM_STEP_ID", "SLURM_PROCID"))
    return {"task": f"{job}.{where}", "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)}


def _requeued_from(holder: dict[str, Any]) -> bool:
    """Whether lock `holder` is this Slurm task's own, from a run before Slurm requeued it."""
    mine, theirs = _slurm_task(), holder.get("slurm")
    return (mine is not None and isinstance(theirs, dict) and theirs.get("task") == mine["task"]
            and isinstance(theirs.get("restart"), int) and mine["restart"] > theirs["restart"])


def _mine(holder: dict[str, Any] | None) -> bool:
    """Whether a lock names this process: its pid on this machine (a container's paced is often
    pid 1 on every node)."""
    return holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


def _holder_alive(holder: dict[str, Any] | None) -> dict[str, Any] | None:
    if holder is None or _mine(holder):
        return None
    if holder.get("host") != socket.gethostname():
        if _requeued_from(holder):
            return None  # this Slurm task's run before its requeue: Slurm runs it nowhere else since
        return holder  # cannot see another machine's processes: assume alive
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, OverflowError):  # (a number no pid can be: no process)
        return None
    except PermissionError:
        return holder
    return holder


def _any_key(d: Path) -> str | None:
    """The key of the paced job in `d` by its job record, or by its manifest where the record is
    gone (a removal cut between the two: the manifest goes last)."""
    for name in (JOB_FILE, MANIFEST_FILE):
        path = record_path(d, name)
        if path is not None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                key = load_record(path).get("key")
                if key is not None:
                    return key
    return None


def gone_parts(d: Path, manifest: dict[str, Any]) -> list[str]:
    """The part files `manifest` lists that are not in job directory `d`."""
    return [p["file"] for p in manifest.get("parts") or [] if not (d / p["file"]).exists()]


def resized_parts(d: Path, manifest: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(file, size, recorded size) of the part files `manifest` lists whose size in `d` is not the
    one it recorded: changed after paced wrote them (a part of the same size but other bytes is
    found by the sha256 on read)."""
    out = []
    for p in manifest.get("parts") or []:
        f = d / p["file"]
        if f.is_file() and isinstance(p.get("bytes"), int) and f.stat().st_size != p["bytes"]:
            out.append((p["file"], f.stat().st_size, p["bytes"]))
    return out


def _another(holder: dict[str, Any]) -> str:
    """How a refusal names the live process that holds a lock."""
    since = f", since {holder['since']}" if holder.get("since") else ""
    return f"another paced process (pid {holder['pid']} on {holder.get('host')}{since})"


def _only_leftovers(d: Path) -> bool:
    """Whether directory `d` holds nothing, or only what a paced run killed as it began a job
    leaves (its lock, or temporaries of its bookkeeping, their process gone): a new job may begin
    there."""
    for e in d.iterdir():
        if e.name in (LOCK_FILE, LEGACY[LOCK_FILE]) and e.is_file() and not e.is_symlink():
            holder = _read_lock(e)  # a paced lock record (not a file of the user's by that name)
            if holder is not None and _holder_alive(holder) is None:
                continue
            return False
        if _stale_temp(e):
            continue
        return False
    return True


def _stale_temp(e: os.DirEntry | Path, mine: set[str] = frozenset()) -> bool:
    """Whether `e` is a temporary a paced writer left when it was killed (`outputs.paced_temp`
    of its job, `mine` its recorded names), not a link and not another live process's in flight."""
    return outputs.paced_temp(e.name, mine) and not e.is_symlink() and not _writer_alive(Path(e))


class Job:
    """A resumable job directory: parts land atomically, the manifest is written last.

    `options` are every option that changes the output, with the input fingerprints: a rerun
    with the same options resumes; with different ones it is refused, or with `overwrite`
    replaced: the new job is written beside the old one (`.NAME.replacing`) and swapped in by
    `finish`, so a failed or interrupted replacement leaves the old artifact as it was (the
    same command resumes the replacement). Only what a paced job wrote is ever removed
    (`schemas.outputs`); `own` names files the stage writes besides parts and bookkeeping.

    `dir` is where the job writes: `out`, or the replacement beside it until `finish`.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        schema: ArtifactSchema,
        options: dict[str, Any],
        prov: dict[str, Any],
        *,
        overwrite: bool = False,
        own: tuple[str, ...] = (),
        contents: dict[str, str | None] | None = None,
        runtime: dict[str, Any] | None = None,
    ) -> None:
        self.out = Path(out)
        if self.out.name in ("", ".."):  # `--out .` or `--out d/step-1/..`: the directory by its own name
            self.out = Path(os.path.realpath(self.out))  # (`lnk/..` is the parent of the link's target)
        self.dir = self.out
        self.schema = schema
        self.options = json.loads(json.dumps(options, sort_keys=True, default=str))
        self.key = hash_options(self.options)
        self.provenance = prov
        self.overwrite = overwrite
        self.own = own
        # Inputs whose key fingerprint is quick (a model: head and tail bytes), with a closer look
        # at their content (`models.model_digest`): recorded, and compared when the job resumes.
        self.contents = {k: v for k, v in (contents or {}).items() if v is not None}
        # How the run computes, where the numbers depend on it (torch's threads): recorded when the
        # job begins, and what a resumed run goes on with (`began`).
        self.runtime = {k: v for k, v in (runtime or {}).items() if v is not None}
        self.created = False  # this run made `dir`
        # a shard's job (`--shard I/N`: `out` is ROOT/shard-0000I-of-0000N): the root is made with it
        self.is_shard = bool(outputs.SHARD_NAME.match(self.out.name))
        self.root_created = False
        self.fresh = False  # `dir` was new or empty: a refused run leaves it so (`abandon`)

    @property
    def replacement(self) -> Path:
        """Where a replacement of a different job in `out` is written until it is complete."""
        return self.out.with_name(f".{self.out.name}.replacing")

    @property
    def in_place(self) -> bool:
        """Whether `out` already holds this job (the same key): a rerun, not a new job."""
        return self._job_key(self.out) == self.key

    def _job_key(self, d: Path) -> str | None:
        """The key of the paced job in `d`, None if `d` holds none."""
        path = record_path(d, JOB_FILE)
        return None if path is None else _load_record(path, "--out").get("key")

    # -- checks, before any model is loaded ------------------------------------------------
    def check(self) -> None:
        """Refuse an --out that holds something else; decide where to write (`dir`)."""
        d = self.out
        self._finish_cut_swap()
        if self.is_shard and not self.overwrite:
            self._check_other_shards()
        if d.exists() and not d.is_dir():
            raise InputError(f"--out {d}: is a file; {self.schema.name} is written to a directory")
        if not d.exists():
            if d.is_symlink():
                raise InputError(f"--out {d}: is a broken symbolic link; remove it or give another path")
            if self.is_shard and not d.parent.exists() and not d.parent.is_symlink() and d.parent.parent.is_dir():
                self.dir = d  # a sharded job's first shard: `start` makes the root too
                self.fresh = True
                return
            if not d.parent.exists():
                raise InputError(f"--out {d}: parent directory {d.parent} does not exist; create it first")
            if not d.parent.is_dir():
                raise InputError(f"--out {d}: {d.parent} is a file, not a directory; choose another path")
            if not os.access(d.parent, os.W_OK):
                raise InputError(f"--out {d}: parent directory {d.parent} is not writable")
            self.dir = d
            self.fresh = True
            return
        holder = _lock_holder(d)
        if holder is not None and not (self.in_place and self._finished(d)):  # (the same finished job: nothing to write)
            raise InputError(
                f"--out {d}: {_another(holder)} is writing this job; wait for it to finish or stop it (if it is "
                f"gone, delete {holder['lock']})"
            )
        job_file = record_path(d, JOB_FILE)
        if job_file is None:
            if not _only_leftovers(d):
                raise InputError(
                    f"--out {d}: exists and is not a paced job directory; choose a new path "
                    f"(paced never deletes a directory it did not make)"
                )
            self.dir = d
            self.fresh = True
            return
        job = _load_record(job_file, "--out")
        if job.get("schema") != self.schema.name:
            raise InputError(
                f"--out {d}: holds a paced {job.get('schema')!r} artifact, not {self.schema.name}; "
                f"choose another --out"
            )
        version = job.get("version")
        older = version is not None and version != self.schema.version
        new = self.replacement
        resuming = new.is_dir() and not new.is_symlink() and self._job_key(new) == self.key
        if job.get("key") == self.key:
            self.dir = d
            complete = self.complete
            manifest = _load_record(record_path(d, MANIFEST_FILE), "--out") if complete else {}
            changed = [f"{f} ({size:,} bytes, the manifest recorded {recorded:,})" for f, size, recorded in resized_parts(d, manifest)]
            if changed:  # (not written over: the part is the user's now, as an edited single file is)
                raise InputError(
                    f"--out {d}: the finished job's {', '.join(changed[:5])} changed after paced wrote it; move it "
                    f"out (it is yours now), or delete it, and rerun this command to write it again"
                )
            if complete and gone_parts(d, manifest):  # deleted since: the same command writes them again
                record_path(d, MANIFEST_FILE).unlink()
                complete = False
            if complete:  # a finished job (of an earlier version too) is read as it is
                _drop_dead_lock(d)
                return
            holder = _lock_holder(new)
            if holder is not None:  # resumed in place, it would be swapped away under this run
                raise InputError(
                    f"--out {d}: {_another(holder)} is writing its replacement in {new} (--overwrite); wait for "
                    f"it to finish or stop it (if it is gone, delete {holder['lock']})"
                )
            began = job.get("contents") or {}
            moved = sorted(k for k, v in self.contents.items() if k in began and began[k] != v)
            if moved and not (self.overwrite or resuming):  # resumed: parts of two models
                raise InputError(
                    f"--out {d}: holds an unfinished job begun with other weights at {', '.join(moved)} "
                    f"(the same files by name and size, another content: replaced in place since); rerun with "
                    f"the weights it began with to resume it, or pass --overwrite to begin it again"
                )
            strangers = outputs.foreign_parts(d, self.key)
            if strangers:  # resumed, they would be sealed into the artifact as its parts
                is_, it = ("is", "it") if len(strangers) == 1 else ("are", "them")
                raise InputError(
                    f"--out {d}: {', '.join(strangers[:5])}{' ...' if len(strangers) > 5 else ''} {is_} named like "
                    f"a part but this job did not write {it}; move {it} out of the job's directory and rerun to resume"
                )
            if not (older or moved):
                return
            if not (self.overwrite or resuming):  # its parts and this paced's would not make one artifact
                raise InputError(
                    f"--out {d}: holds an unfinished {self.schema.name} job that a paced of another version "
                    f"began (its files are {self.schema.name} version {version}; this paced writes version "
                    f"{self.schema.version}), and one job's parts must share one schema: finish it with the "
                    f"paced that began it, or pass --overwrite to begin it again (the old one is kept until "
                    f"the new one is complete)"
                )
        elif not (self.overwrite or resuming):  # a replacement asked for earlier is resumed
            old = job.get("options", {})
            changed = sorted(k for k in set(old) | set(self.options) if old.get(k) != self.options.get(k))
            detail = "; ".join(f"{k}: {old.get(k)!r} -> {self.options.get(k)!r}" for k in changed[:6])
            raise InputError(
                f"--out {d}: holds a {self.schema.name} job made with other options or inputs "
                f"({detail}); rerun with the original options to resume it, pass --overwrite to "
                f"replace it, or choose another --out"
            )
        outputs.refuse_foreign(d, "--out", self.own)
        if os.path.ismount(d) or d.stat().st_dev != d.parent.stat().st_dev:
            raise InputError(  # (the swap failed at the end, EBUSY, after the whole run)
                f"--out {d}: is a mount point, and paced replaces a job by renaming the new one into its place, "
                f"which a mount point cannot take; give --out a folder inside it"
            )
        if new.exists() or new.is_symlink():
            kind = None if new.is_symlink() or not new.is_dir() else outputs.job_schema(new)
            if kind not in (None, self.schema.name):  # another command's job (a copy of the user's): not a replacement
                raise InputError(
                    f"--out {d}: {new} is in the way of the replacement and holds a paced {kind!r} artifact, "
                    f"not a {self.schema.name} replacement; move it away"
                )
            if new.is_symlink() or not new.is_dir() or (self._job_key(new) is None and not _only_leftovers(new)):
                raise InputError(
                    f"--out {d}: {new} is in the way of the replacement and paced did not write it; "
                    f"move it away"
                )
            holder = _lock_holder(new)
            if holder is not None:
                raise InputError(
                    f"--out {d}: {_another(holder)} is writing its replacement in {new}; wait for it to finish "
                    f"or stop it"
                )
            if self._job_key(new) != self.key:
                if record_path(new, MANIFEST_FILE) is not None:  # finished: an artifact, not a replacement under way
                    raise InputError(
                        f"--out {d}: {new} is in the way of the replacement and holds a finished "
                        f"{self.schema.name} job made with other options (not this command's replacement); "
                        f"move it away"
                    )
                outputs.refuse_foreign(new, "--out", self.own)
        self.dir = new
        if self.complete:  # finished, but stopped before it was swapped in: finish that now
            self._swap()

    def _check_other_shards(self) -> None:
        """Refuse a shard made with other options than the shards already in its root (less
        --shard): they would not read as one artifact, which the reader finds only once every
        shard has run. --overwrite skips this, to redo the shards with new options one by one."""
        root = self.out.parent  # (another N in it is refused by stages.common.shard_out)
        if not root.is_dir():
            return
        others = []
        for e in sorted(root.iterdir()):
            if not outputs.SHARD_NAME.match(e.name) or e.name == self.out.name or not e.is_dir():
                continue
            record = record_path(e, JOB_FILE)
            if record is None:
                continue
            try:
                others.append((e.name, load_record(record)))
            except (OSError, ValueError):  # a damaged record: the reader names it
                continue
            break  # (one is enough: the others are the reader's to compare)
        mine = {"schema": self.schema.name, "version": self.schema.version, "options": self.options}
        problems = shard_disagreements((self.out.name, mine), others)
        if problems:
            raise InputError(
                f"--out {self.out}: the other shards in {root} were made otherwise ({'; '.join(problems[:5])}"
                f"{' ...' if len(problems) > 5 else ''}), and every shard of one artifact is the same command but "
                f"for --shard: give this one their options, or another --out (--overwrite redoes the shards with "
                f"these, each in turn)"
            )

    def _finish_cut_swap(self) -> None:
        """Finish a swap cut between its renames (`_finish_cut_swap_held`), one process of this
        machine at a time: two runs finishing it at once would both move the same folders."""
        out = self.out
        if out.is_symlink() or not out.parent.is_dir() or not any(out.parent.glob(f".{glob_escape(out.name)}.replaced-*")):
            return
        with _exclusive(out.parent):
            self._finish_cut_swap_held()

    def _finish_cut_swap_held(self) -> None:
        """Finish a replacement killed between the two renames of `_swap`: `out` is gone, the old
        job is at `.NAME.replaced-PID` (its process dead) and the finished new one at
        `.NAME.replacing`: the new one is put in place and the old job's own files removed. With no
        finished replacement (its removal by hand), the old job is put back. Killed after both
        renames, while removing the old job (a teacher-logits job is gigabytes): that is finished."""
        out = self.out
        old: list[tuple[Path, tuple[str, str]]] = []  # (the old job, its swapper: the pid in its name, and host)
        for p in out.parent.glob(f".{glob_escape(out.name)}.replaced-*"):
            m = re.fullmatch(rf"\.{re.escape(out.name)}\.replaced-(\d+)", p.name)
            if not (m and p.is_dir() and not p.is_symlink()):
                continue
            if _any_key(p) is None:  # no job's record: a removal of the old job cut after its own files
                if out.exists() and _holder_alive({"pid": int(m.group(1)), "host": socket.gethostname()}) is None:
                    with contextlib.suppress(OSError):
                        p.rmdir()  # emptied, killed before its rmdir
                    if p.exists():  # what is left is the user's: kept where the removal would have put it
                        self._keep(p)
                continue
            # The swap's lock moved with the old job and names its host; without it (removed first,
            # or an earlier paced's swap), the name's pid, on this machine.
            if (p / LOCK_FILE).is_file():
                holder = _lock_holder(p)
            elif out.exists():  # swapped, its removal under way or cut: the name's pid, on this machine
                holder = _holder_alive({"pid": int(m.group(1)), "host": socket.gethostname()})
            else:  # cut between the renames with no lock: an earlier paced's swap, or its lock deleted by hand
                holder = None
            if holder is None:
                lock = _read_lock(p / LOCK_FILE)
                old.append((p, (m.group(1), lock.get("host") if lock is not None else socket.gethostname())))
            elif not out.exists():  # a live process (or another machine's) is between the two renames
                raise InputError(
                    f"--out {out}: {_another(holder)} is putting a replacement in its place (the old job is at {p}); wait for it to finish (if it is gone, "
                    f"delete {holder.get('lock', p / LOCK_FILE)} and rerun: the swap is finished then)"
                )
        if out.exists():  # swapped in, but killed while removing the old job: finish that
            if out.is_dir() and record_path(out, MANIFEST_FILE) is not None:
                for p, _ in old:
                    self._remove_old(p)
            return
        if len(old) != 1:  # none, or more than one: not a swap paced can tell how to finish
            return
        new, (old_job, swapper) = self.replacement, old[0]
        # The replacement keeps its lock through the swap: one naming the swapper (the pid in the old
        # job's name, judged gone above) is the cut swap's own.
        held = _read_lock(new / LOCK_FILE)
        own = held is not None and (str(held.get("pid")), held.get("host")) == swapper
        if new.is_dir() and not new.is_symlink() and record_path(new, MANIFEST_FILE) is not None and (own or _lock_holder(new) is None):
            (new / LOCK_FILE).unlink(missing_ok=True)
            os.replace(new, out)
            self._remove_old(old_job)
        else:
            os.replace(old_job, out)
            _drop_dead_lock(out)  # the swap's, which is dead

    def _remove_old(self, old: Path) -> None:
        """Remove the replaced job's own files; anything left in it is the user's: kept, renamed."""
        outputs.remove_owned(old, self.own)
        if old.exists():  # something appeared in it while the job ran: the user's, kept
            self._keep(old)

    def _keep(self, old: Path) -> None:
        """Move what is left of the replaced job `old` (the user's files) to `NAME.kept-PID`."""
        kept = self.out.with_name(f"{self.out.name}.kept-{old.name.rsplit('-', 1)[1]}")
        try:
            os.replace(old, kept)
        except FileNotFoundError:  # another run finishing the same removal moved it first
            return
        sys.stderr.write(f"note: files that appeared in {self.out} while it was replaced are kept in {kept}\n")

    def locate(self) -> None:
        """Set `dir` as `check` did, without checks: for the processes of a launch other than
        the main one, which checked and started the job."""
        self.dir = self.out
        if self._job_key(self.out) != self.key and self._job_key(self.replacement) == self.key:
            self.dir = self.replacement

    def _manifest(self, d: Path) -> dict[str, Any] | None:
        """The manifest of job directory `d` when it is this job's (finished), else None."""
        m = record_path(d, MANIFEST_FILE)
        if m is None:
            return None
        record = _load_record(m, "--out")
        return record if record.get("key") == self.key else None

    @property
    def complete(self) -> bool:
        return self._manifest(self.dir) is not None

    def start(self) -> None:
        """Create or resume `dir` (call after check() and input validation)."""
        d = self.dir
        if d != self.out and d.exists():
            try:  # its lock first: no other process clears or writes it from now on
                self._lock(d)
            except InputError as e:
                raise InputError(f"{e} (it began writing {d} while this one was getting ready)") from None
            if self._job_key(d) != self.key:
                if record_path(d, MANIFEST_FILE) is not None:  # finished since `check` by another run: its artifact
                    self.release()
                    raise InputError(f"--out {self.out}: another run finished a replacement in {d} while this one was "
                                     f"getting ready; rerun to see what --out holds")
                outputs.remove_owned(d, self.own, keep=True, spare=(LOCK_FILE,))  # an earlier replacement with other options
        if self.is_shard and not d.parent.exists():
            try:
                d.parent.mkdir()
                self.root_created = True
            except FileExistsError:  # another shard made it a moment ago
                pass
        try:
            d.mkdir()
            self.created = True
        except FileExistsError:  # resumed, or another process made it a moment ago: the lock decides
            pass
        if self.created and d == self.out and not self.fresh:  # it held a job at `check`, gone since: a swap under way
            self.created = False
            with contextlib.suppress(OSError):
                d.rmdir()
            raise InputError(f"--out {self.out}: its job was moved away while this run was getting ready (another "
                             f"process is putting its replacement in place); rerun to see what it holds")
        self._lock()
        key = self._job_key(d)
        if key is not None and (self.created or self.fresh):  # another paced job began here since `check`
            self.created = self.fresh = False  # (it is theirs: never abandoned by this run)
        if key is not None and key != self.key:  # (or a replacement was swapped in since: another job)
            self.release()
            raise InputError(
                f"--out {self.out}: another paced job was started in it while this one was getting ready; "
                f"rerun to see what it holds, or choose another --out"
            )
        mine = outputs.owned_names(d, self.own)
        for stale in d.glob(".*.tmp-*"):  # left by a killed writer
            # a user's name or link, or another process's file in flight (its lock, a moment ago): kept
            if not _stale_temp(stale, mine):
                continue
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        legacy = d / LEGACY[JOB_FILE]
        if legacy.is_file():  # an earlier paced's job, resumed: its record is rewritten in Parquet
            _atomic_write_record(_load_record(legacy, "--out"), d / JOB_FILE, self.schema)
            legacy.unlink()
        if not (d / JOB_FILE).exists():
            self._write_job_file([])
        if self.created or self.fresh:
            _STARTED.add(self)

    def _finished(self, d: Path) -> bool:
        """Whether `d` holds this job, finished, with every part its manifest lists."""
        record = self._manifest(d)
        return record is not None and not gone_parts(d, record)

    @property
    def began(self) -> dict[str, Any]:
        """The runtime the job began with (its record's), {} for a new job or an earlier paced's."""
        path = record_path(self.dir, JOB_FILE) if self.dir.is_dir() else None
        if path is None:
            return {}
        record = _load_record(path, "--out")
        return dict(record.get("runtime") or {}) if record.get("key") == self.key else {}

    def _write_job_file(self, files: list[str]) -> None:
        _atomic_write_record(
            {
                "schema": self.schema.name,
                "version": self.schema.version,
                "key": self.key,
                "options": self.options,
                "command": self.provenance.get("command"),
                "files": files,
                "contents": self.contents,
                "runtime": self.began or self.runtime,  # (rewritten by `adopt`: what it began with stays)
            },
            self.dir / JOB_FILE,
            self.schema,
        )

    def adopt(self, names: list[str]) -> None:
        """Record files the stage is about to move into `dir` (a model's files) as the job's own,
        before they are there, so --overwrite may later remove them and nothing else."""
        files = sorted(set(outputs.recorded_files(self.dir)) | set(names))
        self._write_job_file(files)

    def _lock(self, d: Path | None = None) -> None:
        """Take the lock of the job's directory (or of `d`) atomically; a lock left by a dead
        process is taken over."""
        d = self.dir if d is None else d
        lock = d / LOCK_FILE
        if _mine(_read_lock(lock)):
            return  # taken already by this run
        tmp = outputs.temp_path(d / LOCK_FILE)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        slurm = _slurm_task()
        if slurm is not None:  # a requeued run of the same task, on another node, takes the lock over
            me["slurm"] = slurm
        with outputs.writing(lock):
            pq.write_table(record_table(me, self.schema), tmp)
        try:
            with _exclusive(d):  # one process at a time judges a lock here dead and takes it over
                legacy = d / LEGACY[LOCK_FILE]
                holder = _holder_alive(_read_lock(legacy))
                if holder is not None:  # an earlier paced is writing this job
                    raise InputError(
                        f"--out {self.out}: {_another(holder)} is writing this job; wait for it to finish or stop it"
                    )
                legacy.unlink(missing_ok=True)  # its holder is dead
                for _ in range(2):
                    try:
                        os.link(tmp, lock)  # fails if the lock exists: no two holders
                        break
                    except FileExistsError:
                        holder = _holder_alive(_read_lock(lock))
                        if holder is not None:
                            raise InputError(
                                f"--out {self.out}: {_another(holder)} is writing this job; wait for it to finish or "
                                f"stop it"
                            ) from None
                        lock.unlink(missing_ok=True)  # stale: its holder is dead
                else:
                    raise InputError(f"--out {self.out}: another paced process took the job's lock at the same moment; rerun")
        finally:
            tmp.unlink(missing_ok=True)
        atexit.register(self.release)

    def release(self) -> None:
        self._release(self.dir)

    def _release(self, d: Path) -> None:
        lock = d / LOCK_FILE
        if _mine(_read_lock(lock)):
            with contextlib.suppress(OSError):  # (a read-only or lost file system: the error that matters is raised already)
                lock.unlink(missing_ok=True)

    def _holding(self) -> None:
        """Refuse to seal the job unless this process still holds its lock."""
        if not _mine(_read_lock(self.dir / LOCK_FILE)):
            raise InputError(
                f"--out {self.out}: this run lost the lock of {self.dir} (another process took the directory over "
                f"or removed it); its parts are not sealed: rerun to see what --out holds"
            )

    def part(self, index: int) -> Path:
        """Where part `index` of the job is (written or not)."""
        return self.dir / part_name(index)

    def has(self, index: int) -> bool:
        return self.part(index).exists()

    def write(self, index: int, table: pa.Table) -> None:
        table = _with_metadata(table, self.schema, self.provenance)  # with the job's key: the part is known for its own
        table = table.replace_schema_metadata(table.schema.metadata | {outputs.META_KEY.encode(): self.key.encode()})
        _atomic_write_parquet(table, self.part(index))

    def finish(self, num_parts: int) -> None:
        """Write the manifest (the job is complete), then swap a replacement into `out`."""
        self._holding()
        parts = []
        for i in range(num_parts):
            f = self.part(i)
            meta = pq.read_metadata(f)
            key = (meta.metadata or {}).get(outputs.META_KEY.encode())
            if key is not None and key.decode() != self.key:  # (an earlier paced's part has no key: its job's)
                raise InputError(f"--out {self.out}: {f} was written by another job, not this run's; its parts are "
                                 f"not sealed: rerun to see what --out holds")
            parts.append({"file": f.name, "rows": meta.num_rows} | outputs.file_digest(f))
        files = sorted(outputs.recorded_files(self.dir))
        _atomic_write_record(
            {
                "schema": self.schema.name,
                "version": self.schema.version,
                "key": self.key,
                "rows": sum(x["rows"] for x in parts),
                "parts": parts,
                "files": files,
                # what the job's own files hold, so a file edited later is known for the user's
                "digests": outputs.job_digests(self.dir, files, self.own),
                "provenance": self.provenance,
            },
            self.dir / MANIFEST_FILE,
            self.schema,
        )
        (self.dir / LEGACY[MANIFEST_FILE]).unlink(missing_ok=True)
        _STARTED.discard(self)
        if self.dir != self.out:
            self._swap()  # with the replacement's lock held until it is in place
        else:
            self.release()

    def _swap(self) -> None:
        """Put the finished replacement at `out`, holding both locks, its and `out`'s; the old
        job's own files are removed after. Another run that swapped the same job in first has
        done it; a replacement changed since (cleared by another run) is refused."""
        rep = self.dir

        def in_place() -> bool:
            return self._job_key(self.out) == self.key and record_path(self.out, MANIFEST_FILE) is not None

        if in_place() and not rep.exists():  # another run of this command put it in place
            self.dir = self.out
            return
        try:
            self._lock(rep)  # (held from `finish`; taken here when `check` found it finished)
        except OSError:  # gone meanwhile
            if in_place():
                self.dir = self.out
                return
            raise InputError(f"--out {self.out}: its replacement {rep} went away while this run finished it; "
                             f"rerun to see what --out holds") from None
        if self._job_key(rep) != self.key or record_path(rep, MANIFEST_FILE) is None:
            self.release()
            raise InputError(f"--out {self.out}: its replacement {rep} was changed by another run while this one "
                             f"finished it; rerun to see what --out holds")
        old = self.out.with_name(f".{self.out.name}.replaced-{os.getpid()}")
        try:  # no process may be writing the old job while it is moved away
            self._lock(self.out)
        except InputError as e:
            self.release()
            raise InputError(f"{e}; this run's finished replacement stays in {rep}: rerun this command once "
                             f"that process is done to put it in place") from None
        try:
            os.replace(self.out, old)  # two renames: `out` is the old job or the new one, never a mix
        except OSError as e:  # `old` is there, not empty: what an earlier run of this pid left (another machine's)
            self.release()
            self._release(self.out)  # (both locks: this run holds neither now)
            raise InputError(f"--out {self.out}: cannot move the old job aside to {old} ({e.strerror}): an earlier "
                             f"run left that folder; move it away and rerun this command (its finished "
                             f"replacement in {rep} is put in place then)") from None
        try:
            os.replace(rep, self.out)  # (killed between the two: the next `check` finishes it)
        except OSError as e:
            raise InputError(f"--out {self.out}: something was put there while this run swapped its replacement in "
                             f"({e.strerror}); the old job is at {old}, this run's at {rep}: rerun to finish "
                             f"the swap once --out is free") from None
        self.dir = self.out
        self.release()  # the replacement's lock, moved in with it
        self._remove_old(old)

    def abandon(self, work_too: bool = False) -> None:
        """Remove what this run created (bad input found mid-job) while it has done no work
        (`untouched`), or with `work_too` its parts as well (work the corrected run could not
        resume: checked by a verifier that raised, which the fix changes, and with it the job's
        key): never anything else. A job directory that was new or empty is left as it was: gone,
        or empty."""
        self.release()
        _STARTED.discard(self)
        if (self.created or self.fresh) and self.dir.is_dir() and (work_too or self.untouched()):
            outputs.remove_owned(self.dir, self.own, keep=not self.created)
        if self.root_created:
            with contextlib.suppress(OSError):  # only if empty: another shard may be in it
                self.dir.parent.rmdir()

    def untouched(self) -> bool:
        """Whether the job has done no work yet: no part, no folder (checkpoints, exports, logs),
        no file it recorded as its own (distill's model, moved in before its manifest)."""
        recorded = outputs.recorded_files(self.dir)
        with os.scandir(self.dir) as it:
            return not any(outputs.PART.fullmatch(e.name) or (e.is_dir() and not e.name.startswith(".")) or e.name in recorded
                           for e in it)


# Jobs this process started and has not finished: a run refused or failed after it started abandons
# those it began in a new or empty directory while they did no work (`abandoned_on_failure`).
_STARTED: set[Job] = set()


@contextlib.contextmanager
def abandoned_on_failure():
    """Run a command so that, if it is refused (InputError) or fails (any other error, e.g. a
    model that does not load) after a job began in a new or empty directory, that job is
    abandoned: the corrected command is not refused for "other options" or as unfinished. Work
    done is kept, for the corrected rerun to resume; a kill or Ctrl-C abandons nothing."""
    _STARTED.clear()
    try:
        yield
    except Exception:
        for job in list(_STARTED):
            with contextlib.suppress(OSError):  # (the file system that failed the run may fail this too: its error is the one to see)
                job.abandon()
        raise
    finally:
        _STARTED.clear()
