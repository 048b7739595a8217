"""Crash safety, proved by fault injection.

Each long stage runs as a subprocess on tiny models and is killed with SIGKILL at a random
moment (seeded): while loading, between parts, inside a part, during the final writes. The
same command is then rerun (distill with --resume) until it succeeds, and the artifact is
compared with an uninterrupted run's: same rows, no duplicates, none missing, same values
(distill: the same loss curve and final weights within float tolerance).

    python -m pytest tests/test_fault_injection.py            # 5 kill moments per stage (CI)
    python -m pytest tests/test_fault_injection.py --soak 50  # many more, on demand
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import torch

from tests.conftest import ROOT, make_problems, paced

KILLS_IN_CI = 5


def _start(args: list) -> subprocess.Popen:
    env = os.environ | {"PACED_NO_PROGRESS": "1"}
    return subprocess.Popen([sys.executable, "-m", "paced_cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _run(args: list) -> float:
    t = time.perf_counter()
    p = _start(args)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    return time.perf_counter() - t


def kill_and_rerun(args: list, rerun_args: list, delay: float) -> None:
    """Start the stage, SIGKILL it after `delay` seconds (if still running), rerun to the end."""
    p = _start(args)
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
    _run(rerun_args)


def rows(out: Path, key=("problem_id", "sample_index")) -> pl.DataFrame:
    df = pl.read_parquet(f"{out}/part-*.parquet")
    assert df.select(pl.struct(list(key)).n_unique()).item() == df.height, "duplicate rows"
    return df.sort(list(key))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, student_dir, teacher_dir):
    d = tmp_path_factory.mktemp("faults")
    make_problems(6).write_parquet(d / "problems.parquet")
    assert paced("rollout", "--problems", d / "problems.parquet", "--model", student_dir, "--out", d / "rollouts",
                 "--samples", "3", "--max-new-tokens", "16").exit_code == 0
    assert paced("score", "--rollouts", d / "rollouts", "--problems", d / "problems.parquet", "--out", d / "scores",
                 "--verifier", "exact").exit_code == 0
    assert paced("weight", "--scores", d / "scores", "--out", d / "weights.parquet", "--scheme", "uniform").exit_code == 0
    assert paced("teacher-logits", "--problems", d / "problems.parquet", "--sequences", d / "rollouts", "--teacher", teacher_dir,
                 "--out", d / "tl", "--top-k", "8").exit_code == 0
    return {"dir": d, "student": student_dir, "teacher": teacher_dir}


def stage_args(name: str, w: dict, out: Path) -> list:
    d = w["dir"]
    return {
        "rollout": ["rollout", "--problems", d / "problems.parquet", "--model", w["student"], "--samples", "3",
                    "--max-new-tokens", "24", "--part-size", "1", "--batch-size", "1", "--seed", "11"],
        "score": ["score", "--rollouts", d / "rollouts", "--problems", d / "problems.parquet", "--verifier", "math",
                  "--part-size", "3"],
        "teacher-logits": ["teacher-logits", "--problems", d / "problems.parquet", "--sequences", d / "rollouts",
                           "--teacher", w["teacher"], "--top-k", "8", "--part-size", "3", "--batch-size", "2"],
        "eval": ["eval", "--model", w["student"], "--problems", d / "problems.parquet", "--samples", "2",
                 "--max-new-tokens", "16", "--part-size", "2", "--verifier", "exact"],
        "distill": ["distill", "--student", w["student"], "--teacher-logits", d / "tl", "--weights", d / "weights.parquet",
                    "--lr", "3e-3", "--batch-size", "2", "--micro-batch-size", "2", "--max-steps", "10", "--save-steps", "2",
                    "--schedule", "cosine", "--warmup-steps", "2"],
    }[name] + ["--out", out]


def assert_same(name: str, ref: Path, got: Path) -> None:
    if name == "distill":
        a = pl.read_parquet(ref / "train_log.parquet")
        b = pl.read_parquet(got / "train_log.parquet")
        assert a["step"].to_list() == b["step"].to_list()
        for col in ("loss", "fkl", "rkl", "lr", "grad_norm"):
            assert b[col].to_list() == pytest.approx(a[col].to_list(), rel=1e-5, abs=1e-8), col
        from safetensors.torch import load_file

        wa, wb = load_file(ref / "model.safetensors"), load_file(got / "model.safetensors")
        assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
        return
    if name == "eval":  # its responses in results/, its summary beside them
        ref, got = ref / "results", got / "results"
    assert rows(ref).equals(rows(got))
    if name == "eval":
        ref, got = ref.parent, got.parent
        assert pl.read_parquet(ref / "summary.parquet").equals(pl.read_parquet(got / "summary.parquet"))


@pytest.mark.parametrize("name", ["rollout", "score", "teacher-logits", "eval", "distill"])
def test_kill_at_random_moments_then_rerun_equals_an_uninterrupted_run(name, inputs, tmp_path, request):
    kills = request.config.getoption("--soak") or KILLS_IN_CI
    ref = tmp_path / "ref"
    t_ref = _run(stage_args(name, inputs, ref))
    rng = random.Random(f"faults:{name}")
    for i in range(kills):
        out = tmp_path / f"killed-{i}"
        # Anywhere from start-up to just past the uninterrupted run's end.
        delay = rng.uniform(0.05 * t_ref, 1.05 * t_ref)
        args = stage_args(name, inputs, out)
        rerun = args + (["--resume"] if name == "distill" else [])
        kill_and_rerun(args, rerun, delay)
        assert_same(name, ref, out)
        job = out / "results" if name == "eval" else out
        assert not list(job.glob(".*tmp*")) and not (job / "_lock.parquet").exists()
