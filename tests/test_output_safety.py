"""Never lose a user's data: outputs never touch inputs, --overwrite removes only what paced
wrote (never through a link), a failed or killed replacement leaves the old artifact, and the
same inputs named another way resume a job."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from schemas import jobs
from tests.conftest import ROOT, job_record, kill_when, lock_table, make_problems, paced, write_lock

FAST = ["--samples", "2", "--max-new-tokens", "4"]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and link under `root` (links by target, never followed): what must not change."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "link:" + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, student_dir, teacher_dir):
    d = tmp_path_factory.mktemp("safety")
    make_problems(4).write_parquet(d / "problems.parquet")
    steps = [
        ("rollouts", ["rollout", "--problems", d / "problems.parquet", "--model", student_dir, *FAST]),
        ("scores", ["score", "--rollouts", d / "rollouts", "--problems", d / "problems.parquet", "--verifier", "exact"]),
        ("weights.parquet", ["weight", "--scores", d / "scores", "--scheme", "uniform"]),
        ("tl", ["teacher-logits", "--problems", d / "problems.parquet", "--sequences", d / "rollouts", "--teacher", teacher_dir, "--top-k", "4"]),
        ("d1", ["distill", "--student", student_dir, "--teacher-logits", d / "tl", "--weights", d / "weights.parquet",
                "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3"]),
        ("eval", ["eval", "--model", student_dir, "--problems", d / "problems.parquet", "--samples", "1", "--max-new-tokens", "4",
                  "--verifier", "exact"]),
    ]
    for name, args in steps:
        r = paced(*args, "--out", d / name)
        assert r.exit_code == 0, (name, r.stderr)
    return d


def refused(args, root: Path, *needles: str) -> str:
    before = snapshot(root)
    r = paced(*args)
    assert r.exit_code == 2, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)
    assert snapshot(root) == before
    return r.stderr


# ---------------------------------------------------------------------------------------
# The three data-loss cases of the issue


def test_distill_init_that_is_the_out_is_refused_with_or_without_overwrite(world, student_dir):
    base = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--init", world / "d1", "--out", world / "d1", "--max-steps", "3"]
    for extra in (["--overwrite"], []):
        err = refused([*base, *extra], world, "--out", "is also --init", "new path")
        assert "pass --overwrite" not in err
    assert (world / "d1" / "model.safetensors").exists()


def test_an_output_inside_an_input_or_another_job_is_refused(world, teacher_dir, student_dir):
    tl = ["teacher-logits", "--problems", world / "problems.parquet", "--sequences", world / "rollouts", "--teacher", teacher_dir]
    refused([*tl, "--out", world / "rollouts" / "teacher_logits"], world, "lies inside --sequences")
    refused(["weight", "--scores", world / "scores", "--out", world / "rollouts" / "w.parquet"], world,
            "lies inside the paced job directory")
    refused(["weight", "--scores", world / "scores", "--out", world / "scores"], world, "is also --scores")
    refused(["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", world], world,
            "holds --problems")


def test_eval_baseline_that_is_the_out_is_refused(world, student_dir):
    args = ["eval", "--model", student_dir, "--problems", world / "problems.parquet", "--samples", "1", "--max-new-tokens", "4",
            "--verifier", "exact", "--out", world / "eval", "--baseline", world / "eval"]
    refused(args, world, "is also --baseline")
    refused([*args, "--overwrite", "--seed", "3"], world, "is also --baseline")


def test_overwrite_refuses_an_out_holding_files_paced_did_not_write(world, tmp_path, student_dir):
    out = tmp_path / "r"
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0
    (out / "notes.txt").write_text("mine")
    (out / "teacher_logits").mkdir()
    (out / "teacher_logits" / "part-00000.parquet").write_text("another command's artifact")
    err = refused([*base, "--seed", "7", "--overwrite"], tmp_path, "holds files paced did not write", "notes.txt", "teacher_logits")
    assert "--overwrite replaces only" in err


def test_a_users_hidden_tmp_named_entry_is_not_taken_for_a_paced_temporary(world, tmp_path, student_dir):
    """`.NAME.tmp-PID` is paced's only where NAME is something the job writes: a user's
    `.mydata.tmp-2024` folder or `.notes.tmp-1` file makes --overwrite refuse, and a rerun that
    resumes the job (its stale-temporary sweep) keeps them."""
    from schemas import outputs

    assert outputs.paced_temp(".part-00003.parquet.tmp-812")
    assert outputs.paced_temp("._job.parquet.tmp-9") and outputs.paced_temp(".step-4.tmp-77")
    assert outputs.paced_temp(".train_data.arrow.tmp-5", {".train_data.arrow"}) and outputs.paced_temp(".final.tmp-3")
    assert not outputs.paced_temp(".mydata.tmp-2024") and not outputs.paced_temp(".notes.tmp-1")
    assert not outputs.paced_temp(".train_data.arrow.tmp-5")  # not a name this job writes
    out = tmp_path / "r"
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0
    (out / ".mydata.tmp-999999").mkdir()  # a pid no process has: stale to the sweep
    (out / ".mydata.tmp-999999" / "a.txt").write_text("mine")
    (out / ".notes.tmp-999998").write_text("mine too")
    refused([*base, "--seed", "7", "--overwrite"], tmp_path, ".mydata.tmp-999999", ".notes.tmp-999998")
    for name in ("_manifest.parquet", "part-00000.parquet"):  # as a killed run leaves it: the same command resumes it
        (out / name).unlink()
    assert paced(*base).exit_code == 0 and (out / "part-00000.parquet").is_file()
    assert (out / ".mydata.tmp-999999" / "a.txt").read_text() == "mine" and (out / ".notes.tmp-999998").exists()


def test_every_writers_temporary_name_is_one_the_sweep_knows(tmp_path):
    """The temporaries paced's writers make (`outputs.temp_path`: a part, the lock, a plot, a
    checkpoint, distill's staged model, a launcher's checkpoint, a hidden cache) are the names
    `paced_temp` takes for paced's and `temp_writer` reads the writer's PID back from."""
    from schemas import outputs

    pid = os.getpid()
    names = {
        outputs.temp_path(tmp_path / "part-00003.parquet"): (f".part-00003.parquet.tmp-{pid}", pid),
        outputs.temp_path(tmp_path / outputs.LOCK_FILE): (f".{outputs.LOCK_FILE}.tmp-{pid}", pid),
        outputs.temp_path(tmp_path / "step-4"): (f".step-4.tmp-{pid}", pid),
        outputs.temp_path(tmp_path / "final"): (f".final.tmp-{pid}", pid),
        outputs.temp_path(tmp_path / "step-4", writer="launch"): (".step-4.tmp-launch", None),
        outputs.temp_path(tmp_path / "w.png", suffix=".png"): (f".w.png.tmp-{pid}.png", pid),
        outputs.temp_path(tmp_path / ".train_data.arrow"): (f".train_data.arrow.tmp-{pid}", pid),
    }
    for path, (name, writer) in names.items():
        assert path.name == name and path.parent == tmp_path
        assert outputs.temp_writer(name) == writer
    mine = {"w.png"}
    assert all(outputs.paced_temp(path.name, mine) for path in names if not path.name.startswith(".train_data"))
    assert outputs.paced_temp(f".train_data.arrow.tmp-{pid}", {".train_data.arrow"})
    assert outputs.temp_writer(".notes.txt") is None and outputs.temp_writer(".a.tmp-12x") is None


def test_overwrite_replaces_a_paced_job_and_keeps_nothing_of_the_old(world, tmp_path, student_dir):
    out = tmp_path / "r"
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0
    r = paced(*base, "--seed", "7", "--overwrite")
    assert r.exit_code == 0, r.stderr
    fresh = tmp_path / "fresh"
    assert paced("rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", fresh, *FAST,
                 "--seed", "7").exit_code == 0
    assert pl.read_parquet(out / "part-*.parquet").equals(pl.read_parquet(fresh / "part-*.parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "r"]  # no replacement or leftovers beside it


def test_a_killed_overwrite_leaves_the_old_artifact_and_the_same_command_finishes_it(world, tmp_path, student_dir):
    out = tmp_path / "r"
    problems = tmp_path / "problems.parquet"
    make_problems(6).write_parquet(problems)
    base = ["rollout", "--problems", problems, "--model", student_dir, "--out", out, *FAST, "--part-size", "1"]
    assert paced(*base).exit_code == 0
    old = pl.read_parquet(out / "part-*.parquet")
    before = snapshot(out)
    new = [*base, "--seed", "9", "--overwrite"]
    kill_when(tmp_path / ".r.replacing" / "part-00001.parquet", *new)
    assert snapshot(out) == before  # the old artifact, whole and readable, until the new one is complete
    assert schemas.read(out, schemas.ROLLOUTS, option="--rollouts").frame.equals(old)
    r = paced(*new)
    assert r.exit_code == 0, r.stderr
    fresh = tmp_path / "fresh"
    assert paced("rollout", "--problems", problems, "--model", student_dir, "--out", fresh, *FAST, "--part-size", "1",
                 "--seed", "9").exit_code == 0
    assert pl.read_parquet(out / "part-*.parquet").equals(pl.read_parquet(fresh / "part-*.parquet"))
    assert not (tmp_path / ".r.replacing").exists()


def test_overwrite_never_follows_a_symbolic_link(world, tmp_path, student_dir):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.parquet").write_text("keep me")
    out = tmp_path / "r"
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, *FAST]
    assert paced(*base, "--out", out).exit_code == 0
    # A link where a part would be, pointing at the user's data: not paced's part (its manifest
    # lists no such part, nor a link): --overwrite is refused, the link and its target kept.
    (out / "part-00007.parquet").symlink_to(precious / "data.parquet")
    refused([*base, "--out", out, "--seed", "7", "--overwrite"], tmp_path, "part-00007.parquet")
    assert (precious / "data.parquet").read_text() == "keep me"
    (out / "part-00007.parquet").unlink()
    # --out itself a link to a job: --overwrite refuses rather than replace through it.
    link = tmp_path / "link"
    link.symlink_to(out)
    refused([*base, "--out", link, "--seed", "8", "--overwrite"], tmp_path, "symbolic link")


def test_distill_overwrite_replaces_its_own_model_and_refuses_a_users_file(world, tmp_path, student_dir):
    out = tmp_path / "d"
    base = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--out", out, "--max-steps", "2", "--batch-size", "2"]
    assert paced(*base, "--lr", "1e-3").exit_code == 0
    job = job_record(out)
    assert "model.safetensors" in job["files"] and "config.json" in job["files"]
    first = (out / "model.safetensors").read_bytes()
    r = paced(*base, "--lr", "2e-3", "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert (out / "model.safetensors").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    (out / "README.md").write_text("my notes on this model")
    refused([*base, "--lr", "3e-3", "--overwrite"], tmp_path, "README.md", "paced did not write")


def test_distill_overwrite_keeps_a_users_files_inside_its_own_folders(world, tmp_path, student_dir):
    """checkpoints/, tensorboard/ and an exported step-N are distill's, but a user's file inside
    one is not: --overwrite (other options, or the same unfinished run) is refused, names it, and
    deletes nothing; moved out, the same command replaces the run."""
    out = tmp_path / "d"
    base = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--out", out, "--max-steps", "2", "--batch-size", "2", "--schedule", "constant", "--export-steps", "1"]
    assert paced(*base, "--lr", "1e-3").exit_code == 0
    assert (out / "step-1" / "model.safetensors").is_file()
    for rel in ("tensorboard/other_run/events.txt", "checkpoints/notes.txt", "step-1/my_eval_notes.txt"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("precious")
        err = refused([*base, "--lr", "2e-3", "--overwrite"], tmp_path, rel.rsplit("/", 1)[0], "paced did not write")
        assert rel.split("/")[0] in err
        (out / rel).unlink()
        if rel.startswith("tensorboard"):
            (out / rel).parent.rmdir()
    assert paced(*base, "--lr", "2e-3", "--overwrite").exit_code == 0


def test_a_plot_or_out_of_another_kind_is_never_replaced(world, tmp_path):
    w = tmp_path / "w.parquet"
    assert paced("weight", "--scores", world / "scores", "--out", w).exit_code == 0
    # A weights file is not a plot, and a plot is not a weights file: even --overwrite refuses.
    refused(["weight", "--scores", world / "scores", "--out", tmp_path / "w2.parquet", "--plot", w, "--overwrite"], tmp_path,
            "--plot", "give a .png")
    png = tmp_path / "w.png"
    assert paced("weight", "--scores", world / "scores", "--out", tmp_path / "w2.parquet", "--plot", png).exit_code == 0
    refused(["weight", "--scores", world / "scores", "--out", png, "--overwrite"], tmp_path, "is a paced 'weights-plot' file")


# ---------------------------------------------------------------------------------------
# Resume by content, and two commands started at once


def test_the_same_inputs_named_another_way_resume_the_job(world, tmp_path, student_dir):
    out = tmp_path / "r"
    assert paced("rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST).exit_code == 0
    rel_problems = os.path.relpath(world / "problems.parquet", tmp_path)
    rel_model = os.path.relpath(student_dir, tmp_path)
    r = subprocess.run([sys.executable, "-m", "paced_cli", "rollout", "--problems", rel_problems, "--model", rel_model,
                        "--out", "r", *FAST], cwd=tmp_path, capture_output=True, text=True,
                       env=os.environ | {"PACED_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "already complete" in r.stderr


def test_two_identical_commands_at_once_one_writes_the_other_exits_2(world, tmp_path, student_dir):
    problems = tmp_path / "problems.parquet"
    make_problems(12).write_parquet(problems)
    args = [sys.executable, "-m", "paced_cli", "rollout", "--problems", str(problems), "--model", str(student_dir),
            "--out", str(tmp_path / "r"), "--samples", "2", "--max-new-tokens", "8", "--part-size", "1"]
    env = os.environ | {"PACED_NO_PROGRESS": "1"}
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    for code, _, err in results:
        assert "Traceback" not in err, err
        assert code in (0, 2), err
        if code == 2:
            assert "another paced process" in err, err
    assert codes[0] == 0
    assert schemas.read(tmp_path / "r", schemas.ROLLOUTS, option="--rollouts").frame.height == 24


def test_a_symbolic_link_loop_as_input_or_output_exits_2(world, tmp_path, student_dir):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for args in (["--problems", loop, "--out", tmp_path / "r"], ["--problems", world / "problems.parquet", "--out", loop]):
        r = paced("rollout", "--model", student_dir, *args, *FAST)
        assert r.exit_code == 2 and "loops back to itself" in r.stderr and "Traceback" not in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------
# A file edited after paced wrote it, a refused run, a swap cut in two, paced's outputs nested


def test_a_file_edited_after_paced_wrote_it_is_the_users(world, tmp_path):
    """Ownership is judged by content, not by metadata alone: weights edited with pyarrow (paced's
    metadata kept) are not replaced by the same command, nor by --overwrite."""

    w = tmp_path / "w.parquet"
    base = ["weight", "--scores", world / "scores", "--out", w]
    assert paced(*base).exit_code == 0
    assert paced(*base).exit_code == 0  # the same command rewrites its own file
    t = pq.read_table(w)
    i = t.schema.get_field_index("weight")
    pq.write_table(t.set_column(i, t.field(i), pa.array([0.5] * t.num_rows, t.field(i).type)), w)
    assert b"paced.key" in pq.read_schema(w).metadata  # still carries paced's record
    for extra in ([], ["--overwrite"], ["--alpha", "2", "--overwrite"]):
        refused([*base, *extra], tmp_path, "changed after paced wrote it")
    assert pq.read_table(w).column("weight").to_pylist() == [0.5] * t.num_rows
    # A plot drawn on (its text chunks kept), and a part of a finished job rewritten.
    from PIL import Image, ImageDraw, PngImagePlugin

    png = tmp_path / "w.png"
    plot = ["weight", "--scores", world / "scores", "--out", tmp_path / "w2.parquet", "--plot", png]
    assert paced(*plot).exit_code == 0 and paced(*plot).exit_code == 0
    with Image.open(png) as im:
        info = PngImagePlugin.PngInfo()
        for k, v in im.text.items():
            info.add_text(k, v)
        im = im.convert("RGBA")
        ImageDraw.Draw(im).rectangle((0, 0, 20, 20), fill=(255, 0, 0, 255))
        im.save(png, pnginfo=info)
    refused([*plot, "--overwrite"], tmp_path, "--plot", "changed after paced wrote it")


def test_a_file_with_the_first_content_digest_is_still_paced_s(world, tmp_path):
    """Files written before the columnar digest (2026-12-06) record the first, JSON one: such a
    file is still paced's (the same command leaves it, --overwrite replaces it), and an edit of
    it is still the user's. The digests agree on every layout a file is read back in."""

    from schemas.outputs import _json_digest, same_digest, table_digest

    w = tmp_path / "w.parquet"
    base = ["weight", "--scores", world / "scores", "--out", w]
    assert paced(*base).exit_code == 0
    t = pq.read_table(w)
    recorded = t.schema.metadata[b"paced.content"].decode()
    assert recorded.startswith("2:") and same_digest(recorded, t)
    assert table_digest(pl.from_arrow(t).to_arrow()) == recorded  # large strings, one chunk
    assert table_digest(pa.concat_tables([t.slice(0, 2), t.slice(2)])) == recorded  # two chunks
    old = t.replace_schema_metadata({**t.schema.metadata, b"paced.content": _json_digest(t).encode()})
    pq.write_table(old, w)
    assert paced(*base).exit_code == 0  # the same command: its own file, left as it is
    assert pq.read_schema(w).metadata[b"paced.content"].decode() == _json_digest(t)
    assert paced(*base, "--alpha", "2", "--overwrite").exit_code == 0  # replaced as paced's own
    i = t.schema.get_field_index("weight")
    edited = old.set_column(i, t.field(i), pa.array([0.5] * t.num_rows, t.field(i).type))
    pq.write_table(edited.replace_schema_metadata(old.schema.metadata), w)
    refused([*base, "--overwrite"], tmp_path, "changed after paced wrote it")


