"""One polars call per artifact: a job directory holds only Parquet files of its one schema.

Its bookkeeping (`_job.parquet`, `_manifest.parquet`, `_lock.parquet`) are zero-row Parquet
files of the artifact's schema with their record in the key-value metadata, and an eval
--out keeps its summary beside its results, so `pl.read_parquet(dir)` and
`pl.scan_parquet(dir)` return exactly the artifact's rows, sharded ones included. Job
directories of earlier versions (`_job.json`, `_manifest.json`) are still read, and resumed.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
from pathlib import Path

import polars as pl
import pytest

import schemas
from schemas.outputs import JOB_FILE, LEGACY, LOCK_FILE, MANIFEST_FILE, load_record
from stages import eval as eval_stage
from tests.conftest import paced

KINDS = {
    "rollouts": schemas.ROLLOUTS,
    "scores": schemas.SCORES,
    "teacher_rollouts": schemas.ROLLOUTS,
    "tl": schemas.TEACHER_LOGITS,
    "eval/results": schemas.EVAL_RESULTS,
}


def rows_of_parts(d: Path) -> pl.DataFrame:
    """The artifact's rows, part by part (what paced itself reads)."""
    return pl.concat([pl.read_parquet(f) for f in sorted(d.rglob("part-*.parquet"))])


def assert_one_call_reads(d: Path, schema: schemas.ArtifactSchema) -> None:
    assert all(f.suffix == ".parquet" for f in d.rglob("*") if f.is_file()), sorted(d.rglob("*"))
    expected = rows_of_parts(d).sort(schema.key)
    for frame in (pl.read_parquet(d), pl.read_parquet(f"{d}/"), pl.scan_parquet(d).collect(), pl.scan_parquet(f"{d}/").collect()):
        assert frame.schema == expected.schema
        assert frame.sort(schema.key).equals(expected), d
    assert schemas.read(d, schema, option="--in").frame.height == expected.height


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_job_directory_reads_in_one_polars_call(chain, name):
    d = chain / name
    assert_one_call_reads(d, KINDS[name])
    manifest = load_record(d / MANIFEST_FILE)
    assert manifest["rows"] == pl.read_parquet(d).height > 0
    assert load_record(d / JOB_FILE)["schema"] == KINDS[name].name
    assert not (d / LOCK_FILE).exists()  # released when the job ended


def test_single_file_artifacts_and_the_eval_summary_beside_its_results(chain):
    assert sorted(p.name for p in (chain / "eval").iterdir()) == ["results", "summary.parquet"]
    summary = pl.read_parquet(chain / "eval" / "summary.parquet")
    assert summary["benchmark"].to_list() == ["problems"] and summary["problems"].to_list() == [6]
    assert pl.read_parquet(chain / "weights.parquet").height == 6
    assert pl.read_parquet(chain / "student" / "train_log.parquet")["step"].to_list() == [1, 2]
    info = json.loads(paced("inspect", chain / "eval", "--json", "--no-lineage").stdout)
    assert (info["schema"], info["rows"], info["finished"]) == ("eval_results", 12, True)
    assert info["summary"] == str(chain / "eval" / "summary.parquet") and info["results"] == str(chain / "eval" / "results")
    assert len(info["head"]) == 5 and {"problem_id", "correct"} <= set(info["head"][0])


def test_the_readme_polars_snippet_runs_on_real_artifacts(chain, monkeypatch):
    """README's 'Opening artifacts with polars' block, run as written on the chain's artifacts
    (its runs/ paths mapped to theirs)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Opening artifacts with polars"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    paths = {"runs/weights.parquet": "weights.parquet", "runs/rollouts": "rollouts", "runs/scores/": "scores/",
             "runs/teacher_logits": "tl", "runs/student-paced/": "student/"}
    for old, new in paths.items():
        assert f'"{old}' in code, old
        code = code.replace(f'"{old}', f'"{new}')
    tree = ast.parse(code)
    last = tree.body[-1]
    assert isinstance(last, ast.Expr), "the block ends with the join it shows"
    tree.body[-1] = ast.copy_location(ast.Assign([ast.copy_location(ast.Name("joined", ast.Store()), last)], last.value), last)
    monkeypatch.chdir(chain)
    scope: dict = {}
    exec(compile(tree, "README.md", "exec"), scope)  # noqa: S102 (our own documentation)
    joined = scope["joined"]
    assert isinstance(joined, pl.DataFrame) and joined.height == scope["weights"].height and "extracted" in joined.columns
    assert scope["teacher"].height and scope["log"].height and scope["rollouts"].height


def test_sharded_jobs_read_whole_in_one_call(chain, student_dir, tmp_path):
    problems = chain / "problems.parquet"
    for i in range(2):
        r = paced("rollout", "--problems", problems, "--model", student_dir, "--out", tmp_path / "sh", "--samples", "2",
                  "--max-new-tokens", "4", "--shard", f"{i}/2")
        assert r.exit_code == 0, r.stderr
        r = paced("eval", "--model", student_dir, "--problems", problems, "--out", tmp_path / "ev", "--samples", "1",
                  "--max-new-tokens", "4", "--verifier", "exact", "--workers", "1", "--shard", f"{i}/2")
        assert r.exit_code == 0, r.stderr
    assert_one_call_reads(tmp_path / "sh", schemas.ROLLOUTS)
    assert pl.read_parquet(tmp_path / "sh").height == 12
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["results", "summary.parquet"]
    assert_one_call_reads(tmp_path / "ev" / "results", schemas.EVAL_RESULTS)
    assert pl.read_parquet(tmp_path / "ev" / "results").height == 6
    assert pl.read_parquet(tmp_path / "ev" / "summary.parquet")["problems"].to_list() == [6]


def test_a_running_or_killed_job_reads_as_the_parts_it_has(chain, tmp_path):
    """The lock of a live writer (or one killed by SIGKILL) is a zero-row file of the schema too."""
    d = tmp_path / "running"
    shutil.copytree(chain / "rollouts", d)
    (d / MANIFEST_FILE).unlink()
    (d / "part-00001.parquet").unlink()
    job = schemas.Job(d, schemas.ROLLOUTS, load_record(d / JOB_FILE)["options"], {})
    job.check()
    job.start()
    try:
        assert load_record(d / LOCK_FILE)["pid"] > 0
        assert pl.read_parquet(d).equals(pl.read_parquet(d / "part-00000.parquet"))
    finally:
        job.release()
    assert not (d / LOCK_FILE).exists()


def to_legacy(d: Path) -> None:
    """Rewrite job directory `d`'s bookkeeping as an earlier paced wrote it (JSON files)."""
    for name in (JOB_FILE, MANIFEST_FILE):
        if (d / name).exists():
            (d / LEGACY[name]).write_text(json.dumps(load_record(d / name), indent=2))
            (d / name).unlink()


