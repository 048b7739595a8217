"""paced inspect: what an artifact is, whether it is finished, what made it and from what."""

from __future__ import annotations

import json
import os
import shutil

import polars as pl
import pyarrow.parquet as pq

import schemas
from tests.conftest import make_problems, paced


def inspect_json(path, *extra) -> dict:
    r = paced("inspect", path, "--json", *extra)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_a_distill_output_back_to_the_problems_file(chain, student_dir):
    info = inspect_json(chain / "student")
    assert (info["kind"], info["schema"], info["finished"], info["rows"]) == ("distill output", "train_log", True, 2)
    assert info["command"].startswith("paced distill --student") and info["stage"] == "distill"
    assert info["model"]["architectures"] == ["Qwen2ForCausalLM"]
    assert info["models"]["student"].startswith(("sha256:", "quick-sha256:"))
    assert {k: v["now"] for k, v in info["inputs"].items()} == {"teacher_logits": "same", "weights": "same"}
    tl, w = info["lineage"]["teacher_logits"], info["lineage"]["weights"]
    assert (tl["schema"], tl["kind"], tl["rows"], tl["finished"]) == ("teacher_logits", "job directory", 6, True)
    assert set(tl["lineage"]) == {"problems", "sequences"}
    assert tl["lineage"]["sequences"]["lineage"]["problems"]["schema"] == "problems"
    scores = w["lineage"]["scores"]
    assert (w["schema"], w["kind"], w["rows"]) == ("weights", "file", 6)
    assert (scores["schema"], scores["rows"]) == ("scores", 12)
    rollouts = scores["lineage"]["rollouts"]
    assert (rollouts["schema"], rollouts["rows"], rollouts["parts"]) == ("rollouts", 12, 2)
    assert rollouts["lineage"]["problems"]["note"].startswith("a problems file")
    assert [r["step"] for r in info["head"]] == [1, 2]  # a distill output's rows: its train log


def test_the_head_the_tables_and_no_lineage(chain):
    r = paced("inspect", chain / "rollouts", "--head", "3")
    assert r.exit_code == 0, r.stderr
    assert f"rollouts (schema version {schemas.ROLLOUTS.version}), job directory" in r.stdout and "first 3 rows" in r.stdout
    assert "rollouts <- problems" in r.stdout and "a problems file" in r.stdout
    info = inspect_json(chain / "rollouts", "--no-lineage", "--head", "1")
    assert "lineage" not in info and len(info["head"]) == 1
    ids = info["head"][0]["completion_token_ids"]
    assert len(ids) <= 6 and all(isinstance(t, int) for t in ids)  # up to 6 new tokens: shown whole


def test_unfinished_changed_and_sharded(chain, tmp_path, student_dir):
    # A job killed before its manifest: unfinished, with the parts it has.
    killed = tmp_path / "killed"
    shutil.copytree(chain / "rollouts", killed)
    (killed / "_manifest.parquet").unlink()
    (killed / "part-00001.parquet").unlink()
    info = inspect_json(killed)
    assert info["finished"] is False and info["parts"] == 1 and info["rows"] == 8 and "unfinished" in info["note"]
    # An input rewritten since: its fingerprint no longer matches.
    problems = tmp_path / "problems.parquet"
    make_problems(6).write_parquet(problems)
    r = paced("rollout", "--problems", problems, "--model", student_dir, "--out", tmp_path / "r", "--samples", "1",
              "--max-new-tokens", "4")
    assert r.exit_code == 0, r.stderr
    make_problems(7).write_parquet(problems)
    assert inspect_json(tmp_path / "r")["inputs"]["problems"]["now"] == "changed"
    below = inspect_json(tmp_path / "r")["lineage"]["problems"]  # the file as it is now, said
    assert below["rows"] == 7 and "described as it is now: it changed after r read it" in below["note"]
    # A sharded job: both shards, their rows together; one shard missing says so.
    for i in range(2):
        r = paced("rollout", "--problems", problems, "--model", student_dir, "--out", tmp_path / "sh", "--samples", "1",
                  "--max-new-tokens", "4", "--shard", f"{i}/2")
        assert r.exit_code == 0, r.stderr
    info = inspect_json(tmp_path / "sh")
    assert (info["kind"], info["shards"], info["rows"], info["finished"]) == ("sharded job", "2 of 2", 7, True)
    assert "--shard I/2" in info["command"]
    shutil.rmtree(next((tmp_path / "sh").glob("shard-00001-*")))
    info = inspect_json(tmp_path / "sh")
    assert info["finished"] is False and "1 shard(s) missing" in info["note"]
    # A part cut short, in a finished job and in an unfinished one: exit 2 naming it (a traceback before).
    for name, manifest in (("cut", True), ("cut-unfinished", False)):
        cut = tmp_path / name
        shutil.copytree(chain / "rollouts", cut)
        with open(cut / "part-00000.parquet", "r+b") as f:
            f.truncate(100)
        if not manifest:
            (cut / "_manifest.parquet").unlink()
        for head in ("1",) if manifest else ("1", "0"):  # (a finished job's rows are its manifest's: no part read)
            r = paced("inspect", cut, "--head", head)
            assert r.exit_code == 2 and "part-00000.parquet: not a readable Parquet file" in r.stderr, r.stderr


