"""Artifact schemas: foreign files accepted, bad ones refused with a message that helps."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from schemas import InputError
from schemas.base import _duplicates, key_runs
from tests.conftest import ROOT, make_problems


def test_polars_written_problems_are_accepted(problems_file):
    art = schemas.read(problems_file, schemas.PROBLEMS, option="--problems")
    assert art.frame.height == 6
    assert art.frame.schema["problem_id"] == pl.String
    assert art.fingerprint.startswith("sha256:")
    assert art.provenance is None  # a user's file says nothing about how it was made


def test_int64_columns_cast_losslessly(tmp_path):
    path = tmp_path / "scores.parquet"
    pl.DataFrame({"problem_id": ["a", "a"], "sample_index": [0, 1], "correct": [True, False],
                  "extracted": [None, "3"], "reason": [None, None]}).write_parquet(path)
    art = schemas.read(path, schemas.SCORES, option="--scores")
    assert art.frame.schema["sample_index"] == pl.Int32
    assert art.frame.schema["reason"] == pl.String


def test_extra_columns_are_kept(tmp_path):
    path = tmp_path / "p.parquet"
    make_problems().with_columns(difficulty=pl.lit(3)).write_parquet(path)
    assert "difficulty" in schemas.read(path, schemas.PROBLEMS, option="--problems").frame.columns


def test_a_directory_of_parquet_files_is_one_input(tmp_path):
    d = tmp_path / "problems"
    d.mkdir()
    make_problems(6).head(3).write_parquet(d / "a.parquet")
    make_problems(6).tail(3).write_parquet(d / "b.parquet")
    assert schemas.read(d, schemas.PROBLEMS, option="--problems").frame.height == 6


def test_parts_of_different_types_are_read_one_by_one(tmp_path):
    # A user's parts whose schemas differ (int64 and int32, string and large_string): not one
    # polars call, but the same rows, cast as always.
    d = tmp_path / "scores"
    d.mkdir()
    pl.DataFrame({"problem_id": ["a", "a"], "sample_index": [0, 1], "correct": [True, False]}).write_parquet(d / "a.parquet")
    pq.write_table(pa.table({"problem_id": pa.array(["b"], pa.large_string()), "sample_index": pa.array([0], pa.int32()),
                             "correct": [True]}), d / "b.parquet")
    art = schemas.read(d, schemas.SCORES, option="--scores", columns=["correct"])
    assert art.frame.rows() == [("a", 0, True), ("a", 1, False), ("b", 0, True)]
    assert art.frame.schema["sample_index"] == pl.Int32


def test_a_job_with_many_parts_reads_the_first_header_and_checks_every_part(tmp_path, monkeypatch):
    from schemas import io

    frame = pl.DataFrame({"problem_id": [f"p{i // 4:03d}" for i in range(400)],
                          "sample_index": pl.Series([i % 4 for i in range(400)], dtype=pl.Int32),
                          "correct": [i % 3 == 0 for i in range(400)], "extracted": [None] * 400, "reason": [None] * 400})
    job = schemas.Job(tmp_path / "scores", schemas.SCORES, {"x": 1}, schemas.provenance("score", {}))
    job.check()
    job.start()
    for i in range(40):
        job.write(i, frame.slice(10 * i, 10).to_arrow().cast(schemas.SCORES.arrow))
    job.finish(40)
    headers = []
    real = io.parquet_schema
    monkeypatch.setattr(io, "parquet_schema", lambda f, option: headers.append(f.name) or real(f, option))
    art = schemas.read(tmp_path / "scores", schemas.SCORES, option="--scores")
    assert art.frame.equals(frame.cast({"extracted": pl.String, "reason": pl.String}))
    assert headers == ["part-00000.parquet"]  # the manifest's checksums vouch for the other 39
    assert art.key_runs is not None and art.provenance["stage"] == "score"
    # A part altered after the job finished is caught by its checksum, header read or not.
    part = tmp_path / "scores" / "part-00017.parquet"
    pq.write_table(pq.read_table(part).slice(0, 5), part)
    with pytest.raises(InputError, match="part-00017.parquet"):
        schemas.read(tmp_path / "scores", schemas.SCORES, option="--scores")


@pytest.mark.parametrize(
    "frame, needles",
    [
        (make_problems().drop("answer"), ["missing column", "'answer'", "docs/artifacts.md"]),
        (make_problems().with_columns(answer=pl.lit(1)), ["'answer'", "expected string", "cast"]),
        (make_problems().with_columns(problem_id=pl.lit("same")), ["problem_id must be unique", "'same'"]),
        (make_problems().with_columns(prompt=pl.when(pl.col("problem_id") == "p2").then(None).otherwise(pl.col("prompt"))),
         ["'prompt'", "1 null", "problem_id='p2'"]),
        (make_problems().head(0), ["no rows"]),
    ],
    ids=["missing-column", "wrong-type", "duplicate-ids", "nulls", "empty"],
)
def test_bad_problems_are_refused_with_the_fix(tmp_path, frame, needles):
    path = tmp_path / "problems.parquet"
    frame.write_parquet(path)
    with pytest.raises(InputError) as e:
        schemas.read(path, schemas.PROBLEMS, option="--problems")
    msg = str(e.value)
    assert str(path) in msg and "--problems" in msg
    for needle in needles:
        assert needle in msg


def test_another_schema_version_is_refused(tmp_path):
    path = tmp_path / "scores.parquet"
    table = pa.table({"problem_id": ["a"], "sample_index": pa.array([0], pa.int32()), "correct": [True],
                      "extracted": pa.array([None], pa.string()), "reason": pa.array([None], pa.string())})
    pq.write_table(table.replace_schema_metadata({b"paced.schema": b"scores", b"paced.schema_version": b"99"}), path)
    with pytest.raises(InputError, match="schema version 99.*reads version 1.*regenerate"):
        schemas.read(path, schemas.SCORES, option="--scores")


def test_another_artifact_kind_is_refused(tmp_path):
    path = tmp_path / "w.parquet"
    table = pa.table({"problem_id": ["a"]})
    pq.write_table(table.replace_schema_metadata({b"paced.schema": b"weights", b"paced.schema_version": b"1"}), path)
    with pytest.raises(InputError, match="paced 'weights' artifact, but --scores expects a 'scores'"):
        schemas.read(path, schemas.SCORES, option="--scores")


def test_not_parquet_and_missing_paths(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        schemas.read(junk, schemas.PROBLEMS, option="--problems")
    with pytest.raises(InputError, match="no such file"):
        schemas.read(tmp_path / "nope.parquet", schemas.PROBLEMS, option="--problems")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no .parquet files"):
        schemas.read(empty, schemas.PROBLEMS, option="--problems")


def test_written_files_carry_schema_and_provenance(tmp_path):
    table = schemas.table_from_columns(
        {"problem_id": ["a"], "num_samples": [8], "num_correct": [4], "pass_rate": [0.5], "weight": [1.0]},
        schemas.WEIGHTS,
    )
    out = schemas.write_file(tmp_path / "w.parquet", table, schemas.WEIGHTS, schemas.provenance("weight", {"alpha": 1.0}))
    meta = pq.read_schema(out).metadata
    assert meta[b"paced.schema"] == b"weights" and meta[b"paced.schema_version"] == b"1"
    prov = json.loads(meta[b"paced.provenance"])
    assert prov["options"] == {"alpha": 1.0} and prov["paced_version"] and prov["command"].startswith("paced")
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


def test_writers_refuse_tables_that_do_not_match_the_schema(tmp_path):
    bad = pa.table({"problem_id": ["a"]})
    with pytest.raises(TypeError, match="does not match its schema"):
        schemas.write_file(tmp_path / "w.parquet", bad, schemas.WEIGHTS, {})


def test_column_reference_is_up_to_date():
    assert (ROOT / "docs" / "artifacts.md").read_text() == schemas.render_docs()


# ------------------------------------------------------------------ the unique-key fast path


KEY = ("problem_id", "sample_index")


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 3)), min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 12), max_size=4),
)
def test_key_runs_only_vouch_for_unique_keys(rows, cuts):
    # Whatever the order, and however the rows are split into chunks (as parts and row groups
    # are read): when key_runs answers, the key is unique and its rows are where each problem's
    # (contiguous) rows start; the duplicate check agrees with the exact one on both paths.
    whole = pl.DataFrame(rows, schema={"problem_id": pl.String, "sample_index": pl.Int32}, orient="row")
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    pieces = [whole.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]
    frame = pieces[0]
    for piece in pieces[1:]:
        frame = frame.vstack(piece)  # keeps the chunks
    exact = bool(frame.select(pl.struct(list(KEY)).is_duplicated().any()).item())
    runs = key_runs(frame, KEY)
    if runs is not None:
        assert not exact
        ids = frame["problem_id"].to_list()
        starts = [i for i in range(len(ids)) if i == 0 or ids[i] != ids[i - 1]]
        assert runs["start"].to_list() == starts and len(set(ids[i] for i in starts)) == len(starts)
        assert runs["problem_id"].to_list() == [ids[i] for i in starts]
    assert _duplicates(frame, list(KEY), runs) == exact
    assert _duplicates(frame, list(KEY)) == exact


def test_key_runs_need_a_two_column_integer_key():
    frame = pl.DataFrame({"problem_id": ["a", "b"], "sample_index": [0, 0], "x": ["u", "v"]})
    assert key_runs(frame, ("problem_id",)) is None
    assert key_runs(frame, ("problem_id", "x")) is None
    assert key_runs(frame.head(0), KEY) is None
    assert key_runs(frame, KEY)["start"].to_list() == [0, 1]


def test_read_reports_runs_for_grouped_scores_only(tmp_path):
    grouped = pl.DataFrame({"problem_id": ["b", "b", "a", "a", "a"], "sample_index": [0, 1, 0, 1, 2],
                            "correct": [True, False, True, True, False]})
    grouped.write_parquet(tmp_path / "grouped.parquet")
    art = schemas.read(tmp_path / "grouped.parquet", schemas.SCORES, option="--scores", columns=["correct"])
    assert art.key_runs.rows() == [(0, "b"), (2, "a")]
    # Split over two parts with a problem in both: valid, but not contiguous.
    d = tmp_path / "parts"
    d.mkdir()
    grouped.write_parquet(d / "a.parquet")
    pl.DataFrame({"problem_id": ["b", "b"], "sample_index": [2, 3], "correct": [False, False]}).write_parquet(d / "b.parquet")
    art = schemas.read(d, schemas.SCORES, option="--scores", columns=["correct"])
    assert art.frame.height == 7 and art.key_runs is None
    # Nulls in the key: reported as nulls, never vouched for.
    bad = grouped.with_columns(sample_index=pl.Series([0, None, 0, 1, 2], dtype=pl.Int32))
    bad.write_parquet(tmp_path / "nulls.parquet")
    with pytest.raises(InputError, match="null"):
        schemas.read(tmp_path / "nulls.parquet", schemas.SCORES, option="--scores", columns=["correct"])


def test_key_runs_across_chunk_boundaries(tmp_path):
    # Read back with many small row groups, so runs of K = 7 straddle chunk boundaries; then
    # break the order in the last row of one chunk only.
    n, k = 300, 7
    frame = pl.DataFrame({"problem_id": [f"p{i // k:04d}" for i in range(n * k)],
                          "sample_index": pl.Series([i % k for i in range(n * k)], dtype=pl.Int32)})
    frame.write_parquet(tmp_path / "s.parquet", row_group_size=64)
    read = pl.read_parquet(tmp_path / "s.parquet")
    assert read["problem_id"].n_chunks() > 1
    runs = key_runs(read, KEY)
    assert runs["start"].to_list() == list(range(0, n * k, k)) == key_runs(read.rechunk(), KEY)["start"].to_list()
    broken = pl.read_parquet(tmp_path / "s.parquet").with_columns(
        sample_index=pl.when(pl.int_range(pl.len()) == 127).then(0).otherwise(pl.col("sample_index")).cast(pl.Int32)
    )
    assert key_runs(broken, KEY) is None  # row 127 (last of chunk 2): sample 1 became 0, a repeat
    assert _duplicates(broken, list(KEY))


def test_a_path_with_brackets_is_a_name_not_a_pattern(tmp_path):
    """`g[1].parquet` is that file, not `g1.parquet` (polars reads a path as a glob by default);
    a job under `exp[ab]/` is that job, not the one in `expa/`."""
    small, big = make_problems(3), make_problems(7)
    small.write_parquet(tmp_path / "g[1].parquet")
    big.write_parquet(tmp_path / "g1.parquet")
    assert schemas.read(tmp_path / "g[1].parquet", schemas.PROBLEMS, option="--problems").frame.height == 3
    frame = pl.DataFrame({"problem_id": ["a", "b"], "sample_index": pl.Series([0, 0], dtype=pl.Int32),
                          "correct": [True, False], "extracted": [None] * 2, "reason": [None] * 2})
    for name, rows in (("exp[ab]", frame.head(1)), ("expa", frame)):
        (tmp_path / name).mkdir()
        job = schemas.Job(tmp_path / name / "scores", schemas.SCORES, {"x": name}, schemas.provenance("score", {}))
        job.check()
        job.start()
        job.write(0, rows.to_arrow().cast(schemas.SCORES.arrow))
        job.finish(1)
    assert schemas.read(tmp_path / "exp[ab]" / "scores", schemas.SCORES, option="--scores").frame.height == 1


def test_an_unfinished_job_of_another_schema_version_is_not_resumed_into_a_mixed_artifact(tmp_path):
    """A job a paced of another version began (parts of schema version N) and this paced
    (version N + 1) would write parts that do not share one schema: the rerun is refused with
    the fix; --overwrite writes it again aside and swaps it in; a finished one is read as it is."""
    import dataclasses

    frame = pl.DataFrame({"problem_id": ["a", "a", "b"], "sample_index": pl.Series([0, 1, 0], dtype=pl.Int32),
                          "correct": [True, False, True], "extracted": [None] * 3, "reason": [None] * 3})
    part = frame.to_arrow().cast(schemas.SCORES.arrow)
    earlier = dataclasses.replace(schemas.SCORES, version=schemas.SCORES.version + 1)
    d = tmp_path / "scores"
    prov = schemas.provenance("score", {})
    first = schemas.Job(d, earlier, {"x": 1}, prov)
    first.check()
    first.start()
    first.write(0, part)
    first.release()  # as if killed before its second part
    with pytest.raises(InputError, match="another version.*--overwrite"):
        schemas.Job(d, schemas.SCORES, {"x": 1}, prov).check()
    assert (d / "part-00000.parquet").is_file()  # refused: nothing touched
    again = schemas.Job(d, schemas.SCORES, {"x": 1}, prov, overwrite=True)
    again.check()
    assert again.dir == again.replacement
    again.start()
    again.write(0, part)
    again.write(1, frame.with_columns(problem_id=pl.col("problem_id") + "2").to_arrow().cast(schemas.SCORES.arrow))
    again.finish(2)
    assert schemas.read(d, schemas.SCORES, option="--scores").frame.height == 6
    assert not again.replacement.exists()
    # A finished job of another version is the artifact as it is: the same command finds it complete.
    done = schemas.Job(d, schemas.SCORES, {"x": 1}, prov)
    done.check()
    assert done.dir == d and done.complete


def test_starting_a_job_removes_a_dead_writers_temporary_files_but_not_a_live_ones(tmp_path):
    # Two identical commands at once: the one that takes the lock must not remove, as stale,
    # the lock file the other has written and is about to link (it then failed with a traceback).
    import subprocess
    import sys

    d = tmp_path / "scores"
    first = schemas.Job(d, schemas.SCORES, {"x": 1}, schemas.provenance("score", {}))
    first.check()
    first.start()
    first.release()  # as if killed: the job is resumed below
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        in_flight = d / f"._lock.parquet.tmp-{live.pid}"
        stale = d / f".part-00000.parquet.tmp-{dead.pid}"
        in_flight.write_bytes(b"x")
        stale.write_bytes(b"x")
        job = schemas.Job(d, schemas.SCORES, {"x": 1}, schemas.provenance("score", {}))
        job.check()
        job.start()
        assert in_flight.exists() and not stale.exists()
    finally:
        live.kill()
        live.wait()


def test_an_artifact_of_an_earlier_schema_version_reads_in_full_as_that_version(tmp_path):
    """The next version of a schema adds a column and keeps this one in `older`: a job this
    paced wrote still reads, in full (its rows checked against its own version, not the new
    columns it never had) and by columns; asking it for a column it lacks names the versions."""
    import dataclasses

    frame = pl.DataFrame({"problem_id": ["a", "a", "b"], "sample_index": pl.Series([0, 1, 0], dtype=pl.Int32),
                          "correct": [True, False, True], "extracted": [None, "3", "4"], "reason": [None] * 3})
    d = tmp_path / "scores"
    job = schemas.Job(d, schemas.SCORES, {"x": 1}, schemas.provenance("score", {}))
    job.check()
    job.start()
    job.write(0, frame.to_arrow().cast(schemas.SCORES.arrow))
    job.finish(1)
    newer = dataclasses.replace(
        schemas.SCORES, version=schemas.SCORES.version + 1, older=(schemas.SCORES,),
        columns=(*schemas.SCORES.columns, schemas.base.Column("seconds", pa.float32(), "Time to check.")))
    art = schemas.read(d, newer, option="--scores")
    assert art.frame.columns == [c.name for c in schemas.SCORES.columns] and art.frame.height == 3
    assert schemas.read(d, newer, option="--scores", columns=["correct"]).frame.columns == ["problem_id", "sample_index", "correct"]
    with pytest.raises(InputError, match=r"--scores .*scores: a scores artifact of schema version 1, without 'seconds' \(added since: this paced writes version 2\)"):
        schemas.read(d, newer, option="--scores", columns=["correct", "seconds"])
    # A user's file without the version's metadata reads the same way, by the columns it has.
    user = tmp_path / "user.parquet"
    frame.drop("reason").write_parquet(user)
    assert schemas.read(user, newer, option="--scores", columns=["correct"]).frame.height == 3
    with pytest.raises(InputError, match="without 'seconds'"):
        schemas.read(user, newer, option="--scores", columns=["seconds"])