def test_a_part_edited_after_its_job_finished_is_the_users(world, tmp_path, student_dir):

    out = tmp_path / "r"
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0
    t = pq.read_table(out / "part-00000.parquet")
    pq.write_table(t.slice(0, 1), out / "part-00000.parquet")  # the user kept one row
    refused([*base, "--seed", "7", "--overwrite"], tmp_path, "part-00000.parquet", "paced did not write")


def test_a_refused_run_leaves_nothing_that_blocks_the_corrected_rerun(world, tmp_path, student_dir):
    """A run refused after its job began (bad input found mid-job), into a folder the user made
    empty or into a new one, leaves that folder as it was: the corrected command then runs."""
    zero = tmp_path / "zero.parquet"
    pl.read_parquet(world / "weights.parquet").with_columns(weight=pl.lit(0.0)).write_parquet(zero)
    empty = tmp_path / "d"
    empty.mkdir()
    base = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--out", empty, "--max-steps", "1",
            "--batch-size", "2"]
    r = paced(*base, "--weights", zero)
    assert r.exit_code == 2 and "Traceback" not in r.stderr, r.stderr
    assert empty.is_dir() and list(empty.iterdir()) == []
    assert paced(*base, "--weights", world / "weights.parquet").exit_code == 0
    s = tmp_path / "s"
    s.mkdir()
    score = ["score", "--rollouts", world / "rollouts", "--problems", world / "problems.parquet", "--out", s]
    r = paced(*score, "--verifier", "no_such_module:check")
    assert r.exit_code == 2 and "Traceback" not in r.stderr, r.stderr
    assert s.is_dir() and list(s.iterdir()) == []
    assert paced(*score, "--verifier", "exact").exit_code == 0
    for out in (tmp_path / "r-new", tmp_path / "r-empty"):
        if out.name == "r-empty":
            out.mkdir()
        roll = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST,
                "--samples", "4", "--min-samples", "2"]
        r = paced(*roll, "--verifier", "no_such_module:check")
        assert r.exit_code == 2 and "Traceback" not in r.stderr, r.stderr
        assert not out.exists() if out.name == "r-new" else list(out.iterdir()) == []
        assert paced(*roll, "--verifier", "exact").exit_code == 0