def test_files_paced_did_not_write_and_bad_paths(tmp_path):
    pl.DataFrame({"a": [1, 2]}).write_parquet(tmp_path / "mine.parquet")
    info = inspect_json(tmp_path / "mine.parquet")
    assert info["schema"] is None and info["note"] == "a Parquet file paced did not write" and info["rows"] == 2
    r = paced("inspect", tmp_path / "nothing")
    assert r.exit_code == 2 and "no such file or directory" in r.stderr
    for head in ("-1", str(10**30)):  # past int64 was an OverflowError traceback
        r = paced("inspect", tmp_path / "mine.parquet", "--head", head)
        assert r.exit_code == 2 and f"--head {head}: must be from 0 to 1,000,000" in r.stderr and "Traceback" not in r.stderr, r.stderr


def _with_record(f, change) -> None:
    """Rewrite a job's bookkeeping file `f` (a Parquet file holding its record in metadata) with `change(record)`."""
    t = pq.read_table(f)
    record = json.loads(t.schema.metadata[b"paced.record"])
    pq.write_table(t.replace_schema_metadata(t.schema.metadata | {b"paced.record": json.dumps(change(record)).encode()}), f)


def _with_meta(src, dst, **meta: bytes):
    t = pq.read_table(src)
    pq.write_table(t.replace_schema_metadata(t.schema.metadata | {k.replace("_", ".", 1).encode(): v for k, v in meta.items()}), dst)
    return dst


def test_damaged_records_named_pipes_and_half_made_shards_are_described_not_tracebacks(chain, tmp_path):
    """Found by a fuzzing audit: each was a traceback (or a hang, for the pipe)."""
    weights = chain / "weights.parquet"
    # Records edited by hand, or damaged: the field of the wrong type is left out and said.
    job = tmp_path / "job"
    shutil.copytree(chain / "rollouts", job)
    _with_record(job / "_manifest.parquet", lambda r: r | {"rows": "many", "parts": [1, 2]})
    _with_record(job / "_job.parquet", lambda r: r | {"options": ["x"], "schema": 3})
    info = inspect_json(job, "--no-lineage")
    assert "manifest field 'rows' is str, not int" in info["note"] and "job record field 'options' is list" in info["note"]
    assert "manifest parts that are not objects" in info["note"] and info["schema"] is None
    info = inspect_json(_with_meta(weights, tmp_path / "v.parquet", paced_schema_version=b"abc"))
    assert info["version"] is None and "schema version 'abc' is not a number" in info["note"]
    prov = json.loads(pq.read_schema(weights).metadata[b"paced.provenance"])
    info = inspect_json(_with_meta(weights, tmp_path / "p.parquet", paced_provenance=json.dumps(prov | {"inputs": ["x"], "command": ["a"]}).encode()))
    assert "provenance field 'inputs' is list, not dict" in info["note"] and "'command' is list" in info["note"]
    # A named pipe, as the path or as a recorded input: described, never opened (a read would block).
    os.mkfifo(tmp_path / "fifo.parquet")
    info = inspect_json(tmp_path / "fifo.parquet")
    assert info["note"].startswith("not a regular file") and info["head"] == []
    fifo_input = prov | {"inputs": {"scores": {"path": str(tmp_path / "fifo.parquet"), "schema": "scores", "fingerprint": "x"}}}
    info = inspect_json(_with_meta(weights, tmp_path / "q.parquet", paced_provenance=json.dumps(fifo_input).encode()))
    assert info["inputs"]["scores"]["now"] == "not a regular file" and "lineage" not in info
    # A shard folder made and left before its job record (killed as it began).
    (tmp_path / "sharded" / "shard-00000-of-00002").mkdir(parents=True)
    info = inspect_json(tmp_path / "sharded")
    assert info["kind"] == "sharded job" and info["note"] == "1 shard(s) missing, 1 unfinished" and info["command"] is None


def test_a_wide_artifact_shows_its_head_row_by_row_and_lists_inside_lists_cut(chain):
    """Teacher logits hold a list of top-k lists per row and a dozen columns: side by side each
    column was a few characters wide and every inner list printed whole (thousands of lines
    for a small artifact). Row by row, a column a line, with inner lists cut."""
    r = paced("inspect", chain / "tl", "--no-lineage", "--head", "2")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "first 2 rows" in r.stdout and "row 1" in r.stdout and "row 2" in r.stdout
    assert any(line.split()[:1] == ["topk_ids"] for line in lines) and "items" in r.stdout
    assert len(lines) < 120, len(lines)
    head = inspect_json(chain / "tl", "--no-lineage", "--head", "1")["head"][0]
    positions = head["topk_ids"]
    assert len(positions) <= 7 and all(len(p) <= 4 for p in positions if isinstance(p, list))
    assert positions[0][:3] == [int(x) for x in positions[0][:3]]  # the first ids as stored


def test_a_finished_job_whose_parts_changed_says_so(chain, tmp_path):
    """inspect said 'finished yes' of a job with a part deleted or rewritten since, which no
    stage reads: its note names them."""
    job = tmp_path / "rollouts"
    shutil.copytree(chain / "rollouts", job)
    parts = sorted(job.glob("part-*.parquet"))
    parts[0].unlink()
    pl.read_parquet(parts[1]).with_columns(completion=pl.lit("edited by hand")).write_parquet(parts[1])
    info = inspect_json(job, "--no-lineage")
    assert info["finished"] is True
    assert f"{parts[0].name} missing, {parts[1].name} resized" in info["note"] and "rerun its command" in info["note"]