def test_earlier_job_directories_still_read_and_resume(chain, student_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(chain / "rollouts", old)
    to_legacy(old)
    assert schemas.read(old, schemas.ROLLOUTS, option="--rollouts").frame.equals(
        schemas.read(chain / "rollouts", schemas.ROLLOUTS, option="--rollouts").frame)
    assert schemas.fingerprint(old) == schemas.fingerprint(chain / "rollouts")  # jobs made from it resume
    info = json.loads(paced("inspect", old, "--json", "--no-lineage").stdout)
    assert (info["schema"], info["rows"], info["finished"]) == ("rollouts", 12, True)
    # Killed before its manifest: the rerun resumes it and rewrites its bookkeeping in Parquet.
    (old / LEGACY[MANIFEST_FILE]).unlink()
    (old / "part-00001.parquet").unlink()
    # ... by a process that is gone, holding an earlier paced's lock: taken over.
    (old / LEGACY[LOCK_FILE]).write_text(json.dumps({"pid": 999_999_999, "host": socket.gethostname(), "since": "then"}))
    command = load_record(chain / "rollouts" / JOB_FILE)["command"].split()[1:]
    command[command.index("--out") + 1] = str(old)
    r = paced(*command)
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in old.iterdir()) == [JOB_FILE, MANIFEST_FILE, "part-00000.parquet", "part-00001.parquet"]
    assert pl.read_parquet(old).sort("problem_id", "sample_index").equals(
        pl.read_parquet(chain / "rollouts").sort("problem_id", "sample_index"))


def test_an_earlier_eval_reads_as_baseline_and_is_refused_as_out(chain, student_dir, tmp_path):
    old = tmp_path / "old_eval"  # responses and summary in one directory
    shutil.copytree(chain / "eval" / "results", old)
    shutil.copy(chain / "eval" / "summary.parquet", old)
    to_legacy(old)
    assert eval_stage.read_baseline(old).frame.height == 12
    assert eval_stage.read_baseline(chain / "eval").frame.height == 12
    r = paced("eval", "--model", student_dir, "--problems", chain / "problems.parquet", "--out", old, "--samples", "2",
              "--max-new-tokens", "6", "--verifier", "exact")
    assert r.exit_code == 2 and "an earlier paced's layout" in r.stderr and "new --out" in r.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    r = paced("eval", "--model", student_dir, "--problems", chain / "problems.parquet", "--out", mine, "--samples", "2",
              "--max-new-tokens", "6", "--verifier", "exact")
    assert r.exit_code == 2 and "not a paced eval directory (it holds notes.txt)" in r.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_the_readme_chain_runs_as_written(tmp_path, student_dir):
    """README's chained example under 'The pipeline', run by bash as written, after its problems
    block (under 'problems: the input') and with the tiny model its comment names as student/."""
    import subprocess
    import sys

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## The pipeline"):]
    chain = section.split("```bash\n", 1)[1].split("```", 1)[0]
    problems = section[section.index("### problems: the input"):].split("```python\n", 1)[1].split("```", 1)[0]
    assert "--model student/" in chain and "examples/tiny_model.py --out student" in chain
    exec(compile(problems.replace('"problems.parquet"', repr(str(tmp_path / "problems.parquet"))), "README.md", "exec"), {})  # noqa: S102
    shutil.copytree(student_dir, tmp_path / "student")
    bin_dir = str(Path(sys.executable).parent)  # where pip put the `paced` command
    run = subprocess.run(["bash", "-c", chain + '\necho "$WEIGHTS"'], cwd=tmp_path, capture_output=True, text=True,
                         env=os.environ | {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "runs/weights.parquet"
    assert pl.read_parquet(tmp_path / "runs" / "weights.parquet").height == 2
