"""Every bad input is refused the same way: exit code 2, a message that names the file, column
or option at fault and the fix, and no output created or changed.

One table, one test: each case builds its bad input from a world of good artifacts made once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.outputs import load_record
from tests.conftest import ROOT, make_problems, manifest_record, paced


@pytest.fixture(scope="module")
def world(tmp_path_factory, student_dir, teacher_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("world")
    w = {"dir": d, "student": student_dir, "teacher": teacher_dir, "problems": d / "problems.parquet"}
    make_problems(4).write_parquet(w["problems"])
    steps = [
        ("rollouts", ["rollout", "--problems", w["problems"], "--model", student_dir, "--samples", "2", "--max-new-tokens", "6"]),
        ("scores", ["score", "--rollouts", d / "rollouts", "--problems", w["problems"], "--verifier", "exact"]),
        ("weights.parquet", ["weight", "--scores", d / "scores", "--scheme", "uniform"]),
        ("tl", ["teacher-logits", "--problems", w["problems"], "--sequences", d / "rollouts", "--teacher", teacher_dir, "--top-k", "4"]),
    ]
    for name, args in steps:
        r = paced(*args, "--out", d / name)
        assert r.exit_code == 0, r.stderr
        w[name.split(".")[0]] = d / name
    return w


def write(path: Path, frame: pl.DataFrame) -> Path:
    frame.write_parquet(path)
    return path


def problems_with(w, tmp, **cols) -> Path:
    return write(tmp / "p.parquet", make_problems(4).with_columns(**cols))


def weights_frame(w) -> pl.DataFrame:
    return pl.read_parquet(w["weights"])


@dataclass
class Case:
    name: str
    args: Callable[[dict, Path], list]  # (world, tmp) -> command line
    needles: tuple[str, ...]


def rollout(w, tmp, *extra, problems=None):
    return ["rollout", "--problems", problems or w["problems"], "--model", w["student"], "--out", tmp / "out",
            "--max-new-tokens", "4", *extra]


def score(w, tmp, *extra, rollouts=None, problems=None):
    return ["score", "--rollouts", rollouts or w["rollouts"], "--problems", problems or w["problems"], "--out", tmp / "out", *extra]


def weight(w, tmp, *extra, scores=None):
    return ["weight", "--scores", scores or w["scores"], "--out", tmp / "out.parquet", *extra]


def tlogits(w, tmp, *extra, teacher=None, weights=None, sequences=None, problems=None):
    return ["teacher-logits", "--problems", problems or w["problems"], "--sequences", sequences or w["rollouts"], "--teacher", teacher or w["teacher"],
            "--out", tmp / "out", *extra] + (["--weights", weights] if weights else [])


def distill(w, tmp, *extra, student=None, tl=None, weights=None):
    return ["distill", "--student", student or w["student"], "--teacher-logits", tl or w["tl"],
            "--weights", weights or w["weights"], "--out", tmp / "out", *extra]


def broken_model(w, tmp, *remove) -> Path:
    d = tmp / "model"
    shutil.copytree(w["student"], d)
    for f in remove:
        (d / f).unlink()
    return d


def scores_file(tmp, **cols) -> Path:
    base = {"problem_id": ["p0", "p0"], "sample_index": [0, 1], "correct": [True, False]}
    return write(tmp / "s.parquet", pl.DataFrame(base | cols))


def with_metadata(path: Path, schema: str, version: str) -> Path:
    t = pq.read_table(path)
    pq.write_table(t.replace_schema_metadata({b"paced.schema": schema.encode(), b"paced.schema_version": version.encode()}), path)
    return path


def without_tensor(name: str) -> Callable[[bytes], bytes]:
    """A safetensors file's bytes -> the same file without tensor `name`."""
    from safetensors.torch import load, save

    return lambda b: save({k: v for k, v in load(b).items() if k != name})


def nan_tensors(b: bytes) -> bytes:
    """A safetensors file's bytes -> the same tensors, every value NaN."""
    from safetensors.torch import load, save

    return save({k: v * float("nan") for k, v in load(b).items()})


def model_with(w, tmp, name: str, content: bytes | Callable[[bytes], bytes], model: str = "student") -> Path:
    """A copy of a world model with one file's bytes replaced (or transformed)."""
    d = tmp / "model"
    shutil.copytree(w[model], d)
    f = d / name
    f.write_bytes(content(f.read_bytes()) if callable(content) else content)
    return d


