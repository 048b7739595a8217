"""--shard I/N: N machines each run one shard; downstream stages read the whole, or refuse it."""

from __future__ import annotations

import re

import polars as pl
import pyarrow.parquet as pq
import pytest

import schemas
from schemas.io import record_table
from tests.conftest import make_problems, paced

FAST = ["--samples", "2", "--max-new-tokens", "6"]


@pytest.fixture
def problems(tmp_path):
    make_problems(8).write_parquet(tmp_path / "problems.parquet")
    return tmp_path / "problems.parquet"


def test_shards_cover_every_problem_once_and_read_as_one(tmp_path, problems, student_dir, teacher_dir):
    out = tmp_path / "rollouts"
    for i in range(3):
        r = paced("rollout", "--problems", problems, "--model", student_dir, "--out", out, *FAST, "--shard", f"{i}/3")
        assert r.exit_code == 0, r.stderr
        assert r.stdout.strip() == str(out)
    assert sorted(p.name for p in out.iterdir()) == [f"shard-{i:05d}-of-00003" for i in range(3)]
    per_shard = [pl.read_parquet(f"{d}/part-*.parquet")["problem_id"].unique().to_list() for d in sorted(out.iterdir()) if list(d.glob("part-*"))]
    assert sum(len(x) for x in per_shard) == 8 and len(set().union(*map(set, per_shard))) == 8  # disjoint, complete

    # score reads the sharded rollouts as one artifact, and can itself be sharded.
    for i in range(2):
        assert paced("score", "--rollouts", out, "--problems", problems, "--out", tmp_path / "scores",
                     "--verifier", "exact", "--shard", f"{i}/2").exit_code == 0
    r = paced("weight", "--scores", tmp_path / "scores", "--out", tmp_path / "w.parquet", "--scheme", "uniform")
    assert r.exit_code == 0, r.stderr
    w = pl.read_parquet(tmp_path / "w.parquet")
    assert w.height == 8 and w["num_samples"].to_list() == [2] * 8

    # teacher-logits sharded; distill reads the whole.
    for i in range(2):
        r = paced("teacher-logits", "--problems", problems, "--sequences", out, "--teacher", teacher_dir,
                  "--out", tmp_path / "tl", "--top-k", "4", "--shard", f"{i}/2")
        assert r.exit_code == 0, r.stderr
        per_token = float(re.search(r"bytes per token on disk\s*│\s*([\d.]+)", r.stderr).group(1))
        assert per_token > 10  # a shard's own parts (it read --out's, none, and printed 0.0)
    r = paced("distill", "--student", student_dir, "--teacher-logits", tmp_path / "tl", "--weights", tmp_path / "w.parquet",
              "--out", tmp_path / "d", "--max-steps", "2", "--batch-size", "4")
    assert r.exit_code == 0, r.stderr
    log = pl.read_parquet(tmp_path / "d" / "train_log.parquet")
    assert log["problems"].to_list() == [4, 4]  # one epoch over all 8 problems, from both shards


def test_missing_and_unfinished_shards_are_refused_by_name(tmp_path, problems, student_dir):
    out = tmp_path / "rollouts"
    assert paced("rollout", "--problems", problems, "--model", student_dir, "--out", out, *FAST, "--shard", "0/3").exit_code == 0
    (out / "shard-00002-of-00003").mkdir()
    pq.write_table(record_table({"schema": "rollouts"}, schemas.ROLLOUTS), out / "shard-00002-of-00003" / "_job.parquet")
    r = paced("score", "--rollouts", out, "--problems", problems, "--out", tmp_path / "s")
    assert r.exit_code == 2
    assert "missing shard(s) 1/3" in r.stderr and "unfinished shard(s) 2/3" in r.stderr and "--shard I/N" in r.stderr
    assert not (tmp_path / "s").exists()


def test_a_shard_with_other_options_than_its_siblings_is_refused_before_it_runs(tmp_path, problems, student_dir):
    """A shard given other options than the shards already in its --out ran to the end and was
    refused only when the whole was read (eval's last shard, after all its generation)."""
    out = tmp_path / "rollouts"
    base = ["rollout", "--problems", problems, "--model", student_dir, "--out", out, *FAST]
    assert paced(*base, "--shard", "0/2", "--seed", "0").exit_code == 0
    r = paced(*base, "--shard", "1/2", "--seed", "1")
    assert r.exit_code == 2, r.stderr
    assert "the other shards in" in r.stderr and "shard-00000-of-00002 has seed 0 where shard-00001-of-00002 has 1" in r.stderr
    assert not (out / "shard-00001-of-00002").exists()
    assert paced(*base, "--shard", "1/2", "--seed", "0").exit_code == 0  # theirs: accepted


def test_shards_made_with_different_options_are_refused_at_read_time(tmp_path, problems, student_dir):
    out = tmp_path / "rollouts"
    for i, seed in ((0, "0"), (1, "1")):  # (--overwrite: past the check when each shard begins)
        r = paced("rollout", "--problems", problems, "--model", student_dir, "--out", out, *FAST, "--shard", f"{i}/2",
                  "--seed", seed, "--overwrite")
        assert r.exit_code == 0, r.stderr
    r = paced("score", "--rollouts", out, "--problems", problems, "--out", tmp_path / "s", "--verifier", "exact")
    assert r.exit_code == 2, r.stderr
    assert "shards were made with different options" in r.stderr
    assert "shard-00001-of-00002 has seed 1 where shard-00000-of-00002 has 0" in r.stderr
    assert not (tmp_path / "s").exists()
    r = paced("inspect", out, "--json", "--no-lineage")  # it said "finished" and nothing more
    assert r.exit_code == 0 and "shards were made with different options (shard-00001-of-00002 has seed 1" in r.stdout


@pytest.mark.parametrize("bad", ["2/2", "x", "1/0", "-1/3"])
def test_bad_shard_values_exit_2(tmp_path, problems, student_dir, bad):
    r = paced("rollout", "--problems", problems, "--model", student_dir, "--out", tmp_path / "r", f"--shard={bad}")
    assert r.exit_code == 2 and "--shard" in r.stderr
    assert not (tmp_path / "r").exists()


def test_shards_never_share_a_directory_with_an_unsharded_job(tmp_path, problems, student_dir):
    out = tmp_path / "r"
    assert paced("rollout", "--problems", problems, "--model", student_dir, "--out", out, *FAST).exit_code == 0
    r = paced("rollout", "--problems", problems, "--model", student_dir, "--out", out, *FAST, "--shard", "0/2")
    assert r.exit_code == 2 and "holds an unsharded job" in r.stderr


def test_eval_shards_and_the_last_one_writes_the_summary(tmp_path, problems, student_dir):
    out = tmp_path / "eval"
    args = ["eval", "--model", student_dir, "--problems", problems, "--out", out, "--samples", "2", "--max-new-tokens", "4",
            "--verifier", "exact"]
    r = paced(*args, "--shard", "1/2")
    assert r.exit_code == 0 and "summary is written when shard(s) 0/2" in r.stderr
    assert not (out / "summary.parquet").exists()
    r = paced(*args, "--shard", "0/2")
    assert r.exit_code == 0, r.stderr
    summary = pl.read_parquet(out / "summary.parquet")
    assert summary["problems"].to_list() == [8] and summary["samples"].to_list() == [2]
