"""Describe any artifact: what it is, whether it is finished, what made it, from what.

    paced inspect runs/weights.parquet
    paced inspect runs/teacher_logits --json | jq .lineage

For a Parquet file, a job directory (rollouts, scores, teacher logits, eval), a sharded job's
--out or a distill --out: its schema and version, rows, parts and shards, whether it is
finished, the command that made it and when, its inputs with their fingerprints (and whether
the file at that path still has them), then the same for each input, back to the problems file
(rollouts -> scores -> weights, teacher logits, a distilled model), and the first rows. Models
given as inputs (student, teacher) are shown by their fingerprint. Nothing is written;
the report goes to stdout (tables, or one JSON object with --json).

It reads only headers, bookkeeping files and the first rows, so it is quick on any artifact;
it does not verify checksums (reading the artifact with a stage does).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from rich import box
from rich.console import Console
from rich.table import Table

from schemas import InputError
from schemas.io import META_PROVENANCE, META_SCHEMA, META_VERSION, PROVENANCE_TYPES, SHARD_NAME, fingerprint, shard_disagreements, wrong_types
from schemas.jobs import gone_parts, resized_parts
from schemas.outputs import JOB_FILE, MANIFEST_FILE, PART, load_record, record_path
from stages.options import INPUT, RUNTIME, option

MAX_DEPTH = 8  # inputs followed back at most this far (a lineage is 3-4 deep)
LIST_SHOWN = 6  # items of a list cell shown in the head
INNER_SHOWN = 3  # items of a list inside a list cell
WIDE = 5  # an artifact of more columns shows its head row by row, a column a line
MAX_HEAD = 1_000_000  # rows --head may show


@dataclass
class InspectConfig:
    path: Path = option("The artifact: a Parquet file, a job directory, a sharded job's --out, or a distill --out.", role=INPUT, argument=True)
    json: bool = option("Print one JSON object (for scripts) instead of tables.", False, role=RUNTIME)
    head: int = option("Rows to show from the artifact (0: none).", 5, role=RUNTIME)
    lineage: bool = option("Follow the inputs back to the problems file.", True, role=RUNTIME)

    def __post_init__(self) -> None:
        if not 0 <= self.head <= MAX_HEAD:
            raise InputError(f"--head {self.head}: must be from 0 to {MAX_HEAD:,} (for more rows, open the artifact "
                             f"with polars: pl.read_parquet(PATH))")
        if not Path(self.path).exists():
            raise InputError(f"PATH {self.path}: no such file or directory")


# ---------------------------------------------------------------------------------------
# Reading what an artifact says about itself


def _meta(path: Path) -> dict[bytes, bytes]:
    try:
        return pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - not Parquet: said in the description
        return {}


def _json_file(path: Path | None) -> dict[str, Any] | None:
    """A JSON object from a JSON file or a job's bookkeeping file; None if there is none."""
    try:
        obj = load_record(path) if path is not None else None
        return obj if isinstance(obj, dict) else None
    except (OSError, ValueError, InputError):
        return None


# The JSON types of the record fields inspect shows; a field of another type (a record edited by
# hand, or damaged) is left out and said, never a traceback.
JOB_TYPES = {"schema": str, "version": int, "command": str, "options": dict}
MANIFEST_TYPES = {"rows": int, "parts": list, "provenance": dict}
INPUT_TYPES = {"path": str, "schema": str, "fingerprint": str}


def _typed(record: dict[str, Any] | None, types: dict[str, type], what: str, damaged: list[str]) -> dict[str, Any] | None:
    """`record` without the fields `types` names that have another JSON type (each said in `damaged`)."""
    if record is None:
        return None
    wrong = wrong_types(record, types)
    damaged += [f"{what} field {k!r} is {type(record[k]).__name__}, not {types[k].__name__}" for k in wrong]
    return {k: v for k, v in record.items() if k not in wrong}


