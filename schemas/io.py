"""The one place that reads and writes artifacts (the job protocol that writes a directory
of parts, with its lock and manifest, is `schemas/jobs.py`).

An artifact is either a single Parquet file (small artifacts such as weights) or a job
directory of parts written by a long stage:

    rollouts/
      _job.parquet         what the job is (schema, options, input fingerprints); written first
      part-00000.parquet   each part written to a hidden temporary name, then renamed
      part-00001.parquet
      _manifest.parquet    written last, only when every part is done: the artifact is complete

The bookkeeping files are Parquet files of the artifact's schema with no rows, their record
(JSON) in the key-value metadata (`schemas.outputs.load_record`), so a finished job directory
holds only Parquet files of one schema: `pl.read_parquet("rollouts")` reads exactly its rows,
shards included. Job directories of earlier versions (`_job.json`, `_manifest.json`) are read
too. Every Parquet file carries the schema name, version and provenance in its key-value
metadata, so any single part says how it was made.

Inputs are accepted from any tool: a Parquet file, or a directory of Parquet files, with the
right columns and types. Files that declare another paced schema or version are refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sys
from dataclasses import dataclass, replace
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any, Iterable

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import outputs
from schemas.outputs import JOB_FILE, MANIFEST_FILE, META_RECORD, SHARD_NAME, load_record, record_path
from schemas.base import ArtifactSchema, InputError, check_types, conform_with_runs

META_SCHEMA = b"paced.schema"
META_VERSION = b"paced.schema_version"
META_PROVENANCE = b"paced.provenance"
# zstd keeps token-id lists small and reads fast; every reader in the field supports it.
COMPRESSION = "zstd"


def paced_version() -> str:
    try:
        return _metadata.version("paced")
    except _metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


# ---------------------------------------------------------------------------------------
# Fingerprints and provenance


def fingerprint(path: str | os.PathLike) -> str:
    """A content fingerprint of an artifact: its bytes, or its manifest's part checksums."""
    p = Path(path)
    if p.is_dir():
        shards = shard_dirs(p, "input")
        if shards is not None:
            body = json.dumps([fingerprint(d) for d in shards])
            return "sha256:" + hashlib.sha256(body.encode()).hexdigest()
        if record_path(p, MANIFEST_FILE):
            m = read_manifest(p, "input")
            body = json.dumps([(x["file"], x["sha256"]) for x in m["parts"]])
            return "sha256:" + hashlib.sha256(body.encode()).hexdigest()
        h = hashlib.sha256()
        for f in _parquet_files(p):
            h.update(f.name.encode() + outputs.sha256_file(f).encode())
        return "sha256:" + h.hexdigest()
    return "sha256:" + outputs.sha256_file(p)




def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}"


def shard_dirs(p: Path, option: str) -> list[Path] | None:
    """The shard job directories of a sharded artifact, all present and finished; None if
    `p` is not sharded. A missing or unfinished shard is refused by name."""
    found = {}
    for d in p.iterdir() if p.is_dir() else []:
        m = SHARD_NAME.match(d.name)
        if m and d.is_dir():
            found[(int(m.group(1)), int(m.group(2)))] = d
    if not found:
        return None
    counts = {n for _, n in found}
    if len(counts) > 1:
        raise InputError(
            f"{option} {p}: holds shards of different splits ({', '.join(f'of {n}' for n in sorted(counts))}); "
            f"keep one --shard I/N split per directory"
        )
    n = counts.pop()
    beyond = [d.name for (i, _), d in sorted(found.items()) if i >= n]
    if beyond:
        raise InputError(
            f"{option} {p}: {', '.join(beyond[:3])} is not a shard of a {n}-way split (shard I of N needs "
            f"I < N); paced names shards shard-IIIII-of-NNNNN: move the folder out, or rename it"
        )
    missing = [f"{i}/{n}" for i in range(n) if (i, n) not in found]
    unfinished = [f"{i}/{n}" for (i, _), d in sorted(found.items()) if not record_path(d, MANIFEST_FILE)]
    if missing or unfinished:
        parts = ([f"missing shard(s) {', '.join(missing)}"] if missing else []) + (
            [f"unfinished shard(s) {', '.join(unfinished)}"] if unfinished else []
        )
        raise InputError(
            f"{option} {p}: {'; '.join(parts)}; run (or rerun) the command with --shard I/N for each "
            f"before reading the artifact as a whole"
        )
    return [found[(i, n)] for i in range(n)]