def record_bytes(text: bytes) -> bytes:
    """A job bookkeeping file (zero-row Parquet) whose `paced.record` metadata is `text`."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": pa.array([], pa.int64())}).replace_schema_metadata({b"paced.record": text}), sink)
    return sink.getvalue().to_pybytes()


def job_with(w, tmp, name: str, *, manifest: Callable[[dict], object] | bytes | None = None, extra_part: bool = False,
             legacy: bool = False) -> Path:
    """A copy of a world job directory, its manifest rewritten (`manifest(m)` edits the parsed
    one in place, or bytes replace the file) and/or a stray copy of its part beside the listed
    ones. `legacy`: the manifest as an earlier paced wrote it (`_manifest.json`)."""
    d = tmp / name
    shutil.copytree(w[name], d)
    m = d / "_manifest.parquet"
    if legacy:
        m.unlink()
        m = d / "_manifest.json"
    if isinstance(manifest, bytes):
        m.write_bytes(manifest)
    elif manifest is not None:
        parsed = load_record(d / "_manifest.parquet")
        manifest(parsed)
        m.write_bytes(record_bytes(json.dumps(parsed).encode()))
    if extra_part:
        shutil.copy(d / "part-00000.parquet", d / "part-00001.parquet")
    return d


def job_dir(tmp, name: str, content: bytes, file: str = "_job.parquet") -> Path:
    """A directory holding only a (damaged) job record: an unfinished job, or an --out to resume."""
    d = tmp / name
    d.mkdir()
    (d / file).write_bytes(content)
    return d


def edit_rows(m: dict) -> None:
    """A manifest whose row counts were edited consistently, so only the parts can disagree."""
    m["parts"][0]["rows"] += 1
    m["rows"] += 1


def link(tmp, name: str, target: Path) -> Path:
    os.symlink(target, tmp / name)
    return tmp / name


def touch(path: Path) -> Path:
    path.write_text("x")
    return path


def rollouts_file(w, tmp, shift: int) -> Path:
    """The world's rollouts as a user's Parquet file, every completion token id moved by `shift`."""
    frame = pl.read_parquet(w["rollouts"] / "part-00000.parquet")
    return write(tmp / "r.parquet", frame.with_columns(completion_token_ids=pl.col("completion_token_ids").list.eval(pl.element() + shift)))


def tl_table(w) -> pa.Table:
    return pq.read_table(w["tl"] / "part-00000.parquet")


def with_column(t: pa.Table, name: str, rows: list) -> pa.Table:
    """`t` with column `name` replaced by Python `rows` of its own type (its paced metadata kept)."""
    return t.set_column(t.schema.get_field_index(name), t.schema.field(name), pa.array(rows, t.schema.field(name).type))


def map_values(t: pa.Table, name: str, fn) -> pa.Table:
    """Column `name` with `fn` applied to every innermost value."""
    def deep(x):
        return [deep(v) for v in x] if isinstance(x, list) else fn(x)
    return with_column(t, name, deep(t[name].to_pylist()))


def cut_k(t: pa.Table, k: int, rows=None) -> pa.Table:
    """Keep the first k teacher tokens per position, in `rows` (all by default)."""
    chosen = set(range(t.num_rows) if rows is None else rows)
    for name in ("topk_ids", "topk_logprobs"):
        t = with_column(t, name, [[pos[:k] for pos in r] if i in chosen else r for i, r in enumerate(t[name].to_pylist())])
    return t


def with_draws(t: pa.Table, scale: float = 1.0, clash: bool = False) -> pa.Table:
    """A hybrid version of top-k teacher logits: one draw per position standing for its tail, its
    mass `scale` times the tail's; with `clash`, the draw is the position's first top-k id."""
    ids, tails = t["topk_ids"].to_pylist(), t["tail_logprob"].to_pylist()
    drawn = [[[pos[0] if clash else min(set(range(len(pos) + 1)) - set(pos))] for pos in r] for r in ids]
    mass = [[[tail + math.log(scale)] for tail in r] for r in tails]
    return with_column(with_column(t, "sample_ids", drawn), "sample_logmass", mass)


def with_row(t: pa.Table, name: str, row: int, value) -> pa.Table:
    """Column `name` of `t` with row `row` replaced by `value` (None, or a list with a null in it)."""
    rows = t[name].to_pylist()
    rows[row] = value(rows[row]) if callable(value) else value
    field = t.schema.field(name).with_nullable(True)  # paced writes its columns non-null: a null needs a nullable one
    return t.set_column(t.schema.get_field_index(name), field, pa.array(rows, field.type))


def twice(path: Path, column: str, tmp: Path) -> Path:
    """The Parquet file at `path` with `column` written a second time."""
    t = pq.read_table(path)
    out = tmp / f"twice-{path.name}"
    pq.write_table(pa.Table.from_arrays([*t.columns, t[column]], names=[*t.column_names, column]), out)
    return out


def with_provenance(path: Path, tmp: Path, **fields) -> Path:
    """A copy of paced file `path` whose provenance metadata has `fields` replaced."""
    t = pq.read_table(path)
    meta = dict(t.schema.metadata)
    meta[b"paced.provenance"] = json.dumps(json.loads(meta[b"paced.provenance"]) | fields).encode()
    out = tmp / path.name
    pq.write_table(t.replace_schema_metadata(meta), out)
    return out


def job_of(d: Path, *tables: pa.Table) -> Path:
    """A finished job directory holding `tables` as parts, with a manifest that vouches for them."""
    d.mkdir(parents=True)
    parts = []
    for i, t in enumerate(tables):
        f = d / f"part-{i:05d}.parquet"
        pq.write_table(t, f)
        parts.append({"file": f.name, "rows": t.num_rows, "bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()})
    (d / "_manifest.parquet").write_bytes(record_bytes(json.dumps({"rows": sum(x["rows"] for x in parts), "parts": parts}).encode()))
    return d


def tl_job(w, tmp, *tables: pa.Table) -> Path:
    return job_of(tmp / "tl", *tables)


def tl_shards(w, tmp, second_k: int) -> Path:
    """teacher logits in two shards, the second with another k (made with another --top-k)."""
    t = tl_table(w)
    first = pc_filter(t, ["p0", "p1"])
    job_of(tmp / "tl" / "shard-00000-of-00002", first)
    job_of(tmp / "tl" / "shard-00001-of-00002", cut_k(pc_filter(t, ["p2", "p3"]), second_k))
    return tmp / "tl"


def pc_filter(t: pa.Table, ids: list[str]) -> pa.Table:
    import pyarrow.compute as pc

    return t.filter(pc.is_in(t["problem_id"], value_set=pa.array(ids)))


def eval_problems(tmp, folder: str, suffix: str = "", **cols) -> Path:
    (tmp / folder).mkdir(exist_ok=True)
    frame = make_problems(4).with_columns(problem_id=pl.col("problem_id") + suffix, **cols)
    return write(tmp / folder / "math.parquet", frame)


def unfinished_shards(tmp, name: str, *present: int, of: int = 2) -> Path:
    """Shard directories that each claim to be finished (a manifest of no parts): those given only."""
    for i in present:
        d = tmp / name / f"shard-{i:05d}-of-{of:05d}"
        d.mkdir(parents=True)
        (d / "_manifest.parquet").write_bytes(record_bytes(b'{"rows": 0, "parts": []}'))
    return tmp / name


CASES = [
    # problems files
    Case("problems: missing column", lambda w, t: rollout(w, t, problems=write(t / "p.parquet", make_problems(4).drop("prompt"))), ("--problems", "missing column(s) 'prompt'")),
    Case("problems: wrong type", lambda w, t: rollout(w, t, problems=problems_with(w, t, answer=pl.lit(3))), ("--problems", "'answer' has type int", "cast")),
    Case("problems: null prompt", lambda w, t: rollout(w, t, problems=problems_with(w, t, prompt=pl.lit(None, pl.String))), ("'prompt' has 4 null", "fill or drop")),
    Case("problems: duplicate ids", lambda w, t: rollout(w, t, problems=problems_with(w, t, problem_id=pl.lit("x"))), ("problem_id must be unique", "'x'")),
    Case("problems: empty file", lambda w, t: rollout(w, t, problems=write(t / "p.parquet", make_problems(4).head(0))), ("no rows",)),
    Case("problems: empty prompt", lambda w, t: rollout(w, t, problems=problems_with(w, t, prompt=pl.lit(""))), ("'prompt' is empty",)),
    Case("problems: not parquet", lambda w, t: rollout(w, t, problems=(t / "p.parquet").write_text("a,b\n1,2") and t / "p.parquet"), ("not a readable Parquet file",)),
    Case("problems: csv file", lambda w, t: rollout(w, t, problems=(t / "p.csv").write_text("problem_id\nx") and t / "p.csv"), ("not a readable Parquet file", "write it with polars")),
    Case("problems: missing path", lambda w, t: rollout(w, t, problems=t / "nope.parquet"), ("no such file or directory",)),
    Case("problems: empty directory", lambda w, t: rollout(w, t, problems=(t / "pd").mkdir() or t / "pd"), ("holds no .parquet files",)),
    Case("problems: other schema version", lambda w, t: rollout(w, t, problems=with_metadata(write(t / "p.parquet", make_problems(4)), "problems", "7")), ("schema version 7",)),
    Case("problems: a weights file", lambda w, t: rollout(w, t, problems=w["weights"]), ("paced 'weights' artifact, but --problems expects",)),
    Case("problems: unfinished job dir", lambda w, t: rollout(w, t, problems=job_dir(t, "job", record_bytes(b'{"schema": "problems", "command": "paced x"}'))), ("not finished", "rerun")),
    # rollout options and models
    Case("rollout: samples 0", lambda w, t: rollout(w, t, "--samples", "0"), ("--samples 0",)),
    Case("rollout: temperature -1", lambda w, t: rollout(w, t, "--temperature", "-1"), ("--temperature -1.0",)),
    Case("rollout: top-p 2", lambda w, t: rollout(w, t, "--top-p", "2"), ("--top-p 2.0",)),
    Case("rollout: non-numeric samples", lambda w, t: rollout(w, t, "--samples", "many"), ("--samples",)),
    Case("rollout: unknown backend", lambda w, t: rollout(w, t, "--backend", "tgi"), ("--backend tgi",)),
    Case("rollout: unknown context", lambda w, t: rollout(w, t, "--context", "hint"), ("--context hint",)),
    Case("rollout: longer than context", lambda w, t: rollout(w, t, "--max-new-tokens", "100000"), ("exceed the model's context",)),
    Case("rollout: model without weights", lambda w, t: ["rollout", "--problems", w["problems"], "--model", broken_model(w, t, "model.safetensors"), "--out", t / "out"], ("*.safetensors weights",)),
    Case("rollout: model without tokenizer", lambda w, t: ["rollout", "--problems", w["problems"], "--model", broken_model(w, t, "tokenizer.json", "tokenizer_config.json"), "--out", t / "out"], ("a tokenizer",)),
    Case("rollout: pickle weights only", lambda w, t: ["rollout", "--problems", w["problems"], "--model", (lambda d: (d / "pytorch_model.bin").write_bytes(b"x") and d)(broken_model(w, t, "model.safetensors")), "--out", t / "out"], ("pytorch_model.bin", "safetensors")),
    Case("rollout: model path is a file", lambda w, t: ["rollout", "--problems", w["problems"], "--model", w["problems"], "--out", t / "out"], ("is a file",)),
    Case("rollout: out holds another artifact", lambda w, t: ["rollout", "--problems", w["problems"], "--model", w["student"], "--out", w["scores"]], ("holds a paced 'scores' artifact",)),
    Case("rollout: out is a user directory", lambda w, t: ["rollout", "--problems", w["problems"], "--model", w["student"], "--out", (t / "mine").mkdir() or (t / "mine" / "notes.txt").write_text("x") and t / "mine"], ("not a paced job directory",)),
    Case("rollout: out parent missing", lambda w, t: ["rollout", "--problems", w["problems"], "--model", w["student"], "--out", t / "no" / "such"], ("does not exist",)),
    # score
    Case("score: unknown verifier", lambda w, t: score(w, t, "--verifier", "sympy"), ("--verifier", "unknown verifier")),
    Case("score: verifier module missing", lambda w, t: score(w, t, "--verifier", "nosuch_mod_xyz:f"), ("nosuch_mod_xyz",)),
    Case("score: verifier function missing", lambda w, t: score(w, t, "--verifier", "json:nosuchfn"), ("nosuchfn",)),
    Case("score: bad regex", lambda w, t: score(w, t, "--verifier", "regex:(unclosed"), ("--verifier", "regex")),
    Case("score: timeout 0", lambda w, t: score(w, t, "--timeout", "0"), ("--timeout 0",)),
    Case("score: rollouts given as scores", lambda w, t: score(w, t, rollouts=w["scores"]), ("'scores' artifact, but --rollouts expects",)),
    Case("score: unknown problem ids", lambda w, t: score(w, t, problems=write(t / "p.parquet", make_problems(2))), ("not in --problems",)),
    # weight
    Case("weight: alpha negative", lambda w, t: weight(w, t, "--alpha", "-1"), ("--alpha -1.0",)),
    Case("weight: beta negative", lambda w, t: weight(w, t, "--beta", "-2"), ("--beta -2.0",)),
    Case("weight: alpha nan", lambda w, t: weight(w, t, "--alpha", "nan"), ("--alpha nan",)),
    Case("weight: alpha non-numeric", lambda w, t: weight(w, t, "--alpha", "one"), ("--alpha",)),
    Case("weight: unknown scheme", lambda w, t: weight(w, t, "--scheme", "soft"), ("--scheme soft",)),
    Case("weight: alpha with a scheme that has none", lambda w, t: weight(w, t, "--scheme", "uniform", "--alpha", "2"),
         ("--alpha", "--scheme uniform takes no alpha and beta")),
    Case("weight: plot not png", lambda w, t: weight(w, t, "--plot", t / "w.jpg"), ("--plot", ".png")),
    Case("weight: scores missing column", lambda w, t: weight(w, t, scores=write(t / "s.parquet", pl.DataFrame({"problem_id": ["a"], "sample_index": [0]}))), ("missing column(s) 'correct'",)),
    Case("weight: correct as strings", lambda w, t: weight(w, t, scores=scores_file(t, correct=["yes", "no"])), ("'correct' has type", "bool")),
    Case("weight: null correct", lambda w, t: weight(w, t, scores=scores_file(t, correct=[True, None])), ("'correct' has 1 null",)),
    Case("weight: duplicate samples", lambda w, t: weight(w, t, scores=scores_file(t, sample_index=[0, 0])), ("must be unique",)),
    Case("weight: sample_index overflow", lambda w, t: weight(w, t, scores=scores_file(t, sample_index=[0, 2**40])), ("cannot be converted losslessly",)),
    Case("weight: out is a directory", lambda w, t: ["weight", "--scores", w["scores"], "--out", t], ("is a directory",)),
    Case("weight: out is another file", lambda w, t: ["weight", "--scores", w["scores"], "--out", w["problems"]], ("not a weights file paced wrote",)),
    # teacher-logits
    Case("teacher-logits: top-k above vocabulary", lambda w, t: tlogits(w, t, "--top-k", "100000"), ("--top-k 100000", "vocabulary")),
    Case("teacher-logits: top-k 0", lambda w, t: tlogits(w, t, "--top-k", "0"), ("--top-k 0",)),
    Case("teacher-logits: other tokenizer", lambda w, t: tlogits(w, t, teacher=w["raw"]), ("do not share a tokenizer",)),
    Case("teacher-logits: weights with pass rate > 1", lambda w, t: tlogits(w, t, weights=write(t / "w.parquet", weights_frame(w).with_columns(pass_rate=pl.lit(1.5)))), ("'pass_rate' must lie in [0, 1]",)),
    Case("teacher-logits: NaN weights", lambda w, t: tlogits(w, t, weights=write(t / "w.parquet", weights_frame(w).with_columns(weight=pl.lit(float("nan"))))), ("'weight' must be a finite number",)),
    Case("teacher-logits: context reference without references", lambda w, t: ["teacher-logits", "--problems", problems_with(w, t, reference=pl.lit(None, pl.String)), "--sequences", w["rollouts"], "--teacher", w["teacher"], "--out", t / "out", "--context", "reference", "--allow-stale"], ("--context reference",)),
    # distill
    Case("distill: unknown loss", lambda w, t: distill(w, t, "--loss", "no-such-loss"), ("--loss no-such-loss",)),
    Case("distill: lr 0", lambda w, t: distill(w, t, "--lr", "0"), ("--lr 0.0",)),
    Case("distill: mu 1", lambda w, t: distill(w, t, "--mu", "1"), ("--mu 1.0",)),
    Case("distill: resume and overwrite", lambda w, t: distill(w, t, "--resume", "--overwrite"), ("contradict",)),
    Case("distill: student with other tokenizer", lambda w, t: distill(w, t, student=w["raw"]), ("do not share a tokenizer",)),
    Case("distill: weights missing a problem", lambda w, t: distill(w, t, weights=write(t / "w.parquet", weights_frame(w).head(2))), ("no weight for 2 problem(s)",)),
    Case("distill: all weights zero", lambda w, t: distill(w, t, weights=write(t / "w.parquet", weights_frame(w).with_columns(weight=pl.lit(0.0)))), ("weight 0; nothing to train on",)),
    Case("distill: rollouts as teacher logits", lambda w, t: distill(w, t, tl=w["rollouts"]), ("'rollouts' artifact, but --teacher-logits expects",)),
    Case("distill: init not a distill output", lambda w, t: distill(w, t, "--init", w["student"]), ("not a paced distill output",)),
    # eval
    Case("eval: unknown retain benchmark", lambda w, t: ["eval", "--model", w["student"], "--problems", w["problems"], "--out", t / "out", "--retain", "mmlu"], ("--retain mmlu",)),
    Case("eval: baseline not an eval", lambda w, t: ["eval", "--model", w["student"], "--problems", w["problems"], "--out", t / "out", "--baseline", w["rollouts"]], ("--baseline",)),
    # damaged files on the input side (issue 15, class 1): each named, never a traceback
    Case("model: config.json not JSON", lambda w, t: ["rollout", "--problems", w["problems"], "--model", model_with(w, t, "config.json", b"{bad"), "--out", t / "out"], ("--model", "config.json is not valid JSON", "save the model again")),
    Case("model: config.json a JSON list", lambda w, t: ["rollout", "--problems", w["problems"], "--model", model_with(w, t, "config.json", b"[1]"), "--out", t / "out"], ("config.json holds a JSON list, not an object",)),
    Case("model: tokenizer_config.json not JSON", lambda w, t: ["rollout", "--problems", w["problems"], "--model", model_with(w, t, "tokenizer_config.json", b"{bad"), "--out", t / "out"], ("tokenizer_config.json is not valid JSON",)),
    Case("model: 0-byte safetensors", lambda w, t: ["rollout", "--problems", w["problems"], "--model", model_with(w, t, "model.safetensors", b""), "--out", t / "out"], ("model.safetensors has 0 bytes", "empty or truncated")),
    Case("model: truncated safetensors", lambda w, t: ["rollout", "--problems", w["problems"], "--model", model_with(w, t, "model.safetensors", lambda b: b[: len(b) // 2]), "--out", t / "out"], ("model.safetensors is truncated or corrupt",)),
    Case("model: index names a missing shard", lambda w, t: ["rollout", "--problems", w["problems"], "--model", model_with(w, t, "model.safetensors.index.json", b'{"weight_map": {"w": "model-00002-of-00002.safetensors"}}'), "--out", t / "out"], ("names model-00002-of-00002.safetensors, which the directory lacks",)),
    Case("teacher-logits: teacher weights not safetensors", lambda w, t: tlogits(w, t, teacher=model_with(w, t, "model.safetensors", b"garbage!" * 64, model="teacher")), ("--teacher", "model.safetensors is not a safetensors file")),
    Case("distill: student with 0-byte safetensors", lambda w, t: distill(w, t, student=model_with(w, t, "model.safetensors", b"")), ("--student", "model.safetensors has 0 bytes")),
    Case("rollouts: manifest not Parquet", lambda w, t: score(w, t, rollouts=job_with(w, t, "rollouts", manifest=b"{bad")), ("--rollouts", "_manifest.parquet: unreadable (not a readable Parquet file", "regenerate it")),
    Case("rollouts: manifest without its record", lambda w, t: score(w, t, rollouts=job_with(w, t, "rollouts", manifest=(w["rollouts"] / "part-00000.parquet").read_bytes())), ("_manifest.parquet: unreadable (no paced.record metadata)",)),
    Case("rollouts: manifest record not JSON", lambda w, t: score(w, t, rollouts=job_with(w, t, "rollouts", manifest=record_bytes(b"{bad"))), ("--rollouts", "_manifest.parquet: unreadable", "regenerate it")),
    Case("rollouts: manifest a JSON list", lambda w, t: score(w, t, rollouts=job_with(w, t, "rollouts", manifest=record_bytes(b"[]"))), ("_manifest.parquet: unreadable (holds a JSON list, not an object)",)),
    Case("rollouts: an earlier paced's manifest not JSON", lambda w, t: score(w, t, rollouts=job_with(w, t, "rollouts", manifest=b"{bad", legacy=True)), ("--rollouts", "_manifest.json: unreadable", "regenerate it")),
    Case("rollouts: manifest part without sha256", lambda w, t: score(w, t, rollouts=job_with(w, t, "rollouts", manifest=lambda m: m["parts"][0].pop("sha256"))), ("parts[0] lacks 'sha256'", "delete it and rerun", "paced rollout")),
    Case("rollouts: manifest without parts", lambda w, t: score(w, t, rollouts=job_with(w, t, "rollouts", manifest=lambda m: m.pop("parts"))), ("it has no 'parts' list",)),
    Case("scores: manifest record not UTF-8", lambda w, t: weight(w, t, scores=job_with(w, t, "scores", manifest=record_bytes(b"\xff\xfe{"))), ("--scores", "_manifest.parquet: unreadable", "utf-8")),
    Case("scores: an earlier paced's manifest not UTF-8", lambda w, t: weight(w, t, scores=job_with(w, t, "scores", manifest=b"\xff\xfe{", legacy=True)), ("--scores", "_manifest.json: unreadable", "utf-8")),
    Case("scores: manifest rows disagree with the part", lambda w, t: weight(w, t, scores=job_with(w, t, "scores", manifest=edit_rows)), ("part", "rows, the manifest records", "delete _manifest.parquet")),
    Case("scores: a part the manifest does not list", lambda w, t: weight(w, t, scores=job_with(w, t, "scores", extra_part=True)), ("part-00001.parquet, which _manifest.parquet does not list", "move them out")),
    Case("teacher-logits: manifest rows disagree with the part", lambda w, t: distill(w, t, tl=job_with(w, t, "tl", manifest=edit_rows)), ("--teacher-logits", "part-00000.parquet holds 8 rows, the manifest records 9")),
    Case("problems: unfinished job with a damaged job record", lambda w, t: rollout(w, t, problems=job_dir(t, "job", record_bytes(b"{bad"))), ("--problems", "_job.parquet: unreadable")),
    Case("problems: unfinished job with a damaged _job.json", lambda w, t: rollout(w, t, problems=job_dir(t, "job", b"{bad", "_job.json")), ("--problems", "_job.json: unreadable")),
    Case("problems: unfinished job whose job record is a list", lambda w, t: rollout(w, t, problems=job_dir(t, "job", record_bytes(b"[1, 2]"))), ("_job.parquet: unreadable (holds a JSON list",)),
    Case("rollout: out's job record not Parquet", lambda w, t: ["rollout", "--problems", w["problems"], "--model", w["student"], "--out", job_dir(t, "job", b"{bad")], ("--out", "_job.parquet: unreadable", "move it away")),
    Case("rollout: out's _job.json not JSON", lambda w, t: ["rollout", "--problems", w["problems"], "--model", w["student"], "--out", job_dir(t, "job", b"{bad", "_job.json")], ("--out", "_job.json: unreadable", "move it away")),
    Case("rollout: out's job record a list", lambda w, t: ["rollout", "--problems", w["problems"], "--model", w["student"], "--out", job_dir(t, "job", record_bytes(b"[]"))], ("--out", "holds a JSON list")),
    Case("problems: paced metadata with a non-numeric version", lambda w, t: rollout(w, t, problems=with_metadata(write(t / "p.parquet", make_problems(4)), "problems", "one")), ("paced.schema_version", "whole number")),
    Case("problems: provenance metadata not JSON", lambda w, t: rollout(w, t, problems=(lambda f: (pq.write_table(pq.read_table(f).replace_schema_metadata({b"paced.schema": b"problems", b"paced.schema_version": b"1", b"paced.provenance": b"{bad"}), f), f)[1])(write(t / "p.parquet", make_problems(4)))), ("paced.provenance metadata is not a JSON object",)),
    # paths of the wrong shape
    Case("rollout: shard out is a file", lambda w, t: rollout(w, t)[:5] + ["--out", touch(t / "f"), "--shard", "0/2"], ("--out", "is a file; with --shard")),
    Case("rollout: shard out a broken link", lambda w, t: rollout(w, t)[:5] + ["--out", link(t, "lnk", t / "nowhere"), "--shard", "0/2"], ("is a broken symbolic link",)),
    Case("rollout: shard out whose parent is a file", lambda w, t: rollout(w, t)[:5] + ["--out", touch(t / "f") / "out", "--shard", "0/2"], ("parent directory", "does not exist or is not a directory")),
    Case("eval: shard out whose parent is missing", lambda w, t: ["eval", "--model", w["student"], "--problems", w["problems"], "--out", t / "no" / "out", "--shard", "1/2"], ("parent directory", "create it first")),
    Case("rollout: problems a symbolic-link loop", lambda w, t: rollout(w, t, problems=link(t, "loop", t / "loop")), ("loop", "loops back to itself")),
    Case("rollout: model a symbolic-link loop", lambda w, t: ["rollout", "--problems", w["problems"], "--model", link(t, "loop", t / "loop"), "--out", t / "out"], ("loops back to itself",)),
    # numeric options: range and finiteness, before any work (issue 15, class 2)
    Case("rollout: temperature inf", lambda w, t: rollout(w, t, "--temperature", "inf"), ("--temperature inf", "finite")),
    Case("rollout: seed -1", lambda w, t: rollout(w, t, "--seed", "-1"), ("--seed -1", "from 0 to 4294967295")),
    Case("rollout: samples beyond int32", lambda w, t: rollout(w, t, "--samples", str(2**40)), ("--samples 1099511627776",)),
    Case("rollout: max-new-tokens 0", lambda w, t: rollout(w, t, "--max-new-tokens", "0"), ("--max-new-tokens 0",)),
    Case("rollout: gpu-memory-utilization nan", lambda w, t: rollout(w, t, "--backend", "vllm", "--gpu-memory-utilization", "nan"), ("--gpu-memory-utilization nan: must be in (0, 1]",)),
    Case("score: timeout nan", lambda w, t: score(w, t, "--timeout", "nan"), ("--timeout nan", "finite")),
    Case("score: timeout inf", lambda w, t: score(w, t, "--timeout", "inf"), ("--timeout inf",)),
    Case("eval: timeout inf", lambda w, t: ["eval", "--model", w["student"], "--problems", w["problems"], "--out", t / "out", "--timeout", "inf"], ("--timeout inf",)),
    Case("eval: top-p 0", lambda w, t: ["eval", "--model", w["student"], "--problems", w["problems"], "--out", t / "out", "--top-p", "0"], ("--top-p 0.0",)),
    Case("weight: beta inf", lambda w, t: weight(w, t, "--beta", "inf"), ("--beta inf",)),
    Case("teacher-logits: chunk-size 0", lambda w, t: tlogits(w, t, "--chunk-size", "0"), ("--chunk-size 0",)),
    Case("distill: weight-decay nan", lambda w, t: distill(w, t, "--weight-decay", "nan"), ("--weight-decay nan",)),
    Case("distill: weight-decay inf", lambda w, t: distill(w, t, "--weight-decay", "inf"), ("--weight-decay inf", "finite")),
    Case("distill: max-grad-norm inf", lambda w, t: distill(w, t, "--max-grad-norm", "inf"), ("--max-grad-norm inf", "finite")),
    Case("distill: lr nan", lambda w, t: distill(w, t, "--lr", "nan"), ("--lr nan",)),
    Case("distill: mu nan", lambda w, t: distill(w, t, "--mu", "nan"), ("--mu nan",)),
    Case("distill: lora-alpha without lora-r", lambda w, t: distill(w, t, "--lora-alpha", "16"), ("--lora-alpha 16.0", "add --lora-r")),
    Case("distill: lora-alpha nan", lambda w, t: distill(w, t, "--lora-r", "4", "--lora-alpha", "nan"), ("--lora-alpha nan", "finite")),
    Case("distill: seed beyond 2^32", lambda w, t: distill(w, t, "--seed", str(2**40)), ("--seed 1099511627776",)),
    Case("distill: warmup-steps -1", lambda w, t: distill(w, t, "--warmup-steps", "-1"), ("--warmup-steps -1",)),
    # values inside artifacts, checked where they are read (issue 15, class 3)
    Case("teacher-logits: completion token ids beyond the vocabulary", lambda w, t: tlogits(w, t, sequences=rollouts_file(w, t, 100_000)), ("--sequences", "outside the teacher's vocabulary of 400 ids", "ids from 100")),
    Case("teacher-logits: negative completion token ids", lambda w, t: tlogits(w, t, sequences=rollouts_file(w, t, -1000)), ("outside the teacher's vocabulary", "ids from -")),
    Case("distill: response token ids beyond the student's vocabulary", lambda w, t: distill(w, t, tl=tl_job(w, t, map_values(tl_table(w), "token_ids", lambda x: x + 5000))), ("--teacher-logits", "token_ids holds token id", "outside the vocabulary of the student")),
    Case("distill: top-k ids beyond the student's vocabulary", lambda w, t: distill(w, t, tl=tl_job(w, t, map_values(tl_table(w), "topk_ids", lambda x: x + 5000))), ("topk_ids holds token id",)),
    Case("distill: negative token ids", lambda w, t: distill(w, t, tl=tl_job(w, t, map_values(tl_table(w), "prompt_token_ids", lambda x: -1))), ("prompt_token_ids holds negative token id -1",)),
    Case("distill: NaN teacher log-probs", lambda w, t: distill(w, t, tl=tl_job(w, t, map_values(tl_table(w), "topk_logprobs", lambda x: float("nan")))), ("topk_logprobs holds", "not log-probabilities (NaN")),
    Case("distill: +inf teacher log-probs", lambda w, t: distill(w, t, tl=tl_job(w, t, map_values(tl_table(w), "topk_logprobs", lambda x: float("inf")))), ("topk_logprobs holds", "up to inf")),
    Case("distill: logits stored as log-probs", lambda w, t: distill(w, t, tl=tl_job(w, t, map_values(tl_table(w), "topk_logprobs", lambda x: x + 20))), ("not log-probabilities (up to", "must be <= 0")),
    Case("distill: NaN tail log-mass", lambda w, t: distill(w, t, tl=tl_job(w, t, map_values(tl_table(w), "tail_logprob", lambda x: float("nan")))), ("tail_logprob holds",)),
    Case("distill: k differs between rows", lambda w, t: distill(w, t, tl=tl_job(w, t, cut_k(tl_table(w), 2, rows=[0]))), ("positions hold from 2 to 4 teacher tokens",)),
    Case("distill: k differs between parts", lambda w, t: distill(w, t, tl=tl_job(w, t, pc_filter(tl_table(w), ["p0", "p1"]), cut_k(pc_filter(tl_table(w), ["p2", "p3"]), 3))), ("part-00001.parquet", "k = 3 teacher tokens per position", "has k = 4", "one --top-k")),
    Case("distill: k differs between shards", lambda w, t: distill(w, t, tl=tl_shards(w, t, 2)), ("shard-00001-of-00002", "k = 2", "has k = 4")),
    Case("eval: two problems files with the same name", lambda w, t: ["eval", "--model", w["student"], "--problems", eval_problems(t, "a"), "--problems", eval_problems(t, "b", "b"), "--out", t / "out"], ("--problems", "benchmark 'math' is named by", "(its file name) and", "rename a file")),
    Case("eval: a benchmark column naming another file's benchmark", lambda w, t: ["eval", "--model", w["student"], "--problems", eval_problems(t, "a"), "--problems", write(t / "other.parquet", make_problems(4).with_columns(problem_id=pl.col("problem_id") + "x", benchmark=pl.lit("math"))), "--out", t / "out"], ("benchmark 'math' is named by", "(its benchmark column)")),
    # messages that name the real cause (issue 15, class 4)
    Case("teacher-logits: null references as the sequences", lambda w, t: tlogits(w, t, sequences=problems_with(w, t, reference=pl.lit(None, pl.String)), problems=problems_with(w, t, reference=pl.lit(None, pl.String))), ("--sequences", "every 'reference' is null or empty (4 problems)", "fill the column")),
    Case("teacher-logits: null references, --context reference", lambda w, t: tlogits(w, t, "--context", "reference", sequences=problems_with(w, t, reference=pl.lit(None, pl.String)), problems=problems_with(w, t, reference=pl.lit(None, pl.String))), ("every 'reference' is null or empty",)),
    Case("teacher-logits: every weight 0", lambda w, t: tlogits(w, t, weights=write(t / "w.parquet", weights_frame(w).with_columns(weight=pl.lit(0.0)))), ("--weights", "every problem of --sequences has weight 0")),
    Case("eval: baseline a sharded eval with a shard missing", lambda w, t: ["eval", "--model", w["student"], "--problems", w["problems"], "--out", t / "out", "--baseline", unfinished_shards(t, "base", 0)], ("--baseline", "missing shard(s) 1/2")),
    Case("scores: a sharded job whose shards are all empty", lambda w, t: weight(w, t, scores=unfinished_shards(t, "s", 0, 1)), ("--scores", "has no rows")),
    # found by a fuzzing audit (session 16): each was a traceback, or exit 0 with a broken model
    Case("distill: a null response in teacher logits", lambda w, t: distill(w, t, tl=tl_job(w, t, with_row(tl_table(w), "token_ids", 0, None))), ("part-00000.parquet", "token_ids is null in 1 row(s)", "regenerate")),
    Case("distill: a null token id in teacher logits", lambda w, t: distill(w, t, tl=tl_job(w, t, with_row(tl_table(w), "token_ids", 0, lambda r: [None] + r[1:]))), ("token_ids holds 1 null value(s)",)),
    Case("distill: a null top-k position in teacher logits", lambda w, t: distill(w, t, tl=tl_job(w, t, with_row(tl_table(w), "topk_ids", 0, lambda r: [None] + r[1:]))), ("topk_ids holds 1 null list(s)",)),
    Case("distill: a teacher-logits row twice", lambda w, t: distill(w, t, tl=tl_job(w, t, pa.concat_tables([tl_table(w), tl_table(w).slice(0, 1)]))), ("problem_id + sample_index must be unique", "('p0', 0)")),
    Case("distill: a teacher-logits row in two parts", lambda w, t: distill(w, t, tl=tl_job(w, t, tl_table(w), tl_table(w).slice(2, 1))), ("must be unique", "part-00000.parquet, ", "part-00001.parquet")),
    Case("distill: misaligned teacher logits name their columns", lambda w, t: distill(w, t, tl=tl_job(w, t, with_row(tl_table(w), "tail_logprob", 0, lambda r: r[1:]))), ("token_ids and topk_ids, topk_logprobs, tail_logprob", "must have one")),
    Case("distill: weights too large for float32 losses", lambda w, t: distill(w, t, weights=write(t / "w.parquet", weights_frame(w).with_columns(weight=pl.lit(1e308)))), ("--weights", "'weight' must be at most 1e+12", "--normalize mean")),
    Case("distill: damaged provenance in the weights", lambda w, t: distill(w, t, weights=with_provenance(w["weights"], t, problems=3, options="x")), ("--weights", "paced.provenance metadata is damaged", "'problems' is int, not str", "'options' is str, not dict")),
    Case("score: a column written twice in the problems", lambda w, t: score(w, t, problems=twice(w["problems"], "prompt", t)), ("--problems", "column(s) 'prompt' appear more than once", "keep one")),
    Case("weight: a column written twice in the scores", lambda w, t: weight(w, t, scores=twice(next((w["scores"]).glob("part-*.parquet")), "correct", t)), ("column(s) 'correct' appear more than once",)),
    Case("rollout: --threads far past the cores", lambda w, t: rollout(w, t, "--threads", "100000"), ("--threads 100000: at most", "usable cores")),
    Case("score: --shard with an impossible count", lambda w, t: score(w, t, "--shard", "0/99999999999999999999"), ("--shard 0/99999999999999999999: at most 99,999 shards",)),
    Case("score: --shard with a space", lambda w, t: score(w, t, "--shard", " 0/2"), ("write it as I/N",)),
    Case("weight: a prior too large for the posterior", lambda w, t: weight(w, t, "--estimator", "posterior", "--prior", "1e308,1e308"), ("--prior 1e308,1e308", "at most 1e+06")),
    Case("rollout: a chat-template variable paced sets itself", lambda w, t: rollout(w, t, "--chat-template-kwargs", '{"add_generation_prompt": false}'), ("'add_generation_prompt' is not a template variable", "drop it")),
    Case("rollout: a model config of the wrong types", lambda w, t: ["rollout", "--problems", w["problems"], "--model", model_with(w, t, "config.json", lambda b: json.dumps(json.loads(b) | {"vocab_size": "big"}).encode()), "--out", t / "out"], ("could not load its tokenizer", "vocab_size")),
    Case("score: a named pipe as the rollouts", lambda w, t: score(w, t, rollouts=(os.mkfifo(t / "r.parquet"), t / "r.parquet")[1]), ("--rollouts", "not a regular file")),
    Case("rollout: a problems path that is not UTF-8", lambda w, t: rollout(w, t, problems=(lambda f: (shutil.copy(w["problems"], f), f)[1])(t / os.fsdecode(b"p\xff.parquet"))), ("--problems", "not valid UTF-8", "rename it")),
    Case("rollout: a problems folder holding a name that is not UTF-8", lambda w, t: rollout(w, t, problems=(lambda d: (d.mkdir(), shutil.copy(w["problems"], d / os.fsdecode(b"\xff.parquet")), d)[2])(t / "pd")), ("--problems", "is not a valid UTF-8 name")),
    # what the bucket losses assume of a position, beyond each value's own range (session 17)
    Case("distill: teacher log-probs of another distribution", lambda w, t: distill(w, t, tl=tl_job(w, t, map_values(tl_table(w), "topk_logprobs", lambda x: x / 2))), ("part-00000.parquet", "top-k and tail masses sum to", "not 1, at", "not raw logits")),
    Case("distill: a token id twice in one position's top-k", lambda w, t: distill(w, t, tl=tl_job(w, t, with_column(tl_table(w), "topk_ids", [[[pos[0]] * len(pos) for pos in r] for r in tl_table(w)["topk_ids"].to_pylist()]))), ("a token id appears twice among one position's topk_ids and sample_ids", "each must be one distinct token")),
    Case("distill: draws that do not stand for the tail", lambda w, t: distill(w, t, tl=tl_job(w, t, with_draws(tl_table(w), scale=0.25))), ("sample_logmass sum to 0.25", "the draws must stand for the tail")),
    Case("distill: a draw that repeats a top-k id", lambda w, t: distill(w, t, tl=tl_job(w, t, with_draws(tl_table(w), clash=True))), ("appears twice among one position's topk_ids and sample_ids",)),
    Case("distill: weights whose pass rate is not their counts'", lambda w, t: distill(w, t, weights=write(t / "w.parquet", weights_frame(w).with_columns(pass_rate=pl.lit(0.3)))), ("--weights", "'pass_rate' must be num_correct / num_samples", "belongs in 'weight'")),
    Case("scores: a shard folder numbered past its split", lambda w, t: weight(w, t, scores=(lambda d: (shutil.copytree(w["scores"], d / "shard-00000-of-00000"), d)[1])(t / "s")), ("--scores", "shard-00000-of-00000 is not a shard of a 0-way split", "I < N")),
    Case("snr: --out the working directory", lambda w, t: ["snr", "--student", w["student"], "--teacher-logits", w["tl"], "--weights", w["weights"], "--out", t], ("--out", "is a directory; give a file name such as")),
    Case("distill: a null row of draws in teacher logits", lambda w, t: distill(w, t, tl=tl_job(w, t, with_row(tl_table(w), "sample_ids", 0, None))), ("sample_ids is null in 1 row(s)",)),
    Case("snr: teacher logits with no top-k and no draws", lambda w, t: ["snr", "--student", w["student"], "--teacher-logits", tl_job(w, t, cut_k(tl_table(w).set_column(tl_table(w).schema.get_field_index("tail_logprob"), "tail_logprob", pa.array([[0.0] * len(r) for r in tl_table(w)["tail_logprob"].to_pylist()], pa.list_(pa.float32()))), 0)), "--weights", w["weights"], "--out", t / "snr.parquet"], ("hold no teacher token (k = 0 and no draws)",)),
    Case("distill: an empty prompt in teacher logits", lambda w, t: distill(w, t, tl=tl_job(w, t, with_row(tl_table(w), "prompt_token_ids", 1, []))), ("prompt_token_ids is empty in 1 row(s)", "'p0'")),
    Case("teacher-logits: a null token id inside a rollout", lambda w, t: tlogits(w, t, sequences=write(t / "r.parquet", pl.read_parquet(w["rollouts"] / "part-00000.parquet").with_columns(completion_token_ids=pl.when(pl.int_range(pl.len()) == 1).then(pl.lit([None, 5], pl.List(pl.Int32))).otherwise(pl.col("completion_token_ids"))))), ("--sequences", "'completion_token_ids' holds null items inside its lists", "problem_id='p0', sample_index=1")),
    Case("rollout: a model whose weights lack one its config needs", lambda w, t: ["rollout", "--problems", w["problems"], "--model", model_with(w, t, "model.safetensors", without_tensor("model.norm.weight")), "--out", t / "out", "--max-new-tokens", "4"], ("its weights do not match its config.json (missing from its weights files: model.norm.weight)", "random values")),
    Case("teacher-logits: a teacher of NaN weights", lambda w, t: tlogits(w, t, teacher=model_with(w, t, "model.safetensors", nan_tensors, model="teacher")), ("--teacher: its log-probabilities are NaN", "try --dtype float32")),
    Case("distill: an empty step in --export-steps", lambda w, t: distill(w, t, "--export-steps", "1,,2"), ("--export-steps 1,,2: give step numbers",)),
]


@pytest.fixture(scope="module")
def raw(tmp_path_factory, raw_model_dir):
    return raw_model_dir


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused(case, world, raw, tmp_path):
    world = world | {"raw": raw}
    args = case.args(world, tmp_path)
    before_world = snapshot(world["dir"])
    before_tmp = snapshot(tmp_path)
    r = paced(*args)
    assert r.exit_code == 2, (case.name, r.exit_code, r.stderr)
    assert "error" in r.stderr.lower() or "usage" in r.stderr.lower()
    assert "Traceback" not in r.stderr, (case.name, r.stderr)
    for needle in case.needles:
        assert needle in r.stderr, (case.name, needle, r.stderr)
    assert r.stdout == ""
    assert snapshot(world["dir"]) == before_world  # inputs and earlier artifacts untouched
    assert snapshot(tmp_path) == before_tmp  # no output created
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.parquet").exists()


def test_extra_columns_are_not_bad_input(world, tmp_path):
    """The design lets users add columns: they are kept, not refused."""
    p = write(tmp_path / "p.parquet", make_problems(4).with_columns(source=pl.lit("mine")))
    r = paced("score", "--rollouts", world["rollouts"], "--problems", p, "--out", tmp_path / "s", "--verifier", "exact", "--allow-stale")
    assert r.exit_code == 0, r.stderr


def test_full_disk_is_refused_cleanly(world, tmp_path):
    """A file-size limit stands in for a full disk: exit 2, the path named, nothing left behind."""

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))

    out = tmp_path / "w.parquet"
    r = subprocess.run([sys.executable, "-m", "paced_cli", "weight", "--scores", str(world["scores"]), "--out", str(out)],
                       preexec_fn=limit, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert "cannot write" in r.stderr and str(out) in r.stderr and "File too large" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_case_count():
    assert len(CASES) >= 157  # the README quotes this count


@pytest.mark.parametrize("err", ["EROFS", "EACCES", "ENOSPC"])
def test_unwritable_output_exits_2_naming_the_path(world, tmp_path, monkeypatch, err):
    """A read-only file system, a directory we may not write (as a non-root user) or a full
    disk surface as OSError on write; paced exits 2 with the path and the fix. (Tests run as
    root, which permission bits do not stop, so the error is injected at the write.)"""
    import errno
    import os

    import schemas.io

    real = os.replace

    def refuse(src, dst):
        if str(dst).endswith("w.parquet"):
            raise OSError(getattr(errno, err), os.strerror(getattr(errno, err)), str(dst))
        return real(src, dst)

    monkeypatch.setattr(schemas.io.os, "replace", refuse)
    out = tmp_path / "w.parquet"
    r = paced("weight", "--scores", world["scores"], "--out", out)
    assert r.exit_code == 2
    assert f"cannot write {out}" in r.stderr and os.strerror(getattr(errno, err)) in r.stderr
    assert list(tmp_path.iterdir()) == []  # the temporary is removed, nothing at the final name


def _numeric_options() -> list[tuple[str, str, type]]:
    """(command, flag, int or float) for every numeric option of every command, from the
    commands' own signatures: a new option is covered without editing this test."""
    import typing

    from paced_cli import app

    found = []
    for info in app.registered_commands:
        for name, hint in typing.get_type_hints(info.callback).items():
            kinds = {a for a in typing.get_args(hint) if a is not type(None)} or {hint}
            for kind in kinds & {int, float}:
                found.append((info.name, "--" + name.replace("_", "-"), kind))
    return found