def _add_note(info: dict[str, Any], note: str) -> None:
    info["note"] = f"{info['note']}; {note}" if info.get("note") else note


def _parts(d: Path) -> list[Path]:
    return sorted(f for f in d.iterdir() if PART.fullmatch(f.name))


def _damaged(f: Path, e: Exception) -> InputError:
    return InputError(
        f"{f}: not a readable Parquet file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); a part cut short "
        f"or damaged: delete it (and its job's _manifest.parquet) and rerun the command that made it, which writes it again"
    )


def _rows(files: list[Path]) -> int:
    total = 0
    for f in files:
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except (OSError, pa.ArrowException) as e:
            raise _damaged(f, e) from None
    return total


def _shards(d: Path) -> list[Path]:
    return sorted(x for x in d.iterdir() if x.is_dir() and SHARD_NAME.match(x.name))


def _file(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"path": str(path), "kind": "file", "bytes": path.stat().st_size}
    if not path.is_file():  # a named pipe would block the read for ever
        return info | {"schema": None, "note": "not a regular file (a named pipe or a device): paced reads only regular files"}
    if path.suffix != ".parquet":
        return info | {"schema": None, "note": "not a Parquet file"}
    meta = _meta(path)
    if not meta and not _readable(path):
        return info | {"schema": None, "note": "not a readable Parquet file"}
    info["rows"] = pq.ParquetFile(path).metadata.num_rows
    if META_SCHEMA in meta:
        version = meta.get(META_VERSION, b"0").decode(errors="replace") or "0"
        info |= {"schema": meta[META_SCHEMA].decode(errors="replace"), "finished": True,
                 "version": int(version) if version.isascii() and version.isdigit() else None}
        if info["version"] is None:
            _add_note(info, f"damaged paced metadata: schema version {version[:20]!r} is not a number")
        prov = _prov(meta)
        if prov is not None:
            info["provenance"] = prov
    else:
        names = pq.read_schema(path).names
        is_problems = {"problem_id", "prompt", "answer"} <= set(names)
        info |= {"schema": "problems" if is_problems else None,
                 "note": "a problems file (yours: paced reads it, never writes it)" if is_problems
                 else "a Parquet file paced did not write"}
    return info


def _readable(path: Path) -> bool:
    try:
        pq.read_schema(path)
        return True
    except Exception:  # noqa: BLE001
        return False


def _prov(meta: dict[bytes, bytes]) -> dict[str, Any] | None:
    try:
        prov = json.loads(meta[META_PROVENANCE])
        return _provenance(prov) if isinstance(prov, dict) else None
    except (KeyError, ValueError):
        return None


def _provenance(prov: dict[str, Any]) -> dict[str, Any]:
    """A provenance record with the fields of a wrong type left out, and its inputs' too."""
    damaged: list[str] = []
    prov = _typed(prov, PROVENANCE_TYPES | {"created_at": str}, "provenance", damaged) or {}
    inputs = {}
    for name, x in (prov.get("inputs") or {}).items():
        x = _typed(x, INPUT_TYPES, f"provenance input {name!r}", damaged) if isinstance(x, dict) else None
        if x is None:
            damaged.append(f"provenance input {name!r} is not an object")
        elif x.get("path"):
            inputs[name] = x
    if damaged:
        prov["damaged"] = damaged
    return prov | {"inputs": inputs}


