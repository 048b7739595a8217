"""Where a command may write, and what `--overwrite` may remove: one set of rules for every command.

1. An output is never an input of the same command, never inside one, never holds one, and
   never lies inside another paced job's directory (a finished job holds only its own files).
   Two outputs of one command (`--out`, `--plot`) are never the same path.
2. An existing output is refused unless it is what the same command with the same options
   and inputs wrote (a rerun then resumes, or rewrites the same content). With `--overwrite`
   a different paced output of the same kind is replaced; a file or directory paced did not
   write is refused even then.
3. `--overwrite` removes only what a paced job wrote (`owned`), never follows a symbolic link
   to delete (a link is removed as a link), and a job directory being replaced stays in place
   until its replacement is complete (`schemas.io.Job` writes it beside, then swaps).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable

from schemas.base import InputError

# A job directory's bookkeeping: zero-row Parquet files of the artifact's own schema that carry
# their record (JSON) in the key-value metadata, so a finished job directory holds only Parquet
# files of one schema and `pl.read_parquet(dir)` reads exactly its rows.
JOB_FILE = "_job.parquet"
LOCK_FILE = "_lock.parquet"
MANIFEST_FILE = "_manifest.parquet"
# What earlier paced versions wrote instead (JSON files, a `_lock` file): still read, and replaced
# when such a job resumes.
LEGACY = {JOB_FILE: "_job.json", MANIFEST_FILE: "_manifest.json", LOCK_FILE: "_lock"}
META_RECORD = "paced.record"
# A job's part files: part-00000.parquet, part-00001.parquet, ...
PART = re.compile(r"part-\d{5}\.parquet")


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# What the job protocol itself writes into a job directory: its parts and bookkeeping.
_PROTOCOL = re.compile(
    r"^(_job\.parquet|_manifest\.parquet|_lock\.parquet|_job\.json|_manifest\.json|_lock"
    rf"|{PART.pattern})$"
)
# The hidden temporary name a writer gives what it writes (`.NAME.tmp-PID`, `.NAME.tmp-PID.png`,
# `.NAME.tmp-launch`; a cache `.NAME` as `.NAME.tmp-PID`): paced's only where NAME is.
_TEMP = re.compile(r"(\..+)\.tmp-(\d+|launch)(\.png)?")


def temp_path(path: Path, writer: int | str | None = None, suffix: str = "") -> Path:
    """Where `path` is written before it is renamed into place: `.NAME.tmp-PID` beside it (this
    process's PID, or `writer`: "launch" for what a launcher's ranks write together), `suffix`
    after (".png", so image writers know the format); a hidden NAME keeps its one dot."""
    name = path.name.removeprefix(".")
    return path.with_name(f".{name}.tmp-{os.getpid() if writer is None else writer}{suffix}")


def remove_dead_temps(path: Path, quiet_for: float = 60.0) -> None:
    """Delete the temporaries of `path` (`temp_path`: `.NAME.tmp-PID`, with any suffix) that a
    process of this machine, now dead, left when it was killed while writing `path`: a rerun
    that writes the file again leaves nothing hidden beside it. One left unchanged for less than
    `quiet_for` seconds is kept (its writer may be another machine's, whose processes cannot be
    seen here, still writing it); links are never touched."""
    import time

    from schemas.jobs import process_alive  # (jobs imports this module)

    now = time.time()
    with contextlib.suppress(OSError):
        for e in os.scandir(path.parent):
            m = _TEMP.fullmatch(e.name)
            pid = temp_writer(e.name)
            if m is None or m.group(1) != "." + path.name.removeprefix(".") or pid is None or pid == os.getpid():
                continue
            if e.is_symlink() or not e.is_file(follow_symlinks=False) or now - e.stat(follow_symlinks=False).st_mtime < quiet_for:
                continue
            if process_alive(pid):
                continue
            try:  # what paced writes begins as Parquet or PNG: a file of the user's by that name is kept
                with open(e.path, "rb") as f:
                    if f.read(8)[:4] not in (b"PAR1", b"\x89PNG"):
                        continue
            except OSError:
                continue
            with contextlib.suppress(OSError):
                os.unlink(e.path)


def temp_writer(name: str) -> int | None:
    """The PID of the process writing temporary `name` (`temp_path`), None if it is not one or
    was written under a launcher."""
    m = _TEMP.fullmatch(name)
    return int(m.group(2)) if m is not None and m.group(2).isdigit() else None
# distill's model written aside before it is renamed into place (`.final.tmp-PID`).
_STAGED = {"final"}
# The key of a single-file artifact (Parquet key-value metadata, PNG text chunk): the options
# and inputs it was made from, so a rerun of the same command may replace it without --overwrite.
META_KEY = "paced.key"
META_KIND = "paced.kind"
# A digest of what a single file holds (its rows, or a plot's pixels), so a file edited after
# paced wrote it, its metadata kept, is the user's: never replaced, even with --overwrite.
META_CONTENT = "paced.content"
# eval's --out: its results job (a job directory, or a root of shards) and its summary beside it.
EVAL_RESULTS_DIR = "results"
EVAL_SUMMARY_FILE = "summary.parquet"
# A shard job directory inside its root (`--shard I/N`, `schemas.io.shard_name`).
SHARD_NAME = re.compile(r"^shard-(\d+)-of-(\d+)$")


def _resolved(path: str | os.PathLike, option: str) -> Path:
    """`path` as the system reads it: links resolved one component at a time, so `lnk/..` is the
    parent of the link's target (os.path.abspath would drop `lnk/..` as text first)."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):  # a link that loops back to itself (RuntimeError before Python 3.13)
        raise InputError(f"{option} {path}: is a symbolic link that loops back to itself; remove it or give another path") from None


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def utf8(name: str) -> bool:
    """Whether a path is valid UTF-8 (the file system gave Python bytes it could not decode, kept as
    surrogates, which Arrow cannot take)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_paths(outputs: dict[str, str | os.PathLike | None], inputs: dict[str, Any]) -> None:
    """Refuse outputs that are, hold or lie inside an input, each other, or another paced job.

    `outputs` and `inputs` map an option (`--out`) to a path; an input may also be a list of
    paths or a model id that is not on disk (skipped: a hub id cannot be overwritten). Paths
    are compared after resolving symbolic links, so a link to an input is that input.
    """
    problems: list[str] = []
    for option, value in [*outputs.items(), *inputs.items()]:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and not utf8(str(v)):
                raise InputError(f"{option} {str(v)!r}: the path is not valid UTF-8 (Arrow cannot open it); rename it")
    ins: list[tuple[str, str, Path]] = []
    for option, value in inputs.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and os.path.lexists(v):
                ins.append((option, str(v), _resolved(v, option)))
    outs = [(option, str(v), _resolved(v, option)) for option, v in outputs.items() if v is not None]
    for option, shown, out in outs:
        for in_option, in_shown, src in ins:
            if out == src:
                problems.append(f"{option} {shown}: is also {in_option} {in_shown}; write the output to a new path (paced never writes over an input)")
            elif _inside(out, src):
                problems.append(f"{option} {shown}: lies inside {in_option} {in_shown}; choose a path outside the input")
            elif _inside(src, out):
                problems.append(f"{option} {shown}: holds {in_option} {in_shown}; choose an output path that holds no input")
        job, kind = next(((p, k) for p in out.parents if (k := paced_dir(p))), (None, None))
        if job is not None:
            problems.append(
                f"{option} {shown}: lies inside the paced job directory {job} ({kind}), which holds "
                f"only that job's own files; choose a path outside it"
            )
    for i, (a_option, a_shown, a) in enumerate(outs):
        for b_option, b_shown, b in outs[i + 1 :]:
            if _inside(a, b) or _inside(b, a):
                problems.append(f"{a_option} {a_shown} and {b_option} {b_shown}: one would write over the other; give them different paths")
    if problems:
        raise InputError("\n".join(dict.fromkeys(problems)))


# ---------------------------------------------------------------------------------------
# Job directories: what a paced job wrote there


def job_schema(d: Path) -> str | None:
    """The artifact a paced job directory `d` holds ("rollouts"), None if `d` is not one."""
    for name in (JOB_FILE, MANIFEST_FILE):
        path = record_path(d, name)
        if path is not None:
            try:
                return str(load_record(path).get("schema") or "unknown")
            except (OSError, ValueError, AttributeError):
                return "unknown"
    return None


def shards_schema(d: Path) -> str | None:
    """The artifact the shards in `d` hold, when `d` is the root of a sharded job (`--shard I/N`
    writes `shard-0000I-of-0000N/` job directories into it); None otherwise."""
    try:
        with os.scandir(d) as it:
            for e in it:
                if SHARD_NAME.match(e.name) and e.is_dir(follow_symlinks=False):
                    kind = job_schema(Path(e.path))
                    if kind is not None:
                        return kind
    except OSError:
        pass
    return None


def paced_dir(d: Path) -> str | None:
    """The artifact `d` holds when it is a paced output that holds only its job's own files: a job
    directory, the root of a sharded job, or eval's --out (its results/ job and summary); None
    for any other directory."""
    kind = job_schema(d) or shards_schema(d)
    if kind is None and d.name != EVAL_RESULTS_DIR:
        results = d / EVAL_RESULTS_DIR
        inner = (job_schema(results) or shards_schema(results)) if results.is_dir() and not results.is_symlink() else None
        kind = "eval" if inner == "eval_results" else None
    return kind


def check_shard_root(root: Path, schema: str, count: int) -> None:
    """Refuse to write a shard of a `count`-way `schema` job into `root` unless it is new, empty, or
    holds only shards of that job (and paced's temporaries of them): never into a user's folder,
    another command's shards, or the shards of another split."""
    if not root.is_dir():
        return
    others, kinds, counts = [], set(), set()
    for e in sorted(root.iterdir()):
        base = re.sub(r"^\.(.+)\.(replacing|replaced-\d+)$|^(.+)\.kept-\d+$", lambda m: m.group(1) or m.group(3), e.name)
        m = SHARD_NAME.match(base)
        if m is None or e.is_symlink() or not e.is_dir():
            others.append(e.name)
            continue
        kind = job_schema(e)
        if kind is not None and base == e.name:
            kinds.add(kind)
            counts.add(int(m.group(2)))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise InputError(
            f"--out {root}: holds files that are not shards of a paced {schema} job ({shown}); with --shard, "
            f"--out is a directory of that job's shards alone: choose a new path"
        )
    if kinds - {schema}:
        raise InputError(
            f"--out {root}: holds the shards of a paced {', '.join(sorted(kinds - {schema}))} job, not {schema}; "
            f"choose another --out"
        )
    if counts - {count}:
        raise InputError(
            f"--out {root}: holds the shards of a {'/'.join(map(str, sorted(counts)))}-way split, not of {count}; "
            f"keep one --shard I/N split per directory: use the same N, or choose a new --out"
        )


def record_path(d: Path, name: str) -> Path | None:
    """The bookkeeping file `name` (JOB_FILE, MANIFEST_FILE, LOCK_FILE) of job directory `d`, or
    the file an older paced wrote in its place; None when there is neither."""
    for f in (d / name, d / LEGACY[name]):
        if f.is_file():
            return f
    return None


def load_record(path: Path) -> Any:
    """The record a bookkeeping file holds: the JSON in a Parquet file's `paced.record` metadata,
    or a legacy JSON file's content. Raises OSError or ValueError when it holds none."""
    if path.exists() and not path.is_file():  # a pipe would block the read for ever
        raise ValueError("not a regular file")
    if path.suffix != ".parquet":
        return json.loads(path.read_text())
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except pa.ArrowException as e:
        raise ValueError(f"not a readable Parquet file ({e})") from None
    if META_RECORD.encode() not in meta:
        raise ValueError(f"no {META_RECORD} metadata")
    return json.loads(meta[META_RECORD.encode()].decode("utf-8"))


def recorded_files(d: Path) -> set[str]:
    """The names a job recorded as its own beyond the protocol's (a model's files, a summary)."""
    names: set[str] = set()
    for f in (JOB_FILE, MANIFEST_FILE):
        path = record_path(d, f)
        try:
            names |= set(load_record(path).get("files", [])) if path is not None else set()
        except (OSError, ValueError, AttributeError, TypeError):
            continue
    return names


# What paced, and the trackers it starts, write inside the directories a job owns (distill's
# checkpoints, exported step-N models, tensorboard and wandb logs): per directory name, the names
# its entries may have, and those of their entries (None: none; ANY: anything). An owned directory
# holding anything else is not paced's alone: it is kept, and --overwrite is refused.
_ANY = re.compile(r".*", re.S)
_MODEL_FILES = re.compile(
    r"config\.json|generation_config\.json|model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json"
    r"|tokenizer(_config)?\.json|special_tokens_map\.json|vocab\.json|merges\.txt|added_tokens\.json"
    r"|chat_template\.(jinja|json)|tokenizer\.model|train_log\.parquet"
)
STEP = re.compile(r"step-\d+")  # a checkpoint in checkpoints/, or an exported model in a job directory
STEP_TEMP = re.compile(r"\.step-\d+\.tmp-(\d+|launch)")  # a checkpoint being written (by process PID, or under a launcher)
_INSIDE = {
    "checkpoints": (re.compile(f"{STEP.pattern}|{STEP_TEMP.pattern}"), _ANY),
    "tensorboard": (re.compile(r"events\.out\.tfevents\..+"), None),
    "wandb": (re.compile(r"run-.+|offline-run-.+|latest-run|debug.*\.log"), _ANY),
}


def foreign_inside(path: Path) -> list[str]:
    """The entries inside `path`, a directory a job owns, that paced did not write, as
    "NAME/entry" or "NAME/entry/entry", sorted (for the directories of `_INSIDE` and exported
    step-N models; [] for any other)."""
    name = path.name
    rules = (_MODEL_FILES, None) if STEP.fullmatch(name) else _INSIDE.get(name)
    if rules is None or path.is_symlink() or not path.is_dir():
        return []
    children, grand = rules
    out = []
    with os.scandir(path) as it:
        for e in it:
            rel = f"{name}/{e.name}"
            is_dir = e.is_dir(follow_symlinks=False)
            listed = checkpoint_files(Path(e.path)) if name == "checkpoints" and is_dir else None
            if not children.fullmatch(e.name) or (is_dir and grand is None):
                out.append(rel)
            elif listed is not None:  # a checkpoint that lists what it holds: anything else is not paced's
                with os.scandir(e.path) as inner:
                    out += [f"{rel}/{g.name}" for g in inner if g.name not in listed]
            elif is_dir and grand is not _ANY:
                with os.scandir(e.path) as inner:
                    out += [f"{rel}/{g.name}" for g in inner if not grand.fullmatch(g.name)]
    return sorted(out)


CHECKPOINT_STATE = "state.json"


def checkpoint_files(path: Path) -> set[str] | None:
    """The entries a distill checkpoint folder holds as paced wrote them: the list its
    `state.json` (written last) records, itself included; None for a folder with no such list (a
    checkpoint being written, or one of an earlier paced)."""
    try:
        files = json.loads((path / CHECKPOINT_STATE).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return None
    return set(files) | {CHECKPOINT_STATE} if isinstance(files, list) else None


def owned_names(d: Path, own: Iterable[str]) -> set[str]:
    """The names job directory `d` holds as its own beyond the protocol's: the stage's (`own`)
    and those the job recorded."""
    return set(own) | recorded_files(d)


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> dict[str, Any]:
    """What a finished job records of a file it wrote, to know it later: size, modification time
    (ns) and sha256."""
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def job_digests(d: Path, recorded: Iterable[str], own: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """The digest of every file job `d` holds as its own beyond parts and bookkeeping: each
    recorded name's file, or each file inside a recorded directory (an exported step-N), and
    each visible file the stage writes (`own`: distill's train_log.parquet; not its hidden caches
    or its trackers' folders), by path relative to `d` ("config.json", "step-1/config.json").
    Recorded in the manifest."""
    out = {}
    for name in sorted(own):
        p = d / name
        if not name.startswith(".") and p.is_file() and not p.is_symlink():
            out[name] = file_digest(p)
    for name in sorted(recorded):
        p = d / name
        if p.is_symlink():
            continue
        if p.is_file():
            out[name] = file_digest(p)
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not f.is_symlink():
                    out[str(f.relative_to(d))] = file_digest(f)
    return out


_HASHED: dict[tuple, str] = {}


def _unchanged(f: Path, rec: dict[str, Any]) -> bool:
    """Whether file `f` still holds what a manifest recorded of it (`file_digest`, or a part's
    bytes and sha256): the same size and modification time, else the same sha256."""
    try:
        st = f.lstat()
        if not os.path.isfile(f) or f.is_symlink() or st.st_size != rec.get("bytes"):
            return False
        if rec.get("mtime_ns") == st.st_mtime_ns:
            return True
        seen = (str(f), st.st_size, st.st_mtime_ns, st.st_ino)
        if seen not in _HASHED:  # (a check and the removal after it read a big part once)
            _HASHED[seen] = sha256_file(f)
        return _HASHED[seen] == rec.get("sha256")
    except OSError:
        return False


def foreign_parts(d: Path, key: str | None) -> list[str]:
    """The part-named files of unfinished job `d` (key `key`) that it did not write, sorted: each
    part a job writes carries its key (`paced.key`); a file without paced's metadata, or with
    another job's key, is someone else's. A part of an earlier paced (paced metadata, no key) is
    taken for the job's."""
    import pyarrow.parquet as pq

    out = []
    with os.scandir(d) as it:
        for e in it:
            if not PART.fullmatch(e.name):
                continue
            try:
                meta = (pq.read_schema(e.path).metadata or {}) if e.is_file(follow_symlinks=False) else {}
            except Exception:  # noqa: BLE001 - not Parquet, or damaged: not a part paced finished writing
                meta = {}
            got = meta.get(META_KEY.encode())
            if b"paced.schema" not in meta or (got is not None and got.decode() != key):
                out.append(e.name)
    return sorted(out)


def changed(d: Path) -> list[str]:
    """What job `d` holds that is no longer what it wrote, sorted (paths relative to `d`): finished,
    a part or a recorded file whose content differs from its manifest's record, a part file its
    manifest does not list, and a file inside a recorded directory it does not list (a user's
    file under paced's name); unfinished, the part-named files it did not write (`foreign_parts`)."""
    path = record_path(d, MANIFEST_FILE)
    if path is None:
        job = record_path(d, JOB_FILE)
        try:
            key = None if job is None else load_record(job).get("key")
        except (OSError, ValueError, AttributeError):
            return []
        return foreign_parts(d, key) if key is not None else []
    try:
        manifest = load_record(path)
        parts = {p["file"]: p for p in manifest.get("parts", [])}
        digests = dict(manifest.get("digests") or {})
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return []
    out = [name for name, rec in parts.items() if (d / name).exists() and not _unchanged(d / name, rec)]
    out += [rel for rel, rec in digests.items() if os.path.lexists(d / rel) and not _unchanged(d / rel, rec)]
    if "digests" in manifest:  # inside a directory the job recorded (an export), a file it did not write
        for name in manifest.get("files") or []:
            p = d / name
            if p.is_dir() and not p.is_symlink():
                out += [rel for f in p.rglob("*") if not f.is_dir() or f.is_symlink()
                        for rel in [str(f.relative_to(d))] if rel not in digests]
    with os.scandir(d) as it:
        out += [e.name for e in it if PART.fullmatch(e.name) and e.name not in parts]
    return sorted(out)


def _entries(d: Path, own: Iterable[str], edited: list[str] | None = None) -> list[tuple[os.DirEntry, bool, list[str] | None]]:
    """Each entry of job directory `d`, whether a paced job wrote it, and what inside it paced
    did not write (`foreign_inside`, None where not looked at). Paced's: the protocol's files, the
    names the stage writes there (`own`) and the names the job recorded, none of them `changed`
    since (`edited`, if the caller has it); a directory among those only if it holds nothing else."""
    mine = owned_names(d, own)
    edited = {rel.split("/", 1)[0] for rel in (changed(d) if edited is None else edited)}
    out = []
    with os.scandir(d) as it:
        for e in it:
            inside = None
            if e.name in edited:
                ours = False
            elif paced_temp(e.name, mine) or _PROTOCOL.match(e.name):
                ours = True
            elif e.name in mine:
                inside = foreign_inside(Path(e.path))
                ours = not inside
            else:
                ours = False
            out.append((e, ours, inside))
    return out


def paced_temp(name: str, mine: set[str] = frozenset()) -> bool:
    """Whether `name` is the temporary of something a paced job writes in its directory: a
    protocol file, a name in `mine` (the stage's and the job's recorded names), an exported
    step-N, distill's staged model; `.notes.tmp-1` or `.mydata.tmp-2024` of a user's is not."""
    m = _TEMP.fullmatch(name)
    if m is None:
        return False
    base = m.group(1)  # ".NAME"
    inner = base[1:]
    return (base in mine or inner in mine or inner in _STAGED or bool(_PROTOCOL.match(inner))
            or bool(STEP.fullmatch(inner)))


def foreign(d: Path, own: Iterable[str] = ()) -> list[str]:
    """The entries of job directory `d` that paced did not write, sorted: a user's files, another
    command's artifact, or what they put inside a directory paced writes ("tensorboard/run2").
    `own`: names the stage writes there besides the protocol's."""
    out = []
    edited = changed(d)
    for e, ours, inside in _entries(d, own, edited):
        if not ours:
            inside = foreign_inside(Path(e.path)) if inside is None else inside
            inside += [f"{rel} (not what paced wrote)" for rel in edited if rel.startswith(f"{e.name}/") and rel not in inside]
            out += inside if inside else [f"{e.name} (not what paced wrote)" if e.name in edited else e.name]
    return sorted(out)


def remove_owned(d: Path, own: Iterable[str] = (), *, keep: bool = False, spare: Iterable[str] = ()) -> None:
    """Delete what a paced job wrote in `d` (but the names in `spare`), then `d` if nothing else is
    left (and not `keep`). Symbolic links are removed as links, never followed; entries paced did
    not write are kept."""
    spare = set(spare)
    # The job's record last (_job.parquet, then the manifest, which holds the digests that tell a
    # file the user edited from paced's): killed midway, what is left is still known for a paced
    # job's, with its own files and the user's edits (`Job._finish_cut_swap` finishes removing it).
    last = {JOB_FILE: 1, LEGACY[JOB_FILE]: 1, MANIFEST_FILE: 2, LEGACY[MANIFEST_FILE]: 2}
    for e, ours, _ in sorted(_entries(d, own), key=lambda entry: last.get(entry[0].name, 0)):
        if not ours or e.name in spare:
            continue
        with contextlib.suppress(FileNotFoundError):  # (removed meanwhile by another run finishing the same removal)
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)  # removes links inside as links (fd-based, never follows them)
            else:
                os.unlink(e.path)
    if keep:
        return
    try:
        d.rmdir()
    except OSError:  # something else is left in it: kept
        pass


def refuse_foreign(d: Path, option: str, own: Iterable[str] = ()) -> None:
    """Refuse --overwrite of a directory that holds anything paced did not write."""
    refuse_link(d, option)
    refuse_others(d, option, foreign(d, own))


def refuse_link(d: Path, option: str) -> None:
    """Refuse --overwrite through `d` when it is a symbolic link."""
    if d.is_symlink():
        raise InputError(
            f"{option} {d}: is a symbolic link; --overwrite never replaces through a link: pass the "
            f"directory it points to ({d.resolve()}) or remove the link"
        )


def refuse_others(d: Path, option: str, others: list[str]) -> None:
    """Refuse --overwrite of `d` where it holds `others`, files paced did not write (if any)."""
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise InputError(
            f"{option} {d}: holds files paced did not write ({shown}); --overwrite replaces only a paced "
            f"job's own files: move them out, or choose another {option}"
        )


# ---------------------------------------------------------------------------------------
# Single files: a Parquet artifact or a PNG plot


def table_digest(table) -> str:
    """A digest of a table's rows (column names, types and values): the same for the table paced
    writes and for the file read back, whatever its encoding, chunks, row groups or metadata.
    Columnar (a million rows in a few hundredths of a second): fixed-width columns by their values
    (nulls as zeros) and validity, strings by their offsets and bytes, nested ones as JSON. Prefixed
    "2:"; `same_digest` still checks files written with the first (JSON, unprefixed) digest."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    h = hashlib.sha256()
    for name, column in zip(table.column_names, table.columns):
        t = column.type
        # Each kind of column in one width, so the digest does not depend on how a writer or a
        # reader sized it (polars' large_string, an int32 read as int64); a nested column as JSON.
        kind = ("int" if pa.types.is_integer(t) else "float" if pa.types.is_floating(t) else "bool" if pa.types.is_boolean(t)
                else "text" if pa.types.is_string(t) or pa.types.is_large_string(t)
                else "bytes" if pa.types.is_binary(t) or pa.types.is_large_binary(t) else "nested")
        h.update(json.dumps([name, kind, len(column), column.null_count]).encode())
        if column.null_count:
            h.update(np.packbits(pc.is_null(column).to_numpy(zero_copy_only=False)).tobytes())
        if kind in ("int", "float", "bool"):
            wide = {"int": pa.int64(), "float": pa.float64(), "bool": pa.uint8()}[kind]
            filled = pc.fill_null(column, False if kind == "bool" else 0) if column.null_count else column
            h.update(np.ascontiguousarray(filled.cast(wide).to_numpy()).tobytes())
        elif kind in ("text", "bytes"):
            big = pa.large_string() if kind == "text" else pa.large_binary()
            arr = column.cast(big).combine_chunks() if len(column) else pa.array([], big)
            if len(arr):
                offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
                h.update((offsets - offsets[0]).tobytes())
                h.update(memoryview(arr.buffers()[2])[offsets[0] : offsets[-1]])
        else:
            h.update(json.dumps(column.to_pylist(), default=str).encode())
    return "2:" + h.hexdigest()


def _json_digest(table) -> str:
    """The first table digest (paced before 2026-12-06): JSON of every column's values."""
    h = hashlib.sha256()
    for name, column in zip(table.column_names, table.columns):
        h.update(json.dumps([name, column.to_pylist()], default=str).encode())
    return h.hexdigest()


def same_digest(recorded: str, table) -> bool:
    """Whether `table` is what a file's recorded digest says it held (either digest's form)."""
    return recorded == (table_digest(table) if recorded.startswith("2:") else _json_digest(table))


def pixels_digest(image) -> str:
    """A digest of a PIL image's pixels (mode, size and bytes)."""
    return hashlib.sha256(f"{image.mode}:{image.size}:".encode() + image.tobytes()).hexdigest()


def file_identity(path: Path) -> tuple[str | None, str | None, bool]:
    """(kind, key, edited) that paced recorded in a file it wrote, `edited` when its content is no
    longer what paced wrote (its metadata kept); (None, None, False) for any other file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None, None, False
    if head == b"\x89PNG\r\n\x1a\n":
        try:
            from PIL import Image

            with Image.open(path) as im:
                text = dict(getattr(im, "text", {}) or im.info)
                content = text.get(META_CONTENT)
                edited = content is not None and content != pixels_digest(im)
            return text.get(META_KIND), text.get(META_KEY), edited
        except Exception:  # noqa: BLE001 - a damaged or foreign image is simply not paced's
            return None, None, False
    if head[:4] == b"PAR1":
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(path).metadata or {}
            kind = meta.get(b"paced.schema")
            content = meta.get(META_CONTENT.encode())
            edited = content is not None and not same_digest(content.decode(), pq.read_table(path))
        except Exception:  # noqa: BLE001 - a damaged or foreign Parquet file is not paced's
            return None, None, False
        key = meta.get(META_KEY.encode())
        return (kind.decode() if kind else None), (key.decode() if key else None), edited
    return None, None, False


def check_file(
    path: str | os.PathLike, kind: str, option: str, *, key: str | None, overwrite: bool, suffix: str | None
) -> Path:
    """Check, before any work, that a single file of `kind` may be written at `path`.

    Allowed: a new path; the same command's earlier output (same kind and key); with
    `overwrite`, an earlier paced output of the same kind. Refused: anything else.
    """
    p = Path(path)
    if suffix is not None and p.suffix.lower() != suffix:
        raise InputError(f"{option} {p}: give a {suffix} file name")
    if p.is_symlink():
        raise InputError(f"{option} {p}: is a symbolic link; paced never writes through a link: give the real path or another name")
    if p.is_dir():
        raise InputError(f"{option} {p}: is a directory; give a file name such as {p}/{kind}{suffix or '.parquet'}")
    if p.exists():
        got_kind, got_key, edited = file_identity(p)
        if edited:
            raise InputError(
                f"{option} {p}: was changed after paced wrote it (its content is no longer what paced wrote), "
                f"so it is yours: paced never replaces it, even with --overwrite; choose another path, or move "
                f"or remove it yourself"
            )
        if got_kind != kind:
            what = (f"is a paced {got_kind!r} file, not {kind}; paced replaces only an earlier {kind} file"
                    if got_kind else f"is not a {kind} file paced wrote; paced never replaces a file it did not write")
            raise InputError(
                f"{option} {p}: exists and {what}, even with --overwrite: choose another path or remove it yourself"
            )
        if got_key != key and not overwrite:
            raise InputError(
                f"{option} {p}: holds a {kind} file made with other options or inputs; pass --overwrite "
                f"to replace it, or choose another path"
            )
    parent = p.parent
    if not parent.exists():
        raise InputError(f"{option} {p}: directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise InputError(f"{option} {p}: {parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{option} {p}: directory {parent} is not writable; choose another path")
    return p


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """A failure to write, raised as an OSError that names `path` (what the user sees: the output,
    not its temporary) with its cause: an OSError without a name (pyarrow's), or safetensors'
    SafetensorError, which carries the system's code only in its text ("File too large (os error
    27)", or "IoError(Os { code: 28" in other versions); or an error raised while handling one
    (torch.save into a Python file raises a RuntimeError from the OSError of the file's write)."""
    try:
        yield
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
    except Exception as e:
        m = re.search(r"\(os error (\d+)\)|\bOs \{ code: (\d+)", str(e))
        if type(e).__name__ == "SafetensorError" and m is not None:
            code = int(m.group(1) or m.group(2))
            raise OSError(code, os.strerror(code), str(path)) from e
        cause = e.__cause__ or e.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from e


def save_figure(fig, path: Path, kind: str, key: str, *, overwrite: bool, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically, marked as paced's (kind and key) so a rerun
    may replace it and nothing else is ever replaced: `path` is checked again (`check_file`) just
    before the new file is moved in, since a run may take hours after its first check."""
    import io

    from PIL import Image, PngImagePlugin

    from schemas.io import paced_version

    tmp = temp_path(path, suffix=".png")
    remove_dead_temps(path)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": f"paced {paced_version()}", META_KIND: kind, META_KEY: key})
        buf.seek(0)
        with Image.open(buf) as im:
            info = PngImagePlugin.PngInfo()
            for k, v in im.text.items():
                info.add_text(k, v)
            info.add_text(META_CONTENT, pixels_digest(im))
            with writing(path):
                im.save(tmp, format="png", pnginfo=info, dpi=im.info.get("dpi", (dpi, dpi)))
        check_file(path, kind, "--plot", key=key, overwrite=overwrite, suffix=".png")
        with writing(path):
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