def test_a_swap_cut_between_its_two_renames_is_finished_by_the_same_command(world, tmp_path, student_dir):
    """Killed between `out -> .out.replaced-PID` and `.out.replacing -> out`: the same command puts
    the finished replacement in place (no work redone), removes the old job's own files, and
    leaves no hidden folder behind."""
    out = tmp_path / "r"
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0
    new = tmp_path / "new"
    assert paced(*base[:-len(FAST) - 2], "--out", new, *FAST, "--seed", "7").exit_code == 0
    want = snapshot(new)
    os.replace(out, tmp_path / ".r.replaced-999999")
    os.replace(new, tmp_path / ".r.replacing")
    r = paced(*base, "--seed", "7", "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert "already complete" in r.stderr
    assert snapshot(out) == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_paced_never_writes_into_another_paced_output_or_a_users_folder(world, tmp_path, student_dir):
    """A sharded root of another kind, a folder of the user's, and eval's folder (which has no job
    file of its own at its top) are not places for a shard or a file."""
    root = tmp_path / "roots"
    roll = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, *FAST]
    for i in range(2):
        assert paced(*roll, "--out", root, "--shard", f"{i}/2").exit_code == 0
    refused(["score", "--rollouts", root, "--problems", world / "problems.parquet", "--verifier", "exact",
             "--out", root, "--shard", "0/3"], tmp_path, "--out", "rollouts")
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    refused([*roll, "--out", user, "--shard", "0/2"], tmp_path, "--out", "notes.txt")
    refused(["weight", "--scores", world / "scores", "--out", world / "eval" / "w.parquet"], world, "--out", "eval")