NUMERIC_OPTIONS = _numeric_options()


def _required_args(command: str) -> list[str]:
    """Placeholder values for a command's required options: option checks come before any path is read."""
    import typer

    from paced_cli import app

    click_command = typer.main.get_command(app).commands[command]
    return [a for p in click_command.params if p.required
            for a in ((p.opts[0], "x") if p.param_type_name == "option" else ("x",))]  # an argument: its value alone


@pytest.mark.parametrize(("command", "flag", "kind"), NUMERIC_OPTIONS, ids=[f"{c} {f}" for c, f, _ in NUMERIC_OPTIONS])
def test_every_numeric_option_is_range_checked(command, flag, kind, tmp_path, monkeypatch):
    """nan, inf and -inf for a float option, -1 for an int one: refused before any work, exit 2,
    the flag named (every numeric option here takes only finite values, and no int option -1)."""
    monkeypatch.chdir(tmp_path)
    for value in ["nan", "inf", "-inf"] if kind is float else ["-1"]:
        r = paced(command, *_required_args(command), flag, value)
        assert r.exit_code == 2, (command, flag, value, r.stderr)
        assert flag in r.stderr and "Traceback" not in r.stderr, (command, flag, value, r.stderr)
    assert list(tmp_path.iterdir()) == []


def test_numeric_options_are_found():
    assert len(NUMERIC_OPTIONS) >= 30
    assert ("distill", "--weight-decay", float) in NUMERIC_OPTIONS and ("eval", "--gpu-memory-utilization", float) in NUMERIC_OPTIONS