def _job_dir(d: Path) -> dict[str, Any]:
    """One job directory (a shard of a sharded job, or a whole job)."""
    damaged: list[str] = []
    job = _typed(_json_file(record_path(d, JOB_FILE)), JOB_TYPES, "job record", damaged) or {}
    manifest = _typed(_json_file(record_path(d, MANIFEST_FILE)), MANIFEST_TYPES, "manifest", damaged)
    parts = _parts(d)
    info: dict[str, Any] = {"path": str(d), "kind": "job directory", "schema": job.get("schema"),
                            "version": job.get("version"), "finished": manifest is not None, "command": job.get("command"),
                            "options": job.get("options")}
    if manifest is not None:
        listed = [p for p in manifest.get("parts") or [] if isinstance(p, dict)]
        if len(listed) != len(manifest.get("parts") or []):
            damaged.append("manifest parts that are not objects")
        info |= {"rows": manifest.get("rows"), "parts": len(listed),
                 "bytes": sum(b for p in listed if isinstance(b := p.get("bytes", 0), int))}
        named = {"parts": [p for p in listed if isinstance(p.get("file"), str)]}
        changed = [f"{f} missing" for f in gone_parts(d, named)] + [f"{f} resized" for f, _, _ in resized_parts(d, named)]
        if changed:
            _add_note(info, f"parts changed since it finished ({', '.join(changed[:5])}): it no longer reads as "
                            f"it is; rerun its command (a deleted part is written again)")
        if manifest.get("provenance"):
            info["provenance"] = _provenance(manifest["provenance"])
    else:
        info |= {"rows": _rows(parts), "parts": len(parts), "bytes": sum(p.stat().st_size for p in parts),
                 "note": f"unfinished (no {MANIFEST_FILE}): rerun its command to resume it"}
        prov = _prov(_meta(parts[0])) if parts else None
        if prov is not None:
            info["provenance"] = prov
    if damaged:
        _add_note(info, "damaged records: " + "; ".join(damaged))
    return info


def _directory(d: Path) -> dict[str, Any]:
    shards = _shards(d)
    if shards:
        each = [_job_dir(s) for s in shards]
        m = SHARD_NAME.match(shards[0].name)
        expected = int(m.group(2)) if m else len(shards)
        info = {k: each[0].get(k) for k in ("schema", "version", "provenance", "options")}
        info |= {"path": str(d), "kind": "sharded job", "shards": f"{len(shards)} of {expected}",
                 "finished": len(shards) == expected and all(s["finished"] for s in each),
                 "rows": sum(s.get("rows") or 0 for s in each), "parts": sum(s.get("parts") or 0 for s in each),
                 "bytes": sum(s.get("bytes") or 0 for s in each),
                 "command": (each[0].get("command") or "").replace(f" --shard {0}/{expected}", f" --shard I/{expected}") or None}
        waiting = [s["path"] for s in each if not s["finished"]]
        if waiting or len(shards) != expected:
            info["note"] = f"{expected - len(shards)} shard(s) missing, {len(waiting)} unfinished"
        named = [(Path(s["path"]).name, s) for s in each if s.get("options") is not None]
        differ = shard_disagreements(named[0], named[1:]) if len(named) > 1 else []
        if differ:
            _add_note(info, f"its shards were made with different options ({'; '.join(differ[:3])}"
                            f"{' ...' if len(differ) > 3 else ''}): they do not read as one artifact")
        for s in each:
            if s.get("note") and s["finished"]:
                _add_note(info, f"{Path(s['path']).name}: {s['note']}")
        return info
    results = d / "results"  # an eval --out: its results job and summary.parquet
    if results.is_dir() and (record_path(results, JOB_FILE) or _shards(results)):
        info = _directory(results) | {"path": str(d), "results": str(results)}
        if (d / "summary.parquet").exists():
            info["summary"] = str(d / "summary.parquet")
        return info
    if record_path(d, JOB_FILE):
        info = _job_dir(d)
        if info["schema"] == "train_log":  # a distill --out: a model and its training log
            info["kind"] = "distill output"
            log = d / "train_log.parquet"
            if log.exists():
                info["provenance"] = _prov(_meta(log)) or info.get("provenance")
                info["rows"] = _rows([log])
            config = _json_file(d / "config.json") or {}
            info["model"] = {"architectures": config.get("architectures"), "hidden_size": config.get("hidden_size"),
                             "layers": config.get("num_hidden_layers"), "vocab_size": config.get("vocab_size")}
            info["exports"] = sorted(x.name for x in d.glob("step-*") if x.is_dir())
        if (d / "summary.parquet").exists():
            info["summary"] = str(d / "summary.parquet")
        return info
    files = sorted(d.glob("*.parquet"))
    return {"path": str(d), "kind": "directory", "schema": None, "parts": len(files), "rows": _rows(files) if files else 0,
            "note": "a directory paced did not write (no job file)" if files else "no Parquet files here"}