def test_out_paths_named_through_a_link_or_dot_dot_are_handled(world, tmp_path, student_dir):
    ev = tmp_path / "ev"
    base = ["eval", "--model", student_dir, "--problems", world / "problems.parquet", "--samples", "1",
            "--max-new-tokens", "4", "--verifier", "exact"]
    assert paced(*base, "--out", ev).exit_code == 0
    link = tmp_path / "link"
    link.symlink_to(ev)
    refused([*base, "--out", link, "--seed", "3", "--overwrite"], tmp_path, "symbolic link")
    d = tmp_path / "d3"
    dist = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--max-steps", "2", "--batch-size", "2", "--schedule", "constant", "--export-steps", "1"]
    assert paced(*dist, "--out", d, "--lr", "1e-3").exit_code == 0
    r = paced(*dist, "--out", f"{d}/step-1/..", "--lr", "2e-3", "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d3", "ev", "link"]
    r2 = tmp_path / "r2"
    roll = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, *FAST]
    assert paced(*roll, "--out", r2).exit_code == 0
    r = subprocess.run([sys.executable, "-m", "paced_cli", *map(str, roll), "--out", ".", "--seed", "7", "--overwrite"],
                       cwd=r2, capture_output=True, text=True, env=os.environ | {"PACED_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert job_record(r2)["options"]["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d3", "ev", "link", "r2"]


def test_distill_overwrite_of_its_unfinished_run_keeps_a_users_file_in_checkpoints(world, tmp_path, student_dir):
    """The same options, an unfinished run (killed after a checkpoint), --overwrite: a user's file in
    checkpoints/ is named and kept, nothing is deleted; moved out, the run starts over."""
    out = tmp_path / "d"
    base = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--out", out, "--max-steps", "3", "--batch-size", "2", "--lr", "1e-3", "--save-steps", "1"]
    kill_when(out / "checkpoints" / "step-1", *base)
    assert (out / "checkpoints" / "step-1").is_dir() and not (out / "_manifest.parquet").exists()
    (out / "checkpoints" / "notes.txt").write_text("precious")
    err = refused([*base, "--overwrite"], tmp_path, "checkpoints/notes.txt", "paced did not write")
    assert "--overwrite replaces only" in err
    (out / "checkpoints" / "notes.txt").unlink()
    r = paced(*base, "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert (out / "model.safetensors").is_file() and (out / "_manifest.parquet").is_file()


# ---------------------------------------------------------------------------------------
# A second audit: recorded files by content, a user's part, checkpoints, races, leftovers


def test_distill_overwrite_keeps_its_model_files_once_you_edit_them(world, tmp_path, student_dir):
    """A finished distill output records each of its files' digests: one edited since (config.json,
    train_log.parquet, an exported step-1/config.json) is yours, named, and --overwrite refused."""
    out = tmp_path / "d"
    base = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--out", out, "--max-steps", "2", "--batch-size", "2", "--schedule", "constant", "--export-steps", "1"]
    assert paced(*base, "--lr", "1e-3").exit_code == 0
    for rel in ("config.json", "step-1/config.json", "train_log.parquet"):
        original = (out / rel).read_bytes()
        (out / rel).write_bytes(original[:-1] + b" ")
        refused([*base, "--lr", "2e-3", "--overwrite"], tmp_path, rel, "not what paced wrote")
        (out / rel).write_bytes(original)  # put back as it was (a new mtime, the same bytes): paced's again
    (out / "step-1" / "special_tokens_map.json").write_text("{}")  # a model file's name, but not paced's
    refused([*base, "--lr", "2e-3", "--overwrite"], tmp_path, "step-1/special_tokens_map.json", "not what paced wrote")
    (out / "step-1" / "special_tokens_map.json").unlink()
    (out / "step-1" / "notes.txt").write_text("mine")  # named once, though two checks find it
    assert refused([*base, "--lr", "2e-3", "--overwrite"], tmp_path, "step-1/notes.txt").count("notes.txt") == 1
    (out / "step-1" / "notes.txt").unlink()
    assert paced(*base, "--lr", "2e-3", "--overwrite").exit_code == 0


def test_a_users_file_under_a_part_name_is_not_paced(world, tmp_path, student_dir):
    out = tmp_path / "r"
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0
    pl.DataFrame({"a": [1, 2, 3]}).write_parquet(out / "part-00001.parquet")  # not in the manifest
    refused([*base, "--seed", "7", "--overwrite"], tmp_path, "part-00001.parquet")
    (out / "part-00001.parquet").unlink()
    mine = tmp_path / "mine.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(mine)
    os.utime(mine, (1_600_000_000, 1_600_000_000))  # older than the manifest, and kept so by cp -p
    subprocess.run(["cp", "-p", str(mine), str(out / "part-00000.parquet")], check=True)
    refused([*base, "--seed", "7", "--overwrite"], tmp_path, "part-00000.parquet")


def test_distill_keeps_a_users_files_among_its_checkpoints(world, tmp_path, student_dir):
    """A resumed run prunes and finally deletes its checkpoints, but only what each recorded
    holding: a folder or note of yours among them is kept."""
    out = tmp_path / "d"
    base = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--out", out, "--max-steps", "6", "--batch-size", "2", "--lr", "1e-3", "--save-steps", "1"]
    kill_when(out / "checkpoints" / "step-2" / "state.json", *base)
    (out / "checkpoints" / "my-best").mkdir()
    (out / "checkpoints" / "my-best" / "notes.txt").write_text("mine")
    (out / "checkpoints" / "step-2" / "my-eval.txt").write_text("mine too")
    r = paced(*base, "--resume")
    assert r.exit_code == 0, r.stderr
    assert (out / "model.safetensors").is_file()
    assert (out / "checkpoints" / "my-best" / "notes.txt").read_text() == "mine"
    assert (out / "checkpoints" / "step-2" / "my-eval.txt").read_text() == "mine too"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["my-best", "step-2"]
    assert [p.name for p in (out / "checkpoints" / "step-2").iterdir()] == ["my-eval.txt"]


def test_a_job_begun_by_another_run_meanwhile_is_never_taken_or_abandoned(tmp_path):
    """Between `check` (the folder was new) and `start`, another run began and finished a job of
    other options there: this run is refused and leaves that job whole."""
    out = tmp_path / "r"
    prov = {"command": "test"}
    late = schemas.Job(out, schemas.ROLLOUTS, {"samples": 3}, prov)
    late.check()
    first = schemas.Job(out, schemas.ROLLOUTS, {"samples": 2}, prov)
    first.check()
    first.start()
    first.write(0, schemas.table_from_columns({c.name: [] for c in schemas.ROLLOUTS.columns}, schemas.ROLLOUTS))
    first.finish(1)
    before = snapshot(out)
    with pytest.raises(schemas.InputError, match="another paced job was started in it"):
        late.start()
    late.abandon()
    assert snapshot(out) == before


def rollout_jobs(tmp_path):
    """Rollouts jobs at tmp_path/r told apart by their options ({"samples": n}): the factory,
    --out, its replacement folder, an empty part and the provenance."""
    prov = {"command": "test"}
    out = tmp_path / "r"

    def job(samples, **kw):
        return schemas.Job(out, schemas.ROLLOUTS, {"samples": samples}, prov, **kw)

    empty = schemas.table_from_columns({c.name: [] for c in schemas.ROLLOUTS.columns}, schemas.ROLLOUTS)
    return job, out, tmp_path / ".r.replacing", empty, prov


def test_a_resume_in_place_and_a_replacement_of_the_same_out_never_run_at_once(tmp_path):
    """Two commands on one --out, one resuming its job in place and one replacing it
    (--overwrite), each allowed alone, left one directory mixing both jobs' parts and records,
    both exiting 0. Now: a resume is refused while a live process writes the replacement; a
    replacement finished while a live process writes the old job in place waits (it stays
    aside, and the same command puts it in place later); a job swapped in between a run's check
    and its start is not taken for the run's; a run that lost its lock does not seal its parts."""

    job, out, rep, empty, prov = rollout_jobs(tmp_path)

    x = job(2)
    x.check()
    x.start()
    x.write(0, empty)
    x.release()  # an unfinished job X in place, its process gone
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    lock = lock_table(live.pid)
    try:
        # Y replacing X (another process, alive): X's resume is refused, and so is another replacement.
        rep.mkdir()
        pq.write_table(schemas.io.record_table({"schema": "rollouts", "key": "y", "options": {}}, schemas.ROLLOUTS),
                       rep / "_job.parquet")
        pq.write_table(lock, rep / "_lock.parquet")
        before = snapshot(tmp_path)
        for other in (job(2), job(3, overwrite=True)):
            with pytest.raises(schemas.InputError, match="is writing its replacement in"):
                other.check()
        assert snapshot(tmp_path) == before
        # A replacement checked before Y began clears no live replacement.
        late = job(4, overwrite=True)
        pq.write_table(lock, tmp_path / "gone.parquet")  # (Y's lock kept aside)
        (rep / "_lock.parquet").unlink()
        late.check()
        os.replace(tmp_path / "gone.parquet", rep / "_lock.parquet")
        with pytest.raises(schemas.InputError, match="while this one was getting ready"):
            late.start()
        assert snapshot(tmp_path) == before
        shutil.rmtree(rep)
        # Z's replacement finished while X is resumed in place by a live process: Z waits aside.
        z = job(5, overwrite=True)
        z.check()
        z.start()
        z.write(0, empty)
        pq.write_table(lock, out / "_lock.parquet")  # X's resume (alive) took the lock after Z's check
        with pytest.raises(schemas.InputError, match="stays in .*replacing"):
            z.finish(1)
        assert schemas.io.load_record(out / "_job.parquet")["options"] == {"samples": 2}
        assert (out / "part-00000.parquet").exists() and (rep / "_manifest.parquet").exists()
    finally:
        live.kill()
        live.wait()
    again = job(5, overwrite=True)  # X's process is gone: the same command puts Z in place
    again.check()
    assert schemas.io.load_record(out / "_job.parquet")["options"] == {"samples": 5} and not rep.exists()
    # A run that checked X in place, then found another job swapped in before its start.
    x2 = job(2)
    shutil.rmtree(out)
    x = job(2)
    x.check()
    x.start()
    x.release()
    x2.check()
    z2 = job(6, overwrite=True)
    z2.check()
    z2.start()
    z2.finish(0)
    with pytest.raises(schemas.InputError, match="another paced job was started in it"):
        x2.start()
    assert schemas.io.load_record(out / "_job.parquet")["options"] == {"samples": 6}
    # A run whose lock was taken from it (its directory cleared by hand, another process began).
    y = job(6)
    y.check()
    y.start()
    write_lock(out / "_lock.parquet", 1, "elsewhere")
    with pytest.raises(schemas.InputError, match="lost the lock"):
        y.finish(0)


def test_replacements_and_reruns_racing_on_one_out(tmp_path):
    """From a review of the lock fixes: a replacement cleared by one --overwrite while another
    resumed it (the survivor sealed the other's parts); a finished job's plain rerun refused while
    a replacement was under way; a resume that found --out vacant mid-swap began a new job there;
    a dead run's lock carried into the new --out."""

    job, out, rep, empty, prov = rollout_jobs(tmp_path)

    x = job(2)
    x.check()
    x.start()
    x.finish(0)  # a finished job X
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    lock = lock_table(live.pid)
    try:
        y = job(3, overwrite=True)  # a replacement under way (its process: the sleeper)
        y.check()
        y.start()
        y.release()
        pq.write_table(lock, rep / "_lock.parquet")
        again = job(2)
        again.check()  # X's own command: already complete, not refused
        assert again.complete
        # A part of another job in the directory is never sealed into this one.
        (rep / "_lock.parquet").unlink()
        z = job(3, overwrite=True)
        z.check()
        z.start()
        other = empty.replace_schema_metadata({b"paced.key": b"sha256:another"})
        pq.write_table(other, rep / "part-00000.parquet")
        with pytest.raises(schemas.InputError, match="written by another job"):
            z.finish(1)
        assert schemas.io.load_record(out / "_job.parquet")["options"] == {"samples": 2}
    finally:
        live.kill()
        live.wait()
    shutil.rmtree(rep)
    # A resume that checked --out while it held the job, then found it vacant (a swap between its renames).
    shutil.rmtree(out)
    x = job(2)
    x.check()
    x.start()  # unfinished X
    x.release()
    resume = job(2)
    resume.check()
    os.replace(out, tmp_path / ".r.replaced-999999")
    with pytest.raises(schemas.InputError, match="moved away while this run was getting ready"):
        resume.start()
    assert not out.exists()
    os.replace(tmp_path / ".r.replaced-999999", out)
    # A replacement finished by a run killed before it released its lock: no lock in the new --out.
    k = job(5, overwrite=True)
    k.check()
    k.start()
    k.finish(0)
    assert not (out / "_lock.parquet").exists()
    k2 = job(6, overwrite=True)
    k2.check()
    k2.start()
    k2.release()
    write_lock(rep / "_lock.parquet", 999999)
    schemas.Job(rep, schemas.ROLLOUTS, {"samples": 6}, prov).locate()
    k2.dir = rep
    k2._lock()  # (the dead run's lock taken over, as a rerun does)
    k2.release()
    write_lock(rep / "_lock.parquet", 999999)
    from schemas.io import _atomic_write_record

    manifest = {"schema": "rollouts", "version": schemas.ROLLOUTS.version, "key": k2.key, "rows": 0, "parts": [],
                "files": [], "digests": {}, "provenance": prov}
    _atomic_write_record(manifest, rep / "_manifest.parquet", schemas.ROLLOUTS)  # finished, killed before release
    rerun = job(6, overwrite=True)
    rerun.check()  # swaps it in
    assert schemas.io.load_record(out / "_job.parquet")["options"] == {"samples": 6}
    assert not (out / "_lock.parquet").exists() and not rep.exists()


def test_a_finished_replacement_stays_locked_until_it_is_in_place(tmp_path):
    """A second review: a finished replacement was unlocked while it waited to be swapped in, so
    another --overwrite cleared it and the first run swapped the other's empty job in (both
    artifacts lost, exit 0); the same command run twice swapped twice; a dead run's lock stayed in
    a finished artifact, and another machine's refused every rerun of it."""

    prov = {"command": "test"}
    out, rep = tmp_path / "r", tmp_path / ".r.replacing"

    def job(samples, **kw):
        return schemas.Job(out, schemas.ROLLOUTS, {"samples": samples}, prov, **kw)

    def record(d):
        return schemas.io.load_record(d / "_job.parquet")["options"]

    x = job(2)
    x.check()
    x.start()
    x.finish(0)
    # A replacement finished (manifest written) by another run: never cleared by this one.
    a = job(3, overwrite=True)
    a.check()  # (no replacement yet)
    c = job(4, overwrite=True)
    c.check()
    c.start()
    c.release()
    from schemas.io import _atomic_write_record

    _atomic_write_record({"schema": "rollouts", "version": schemas.ROLLOUTS.version, "key": c.key, "rows": 0, "parts": [],
                          "files": [], "digests": {}, "provenance": prov}, rep / "_manifest.parquet", schemas.ROLLOUTS)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        write_lock(rep / "_lock.parquet", live.pid)  # C, alive, about to swap
        with pytest.raises(schemas.InputError, match="another paced process"):
            a.start()
    finally:
        live.kill()
        live.wait()
    with pytest.raises(schemas.InputError, match="another run finished a replacement"):  # C gone, its job kept
        a.start()
    assert (rep / "_manifest.parquet").exists() and record(rep) == {"samples": 4} and record(out) == {"samples": 2}
    # The same command twice: the second finds it in place and is done.
    y = job(4, overwrite=True)
    y.dir = rep  # (found finished by its check, about to swap)
    c2 = job(4, overwrite=True)
    c2.check()  # swaps it in
    assert record(out) == {"samples": 4} and not rep.exists()
    y._swap()
    assert record(out) == {"samples": 4} and sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert not (out / "_lock.parquet").exists()
    # A dead run's lock in a finished artifact: removed by the rerun; another machine's does not refuse a rerun.
    write_lock(out / "_lock.parquet", 999999)
    job(4).check()
    assert not (out / "_lock.parquet").exists()
    write_lock(out / "_lock.parquet", 1, "elsewhere")
    done = job(4)
    done.check()
    assert done.complete


def test_a_cut_swap_leaves_no_lock_and_another_machine_s_pid_is_not_this_one(tmp_path):
    """A third review: the replacement keeps its lock through the swap, so a swap cut between its
    renames carried the dead swapper's lock into the finished --out (then refusing another
    machine's runs); and a lock naming this process's pid on another machine (containers: pid 1
    everywhere) was taken for this process's own, so a second writer replaced a live job."""

    prov = {"command": "test"}
    here = socket.gethostname()

    for name, samples in (("x", 2), ("z", 5)):
        j = schemas.Job(tmp_path / name, schemas.ROLLOUTS, {"samples": samples}, prov)
        j.check()
        j.start()
        j.finish(0)
    for name in ("x", "z"):  # the swapper (dead) held both locks when it was cut
        write_lock(tmp_path / name / "_lock.parquet", 999999, here)
    os.replace(tmp_path / "x", tmp_path / ".r.replaced-999999")
    os.replace(tmp_path / "z", tmp_path / ".r.replacing")
    with pytest.raises(schemas.InputError, match="other options"):  # the old command finishes the swap, then is refused
        schemas.Job(tmp_path / "r", schemas.ROLLOUTS, {"samples": 2}, prov).check()
    assert schemas.io.load_record(tmp_path / "r" / "_job.parquet")["options"] == {"samples": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"] and not (tmp_path / "r" / "_lock.parquet").exists()
    # An unfinished job written by pid <ours> on another machine: alive as far as this one can tell.
    u = schemas.Job(tmp_path / "u", schemas.ROLLOUTS, {"samples": 2}, prov)
    u.check()
    u.start()
    write_lock(tmp_path / "u" / "_lock.parquet", os.getpid(), "elsewhere")
    for other in (schemas.Job(tmp_path / "u", schemas.ROLLOUTS, {"samples": 2}, prov),
                  schemas.Job(tmp_path / "u", schemas.ROLLOUTS, {"samples": 3}, prov, overwrite=True)):
        with pytest.raises(schemas.InputError, match="another paced process"):
            other.check()
    u.release()  # (this process's atexit release) leaves the other machine's lock
    assert schemas.io.load_record(tmp_path / "u" / "_lock.parquet")["host"] == "elsewhere"


def test_a_swap_cut_on_another_machine_is_not_taken_for_a_new_job(tmp_path):
    """Between the swap's two renames --out is gone; the old job carries the swap's lock. A lock of
    another machine (whose processes cannot be seen) is not finished from here: the run is refused,
    naming it (it had begun a new job at --out); once it is removed, the swap is finished."""

    prov = {"command": "test"}
    for name, samples in (("x", 2), ("z", 5)):
        j = schemas.Job(tmp_path / name, schemas.ROLLOUTS, {"samples": samples}, prov)
        j.check()
        j.start()
        j.finish(0)
    os.replace(tmp_path / "x", tmp_path / f".r.replaced-{os.getppid()}")
    os.replace(tmp_path / "z", tmp_path / ".r.replacing")
    lock = tmp_path / f".r.replaced-{os.getppid()}" / "_lock.parquet"
    write_lock(lock, 1, "elsewhere")
    before = snapshot(tmp_path)
    for samples in (5, 2):
        with pytest.raises(schemas.InputError, match="is putting a replacement in its place"):
            schemas.Job(tmp_path / "r", schemas.ROLLOUTS, {"samples": samples}, prov, overwrite=True).check()
    assert snapshot(tmp_path) == before
    lock.unlink()  # as the message says; the pid in the name (a live process here) is not looked at any more
    schemas.Job(tmp_path / "r", schemas.ROLLOUTS, {"samples": 5}, prov, overwrite=True).check()
    assert schemas.io.load_record(tmp_path / "r" / "_job.parquet")["options"] == {"samples": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_file_system_gone_read_only_reports_the_write_that_failed(tmp_path, monkeypatch):
    """A part's write failed (the file system went read-only); abandoning the job then failed to
    remove its lock too, and that second error (naming the lock) replaced the first."""

    from schemas.jobs import abandoned_on_failure

    out = tmp_path / "r"
    real_unlink = Path.unlink

    def read_only(self, missing_ok=False):
        if self.parent == out:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    with pytest.raises(OSError, match="part-00000"):
        with abandoned_on_failure():
            job = schemas.Job(out, schemas.ROLLOUTS, {"samples": 2}, {"command": "test"})
            job.check()
            job.start()
            monkeypatch.setattr(Path, "unlink", read_only)
            raise OSError(errno.EROFS, "Read-only file system", str(out / "part-00000.parquet"))
    monkeypatch.setattr(Path, "unlink", real_unlink)
    job.release()  # (what atexit does: quiet on a read-only file system too)


def test_eval_into_another_commands_output_names_what_it_holds(world, tmp_path, student_dir):
    """eval --out at a rollouts job or a distilled model was refused as "an eval job itself (an
    earlier paced's layout)": refused still, naming what it is, with nothing changed."""
    ev = ["eval", "--model", student_dir, "--problems", world / "problems.parquet", "--samples", "1",
          "--max-new-tokens", "4", "--verifier", "exact"]
    for name, kind in (("rollouts", "rollouts"), ("d1", "train_log")):
        before = snapshot(world / name)
        for extra in ([], ["--overwrite"]):
            r = paced(*ev, "--out", world / name, *extra)
            assert r.exit_code == 2 and f"holds a paced {kind} artifact, not an eval" in r.stderr, r.stderr
        assert snapshot(world / name) == before


def test_a_run_killed_as_it_began_its_job_blocks_no_rerun(world, tmp_path, student_dir):
    """Killed after making --out but before its job file: a stale lock and bookkeeping temporaries
    (their process gone) are leftovers, not a user's folder: the same command runs, and so does an
    --overwrite whose replacement folder was left so."""
    out = tmp_path / "r"
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST]
    out.mkdir()
    lock = lock_table(999999)

    pq.write_table(lock, out / "_lock.parquet")
    (out / "._job.parquet.tmp-999998").write_text("half")
    r = paced(*base)
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["_job.parquet", "_manifest.parquet", "part-00000.parquet"]
    rep = tmp_path / ".r.replacing"
    rep.mkdir()
    pq.write_table(lock, rep / "_lock.parquet")
    r = paced(*base, "--seed", "7", "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert job_record(out)["options"]["seed"] == 7 and sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_shards_and_eval_summaries_are_never_replaced_through_a_link_or_from_another_eval(world, tmp_path, student_dir):
    real = tmp_path / "real"
    roll = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, *FAST, "--shard", "0/2"]
    assert paced(*roll, "--out", real).exit_code == 0
    (tmp_path / "link").symlink_to(real)
    refused([*roll, "--out", tmp_path / "link", "--seed", "7", "--overwrite"], tmp_path, "symbolic link")
    mysum = tmp_path / "mysum"
    mysum.mkdir()
    (mysum / "summary.parquet").write_bytes((world / "eval" / "summary.parquet").read_bytes())
    ev = ["eval", "--model", student_dir, "--problems", world / "problems.parquet", "--samples", "2", "--max-new-tokens", "4",
          "--verifier", "exact", "--out", mysum]
    refused(ev, tmp_path, "summary.parquet", "other options", "--overwrite")
    # A refused shard into a new root leaves no root behind.
    r = paced(*roll, "--out", tmp_path / "newroot", "--max-new-tokens", "100000")
    assert r.exit_code == 2 and not (tmp_path / "newroot").exists(), r.stderr


def test_a_refusal_mid_training_keeps_its_checkpoints(world, tmp_path, student_dir):
    """Refused at an export (a folder of yours where step-N goes) after checkpoints were written:
    the run is kept, so the message's `rerun to resume` holds."""
    out = tmp_path / "d"
    args = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--out", out, "--max-steps", "400", "--batch-size", "2", "--lr", "1e-4", "--save-steps", "5", "--export-steps", "300"]
    from tests.conftest import wait_for

    proc = subprocess.Popen([sys.executable, "-m", "paced_cli", *map(str, args)], cwd=ROOT, text=True,
                            env=os.environ | {"PACED_NO_PROGRESS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(proc, out / "checkpoints" / "step-5" / "state.json")
    (out / "step-300").mkdir()
    (out / "step-300" / "notes.txt").write_text("mine")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2 and "step-300 holds files paced did not write" in err, err
    assert (out / "_job.parquet").is_file() and any((out / "checkpoints").iterdir())
    assert (out / "step-300" / "notes.txt").read_text() == "mine"


def test_a_distill_killed_after_its_manifest_is_tidied_by_the_same_command(world, tmp_path, student_dir):
    """Killed between its manifest and deleting its checkpoints and rows cache: the same command
    finds the run complete and deletes them (a checkpoint only as far as it lists its files)."""

    out = tmp_path / "d"
    base = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--out", out, "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3"]
    assert paced(*base).exit_code == 0
    step = out / "checkpoints" / "step-1"
    step.mkdir(parents=True)
    (step / "optim.pt").write_text("x")
    (step / "state.json").write_text(json.dumps({"step": 1, "files": ["optim.pt"]}))
    (out / ".train_data.arrow").write_text("cache")
    r = paced(*base)
    assert r.exit_code == 0 and "already complete" in r.stderr, r.stderr
    assert not (out / "checkpoints").exists() and not (out / ".train_data.arrow").exists()


def test_a_verifier_that_raises_mid_run_leaves_nothing_that_blocks_its_fix(world, tmp_path, monkeypatch):
    """A verifier that raises on one row (exit 2) after some parts were checked: the job this run
    began is removed (its verdicts came from the code the fix changes, and the fix changes the
    job's key), so the command with the fixed verifier runs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "myv.py").write_text("def check(completion, problem):\n    if problem['problem_id'] == 'p3':\n"
                                     "        raise ValueError('broken')\n    return True\n")
    out = tmp_path / "s"
    args = ["score", "--rollouts", world / "rollouts", "--problems", world / "problems.parquet", "--out", out,
            "--verifier", "myv:check", "--part-size", "2", "--workers", "1"]
    r = paced(*args)
    assert r.exit_code == 2 and "raised on problem_id='p3'" in r.stderr, r.stderr
    assert not out.exists()
    (tmp_path / "myv.py").write_text("def check(completion, problem):\n    return True\n")
    r = paced(*args)
    assert r.exit_code == 0, r.stderr
    assert schemas.read(out, schemas.SCORES, option="--scores").frame.height == 8


def test_a_users_lock_named_file_is_not_a_dead_runs_lock(world, tmp_path, student_dir):
    ud = tmp_path / "ud"
    ud.mkdir()
    (ud / "_lock").write_text("my lock notes")
    refused(["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", ud, *FAST], tmp_path,
            "not a paced job directory")


def test_the_same_weight_command_keeps_its_file_byte_for_byte(world, tmp_path):
    """Rerun, the same command leaves its file as it was (its fingerprint too), so what was made
    from it (a distill) still resumes."""
    w = tmp_path / "w.parquet"
    assert paced("weight", "--scores", world / "scores", "--out", w).exit_code == 0
    first = w.read_bytes()
    assert paced("weight", "--scores", world / "scores", "--out", w).exit_code == 0
    assert w.read_bytes() == first


def test_an_earlier_paceds_unkeyed_eval_summary_is_recomputed(world, tmp_path, student_dir):

    ev = tmp_path / "ev"
    args = ["eval", "--model", student_dir, "--problems", world / "problems.parquet", "--samples", "2", "--max-new-tokens", "4",
            "--verifier", "exact", "--out", ev]
    assert paced(*args).exit_code == 0
    t = pq.read_table(ev / "summary.parquet")
    meta = {k: v for k, v in t.schema.metadata.items() if k not in (b"paced.key", b"paced.content")}
    pq.write_table(t.replace_schema_metadata(meta), ev / "summary.parquet")  # as paced wrote it before keys
    r = paced(*args, "--at-k", "1")
    assert r.exit_code == 0, r.stderr
    assert b"paced.key" in pq.read_schema(ev / "summary.parquet").metadata
    # Re-made against a baseline: the same rows or not, it records the command that made it.

    for base in ("b1", "b2"):
        assert paced(*args[:-1], tmp_path / base, "--seed", "3").exit_code == 0
        assert paced(*args, "--at-k", "1", "--baseline", tmp_path / base).exit_code == 0
        prov = json.loads(pq.read_schema(ev / "summary.parquet").metadata[b"paced.provenance"])
        assert prov["options"]["baseline"] == str(tmp_path / base)


def test_a_users_step_folder_among_checkpoints_is_neither_resumed_nor_removed(tmp_path):
    """Only step-N folders are checkpoints: a user's `checkpoints/step-best/` with a state.json in
    it is not taken for one (it failed to parse as a step number) and is kept by clear()."""
    from stages.training import checkpoints

    d = tmp_path / "run" / "checkpoints"
    (d / "step-best").mkdir(parents=True)
    (d / "step-best" / "state.json").write_text("{}")
    (d / "step-2").mkdir()
    (d / "step-2" / "state.json").write_text('{"files": []}')
    assert checkpoints.found(tmp_path / "run") == [(2, d / "step-2")]
    assert checkpoints.clear(tmp_path / "run") == ["checkpoints/step-best"]
    assert (d / "step-best" / "state.json").read_text() == "{}" and not (d / "step-2").exists()


# ---------------------------------------------------------------------------------------
# A fifth audit: '..' after a link, plots written without a second look, crashes after the
# job began, chat templates that raise


def test_dot_dot_after_a_linked_folder_is_where_the_system_goes(world, tmp_path, student_dir):
    """`lnk/..` is the parent of the link's target, not the folder holding the link: an output
    named that way that is an input, or lies inside one, is refused like its plain spelling."""
    (tmp_path / "other").mkdir()
    (tmp_path / "deep" / "real").mkdir(parents=True)
    (tmp_path / "other" / "lnk").symlink_to(world / "d1")  # lnk/.. is `world`
    via = tmp_path / "other" / "lnk" / ".."
    refused(["weight", "--scores", world / "scores", "--out", f"{via}/scores/w.parquet"], world, "lies inside --scores")
    refused(["weight", "--scores", world / "scores", "--out", f"{via}/rollouts/part-00007.parquet"], world,
            "lies inside the paced job directory")
    dist = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--max-steps", "2", "--batch-size", "2"]
    refused([*dist, "--init", world / "d1", "--out", f"{via}/d1", "--overwrite"], world, "is also --init")
    refused([*dist, "--init", f"{via}/d1", "--out", world / "d1", "--overwrite"], world, "is also --init")
    # `--out lnk/..` names the link's target's parent
    (tmp_path / "deep" / "real" / "r").mkdir()
    (tmp_path / "other" / "r").symlink_to(tmp_path / "deep" / "real" / "r")
    roll = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, *FAST]
    assert paced(*roll, "--out", tmp_path / "deep" / "real" / "r2").exit_code == 0
    r = paced(*roll, "--out", tmp_path / "other" / "r" / ".." / "r2", "--seed", "5", "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert job_record(tmp_path / "deep" / "real" / "r2")["options"]["seed"] == 5
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["lnk", "r"]


def test_a_users_file_made_at_the_plot_path_during_the_run_is_kept(world, tmp_path, monkeypatch, student_dir):
    """A plot is checked again just before it is moved in: a file the user made at --plot while
    the run worked (distill's can take hours) is refused, never replaced."""
    import stages.weight

    plot = tmp_path / "w.png"
    real = stages.weight.compute

    def compute_then_user_writes(*a, **k):
        out = real(*a, **k)
        plot.write_text("my figure")
        return out

    monkeypatch.setattr(stages.weight, "compute", compute_then_user_writes)
    r = paced("weight", "--scores", world / "scores", "--out", tmp_path / "w.parquet", "--plot", plot, "--overwrite")
    assert r.exit_code == 2 and "Traceback" not in r.stderr, r.stderr
    assert "--plot" in r.stderr and "never replaces a file it did not write" in " ".join(r.stderr.split()), r.stderr
    assert plot.read_text() == "my figure" and not list(tmp_path.glob(".w.png.tmp-*"))
    monkeypatch.undo()
    # distill: the plot comes at the very end of a run
    import stages.training.tracking as tracking

    dplot = tmp_path / "d.png"
    real_plot = tracking.plot
    monkeypatch.setattr(tracking, "plot", lambda *a, **k: (dplot.write_text("mine"), real_plot(*a, **k)))
    r = paced("distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
              "--max-steps", "1", "--batch-size", "2", "--out", tmp_path / "d", "--plot", dplot)
    assert r.exit_code == 2 and "Traceback" not in r.stderr and "--plot" in r.stderr, r.stderr
    assert dplot.read_text() == "mine"
    monkeypatch.undo()
    dplot.unlink()  # moved away: the same command writes the plot of the finished run
    r = paced("distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
              "--max-steps", "1", "--batch-size", "2", "--out", tmp_path / "d", "--plot", dplot)
    assert r.exit_code == 0 and "already complete" in r.stderr and dplot.read_bytes()[:4] == b"\x89PNG", r.stderr


def test_a_device_torch_cannot_use_is_refused_before_any_model_loads(world, tmp_path, student_dir, teacher_dir):
    """--device cuda on a machine without CUDA (or an unknown device) exits 2 before loading,
    leaving no job behind (it crashed in model.to(device) and left a distill run that refused
    the corrected command)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: cuda:N past its GPUs is checked below")
    for device in ("cuda", "cuda:0", "tpu", "cpu:1"):
        refused(["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
                 "--max-steps", "1", "--out", tmp_path / "d", "--device", device], tmp_path, f"--device {device}")
        refused(["rollout", "--problems", world / "problems.parquet", "--model", student_dir, *FAST,
                 "--out", tmp_path / "r", "--device", device], tmp_path, f"--device {device}")
        refused(["teacher-logits", "--problems", world / "problems.parquet", "--sequences", world / "rollouts",
                 "--teacher", teacher_dir, "--out", tmp_path / "t", "--device", device], tmp_path, f"--device {device}")
        refused(["snr", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet", "--out", tmp_path / "s.parquet",
                 "--device", device], tmp_path, f"--device {device}")
    assert not any(tmp_path.iterdir())
    assert paced("distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
                 "--max-steps", "1", "--batch-size", "2", "--out", tmp_path / "d", "--device", "cpu").exit_code == 0


def test_a_model_that_does_not_load_or_a_tracker_that_does_not_start_blocks_no_rerun(world, tmp_path, student_dir):
    """A config.json that disagrees with the weights exits 2 naming the model, and the job the
    run began is abandoned, so the corrected command runs (it crashed with a traceback and left a
    job keyed by the broken model, which refused the fixed one)."""

    broken = tmp_path / "m2"

    shutil.copytree(student_dir, broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg["intermediate_size"] *= 2
    (broken / "config.json").write_text(json.dumps(cfg))
    work = tmp_path / "w"
    work.mkdir()
    roll = ["rollout", "--problems", world / "problems.parquet", "--model", broken, *FAST, "--out", work / "o"]
    dist = ["distill", "--student", broken, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--max-steps", "1", "--batch-size", "2", "--out", work / "d"]
    for args in (roll, dist):
        refused(args, work, f"model {broken}", "config.json does not match its weights")
    assert not any(work.iterdir())
    shutil.copy(Path(student_dir) / "config.json", broken / "config.json")
    for args in (roll, dist):
        r = paced(*args)
        assert r.exit_code == 0, r.stderr
    # wandb that cannot start (no login, online mode): exit 2 with the fix, nothing left behind
    pytest.importorskip("wandb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    r = subprocess.run([sys.executable, "-m", "paced_cli", *map(str, dist[:-1]), tmp_path / "dw", "--report-to", "wandb"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env=env | {"PACED_NO_PROGRESS": "1", "WANDB_MODE": "online", "WANDB_API_KEY": "", "HOME": str(tmp_path / "home"),
                                  "WANDB_CONFIG_DIR": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--report-to wandb" in r.stderr, r.stderr
    assert not (tmp_path / "dw").exists()


def test_a_chat_template_that_raises_exits_2_naming_the_option(world, tmp_path, student_dir):
    """A Gemma-style template that refuses a system message, or one that does not parse: exit 2
    with the cause and the fix, never a traceback, and nothing left behind."""

    model = tmp_path / "gemma"
    shutil.copytree(student_dir, model)
    for f in ("chat_template.jinja",):
        (model / f).unlink(missing_ok=True)
    cfg = model / "tokenizer_config.json"

    tok = json.loads(cfg.read_text())
    tok["chat_template"] = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
                            "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    cfg.write_text(json.dumps(tok))
    work = tmp_path / "w"
    work.mkdir()
    base = ["rollout", "--problems", world / "problems.parquet", "--model", model, *FAST, "--out", work / "r"]
    refused([*base, "--system-prompt", "Be brief."], work, "chat template", "System role not supported", "drop --system-prompt")
    ev = ["eval", "--model", model, "--problems", world / "problems.parquet", "--samples", "1", "--max-new-tokens", "4",
          "--verifier", "exact", "--out", work / "e", "--system-prompt", "Be brief."]
    refused(ev, work, "chat template", "drop --system-prompt")
    tok["chat_template"] = "{% for m in messages %}{{ m['content'] }"  # does not parse
    cfg.write_text(json.dumps(tok))
    refused(base, work, "chat template", "TemplateSyntaxError")
    assert not any(work.iterdir())


def _limited(args, fsize: int, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m paced_cli ARGS` with files limited to `fsize` bytes (a full disk, as `ulimit -f`)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "paced_cli", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          preexec_fn=limit, timeout=600, env=os.environ | {"PACED_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)})


def test_a_full_disk_exits_2_naming_the_path_and_leaves_nothing_behind(world, tmp_path, student_dir):
    """snr's copy of the rows and distill's model files: a write that fails for space exits 2
    naming what could not be written (snr said 'the output'; distill's safetensors error was a
    traceback), and leaves neither a hidden copy nor a job that refuses the rerun."""
    snr = ["snr", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
           "--out", tmp_path / "s.parquet"]
    r = _limited(snr, 4096, tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot write {tmp_path}/.s.parquet.data-" in " ".join(r.stderr.split()), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    dist = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--max-steps", "1", "--batch-size", "2", "--save-steps", "0", "--out", tmp_path / "d"]
    r = _limited(dist, 256 * 1024, tmp_path)  # the rows fit, the model does not
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot write {tmp_path}/d" in " ".join(r.stderr.split()) and "File too large" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert paced(*dist).exit_code == 0


def test_snr_removes_the_row_copies_runs_killed_before_it_left(world, tmp_path, student_dir):
    """A killed snr leaves its hidden copy of the rows beside --out (GBs on real data); the next
    snr for that --out deletes those of this machine's dead processes and keeps a live run's,
    another machine's and the user's."""
    live = subprocess.Popen(["sleep", "120"])
    try:
        from stages.snr import _HOST

        names = [".s.parquet.data-999999.arrow", f".s.parquet.data-{_HOST}-999999.arrow.tmp-999999",  # dead: removed
                 f".s.parquet.data-{live.pid}.arrow", f".s.parquet.data-{_HOST}-{live.pid}.arrow",  # alive
                 ".s.parquet.data-other-host-999999.arrow",  # another machine's (a shared file system)
                 ".s.parquet.data-mine.arrow", ".t.parquet.data-999999.arrow"]
        for n in names:
            (tmp_path / n).write_text("x")
        r = paced("snr", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
                  "--out", tmp_path / "s.parquet")
        assert r.exit_code == 0, r.stderr
        left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
        assert left == sorted(names[2:]), left
    finally:
        live.kill()


def test_another_commands_job_under_the_replacement_name_is_kept(world, tmp_path, student_dir):
    """`.rollouts.replacing` holding a copy of a scores job is not an interrupted replacement of
    rollouts: --overwrite is refused, naming it, and deletes nothing."""

    roll = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, *FAST]
    assert paced(*roll, "--out", tmp_path / "rollouts").exit_code == 0
    shutil.copytree(world / "scores", tmp_path / ".rollouts.replacing")
    refused([*roll, "--out", tmp_path / "rollouts", "--seed", "9", "--overwrite"], tmp_path, ".rollouts.replacing",
            "'scores'")


def test_a_failure_after_distill_moved_its_model_in_keeps_the_model(world, tmp_path, student_dir, monkeypatch):
    """A run of fewer steps than --save-steps has no checkpoint; a failure between moving its
    final model in and writing its manifest (a full disk for train_log.parquet) must not take
    the model with the abandoned job: the model files it recorded are work done."""

    import schemas.io

    real = schemas.io.write_file

    def full_for_the_log(path, *a, **k):
        if Path(path).name == "train_log.parquet" and ".tmp-" not in str(Path(path).parent.name):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(schemas.io, "write_file", full_for_the_log)
    monkeypatch.setattr(schemas, "write_file", full_for_the_log)
    out = tmp_path / "g"
    r = paced("distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
              "--max-steps", "1", "--batch-size", "2", "--out", out)
    assert r.exit_code == 2 and "No space left" in r.stderr, r.stderr
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


def test_a_launchers_checkpoint_temporary_is_paceds(world, tmp_path, student_dir):
    """`checkpoints/.step-N.tmp-launch` (FSDP/DeepSpeed's checkpoint being written) is paced's:
    --overwrite of the run is not refused for it, and it goes with the run."""
    base = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--max-steps", "2", "--batch-size", "2", "--out", tmp_path / "d"]
    assert paced(*base, "--save-steps", "1").exit_code == 0
    ck = tmp_path / "d" / "checkpoints" / ".step-2.tmp-launch" / "accelerate"
    ck.mkdir(parents=True)
    from schemas import outputs

    assert outputs.foreign_inside(tmp_path / "d" / "checkpoints") == []
    r = paced(*base, "--lr", "2e-3", "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert not (tmp_path / "d" / "checkpoints").exists()


def test_a_full_disk_in_a_checkpoints_optimizer_state_exits_2(world, tmp_path, student_dir):
    """torch.save reports a failed write as a RuntimeError without a code: exit 2 naming the
    checkpoint, no half-written checkpoint left (it was a traceback)."""
    dist = ["distill", "--student", student_dir, "--teacher-logits", world / "tl", "--weights", world / "weights.parquet",
            "--max-steps", "3", "--batch-size", "2", "--save-steps", "1", "--out", tmp_path / "d"]
    r = _limited(dist, 700 * 1024, tmp_path)  # the model file (538 kB) fits, its optimizer state does not
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot write {tmp_path}/d/checkpoints/step-1" in " ".join(r.stderr.split()), r.stderr
    ck = tmp_path / "d" / "checkpoints"
    assert not ck.exists() or not any(ck.iterdir())


def test_brackets_in_paths_and_user_text_are_printed_not_read_as_markup(world, tmp_path, student_dir):
    """A Llama-style prompt (`[/INST]`), a benchmark or a path with [brackets] is text: rich read
    `[/b]` as a closing tag and the command failed (exit 1) after its work was done, on every rerun."""
    prompts = make_problems(3).with_columns(prompt=pl.lit("[INST] 3+4 [/INST]"))
    prompts.write_parquet(tmp_path / "inst.parquet")
    r = paced("inspect", tmp_path / "inst.parquet")
    assert r.exit_code == 0, r.stderr
    assert "[INST] 3+4 [/INST]" in r.stdout
    (tmp_path / "a[" / "b]").mkdir(parents=True)
    out = tmp_path / "a[" / "b]" / "out"  # .../a[/b]/out
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0
    r = paced(*base)  # the rerun prints the path in its "already complete" line
    assert r.exit_code == 0, r.stderr
    assert f"{out}: already complete" in r.stderr
    r = paced(*base, "--seed", "3")  # an error message quoting it
    assert r.exit_code == 2 and str(out) in r.stderr


def test_a_finished_job_of_the_users_at_the_replacement_name_is_kept(world, tmp_path, student_dir):
    """`.c1.replacing` that holds a finished job of other options is an artifact (the user's),
    not a replacement under way: `--overwrite` of c1 is refused and keeps it (it was deleted)."""
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, *FAST]
    assert paced(*base, "--out", tmp_path / "c1").exit_code == 0
    assert paced(*base, "--out", tmp_path / ".c1.replacing", "--temperature", "0.7").exit_code == 0
    before = snapshot(tmp_path / ".c1.replacing")
    refused([*base, "--out", tmp_path / "c1", "--seed", "9", "--overwrite"], tmp_path, ".c1.replacing", "finished", "move it away")
    assert snapshot(tmp_path / ".c1.replacing") == before


def test_a_swap_killed_while_removing_the_old_job_is_finished_by_the_next_run(world, tmp_path, student_dir):
    """Killed after the new job was swapped in, while the old one (`.big.replaced-PID`, its
    process dead) was being removed: the next run removes it, and a user's file in it is kept."""

    out = tmp_path / "big"
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0
    old = tmp_path / ".big.replaced-999999"  # a pid no process has
    shutil.copytree(out, old)
    (old / "notes.txt").write_text("mine")
    r = paced(*base)
    assert r.exit_code == 0 and "already complete" in r.stderr
    assert not old.exists() and (tmp_path / "big.kept-999999" / "notes.txt").read_text() == "mine"
    assert (out / "part-00000.parquet").is_file()


def test_a_users_part_named_file_in_an_unfinished_job_is_neither_deleted_nor_sealed(world, tmp_path, student_dir):
    """A job killed before its manifest, with a file of the user's named like a part: resuming
    refused (it was sealed into the artifact as a part), --overwrite refused and the file kept
    (it was deleted); moved away, the same command resumes. Each part carries its job's key."""
    out = tmp_path / "j2"
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0

    assert pq.read_schema(out / "part-00000.parquet").metadata[b"paced.key"] == job_record(out)["key"].encode()
    (out / "_manifest.parquet").unlink()  # as a kill -9 leaves it
    (out / "part-00099.parquet").write_bytes((world / "problems.parquet").read_bytes())
    refused(base, tmp_path, "part-00099.parquet", "did not write")
    refused([*base, "--temperature", "0.5", "--overwrite"], tmp_path, "part-00099.parquet")
    assert (out / "part-00099.parquet").read_bytes() == (world / "problems.parquet").read_bytes()
    (out / "part-00099.parquet").rename(tmp_path / "mine.parquet")
    r = paced(*base)
    assert r.exit_code == 0, r.stderr
    assert (out / "_manifest.parquet").is_file()


def test_overwrite_of_a_mount_point_is_refused_before_the_run(world, tmp_path, student_dir, monkeypatch):
    """A replacement is renamed into --out's place, which a mount point cannot take: the swap
    failed with EBUSY after the whole run, on every rerun. Refused before anything runs now (a
    real mount needs privileges: os.path.ismount stands in for it)."""
    out = tmp_path / "mnt"
    base = ["rollout", "--problems", world / "problems.parquet", "--model", student_dir, "--out", out, *FAST]
    assert paced(*base).exit_code == 0
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == os.fspath(out) or real(p))
    before = snapshot(out)
    refused([*base, "--seed", "4", "--overwrite"], tmp_path, "mount point", "folder inside it")
    assert snapshot(out) == before and not (tmp_path / ".mnt.replacing").exists()
    assert paced(*base).exit_code == 0  # the same command: the job as it is


def test_a_model_replaced_in_place_by_one_of_the_same_size_does_not_resume_its_job(tmp_path):
    """The key's quick fingerprint reads a weight file's first and last MiB; a model replaced in
    place by another fine-tune of the same size kept it, and the resumed job mixed both models'
    outputs. The job records a closer look (`model_digest`) and refuses the other weights."""

    from stages import models

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    body = bytearray(random.Random(0).randbytes(5 << 20))
    (model / "model.safetensors").write_bytes(body)
    fingerprint, digest = models.model_fingerprint(str(model)), models.model_digest(str(model))
    body[2 << 20: 3 << 20] = bytes(1 << 20)  # the middle layers changed (a stretch longer than the gaps between blocks)
    (model / "model.safetensors").write_bytes(body)
    assert models.model_fingerprint(str(model)) == fingerprint and models.model_digest(str(model)) != digest
    assert models.model_digest("Qwen/Qwen3-8B") is None  # a hub id: its revision is the hub's

    d, prov = tmp_path / "scores", schemas.provenance("score", {})
    part = pl.DataFrame({"problem_id": ["a"], "sample_index": pl.Series([0], dtype=pl.Int32), "correct": [True],
                         "extracted": [None], "reason": [None]}).to_arrow().cast(schemas.SCORES.arrow)
    first = schemas.Job(d, schemas.SCORES, {"model": fingerprint}, prov, contents={"--model": digest})
    first.check()
    first.start()
    first.write(0, part)
    first.release()  # as if killed
    now = models.model_digest(str(model))
    with pytest.raises(schemas.InputError, match="other weights at --model"):
        schemas.Job(d, schemas.SCORES, {"model": fingerprint}, prov, contents={"--model": now}).check()
    again = schemas.Job(d, schemas.SCORES, {"model": fingerprint}, prov, contents={"--model": now}, overwrite=True)
    again.check()
    assert again.dir == again.replacement
    same = schemas.Job(d, schemas.SCORES, {"model": fingerprint}, prov, contents={"--model": digest})
    same.check()  # the weights it began with: it resumes
    assert same.dir == d



# A run of `act` in its own process (`d` its --out); with `patch`, the function `real` of the job
# protocol is replaced by one that pauses its first call that `when` accepts, until `go` exists.
_RUN = r"""
import os, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import schemas, schemas.jobs as jobs

d, paused, go = Path({d!r}), Path({paused!r}), Path({go!r})
if {pause}:
    real, held = {real}, []

    def hooked(*args, **kwargs):
        if not held and ({when}):
            held.append(1)
            paused.touch()
            while not go.exists():
                time.sleep(0.02)
        return real(*args, **kwargs)

    {real} = hooked
try:
    {act}
    print("ok", flush=True)
    for _ in range(1500):  # alive (holding what it took) until the other run is done
        if Path({hold!r}).exists():
            break
        time.sleep(0.02)
except schemas.InputError as e:
    print("refused", e)
"""


def _run(tmp_path, d, act, *, real=None, when="False") -> subprocess.Popen:
    """Start `act` in a process; with `real`, return once it has paused there."""

    paused, go = tmp_path / "paused", tmp_path / "go"
    code = _RUN.format(root=str(ROOT), d=str(d), paused=str(paused), go=str(go), hold=str(tmp_path / "hold"),
                       pause=real is not None, real=real or "jobs.unused",
                       when=when, act=act)
    proc = subprocess.Popen([sys.executable, "-c", code], text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while real is not None and not paused.exists() and proc.poll() is None:
        time.sleep(0.02)
    assert real is None or paused.exists(), proc.communicate()
    return proc


def _both(tmp_path, first, second) -> list[str]:
    """Let the paused `first` go on a second after `second` began; their outputs (each stays
    alive until the other is done)."""

    threading.Timer(1.0, (tmp_path / "go").touch).start()
    out2 = second.communicate(timeout=90)
    (tmp_path / "hold").touch()
    outs = [first.communicate(timeout=90), out2]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    return [o for o, _ in outs]


def test_two_runs_taking_over_a_dead_run_s_lock_at_once_do_not_both_hold_it(tmp_path):
    """After a crash, the same command started twice at once (two terminals, `srun -n 8` without
    --shard) found the dead run's lock; each judged it dead, removed it and took it: the second
    removed the lock the first had just taken, and both wrote the job (7 times in 10 with 8
    processes). One judges and takes it over at a time now; the other is refused."""

    d = tmp_path / "r"
    j = schemas.Job(d, schemas.ROLLOUTS, {"samples": 2}, {"command": "test"})
    j.check()
    j.start()
    j.release()
    write_lock(d / "_lock.parquet", 999999)
    act = "j = schemas.Job(d, schemas.ROLLOUTS, {'samples': 2}, {'command': 'test'}); j.dir = d; j._lock(d)"
    # the first pauses once it has judged the dead holder, before it removes its lock
    first = _run(tmp_path, d, act, real="jobs._holder_alive", when="args[0] and args[0].get('pid') == 999999")
    outs = _both(tmp_path, first, _run(tmp_path, d, act))
    assert sorted(o.split()[0] for o in outs) == ["ok", "refused"], outs
    assert "another paced process" in next(o for o in outs if o.startswith("refused"))


def test_two_runs_finishing_one_cut_swap_at_once_both_succeed(tmp_path):
    """A swap cut between its renames is finished by the next run; two runs that found it at once
    both moved its folders: the second's rename of the replacement, gone, failed with a traceback.
    One finishes it at a time now; the other finds it done."""
    prov = {"command": "test"}
    work = tmp_path / "w"
    work.mkdir()
    for name, samples in (("x", 2), ("z", 5)):
        j = schemas.Job(work / name, schemas.ROLLOUTS, {"samples": samples}, prov)
        j.check()
        j.start()
        j.finish(0)
    os.replace(work / "x", work / ".r.replaced-999999")
    os.replace(work / "z", work / ".r.replacing")
    act = "schemas.Job(d, schemas.ROLLOUTS, {'samples': 5}, {'command': 'test'}, overwrite=True).check()"
    # the first pauses at its rename of the finished replacement into place
    first = _run(tmp_path, work / "r", act, real="os.replace", when="str(args[1]) == str(d)")
    outs = _both(tmp_path, first, _run(tmp_path, work / "r", act))
    assert all(o.startswith("ok") for o in outs), outs
    assert schemas.io.load_record(work / "r" / "_job.parquet")["options"] == {"samples": 5}
    assert sorted(p.name for p in work.iterdir()) == ["r"]


def test_a_removal_of_the_replaced_job_killed_at_any_point_is_finished_by_the_next_run(tmp_path, monkeypatch):
    """A tenth audit: `--overwrite` killed while it removed the old job (after the swap) left
    `.NAME.replaced-PID` for ever when its `_job.parquet` had gone first (the rest was no longer
    known for a job's), or when it was emptied and killed before its rmdir. The job's record now
    goes last, and an emptied one is removed."""

    prov = {"command": "test"}
    table = schemas.table_from_columns({c.name: [] for c in schemas.ROLLOUTS.columns}, schemas.ROLLOUTS)

    def finished(d, samples):
        j = schemas.Job(d, schemas.ROLLOUTS, {"samples": samples}, prov)
        j.check()
        j.start()
        for i in range(3):
            j.write(i, table)
        (d / "config.json").write_text("paced's")
        j.adopt(["config.json"])  # a file the job records as its own (a model's)
        j.finish(3)
        return j

    for cut in range(1, 9):  # killed at the cut-th removal; 7: all paced's removed, before the rmdir; 8: the same,
        work = tmp_path / f"w{cut}"  # with no file of the user's (then the folder is empty)
        work.mkdir()
        finished(work / "r", 5)
        j = finished(work / "x", 2)
        if cut < 8:
            (work / "x" / "config.json").write_text("the user's edit")  # paced's file, edited since: the user's
        else:
            (work / "x" / "config.json").unlink()
        old = work / ".r.replaced-999999"
        os.replace(work / "x", old)
        write_lock(old / "_lock.parquet", 999999)  # the swapper's, as the swap leaves it
        calls = []
        real_unlink = os.unlink

        def unlink(path, *args, **kwargs):
            calls.append(path)
            if len(calls) == cut:
                raise KeyboardInterrupt  # (the kill)
            return real_unlink(path, *args, **kwargs)

        monkeypatch.setattr(schemas.outputs.os, "unlink", unlink)
        with pytest.raises(KeyboardInterrupt) if cut < 7 else contextlib.nullcontext():
            schemas.outputs.remove_owned(old, j.own, keep=True)  # (keep: the kill comes before the rmdir)
        monkeypatch.undo()
        assert old.exists()
        schemas.Job(work / "r", schemas.ROLLOUTS, {"samples": 5}, prov).check()  # the next run of the new command
        left = sorted(p.name for p in work.iterdir())
        if cut < 8:
            assert left == ["r", "r.kept-999999"], (cut, left)
            assert [p.name for p in (work / "r.kept-999999").iterdir()] == ["config.json"]
            assert (work / "r.kept-999999" / "config.json").read_text() == "the user's edit"
        else:
            assert left == ["r"], (cut, left)


def test_an_emptied_checkpoint_folder_is_paced_s_and_removed(tmp_path):
    """A distill killed between a checkpoint's state.json and its folder's rmdir left an empty
    checkpoints/step-N that every rerun then kept as the user's ("files of yours among them are
    kept: checkpoints/step-1"), and that blocked --overwrite's own step-1 (renamed .kept-PID)."""
    from stages.training import checkpoints

    (tmp_path / "checkpoints" / "step-1").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-2").mkdir()
    (tmp_path / "checkpoints" / "step-2" / "mine.txt").write_text("a user's")
    assert checkpoints.clear(tmp_path) == ["checkpoints/step-2"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2"]


def test_a_file_s_temporary_left_by_a_killed_run_is_removed_when_it_is_written_again(tmp_path):
    """A run killed while it wrote a single-file output (weight's, eval's summary, snr's, a plot)
    left `.NAME.tmp-PID` beside it for ever. The next write of that file removes a dead local
    writer's; a live process's, or one changed in the last minute (another machine's writer may
    be at it), is kept."""

    from tests.test_weight import write_scores

    write_scores(tmp_path / "scores.parquet", {"q": [True, False]})
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old = time.time() - 3600
        stale, recent, alive, huge = (tmp_path / f".w.parquet.tmp-{p}" for p in (999999, 999998, live.pid, 10**20))
        other = tmp_path / ".x.parquet.tmp-999999"  # another file's
        users = tmp_path / ".w.parquet.tmp-2024"  # a user's file by that name (not Parquet)
        for f in (stale, recent, alive, huge, other, users):
            f.write_bytes(b"my notes, 2024" if f is users else b"PAR1 and half a file")
            if f is not recent:
                os.utime(f, (old, old))
        r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", tmp_path / "w.parquet")
        assert r.exit_code == 0, r.stderr
        assert not stale.exists() and not huge.exists()
        assert recent.exists() and alive.exists() and other.exists() and users.read_bytes() == b"my notes, 2024"
        assert not schemas.jobs.process_alive(10**20)  # (a lock or temporary naming no possible pid: no traceback)
    finally:
        live.kill()
        live.wait()


def test_a_swap_whose_aside_name_is_taken_is_refused_by_name(tmp_path):
    """The swap moves the old job aside to `.NAME.replaced-PID`; a folder there under this pid
    that paced cannot clear (another machine's swap, in containers that start paced with the same
    pid everywhere; a dead local one's is finished by the check) made the rename fail with a
    traceback after the whole run. It is refused now, naming the folder, holding no lock, and the
    finished replacement is put in place by the same command once the folder is gone."""
    prov = {"command": "test"}
    old = schemas.Job(tmp_path / "r", schemas.ROLLOUTS, {"samples": 2}, prov)
    old.check()
    old.start()
    old.finish(0)

    aside = tmp_path / f".r.replaced-{os.getpid()}"  # another machine's swap under this pid, under way
    other = schemas.Job(aside, schemas.ROLLOUTS, {"samples": 3}, prov)
    other.check()
    other.start()
    other.finish(0)
    write_lock(aside / "_lock.parquet", os.getpid(), "elsewhere")
    new = schemas.Job(tmp_path / "r", schemas.ROLLOUTS, {"samples": 5}, prov, overwrite=True)
    new.check()
    new.start()
    with pytest.raises(schemas.InputError, match=r"cannot move the old job aside .*move it away and rerun"):
        new.finish(0)
    assert schemas.io.load_record(tmp_path / "r" / "_job.parquet")["options"] == {"samples": 2}
    assert not (tmp_path / "r" / "_lock.parquet").exists()  # refused, it holds neither lock (another machine may rerun it)
    assert not (tmp_path / ".r.replacing" / "_lock.parquet").exists()
    shutil.move(aside, tmp_path / "kept")
    again = schemas.Job(tmp_path / "r", schemas.ROLLOUTS, {"samples": 5}, prov, overwrite=True)
    again.check()
    assert again.complete and schemas.io.load_record(tmp_path / "r" / "_job.parquet")["options"] == {"samples": 5}


def test_a_run_waiting_for_another_s_hold_on_a_job_folder_says_so(tmp_path, capfd):
    """A run that must wait while another process of the machine holds a job's folder (taking
    over a dead run's lock there, or removing a replaced job, gigabytes for teacher-logits) says
    what it waits for instead of hanging without a word, and goes on once the folder is free."""
    d = tmp_path / "job"
    d.mkdir()
    other = os.open(d, os.O_RDONLY)  # another open of the folder: its flock conflicts as another process's
    fcntl.flock(other, fcntl.LOCK_EX)
    entered = threading.Event()

    def run():
        with jobs._exclusive(d):
            entered.set()

    t = threading.Thread(target=run)
    t.start()
    try:
        assert not entered.wait(1.0)  # held by the other: it waits
        assert f"waiting for another paced process of this machine to finish with {d}" in capfd.readouterr().err
    finally:
        os.close(other)  # released
    t.join(30)
    assert entered.is_set()
    with jobs._exclusive(d):  # free: no note
        pass
    assert "waiting" not in capfd.readouterr().err