@pytest.mark.parametrize("content", [b"{torn", b"[1]", b'{"host": "h"}', b'{"pid": "x"}', b"\xff\xfe", b""])
@pytest.mark.parametrize("name", ["_lock.parquet", "_lock"])
def test_a_damaged_lock_names_no_holder(tmp_path, content, name):
    """A lock damaged (or edited, or an earlier paced's torn `_lock`) holds no live process: the
    job may take it."""
    from schemas.jobs import _lock_holder

    lock = tmp_path / name
    lock.write_bytes(content)
    assert _lock_holder(tmp_path) is None
    if name == "_lock.parquet":
        lock.write_bytes(record_bytes(content))
        assert _lock_holder(tmp_path) is None


def test_an_interrupted_job_with_a_damaged_lock_resumes(world, tmp_path):
    """An unfinished job whose lock is garbage resumes with the same command (was: a traceback)."""
    out = tmp_path / "rollouts"
    shutil.copytree(world["rollouts"], out)
    (out / "_manifest.parquet").unlink()  # unfinished: the part is done, the manifest not yet written
    (out / "_lock.parquet").write_bytes(b"\xff\xfe[1")
    r = paced("rollout", "--problems", world["problems"], "--model", world["student"], "--samples", "2",
              "--max-new-tokens", "6", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert (out / "_manifest.parquet").exists() and not (out / "_lock.parquet").exists()
    assert pl.read_parquet(out / "*.parquet").height == pl.read_parquet(world["rollouts"] / "*.parquet").height


def _split_with_an_empty_shard(ids: list[str]) -> tuple[int, int]:
    """(I, N): the smallest split of `ids` in which shard I holds none of them."""
    from stages.common import shard_of

    for n in range(2, 64):
        empty = sorted(set(range(n)) - {shard_of(p, n) for p in ids})
        if empty:
            return empty[0], n
    raise AssertionError("no split with an empty shard")


def test_an_empty_teacher_logits_shard_finishes_empty(world, tmp_path):
    """A --shard I/N that selects no sequence is an empty shard, not 'every problem has weight 0':
    it finishes (a manifest of no parts, as rollout's empty shards do), so the sharded job
    completes and distill reads it."""
    empty, n = _split_with_an_empty_shard(make_problems(4)["problem_id"].to_list())
    out = tmp_path / "tl"
    base = ["teacher-logits", "--problems", world["problems"], "--sequences", world["rollouts"], "--teacher", world["teacher"],
            "--top-k", "4", "--out", out]
    r = paced(*base, "--shard", f"{empty}/{n}")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out) and "finished as an empty shard" in r.stderr and "weight 0" not in r.stderr
    shard = out / f"shard-{empty:05d}-of-{n:05d}"
    assert manifest_record(shard)["parts"] == []
    for i in (i for i in range(n) if i != empty):
        r = paced(*base, "--shard", f"{i}/{n}")
        assert r.exit_code == 0, r.stderr
    r = paced("distill", "--student", world["student"], "--teacher-logits", out, "--weights", world["weights"],
              "--out", tmp_path / "d", "--max-steps", "1")
    assert r.exit_code == 0, r.stderr


