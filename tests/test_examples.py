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


def with_quick_models(work, quick_models) -> None:
    """The session's reduced-mode models where the script trains them: it finds the same
    settings and reuses them (examples/train_tiny.py's cache), so they train once per session."""
    import shutil

    shutil.copytree(quick_models[0], work / "models")


def test_quickstart_reduced_end_to_end(tmp_path, quick_models):
    """examples/quickstart.sh in its reduced mode: every real command, tiny sizes, and the
    comparison table it prints read back against the artifacts it wrote."""
    import schemas

    with_quick_models(tmp_path, quick_models)
    r = run_script("quickstart.sh", tmp_path, PACED_QUICK=1)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("reused the finished model") == 2
    out = r.stdout
    # The artifacts of each step, valid by their schemas.
    scores = schemas.read(tmp_path / "scores", schemas.SCORES, option="--scores").frame
    assert scores.height == 300 * 4  # TRAIN problems x K samples
    paced = schemas.read(tmp_path / "weights_paced.parquet", schemas.WEIGHTS, option="--weights").frame
    uniform = schemas.read(tmp_path / "weights_uniform.parquet", schemas.WEIGHTS, option="--weights").frame
    frontier = paced.filter((pl.col("pass_rate") > 0) & (pl.col("pass_rate") < 1))
    assert frontier.height > 0, "the quick student must leave problems at the frontier"
    assert (paced.filter(pl.col("weight") > 0).height == frontier.height)
    assert (uniform["weight"] > 0).all()
    tl = schemas.read(tmp_path / "teacher_logits", schemas.TEACHER_LOGITS, option="--teacher-logits").frame
    assert tl["problem_id"].n_unique() == 300
    for name in ("uniform", "paced"):
        log = pl.read_parquet(tmp_path / f"student_{name}" / "train_log.parquet")
        assert log["step"].to_list() == list(range(1, 13))
        assert (tmp_path / f"student_{name}" / "model.safetensors").exists()
    # The table: one row per difficulty and the retention row, each cell as the summaries say.
    summaries = {m: pl.read_parquet(tmp_path / f"eval_{m}" / "summary.parquet") for m in ("base", "uniform", "paced")}
    assert "| benchmark | problems | base | uniform | paced |" in out
    for bench in [f"add-{d}d" for d in range(1, 6)] + ["copy"]:
        line = next(x for x in out.splitlines() if x.startswith(f"| {bench} "))
        for m, s in summaries.items():
            row = s.filter(pl.col("benchmark") == bench).row(0, named=True)
            assert f"{row['accuracy_mean'] * 100:.1f} ± {row['accuracy_std'] * 100:.1f}" in line, (bench, m, line)
        if bench == "copy":
            assert "(retention)" in line and "forgetting" in line
        else:
            assert f"| {bench} | 12 |" in line
    unsolved = paced.filter(pl.col("pass_rate") == 0).height
    assert f"{unsolved:,} unsolved (p = 0), {frontier.height:,} at the frontier" in out
    assert (tmp_path / "report.md").read_text().strip() == out.strip()


def test_reproduce_reduced_end_to_end(tmp_path, quick_models):
    """examples/reproduce.sh in its reduced mode: every method of both tracks, the sweep on the
    same rollouts and scores, `paced snr`, and the report with its tables and plots."""
    import json

    with_quick_models(tmp_path, quick_models)
    r = run_script("reproduce.sh", tmp_path, PACED_QUICK=1)
    assert r.returncode == 0, r.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    assert r.stdout.strip().splitlines()[-1] == str(tmp_path / "report.md")
    for label in ["base student", "forward KL", "hard-filter forward KL", "AKL", "Paced forward KL",
                  "Paced two-stage (FKL, then RKL)", "reverse KL", "hard-filter reverse KL", "Paced reverse KL"]:
        assert f"| {label} |" in report, label
    for png in ["accuracy.png", "training.png", "pass_rates.png", "snr.png"]:
        assert (tmp_path / png).stat().st_size > 1000 and f"({png})" in report
    # Each table row's cells agree with the evaluations it was made from (one seed: std 0).
    base = pl.read_parquet(tmp_path / "seed0" / "eval_base" / "summary.parquet").filter(~pl.col("retain"))
    base_row = next(x for x in report.splitlines() if x.startswith("| base student |"))
    for acc in base.sort("benchmark")["accuracy_mean"]:
        assert f"{acc * 100:.1f} ± 0.0" in base_row
    # The sweep: a 2 x 2 table, its weights computed from the same scores as the main runs.
    assert "| alpha \\ beta | 1 | 2 |" in report
    scores_fp = None
    for w in sorted((tmp_path / "sweep").glob("w_a*_b*.parquet")) + [tmp_path / "base" / "w_paced.parquet"]:
        import pyarrow.parquet as pq

        prov = json.loads(pq.read_metadata(w).metadata[b"paced.provenance"])
        fp = json.dumps(prov["inputs"], sort_keys=True)
        scores_fp = scores_fp or fp
        assert fp == scores_fp, w
    assert len(list((tmp_path / "sweep").glob("eval_a*_b*/summary.parquet"))) == 4
    # The second stage starts from the first and trains with reverse KL on fresh rollouts.
    two = json.loads((tmp_path / "seed0" / "paced_two_stage" / "_manifest.json").read_text())["provenance"]
    assert two["options"]["loss"] == "rkl" and two["options"]["init"].endswith("seed0/paced_fkl")
    # SNR: one row per bin, in the report.
    snr = pl.read_parquet(tmp_path / "snr.parquet")
    assert snr.height == 10 and "## Gradient SNR by pass rate" in report