def describe(path: Path) -> dict[str, Any]:
    """What `path` says about itself (no lineage, no rows)."""
    info = _directory(path) if path.is_dir() else _file(path)
    prov = info.get("provenance") or {}
    if prov.get("damaged"):
        _add_note(info, "damaged provenance: " + "; ".join(prov["damaged"]))
    info.setdefault("command", prov.get("command"))
    info["stage"] = prov.get("stage")
    info["created_at"] = prov.get("created_at")
    info["paced_version"] = prov.get("paced_version")
    recorded = prov.get("inputs") or {}
    inputs = {}
    for name, x in recorded.items():
        p = Path(x["path"])
        now = None
        if p.is_file() or p.is_dir():  # (a named pipe would block the read for ever)
            try:
                now = fingerprint(p)
            except (OSError, InputError, ValueError):
                now = None
        inputs[name] = {"path": str(p), "schema": x.get("schema"), "fingerprint": x.get("fingerprint"),
                        "now": "missing" if not p.exists() else ("not a regular file" if not (p.is_file() or p.is_dir())
                                                                  else "same" if now == x.get("fingerprint") else "changed")}
    models = {k: v for k, v in ((info.get("options") or {}).get("inputs") or {}).items()
              if k not in recorded and isinstance(v, str) and k in ("model", "student", "teacher")}
    info["inputs"] = inputs
    info["models"] = models
    info.pop("provenance", None)
    return info


def lineage(path: Path, depth: int = 0, above: tuple[str, ...] = ()) -> dict[str, Any]:
    """describe(path), with each input's own description under `lineage`, back to the problems
    (an input met on several paths is described on each; a cycle is cut)."""
    info = describe(path)
    above = (*above, str(path.resolve()))
    if depth >= MAX_DEPTH:
        return info
    below = {}
    for name, x in info["inputs"].items():
        p = Path(x["path"])
        if x["now"] not in ("missing", "not a regular file") and str(p.resolve()) not in above:
            below[name] = lineage(p, depth + 1, above)
            if x["now"] == "changed":
                _add_note(below[name], f"described as it is now: it changed after {Path(info['path']).name} read it "
                                       f"(then {x['fingerprint']})")
    if below:
        info["lineage"] = below
    return info


def head(path: Path, n: int) -> list[dict[str, Any]]:
    """The first n rows of the artifact, long lists shortened (their length said)."""
    if n <= 0:
        return []
    if path.is_dir():
        if (path / "results").is_dir() and not record_path(path, JOB_FILE):  # an eval --out
            path = path / "results"
        shards = _shards(path)
        d = shards[0] if shards else path
        files = [d / "train_log.parquet"] if (d / "train_log.parquet").exists() and not _parts(d) else _parts(d)
    else:
        files = [path] if path.suffix == ".parquet" and path.is_file() and _readable(path) else []
    if not files:
        return []
    import polars as pl

    try:
        frame = pl.read_parquet(files[0], n_rows=n, glob=False)
    except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as e:
        raise _damaged(files[0], e) from None
    return [{k: _shortened(v) for k, v in row.items()} for row in frame.to_dicts()]


def _shortened(v: Any, depth: int = 0) -> Any:
    """A cell as the head shows it: a list's first LIST_SHOWN items (INNER_SHOWN in a list inside
    a list: a teacher's top-k at each position), then how many there are; a string's first 80
    characters."""
    if isinstance(v, list):
        shown = LIST_SHOWN if depth == 0 else INNER_SHOWN
        cut = [_shortened(x, depth + 1) for x in v[:shown]]
        return cut + [f"... {len(v)} items"] if len(v) > shown else cut
    if isinstance(v, str) and len(v) > 80:
        return v[:77] + "..."
    return v


