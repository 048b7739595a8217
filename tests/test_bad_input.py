"""Every bad input is refused the same way: exit code 2, a message that names the file, column
or option at fault and the fix, and no output created or changed.

One table, one test: each case builds its bad input from a world of good artifacts made once.
"""

from __future__ import annotations

import hashlib
import json
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

from tests.conftest import ROOT, make_problems, paced


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


def tlogits(w, tmp, *extra, teacher=None, weights=None):
    return ["teacher-logits", "--problems", w["problems"], "--sequences", w["rollouts"], "--teacher", teacher or w["teacher"],
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
    Case("problems: unfinished job dir", lambda w, t: rollout(w, t, problems=(t / "job").mkdir() or (t / "job" / "_job.json").write_text('{"schema": "problems", "command": "paced x"}') and t / "job"), ("not finished", "rerun")),
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
    Case("distill: unknown loss", lambda w, t: distill(w, t, "--loss", "jsd"), ("--loss jsd",)),
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
    assert len(CASES) >= 40


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
