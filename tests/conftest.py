"""Shared fixtures: tiny models built from a config, small problems files, a CLI runner.

Nothing here touches the network: models are random-initialised from a config and saved
with save_pretrained, so they load through the same code path as a real checkpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stages import tiny_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))  # the example scripts some tests import (prepare_data)

os.environ.setdefault("PACED_NO_PROGRESS", "1")


def pytest_addoption(parser):
    parser.addoption(
        "--soak", type=int, default=0,
        help="fault injection: kill each long stage at this many random moments (CI uses 5)",
    )


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def paced(*args: str | os.PathLike) -> Result:
    """Run the real typer app in-process (fast) and return exit code, stdout and stderr."""
    from paced_cli import app

    r = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return Result(r.exit_code, r.stdout, r.stderr)


def script_env(**extra: object) -> dict[str, str]:
    """This process's environment for a shell script (examples/, recipes, bench/gpu_check.sh),
    with `extra` added: the interpreter running the tests first on PATH, so the `python` and
    `paced` the script calls are this environment's even when it is not activated."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return os.environ | {"PATH": path} | {k: str(v) for k, v in extra.items()}


def paced_subprocess(*args: str | os.PathLike, **kw) -> subprocess.CompletedProcess:
    """Run `python -m paced_cli` in a real process (for kills, exit codes, stdout purity);
    `env`: variables to add to this process's."""
    env = os.environ | {"PACED_NO_PROGRESS": "1"} | kw.get("env", {})
    return subprocess.run(
        [sys.executable, "-m", "paced_cli", *[str(a) for a in args]],
        capture_output=True, text=True, env=env, cwd=kw.get("cwd", ROOT), timeout=kw.get("timeout", 600),
    )


def start_paced(*args: str | os.PathLike) -> subprocess.Popen:
    """Start `python -m paced_cli ARGS` in the background, its output discarded."""
    env = os.environ | {"PACED_NO_PROGRESS": "1"}
    return subprocess.Popen([sys.executable, "-m", "paced_cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(proc: subprocess.Popen, path: Path, timeout: float = 300) -> None:
    """Wait until `path` exists while `proc` still runs: the moment a test kills it."""
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the process ended before {path.name} appeared, so it could not be killed there"
        assert time.time() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.01)


def kill_when(path: Path, *args: str | os.PathLike) -> None:
    """Run `paced ARGS` and SIGKILL it as soon as `path` exists (a crash at a known point)."""
    proc = start_paced(*args)
    try:
        wait_for(proc, path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_model.build_tokenizer(chat=True)


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory, tokenizer) -> Path:
    return tiny_model.build(tmp_path_factory.mktemp("models") / "student", arch="qwen2", seed=0, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory, tokenizer) -> Path:
    return tiny_model.build(
        tmp_path_factory.mktemp("models") / "teacher", arch="llama", hidden=96, layers=2, heads=3, seed=1, tokenizer=tokenizer
    )


def train_tiny_quick(out: os.PathLike, *extra: str) -> subprocess.CompletedProcess:
    """examples/train_tiny.py --quick into `out`."""
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_tiny.py"), "--out", str(out), "--quick", *extra],
        capture_output=True, text=True, timeout=600, env=os.environ | {"PACED_NO_PROGRESS": "1"},
    )


@pytest.fixture(scope="session")
def quick_models(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The quickstart's reduced-mode teacher and student, trained once per session (about
    40 s); tests that change them work on a copy."""
    out = tmp_path_factory.mktemp("quick_models")
    r = train_tiny_quick(out)
    assert r.returncode == 0, r.stderr
    return out, r


@pytest.fixture(scope="session")
def raw_model_dir(tmp_path_factory) -> Path:
    """A model whose tokenizer has no chat template: prompts are used raw."""
    return tiny_model.build(tmp_path_factory.mktemp("models") / "raw", chat=False, seed=2)


def make_problems(n: int = 6) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "problem_id": [f"p{i}" for i in range(n)],
            "prompt": [f"What is {i} + {i + 1}?" for i in range(n)],
            "answer": [str(2 * i + 1) for i in range(n)],
            "reference": [f"{i} + {i + 1} = {2 * i + 1}, so the answer is \\boxed{{{2 * i + 1}}}." for i in range(n)],
        }
    )


@pytest.fixture
def problems_file(tmp_path) -> Path:
    path = tmp_path / "problems.parquet"
    make_problems().write_parquet(path)  # written by polars: large_string columns, no paced metadata
    return path


@pytest.fixture(scope="session")
def chain(tmp_path_factory, student_dir, teacher_dir):
    """Every stage's artifact, once per session, from the tiny models: problems -> rollouts ->
    scores -> weights; teacher rollouts -> teacher logits; distill; eval. Tests that change
    one work on a copy."""
    d = tmp_path_factory.mktemp("chain")
    make_problems(6).write_parquet(d / "problems.parquet")
    steps = [
        ["rollout", "--problems", d / "problems.parquet", "--model", student_dir, "--out", d / "rollouts",
         "--samples", "2", "--max-new-tokens", "6", "--part-size", "4"],
        ["score", "--rollouts", d / "rollouts", "--problems", d / "problems.parquet", "--out", d / "scores",
         "--verifier", "exact", "--workers", "1"],
        ["weight", "--scores", d / "scores", "--out", d / "weights.parquet", "--scheme", "uniform"],
        ["rollout", "--problems", d / "problems.parquet", "--model", teacher_dir, "--out", d / "teacher_rollouts",
         "--samples", "1", "--max-new-tokens", "6"],
        ["teacher-logits", "--problems", d / "problems.parquet", "--sequences", d / "teacher_rollouts", "--teacher", teacher_dir,
         "--out", d / "tl", "--top-k", "4"],
        ["distill", "--student", student_dir, "--teacher-logits", d / "tl", "--weights", d / "weights.parquet",
         "--out", d / "student", "--max-steps", "2", "--batch-size", "2", "--save-steps", "0"],
        ["eval", "--model", student_dir, "--problems", d / "problems.parquet", "--out", d / "eval", "--samples", "2",
         "--max-new-tokens", "6", "--part-size", "4", "--verifier", "exact", "--workers", "1"],
    ]
    for args in steps:
        r = paced(*args)
        assert r.exit_code == 0, (args[0], r.stderr)
    return d


def job_record(d: os.PathLike) -> dict:
    """What job directory `d` is (its `_job.parquet` record: schema, key, options, command)."""
    from schemas.outputs import JOB_FILE, load_record

    return load_record(Path(d) / JOB_FILE)


def manifest_record(d: os.PathLike) -> dict:
    """The manifest of finished job directory `d` (parts, rows, provenance)."""
    from schemas.outputs import MANIFEST_FILE, load_record

    return load_record(Path(d) / MANIFEST_FILE)


def lock_table(pid: int, host: str | None = None):
    """A job lock as paced writes it: process `pid` of `host` (this machine by default)."""
    import schemas

    return schemas.io.record_table({"pid": pid, "host": host or socket.gethostname(), "since": "now"}, schemas.ROLLOUTS)


def write_lock(path: os.PathLike, pid: int, host: str | None = None) -> None:
    """Write a lock naming process `pid` of `host` (this machine by default) at `path`."""
    pq.write_table(lock_table(pid, host), path)