def hash_options(options: dict[str, Any]) -> str:
    body = json.dumps(options, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


# The fields of a provenance record that paced reads back, with their JSON types.
PROVENANCE_TYPES = {"stage": str, "command": str, "options": dict, "paced_version": str, "libraries": dict,
                    "inputs": dict, "problems": str}


def wrong_types(record: dict[str, Any], types: dict[str, type]) -> list[str]:
    """The fields `types` names that `record` holds with another JSON type (null stands for absent;
    true and false are not numbers)."""
    return [k for k, kind in types.items() if record.get(k) is not None
            and (not isinstance(record[k], kind) or (kind is int and isinstance(record[k], bool)))]


def provenance(
    stage: str,
    options: dict[str, Any],
    inputs: dict[str, "Artifact"] | None = None,
    *,
    problems: str | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """How an artifact was made: the command line, resolved options, versions, inputs.

    `command` is the command line as the user could retype it (the CLI passes it; resume
    hints quote it); without one, `paced <stage>`.

    `problems` is the fingerprint of the problems file the artifact derives from (its
    lineage): it travels rollouts -> scores -> weights, so a stage can tell when two inputs
    come from different problem sets.
    """
    libs = {}
    for lib in ("torch", "transformers", "pyarrow", "polars", "math-verify", "vllm"):
        try:
            libs[lib] = _metadata.version(lib)
        except _metadata.PackageNotFoundError:
            pass
    return {
        "stage": stage,
        "command": command or f"paced {stage}",
        "options": json.loads(json.dumps(options, default=str)),
        "paced_version": paced_version(),
        "libraries": libs,
        "inputs": {
            name: {"path": str(a.path), "fingerprint": a.fingerprint, "schema": a.schema_name}
            for name, a in (inputs or {}).items()
        },
        "problems": problems,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def lineage(artifact: "Artifact") -> str | None:
    """The fingerprint of the problems file an artifact derives from, when it says."""
    return (artifact.provenance or {}).get("problems")


def check_lineage(expected: str | None, expected_from: str, artifact: "Artifact", option: str, allow: bool) -> str | None:
    """Refuse an input made from another problems file than `expected`; with `allow`, return
    the warning to print instead. A user's file that says nothing of its lineage passes."""
    got = lineage(artifact)
    if expected is None or got is None or got == expected:
        return None
    message = (
        f"{option} {artifact.path}: is stale or from another data set: it was made from a "
        f"problems file with fingerprint {got[:19]}..., but {expected_from} has "
        f"{expected[:19]}...; regenerate {option} from the same problems, or pass "
        f"--allow-stale if you mean to mix them"
    )
    if not allow:
        raise InputError(message)
    return message


# ---------------------------------------------------------------------------------------
# Reading


@dataclass
class Artifact:
    """A validated input: the rows in canonical types, and where they came from."""

    path: Path
    frame: pl.DataFrame
    fingerprint: str
    schema_name: str
    provenance: dict[str, Any] | None
    key_runs: pl.DataFrame | None = None
    """One row per problem: ``start`` (its first row in ``frame``) and ``problem_id``, when
    `schemas.base.key_runs` proved the two-column key unique (rows grouped by problem_id,
    sample_index increasing in each); None otherwise. Lets a stage aggregate per problem
    without hashing every row."""


def _parquet_files(directory: Path, option: str = "input") -> list[Path]:
    files = sorted(f for f in directory.iterdir() if f.suffix == ".parquet" and not f.name.startswith((".", "_")))
    odd = [f for f in files if not outputs.utf8(f.name)]
    if odd:
        raise InputError(f"{option} {directory}: {str(odd[0].name)!r} is not a valid UTF-8 name (Arrow cannot open it); rename it")
    return files


def _declared(path: Path, meta: dict[bytes, bytes] | None, schema: ArtifactSchema, option: str):
    """Refuse a file that declares another paced schema or version."""
    if not meta or META_SCHEMA not in meta:
        return None
    try:
        name = meta[META_SCHEMA].decode()
        version = int(meta.get(META_VERSION, b"0").decode() or 0)
    except ValueError:  # not UTF-8, or a version that is not a number
        raise InputError(
            f"{option} {path}: its paced.schema / paced.schema_version metadata "
            f"({meta[META_SCHEMA][:60]!r}, {(meta.get(META_VERSION) or b'')[:60]!r}) is not a name and a whole number; "
            f"drop the paced.* metadata (a file from another tool needs none) or regenerate it with paced"
        ) from None
    if name != schema.name:
        raise InputError(
            f"{option} {path}: this is a paced {name!r} artifact, but {option} expects a "
            f"{schema.name!r} artifact; pass the {schema.name} file instead"
        )
    if schema.variant(pa.schema([]), version) is None:
        raise InputError(
            f"{option} {path}: {schema.name} schema version {str(version)[:20]}, but this paced "
            f"(version {paced_version()}) reads version "
            f"{' or '.join(str(v) for v in sorted({schema.version, *(o.version for o in schema.older)}))}; regenerate it with "
            f"this paced version, or convert it"
        )
    prov = meta.get(META_PROVENANCE)
    if not prov:
        return {}
    try:
        prov = json.loads(prov)
    except ValueError:
        prov = None
    if not isinstance(prov, dict):
        raise InputError(
            f"{option} {path}: its paced.provenance metadata is not a JSON object; regenerate the "
            f"file with paced, or drop the paced.* metadata"
        )
    wrong = [f"{k!r} is {type(prov[k]).__name__}, not {PROVENANCE_TYPES[k].__name__}" for k in wrong_types(prov, PROVENANCE_TYPES)]
    if wrong:
        raise InputError(
            f"{option} {path}: its paced.provenance metadata is damaged ({'; '.join(wrong)}); regenerate "
            f"the file with paced, or drop the paced.* metadata"
        )
    return prov


def _variant(arrow_schema: pa.Schema, schema: ArtifactSchema) -> ArtifactSchema:
    """The version of `schema` a file is checked against (`ArtifactSchema.variant`); `_declared`
    has refused versions paced does not read."""
    meta = arrow_schema.metadata or {}
    declared = None
    if meta.get(META_SCHEMA) == schema.name.encode():
        declared = int(meta.get(META_VERSION, b"0").decode() or 0)
    return schema.variant(arrow_schema, declared) or schema


def parquet_schema(path: Path, option: str) -> pa.Schema:
    if path.exists() and not path.is_dir() and not path.is_file():  # a pipe or a device: the read would block for ever
        raise InputError(f"{option} {path}: not a regular file (a named pipe or a device?); give a Parquet file")
    try:
        return pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(
            f"{option} {path}: not a readable Parquet file ({e}); write it with polars "
            f"`df.write_parquet(...)` or pyarrow `pq.write_table(...)`"
        ) from None


_NOTED_PARTS: set[tuple[str, str]] = set()  # (option, part) said once per process


def _note_lone_part(p: Path, option: str) -> None:
    """A part of a paced job given alone (a tab completion one level too deep, say) is read as a
    file of its own: said on stderr, since the job's other parts and its checksums are left out."""
    if not outputs.PART.fullmatch(p.name) or not record_path(p.parent, JOB_FILE) or (option, str(p)) in _NOTED_PARTS:
        return
    _NOTED_PARTS.add((option, str(p)))
    n = sum(1 for f in p.parent.iterdir() if outputs.PART.fullmatch(f.name))
    sys.stderr.write(f"note: {option} {p} is one of the {n} part(s) of the paced job {p.parent}: only its rows are "
                     f"read; pass {p.parent} to read the whole artifact\n")


def artifact_files(p: Path, option: str) -> tuple[list[Path], dict[str, Any] | None]:
    """The Parquet files of an artifact path, and the manifest's provenance if any."""
    if not p.is_dir():
        _note_lone_part(p, option)
        return [p], None
    if record_path(p, MANIFEST_FILE):
        m = read_manifest(p, option)
        verify_parts(p, m, option)
        return [p / x["file"] for x in m["parts"]], m.get("provenance")
    shards = shard_dirs(p, option)
    if shards is not None:
        check_shards_agree(p, shards, option)
        files, prov = [], None  # the shards agree: the first one's provenance stands for all
        for d in shards:
            part_files, shard_prov = artifact_files(d, option)
            files += part_files
            prov = prov if prov is not None else shard_prov
        return files, prov
    if record_path(p, JOB_FILE):
        job = read_job(p, option)
        raise InputError(
            f"{option} {p}: this {job.get('schema', '')} job is not finished (no "
            f"{MANIFEST_FILE}); rerun the command that made it to resume it: "
            f"{job.get('command', '')}"
        )
    files = _parquet_files(p, option)
    if not files:
        raise InputError(
            f"{option} {p}: the directory holds no .parquet files; pass a Parquet file "
            f"or a directory of them"
        )
    return files, None


def check_shards_agree(p: Path, shards: list[Path], option: str) -> None:
    """The shards of one artifact must be one job split by --shard: the same schema and the
    same options (those that define the output, from each shard's job record, less --shard).
    Shards a user assembled without paced's job files are left to the row checks."""
    jobs = [(d.name, read_job(d, option)) for d in shards if record_path(d, JOB_FILE)]
    problems = shard_disagreements(jobs[0], jobs[1:]) if len(jobs) > 1 else []
    if problems:
        raise InputError(
            f"{option} {p}: its shards were made with different options ({'; '.join(problems[:5])}"
            f"{' ...' if len(problems) > 5 else ''}); every shard of one artifact is the same command but "
            f"for --shard: rerun the odd shard(s) with the others' options (add --overwrite)"
        )


def shard_disagreements(reference: tuple[str, dict[str, Any]], others: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Where job records of shards (name, record) differ from `reference`'s in what defines the
    output: schema, version, options and inputs, less --shard."""
    def identity(job: dict[str, Any]) -> dict[str, Any]:
        options = job.get("options") if isinstance(job.get("options"), dict) else {}
        inputs = options.get("inputs") if isinstance(options.get("inputs"), dict) else {}
        flat = {k: v for k, v in options.items() if k not in ("shard", "inputs")}
        return {"schema": job.get("schema"), "version": job.get("version"), **flat,
                **{f"inputs.{k}": v for k, v in inputs.items()}}

    def shown(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."

    first, ref = reference[0], identity(reference[1])
    problems = []
    for name, job in others:
        got = identity(job)
        for k in sorted(ref.keys() | got.keys()):
            if ref.get(k) != got.get(k):
                problems.append(f"{name} has {k} {shown(got.get(k))} where {first} has {shown(ref.get(k))}")
    return problems


def headers_to_check(files: list[Path]) -> list[Path]:
    """The files among an artifact's whose Parquet header (declared schema, version, column
    types) must be read: all of a user's files, but only the first part of a job directory
    with a manifest. `artifact_files` has checked every listed part's size and sha256 against
    that manifest, so the parts are the ones the job wrote, all with one schema; 20,000
    header reads would cost more than the rows they describe."""
    out, checked = [], {}  # directory -> whether each of its files needs its header read
    for f in files:
        d = f.parent
        if d not in checked:
            checked[d] = not record_path(d, MANIFEST_FILE)
        elif not checked[d]:
            continue
        out.append(f)
    return out


def read_manifest(d: Path, option: str) -> dict[str, Any]:
    """The manifest of finished job directory `d`, its structure checked: each part with its
    file name, rows, bytes and sha256, and the rows adding up. One edited by hand, torn, or
    left by another tool is refused by name rather than failing later on a missing key."""
    path = record_path(d, MANIFEST_FILE) or d / MANIFEST_FILE
    m = _load_record(path, option)
    fields = (("file", str), ("rows", int), ("bytes", int), ("sha256", str))
    bad = []
    parts = m.get("parts")
    if not isinstance(parts, list):
        bad.append("it has no 'parts' list")
        parts = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            bad.append(f"parts[{i}] is not an object")
            continue
        missing = [k for k, t in fields if not isinstance(part.get(k), t) or isinstance(part.get(k), bool)]
        if missing:
            bad.append(f"parts[{i}] lacks {', '.join(repr(k) for k in missing)}")
        elif Path(part["file"]).name != part["file"] or part["file"].startswith((".", "_")) or not part["file"].endswith(".parquet"):
            bad.append(f"parts[{i}] names {part['file']!r}, not a Parquet file of the job directory")
    rows = m.get("rows")
    if not isinstance(rows, int) or isinstance(rows, bool):
        bad.append("it has no 'rows' count")
    elif not bad and rows != sum(x["rows"] for x in parts):
        bad.append(f"it records {rows:,} rows in all but {sum(x['rows'] for x in parts):,} in its parts")
    if bad:
        shown = "; ".join(bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
        raise InputError(
            f"{option} {path}: {shown}. The manifest is damaged: delete it and rerun the command that "
            f"made the job (its finished parts are checked and kept): {_job_command(d)}"
        )
    return m


def _job_command(d: Path) -> str:
    """The command that made job directory `d`, as its job record says, for a hint."""
    try:
        job = load_record(record_path(d, JOB_FILE) or d / JOB_FILE)
        return str(job["command"]) if isinstance(job, dict) and job.get("command") else "the command that made it"
    except (OSError, ValueError):
        return "the command that made it"


def verify_parts(d: Path, manifest: dict[str, Any], option: str) -> None:
    """Every part the manifest lists must be there with its recorded size and checksum, and no
    part it does not list may be there (polars, reading the directory, would include it)."""
    bad = []
    for part in manifest["parts"]:
        f = d / part["file"]
        if not f.is_file():
            bad.append(f"{part['file']} is missing")
        elif f.stat().st_size != part["bytes"]:
            bad.append(f"{part['file']} has {f.stat().st_size:,} bytes, the manifest recorded {part['bytes']:,} (truncated or rewritten)")
        elif outputs.sha256_file(f) != part["sha256"]:
            bad.append(f"{part['file']} does not match its recorded sha256 (altered)")
    if bad:
        raise InputError(
            f"{option} {d}: {'; '.join(bad)}. To regenerate only those parts, delete them and "
            f"{MANIFEST_FILE}, then rerun: {_job_command(d)}"
        )
    listed = {part["file"] for part in manifest["parts"]}
    extra = sorted(e.name for e in os.scandir(d) if outputs.PART.fullmatch(e.name) and e.name not in listed)
    if extra:
        raise InputError(
            f"{option} {d}: holds {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}, which "
            f"{MANIFEST_FILE} does not list (left by another run, or copied in); paced reads only the "
            f"listed parts, but polars reading the directory's *.parquet would read these too: move them out"
        )


def _checked_files(p: Path, schema: ArtifactSchema, option: str) -> tuple[list[Path], dict[str, Any] | None, ArtifactSchema]:
    """An artifact's Parquet files, its provenance (the job's record, else the first file's) and
    the version of `schema` its files are read as (an earlier one of `schema.older` when they all
    are of it; files of several versions do not read as one and are refused when read), every
    file's declared schema and column types checked (one per distinct header, see
    `headers_to_check`); no rows read."""
    files, prov = artifact_files(p, option)
    versions = {}
    for f in headers_to_check(files):
        arrow_schema = parquet_schema(f, option)
        declared = _declared(f, arrow_schema.metadata, schema, option)
        prov = prov if prov is not None else declared
        variant = _variant(arrow_schema, schema)
        check_types(arrow_schema, variant, f"{option} {f}")
        versions[variant.version] = variant
    return files, prov, next(iter(versions.values())) if len(versions) == 1 else schema


def read(
    path: str | os.PathLike,
    schema: ArtifactSchema,
    *,
    option: str,
    columns: list[str] | None = None,
    allow_empty: bool = False,
) -> Artifact:
    """Read and validate an artifact (a file or a directory of parts) given to `option`.

    `columns` narrows what is required and loaded to those schema columns (the key is always
    included), so `paced weight` accepts a user's scores file with just the columns it uses.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{option} {p}: no such file or directory; check the path")
    keep = None if columns is None else list(dict.fromkeys([*schema.key, *columns]))
    if keep is not None:
        schema = _narrowed(schema, keep)
    files, prov, read_as = _checked_files(p, schema, option)
    if read_as.version != schema.version:  # an earlier version's artifact: read (and checked) as it is
        lacking = [c for c in keep or () if c not in {col.name for col in read_as.columns}]
        if lacking:
            raise InputError(
                f"{option} {p}: a {schema.name} artifact of schema version {read_as.version}, without "
                f"{', '.join(repr(c) for c in lacking)} (added since: this paced writes version "
                f"{schema.version}); regenerate it with this paced"
            )
        schema = read_as
    wanted = None if columns is None else [c.name for c in schema.columns]
    frame = None
    if len(files) > 1:
        # One call for all parts: polars reads them in parallel, where a loop over 20,000 parts
        # of 4,096 scores (80 M rows, `paced score`'s default part size) spends most of its
        # time per call. Parts whose schemas differ (a user's files) are read one by one below.
        try:
            frame = pl.read_parquet(files, columns=wanted, hive_partitioning=False, glob=False)  # a path is a name, not a pattern: `g[1].parquet`
        except (pl.exceptions.PolarsError, OSError):
            frame = None
    if not files:  # a sharded artifact whose every shard is empty (rollout and teacher-logits finish them so)
        frame = pl.DataFrame(schema=_polars_schema(schema, wanted))
    if frame is None:
        frames = []
        for f in files:
            try:
                frames.append(pl.read_parquet(f, columns=wanted, glob=False))
            except (pl.exceptions.PolarsError, OSError) as e:
                raise InputError(f"{option} {f}: cannot be read ({e}); regenerate it") from None
        try:
            frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
        except pl.exceptions.PolarsError as e:
            raise InputError(
                f"{option} {p}: its Parquet files do not share one schema ({e}); give them the "
                f"same columns and types"
            ) from None
    check_rows(p, files, option, lambda: {None: frame.height})
    frame, runs = conform_with_runs(frame, schema, f"{option} {p}")
    if frame.height == 0 and not allow_empty:
        raise InputError(f"{option} {p}: the {schema.name} artifact has no rows; nothing to do")
    return Artifact(p, frame, fingerprint(p), schema.name, prov, runs)


def _narrowed(schema: ArtifactSchema, keep: list[str]) -> ArtifactSchema:
    """`schema` with only the columns in `keep` and no invariants (they may need the others); its
    earlier versions too, so a file of one is checked on those columns alone."""
    return replace(schema, columns=tuple(c for c in schema.columns if c.name in keep), checks=(),
                   older=tuple(_narrowed(o, keep) for o in schema.older))


def _polars_schema(schema: ArtifactSchema, columns: list[str] | None) -> dict[str, pl.DataType]:
    empty = pl.from_arrow(schema.arrow.empty_table())
    return {k: v for k, v in empty.schema.items() if columns is None or k in columns}


def read_header(path: str | os.PathLike, schema: ArtifactSchema, *, option: str) -> Artifact:
    """Validate an artifact's files, declared schema and column types without loading its rows.

    For artifacts too large to hold in memory (teacher logits); the stage that streams the
    rows checks their invariants as it goes. `frame` is empty.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{option} {p}: no such file or directory; check the path")
    files, prov, _ = _checked_files(p, schema, option)
    rows = {f: _num_rows(f, option) for f in files}
    check_rows(p, files, option, lambda: rows)
    if sum(rows.values()) == 0:
        raise InputError(f"{option} {p}: the {schema.name} artifact has no rows; nothing to do")
    return Artifact(p, pl.DataFrame(), fingerprint(p), schema.name, prov)


def _num_rows(f: Path, option: str) -> int:
    try:
        return pq.read_metadata(f).num_rows
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"{option} {f}: not a readable Parquet file ({e}); regenerate it") from None


def check_rows(p: Path, files: list[Path], option: str, counted) -> None:
    """A job directory's manifest must agree with the rows its parts hold. `counted()` gives the
    rows read, per file or in all (key None). Only for job directories (a file given alone
    is a file, whatever its directory's manifest says)."""
    if not p.is_dir():
        return
    dirs = list(dict.fromkeys(f.parent for f in files))
    if not dirs or not all(record_path(d, MANIFEST_FILE) for d in dirs):
        return
    recorded = {d / x["file"]: x["rows"] for d in dirs for x in read_manifest(d, option)["parts"]}
    got = counted()
    if None in got:
        bad = [] if got[None] == sum(recorded.values()) else [f"its parts hold {got[None]:,} rows, the manifest records {sum(recorded.values()):,}"]
    else:
        bad = [f"{f.name} holds {n:,} rows, the manifest records {recorded.get(f, 0):,}" for f, n in got.items() if n != recorded.get(f, 0)]
    if bad:
        d = dirs[0] if len(dirs) == 1 else p
        raise InputError(
            f"{option} {d}: {'; '.join(bad[:5])}. The manifest does not describe these parts: delete "
            f"{MANIFEST_FILE} and rerun the command that made the job to rebuild it: {_job_command(dirs[0])}"
        )


def read_job(d: Path, option: str) -> dict[str, Any]:
    """The job record of job directory `d`: what the job is (schema, key, options, command)."""
    return _load_record(record_path(d, JOB_FILE) or d / JOB_FILE, option)


def _load_record(path: Path, option: str) -> dict[str, Any]:
    """A job's bookkeeping file (`_job.parquet`, `_manifest.parquet`, or an earlier version's
    JSON) as a JSON object; a damaged one (torn, not Parquet, not UTF-8, no record, not an
    object, a directory) is refused by name."""
    try:
        obj = load_record(path)
        why = None if isinstance(obj, dict) else f"holds a JSON {type(obj).__name__}, not an object"
    except (OSError, ValueError) as e:  # ValueError: invalid JSON, or bytes that are not UTF-8
        why = str(e)
    if why is None:
        return obj
    if option == "--out":
        fix = (f"paced cannot tell what job {path.parent} holds: move it away (or delete it if it is "
               f"yours to delete) or choose another --out")
    else:
        fix = "the artifact is damaged: regenerate it with the command that made it"
    raise InputError(f"{option} {path}: unreadable ({why}); {fix}")


# ---------------------------------------------------------------------------------------
# Writing


def _with_metadata(table: pa.Table, schema: ArtifactSchema, prov: dict[str, Any]) -> pa.Table:
    if table.schema.remove_metadata() != schema.arrow:
        # Writers never let Arrow infer a schema from data: build tables with schema.arrow.
        raise TypeError(
            f"internal error: a {schema.name} table does not match its schema:\n"
            f"{table.schema}\nexpected:\n{schema.arrow}"
        )
    return table.replace_schema_metadata(
        {
            META_SCHEMA: schema.name.encode(),
            META_VERSION: str(schema.version).encode(),
            META_PROVENANCE: json.dumps(prov).encode(),
        }
    )


def _atomic_write_parquet(table: pa.Table, dest: Path, unique: tuple[str, ...] = ()) -> None:
    """Write `table` to `dest` atomically. `unique` names columns whose values are all distinct
    (a single-column key): they are written without a dictionary, which distinct values only
    fill up before Parquet falls back to plain encoding (10 M weights rows: 16% less writing
    time and 11% fewer bytes; the values read back the same)."""
    tmp = outputs.temp_path(dest)
    use_dictionary = [c for c in table.column_names if c not in unique] if unique else True
    try:
        with outputs.writing(dest):  # named by the destination, not the temporary (disk full, read-only, ...)
            pq.write_table(table, tmp, compression=COMPRESSION, use_dictionary=use_dictionary)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def record_table(obj: Any, schema: ArtifactSchema) -> pa.Table:
    """A bookkeeping record as a table of `schema` with no rows, the record (JSON) in its
    key-value metadata beside the schema's name and version: a reader of the job directory
    (polars, pyarrow.dataset) sees one more file of the artifact's schema, and no rows."""
    return schema.arrow.empty_table().replace_schema_metadata(
        {
            META_SCHEMA: schema.name.encode(),
            META_VERSION: str(schema.version).encode(),
            META_RECORD.encode(): json.dumps(obj, default=str).encode(),
        }
    )


def _atomic_write_record(obj: Any, dest: Path, schema: ArtifactSchema) -> None:
    """Write a bookkeeping record (`record_table`) atomically: complete at `dest`, or absent."""
    _atomic_write_parquet(record_table(obj, schema), dest)


def check_file_out(
    path: str | os.PathLike,
    schema: ArtifactSchema,
    option: str = "--out",
    *,
    key: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Check that a single-file artifact may be written at `path`, before any work is done.

    `key` identifies the options and inputs it is made from (`hash_options`): the same
    command's earlier file is replaced, another paced file of this kind only with
    `overwrite`, anything else never (`schemas.outputs.check_file`).
    """
    return outputs.check_file(path, schema.name, option, key=key, overwrite=overwrite, suffix=None)


def write_file(
    path: str | os.PathLike,
    table: pa.Table,
    schema: ArtifactSchema,
    prov: dict[str, Any],
    *,
    key: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a single-file artifact atomically: complete at its final name, or absent."""
    p = check_file_out(path, schema, key=key, overwrite=overwrite)
    outputs.remove_dead_temps(p)  # what a run killed while writing it left beside it
    unique = tuple(schema.key) if len(schema.key) == 1 else ()
    table = _with_metadata(table, schema, prov)
    extra = {outputs.META_KEY.encode(): key.encode()} if key is not None else {}
    if p.exists() and _same_file(p, schema, table, extra, prov):  # the same command again: the file (and its fingerprint) as it was
        return p
    extra[outputs.META_CONTENT.encode()] = outputs.table_digest(table).encode()
    _atomic_write_parquet(table.replace_schema_metadata(table.schema.metadata | extra), p, unique)
    return p


def _same_file(p: Path, schema: ArtifactSchema, table: pa.Table, extra: dict[bytes, bytes], prov: dict[str, Any]) -> bool:
    """Whether `p` (checked unedited) is the `schema` file paced would write now: the same key
    (`extra`) and rows (`table`, by the digest `p` records, in either form), made by the same stage from inputs of the same content. How the inputs were named (a
    path from another directory), the time and the command line's spelling do not count: the
    file is kept byte for byte, so what was made from it stays valid."""
    try:
        meta = pq.read_schema(p).metadata or {}
        old = json.loads(meta.get(META_PROVENANCE, b"{}"))
    except (OSError, ValueError, pa.ArrowException):
        return False

    def made_from(x: Any) -> tuple | None:
        if not isinstance(x, dict) or not isinstance(x.get("inputs") or {}, dict):
            return None  # not a provenance paced writes: not the same file
        inputs = {name: v.get("fingerprint") if isinstance(v, dict) else None for name, v in (x.get("inputs") or {}).items()}
        return x.get("stage"), inputs, x.get("problems")

    was = made_from(old)
    same_way = was is not None and was == made_from(json.loads(json.dumps(prov, default=str)))
    content = meta.get(outputs.META_CONTENT.encode())
    return (same_way and meta.get(META_SCHEMA) == schema.name.encode() and all(meta.get(k) == v for k, v in extra.items())
            and content is not None and outputs.same_digest(content.decode(errors="replace"), table))


def table_from_columns(columns: dict[str, Iterable[Any]], schema: ArtifactSchema) -> pa.Table:
    """Build a table with the artifact's explicit schema (never inferred from data)."""
    arrow = schema.arrow
    return pa.Table.from_arrays([pa.array(list(columns[f.name]), type=f.type) for f in arrow], schema=arrow)