def test_a_finished_sharded_eval_is_a_baseline(world, tmp_path):
    """`paced eval --shard I/N` into one --out, every shard done and the summary written by the
    last: a valid --baseline for another eval (was refused for lacking a job record at the top)."""
    base = ["eval", "--model", world["student"], "--problems", world["problems"], "--samples", "1",
            "--max-new-tokens", "4", "--verifier", "exact"]
    for i in range(2):
        r = paced(*base, "--out", tmp_path / "base", "--shard", f"{i}/2")
        assert r.exit_code == 0, r.stderr
    assert (tmp_path / "base" / "summary.parquet").exists()
    r = paced(*base, "--out", tmp_path / "after", "--baseline", tmp_path / "base")
    assert r.exit_code == 0, r.stderr
    summary = pl.read_parquet(tmp_path / "after" / "summary.parquet")
    assert summary["baseline_accuracy"].null_count() == 0


def test_every_weight_zero_is_refused_with_shard_too(world, tmp_path):
    """Unsharded, weights all 0 are refused; with --shard I/N each shard finished empty and the
    whole made a finished artifact of no rows. The weights are read whole in every shard."""
    zero = write(tmp_path / "w.parquet", weights_frame(world).with_columns(weight=pl.lit(0.0)))
    for shard in ("0/1", "1/3"):
        r = paced("teacher-logits", "--problems", world["problems"], "--sequences", world["rollouts"], "--teacher",
                  world["teacher"], "--top-k", "4", "--out", tmp_path / "tl", "--weights", zero, "--shard", shard)
        assert r.exit_code == 2 and "every problem of --sequences has weight 0" in r.stderr, r.stderr
        assert not (tmp_path / "tl").exists()
