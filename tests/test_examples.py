"""Every example script runs end to end on tiny models, through the real commands."""

from __future__ import annotations

import os
import subprocess

import polars as pl
import pytest

from tests.conftest import ROOT


def run_script(name: str, work, **env) -> subprocess.CompletedProcess:
    e = os.environ | {"WORK": str(work), "PACED_NO_PROGRESS": "1"} | {k: str(v) for k, v in env.items()}
    return subprocess.run(["bash", str(ROOT / "examples" / name)], cwd=ROOT, env=e, capture_output=True, text=True, timeout=900)


def test_pipeline_script(tmp_path):
    r = run_script("pipeline.sh", tmp_path)
    assert r.returncode == 0, r.stderr
    weights = pl.read_parquet(tmp_path / "weights.parquet")
    assert weights.height == 12 and weights["num_samples"].to_list() == [8] * 12
    assert (tmp_path / "weights.png").exists()
    assert "shape: (12, 5)" in r.stdout  # the script prints the weights table


@pytest.mark.slow
def test_two_stage_script(tmp_path):
    # Random tiny models solve nothing; a deterministic coin-flip verifier gives the spread of
    # pass rates that Paced weights need, so both stages have problems to train on.
    (tmp_path / "coin.py").write_text("import zlib\ndef check(c, p):\n    return zlib.crc32(c.encode()) % 2 == 0\n")
    r = run_script("two_stage.sh", tmp_path, K=4, MAX_NEW_TOKENS=12, EPOCHS=1, VERIFIER="coin:check", PYTHONPATH=tmp_path)
    assert r.returncode == 0, r.stderr
    final = tmp_path / "stage2" / "student"
    assert r.stdout.strip().splitlines()[-1] == str(final)
    assert (final / "model.safetensors").exists()
    import json

    prov = json.loads((final / "_manifest.json").read_text())["provenance"]
    assert prov["options"]["loss"] == "rkl" and prov["options"]["init"].endswith("stage1/student")
    stage1 = pl.read_parquet(tmp_path / "stage1" / "student" / "train_log.parquet")
    stage2 = pl.read_parquet(final / "train_log.parquet")
    assert stage1.height >= 1 and stage2.height >= 1


def test_slurm_array_example_runs_each_task_locally(tmp_path, student_dir):
    """Simulate the array: one run per SLURM_ARRAY_TASK_ID, then read the whole."""
    from tests.conftest import make_problems

    make_problems(6).write_parquet(tmp_path / "problems.parquet")
    env = {"PROBLEMS": tmp_path / "problems.parquet", "STUDENT": student_dir, "OUT": tmp_path / "rollouts",
           "SLURM_ARRAY_TASK_COUNT": 2, "MAX_NEW_TOKENS": 4, "K": 2}
    for i in range(2):
        r = run_script("slurm_rollout.sh", tmp_path, SLURM_ARRAY_TASK_ID=i, **env)
        assert r.returncode == 0, r.stderr
    import schemas

    art = schemas.read(tmp_path / "rollouts", schemas.ROLLOUTS, option="--rollouts")
    assert art.frame.height == 12 and art.frame["problem_id"].n_unique() == 6
