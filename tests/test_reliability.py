"""Integrity of job directories: checksums, locks, clean stops on SIGTERM and SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import polars as pl
import pyarrow.parquet as pq
import pytest

import schemas
from schemas.io import record_table
from tests.conftest import ROOT, make_problems, paced

FAST = ["--samples", "2", "--max-new-tokens", "8", "--part-size", "2"]


@pytest.fixture
def rollouts(tmp_path, problems_file, student_dir):
    out = tmp_path / "rollouts"
    assert paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST).exit_code == 0
    return out


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete"])
def test_a_damaged_part_is_detected_on_read(tmp_path, rollouts, problems_file, damage):
    part = rollouts / "part-00001.parquet"
    data = part.read_bytes()
    if damage == "truncate":
        part.write_bytes(data[: len(data) // 2])
    elif damage == "alter":
        part.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        part.unlink()
    r = paced("score", "--rollouts", rollouts, "--problems", problems_file, "--out", tmp_path / "scores")
    assert r.exit_code == 2
    assert "part-00001.parquet" in r.stderr
    assert {"truncate": "truncated", "alter": "altered", "delete": "missing"}[damage] in r.stderr
    assert "delete them and _manifest.parquet, then rerun: paced rollout" in r.stderr
    assert not (tmp_path / "scores").exists()


def test_deleting_the_damaged_part_and_manifest_regenerates_only_it(tmp_path, rollouts, problems_file, student_dir):
    before = pl.read_parquet(f"{rollouts}/part-*.parquet")
    (rollouts / "part-00001.parquet").unlink()
    (rollouts / "_manifest.parquet").unlink()
    r = paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", rollouts, *FAST)
    assert r.exit_code == 0 and "2 / 1" in r.stderr
    assert pl.read_parquet(f"{rollouts}/part-*.parquet").equals(before)


def test_a_live_writer_holds_the_lock_and_a_dead_ones_lock_is_taken_over(tmp_path, problems_file, student_dir):
    out = tmp_path / "r"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for name, record in (("_lock.parquet", {"pid": sleeper.pid, "host": socket.gethostname(), "since": "now"}),
                             ("_job.parquet", {"schema": "rollouts", "key": "x", "options": {}})):
            pq.write_table(record_table(record, schemas.ROLLOUTS), out / name)
        r = paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST)
        assert r.exit_code == 2 and f"pid {sleeper.pid}" in r.stderr and "another paced process" in r.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    r = paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST, "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert not (out / "_lock.parquet").exists()  # released at the end


def test_a_requeued_slurm_task_takes_over_its_own_lock_from_another_node(tmp_path, problems_file, student_dir, monkeypatch):
    """A lock of another host is taken for alive (its processes cannot be seen from here), so a
    Slurm task requeued onto another node was refused its own job. The lock records the task
    (array task, step, rank) and its restart count: the same task restarted since takes it over;
    another task, or another process of the same allocation that was not restarted, is refused."""
    out = tmp_path / "r"
    out.mkdir()
    holder = {"pid": 31294, "host": "node-a17", "since": "now", "slurm": {"task": "812_3.0.0", "restart": 0}}
    for name, record in (("_lock.parquet", holder), ("_job.parquet", {"schema": "rollouts", "key": "x", "options": {}})):
        pq.write_table(record_table(record, schemas.ROLLOUTS), out / name)
    base = ["rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST, "--overwrite"]
    for k, v in {"SLURM_ARRAY_JOB_ID": "812", "SLURM_ARRAY_TASK_ID": "4", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0",
                 "SLURM_RESTART_COUNT": "1"}.items():
        monkeypatch.setenv(k, v)
    r = paced(*base)  # another task of the array
    assert r.exit_code == 2 and "pid 31294 on node-a17" in r.stderr
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    r = paced(*base)  # the same task, not restarted: another process of it, running
    assert r.exit_code == 2 and "pid 31294 on node-a17" in r.stderr
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    r = paced(*base)  # requeued
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_cleanly_and_resume(tmp_path, student_dir, sig):
    problems = tmp_path / "problems.parquet"
    make_problems(16).write_parquet(problems)
    args = ["rollout", "--problems", problems, "--model", student_dir, "--samples", "2", "--max-new-tokens", "48",
            "--part-size", "1", "--batch-size", "1", "--out", tmp_path / "r"]
    env = os.environ | {"PACED_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "paced_cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (tmp_path / "r" / "part-00001.parquet").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "rerun the same command to resume" in stderr
    assert stdout == ""  # no output path: the artifact is not done
    assert not (tmp_path / "r" / "_lock.parquet").exists() and not (tmp_path / "r" / "_manifest.parquet").exists()
    r = paced("rollout", *args[1:])
    assert r.exit_code == 0, r.stderr
    assert pl.read_parquet(f"{tmp_path}/r/part-*.parquet").height == 32


def test_inputs_from_another_problems_file_are_refused_as_stale(tmp_path, rollouts, problems_file):
    edited = tmp_path / "edited.parquet"
    pl.read_parquet(problems_file).with_columns(answer=pl.lit("42")).write_parquet(edited)  # same ids, other answers
    r = paced("score", "--rollouts", rollouts, "--problems", edited, "--out", tmp_path / "s")
    assert r.exit_code == 2
    assert f"--rollouts {rollouts}: is stale or from another data set" in r.stderr and "--allow-stale" in r.stderr
    assert not (tmp_path / "s").exists()
    r = paced("score", "--rollouts", rollouts, "--problems", edited, "--out", tmp_path / "s", "--allow-stale")
    assert r.exit_code == 0 and "warning:" in r.stderr


def test_weights_of_another_data_set_are_refused_by_teacher_logits_and_distill(tmp_path, rollouts, problems_file, student_dir, teacher_dir):
    import shutil

    # Scores and weights from the rollouts of the real problems file ...
    assert paced("score", "--rollouts", rollouts, "--problems", problems_file, "--out", tmp_path / "s", "--verifier", "exact").exit_code == 0
    assert paced("weight", "--scores", tmp_path / "s", "--out", tmp_path / "w.parquet", "--scheme", "uniform").exit_code == 0
    # ... used with teacher logits of an edited copy of the problems.
    edited = tmp_path / "edited.parquet"
    pl.read_parquet(problems_file).with_columns(prompt=pl.col("prompt") + " Be brief.").write_parquet(edited)
    r = paced("teacher-logits", "--problems", edited, "--sequences", edited, "--teacher", teacher_dir, "--out", tmp_path / "tl",
              "--weights", tmp_path / "w.parquet", "--top-k", "4")
    assert r.exit_code == 2 and "--weights" in r.stderr and "stale" in r.stderr
    assert paced("teacher-logits", "--problems", edited, "--sequences", edited, "--teacher", teacher_dir,
                 "--out", tmp_path / "tl", "--top-k", "4").exit_code == 0
    r = paced("distill", "--student", student_dir, "--teacher-logits", tmp_path / "tl", "--weights", tmp_path / "w.parquet",
              "--out", tmp_path / "d", "--max-steps", "1")
    assert r.exit_code == 2 and f"--weights {tmp_path / 'w.parquet'}: is stale" in r.stderr
    assert not (tmp_path / "d").exists()
    shutil.rmtree(tmp_path / "tl")


def test_a_resumed_job_goes_on_with_the_threads_it_began_with(tmp_path, problems_file, student_dir, monkeypatch):
    """torch splits its sums by thread, so a resumed run on a machine busier or quieter than at
    the start (the threads are chosen from the idle cores) wrote parts whose floats differ in
    their low bits from an uninterrupted run's. The job records its threads and a resumed run
    takes them; --threads chosen by the user stands."""
    import torch

    from schemas.outputs import JOB_FILE, load_record
    from stages import threads

    out = tmp_path / "r"
    base = ["rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST]
    assert paced(*base, "--threads", "1").exit_code == 0
    assert load_record(out / JOB_FILE)["runtime"] == {"threads": 1}
    (out / "_manifest.parquet").unlink()  # as a kill leaves it
    (out / "part-00001.parquet").unlink()
    real = threads.choose
    monkeypatch.setattr(threads, "_measured", None)  # measured anew (a process keeps its first measurement)
    monkeypatch.setattr(threads, "choose", lambda given=None, env=None: real(given) if given else threads.Choice(2, "measured"))
    r = paced(*base)
    assert r.exit_code == 0, r.stderr
    assert "threads: 1 (as the job began; 2 measured now)" in r.stderr and torch.get_num_threads() == 1
    (out / "_manifest.parquet").unlink()
    (out / "part-00001.parquet").unlink()
    r = paced(*base, "--threads", "2")
    assert r.exit_code == 0 and "as the job began" not in r.stderr


def test_a_finished_job_with_a_part_deleted_writes_it_again(tmp_path, problems_file, student_dir):
    """The same command over a finished job whose part was deleted said "already complete" and
    left an artifact no stage could read; it writes the part again, to the same rows."""
    out = tmp_path / "r"
    base = ["rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0
    full = pl.read_parquet(out)
    (out / "part-00001.parquet").unlink()
    r = paced(*base)
    assert r.exit_code == 0 and "already complete" not in r.stderr, r.stderr
    assert pl.read_parquet(out).equals(full)
    assert schemas.read(out, schemas.ROLLOUTS, option="--rollouts").frame.height == full.height


def test_a_finished_job_with_a_part_edited_is_refused_not_said_complete(tmp_path, problems_file, student_dir):
    """A part rewritten by hand after the job finished (a row edited with polars): the readers
    refused the artifact, but the same command, with --overwrite too, said "already complete"
    with exit 0. It is refused, naming the part, and the part is left as it is (the user's, as
    an edited single file is); deleting it and rerunning writes it again."""
    out = tmp_path / "r"
    base = ["rollout", "--problems", problems_file, "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0
    full = pl.read_parquet(out)
    part = out / "part-00001.parquet"
    pl.read_parquet(part).with_columns(completion=pl.lit("edited by hand")).write_parquet(part)
    edited = part.read_bytes()
    for extra in ([], ["--overwrite"]):
        r = paced(*base, *extra)
        assert r.exit_code == 2, r.stderr
        assert "part-00001.parquet (" in r.stderr and "changed after paced wrote it" in r.stderr
        assert part.read_bytes() == edited
    part.unlink()
    assert paced(*base).exit_code == 0
    assert pl.read_parquet(out).equals(full)