# ---------------------------------------------------------------------------------------
# The stage


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _print(info: dict[str, Any], rows: list[dict[str, Any]], out: Console) -> None:
    def block(x: dict[str, Any], title: str) -> None:
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_header=False)
        t.add_column("", style="bold")
        t.add_column("", overflow="fold")
        what = x.get("schema") or "?"
        if x.get("version") is not None:
            what += f" (schema version {x['version']})"
        t.add_row("artifact", f"{what}, {x['kind']}")
        t.add_row("path", x["path"])
        if "finished" in x:
            t.add_row("finished", "yes" if x["finished"] else "no")
        size = []
        if x.get("rows") is not None:
            size.append(f"{x['rows']:,} rows")
        if x.get("parts"):
            size.append(f"{x['parts']:,} part{'s' * (x['parts'] != 1)}")
        if x.get("shards"):
            size.append(f"shards {x['shards']}")
        if x.get("bytes"):
            size.append(_size(x["bytes"]))
        if size:
            t.add_row("size", ", ".join(size))
        if x.get("note"):
            t.add_row("note", x["note"])
        if x.get("command"):
            t.add_row("made by", x["command"])
        if x.get("created_at"):
            t.add_row("when", f"{x['created_at']} (paced {x.get('paced_version')})")
        for name, v in x.get("inputs", {}).items():
            t.add_row(f"input {name}", f"{v['path']} [{v.get('schema') or 'file'}] {v['fingerprint']} (now: {v['now']})")
        for name, fp in x.get("models", {}).items():
            t.add_row(f"model {name}", fp)
        if x.get("model"):
            m = x["model"]
            t.add_row("model", f"{', '.join(m.get('architectures') or ['?'])}, hidden {m.get('hidden_size')}, "
                                f"{m.get('layers')} layers, vocabulary {m.get('vocab_size')}")
        if x.get("exports"):
            t.add_row("exports", ", ".join(x["exports"]))
        if x.get("summary"):
            t.add_row("summary", x["summary"])
        out.print(t)

    def walk(x: dict[str, Any], trail: str) -> None:
        for name, sub in (x.get("lineage") or {}).items():
            block(sub, f"{trail} <- {name}")
            walk(sub, f"{trail} <- {name}")

    block(info, Path(info["path"]).name)
    walk(info, Path(info["path"]).name)
    if rows and len(rows[0]) > WIDE:  # (side by side, each column would be a few characters wide)
        out.print(f"first {len(rows)} rows")
        for i, r in enumerate(rows, start=1):
            t = Table(title=f"row {i}", title_justify="left", box=box.SIMPLE_HEAD, show_header=False)
            t.add_column("", style="bold")
            t.add_column("", overflow="fold")
            for k, v in r.items():
                t.add_row(k, str(v))
            out.print(t)
    elif rows:
        t = Table(title=f"first {len(rows)} rows", title_justify="left", box=box.SIMPLE_HEAD)
        for k in rows[0]:
            t.add_column(k, overflow="fold")
        for r in rows:
            t.add_row(*(str(v) for v in r.values()))
        out.print(t)


def run(config: InspectConfig, command: str | None = None) -> None:  # noqa: ARG001 - every stage takes it
    """Describe config.path on stdout; returns None (no artifact is written)."""
    path = Path(config.path)
    info = lineage(path) if config.lineage else describe(path)
    rows = head(path, config.head)
    if config.json:
        sys.stdout.write(json.dumps(info | {"head": rows}, indent=1, default=str) + "\n")
    else:
        _print(info, rows, Console(file=sys.stdout, soft_wrap=False, markup=False))  # a prompt with [/INST] is text
    return None
