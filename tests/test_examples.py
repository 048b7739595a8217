"""Every example script runs end to end on tiny models, through the real commands."""

from __future__ import annotations

import os
import signal
import subprocess

import polars as pl
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, manifest_record, paced, script_env

EXAMPLES = ROOT / "examples"


def run_script(name: str, work, timeout: float = 900, **env) -> subprocess.CompletedProcess:
    """Run examples/NAME in its own process group; past `timeout`, the whole group is killed (the
    script and every paced job it started, so none is left running) and the test fails."""
    e = script_env(WORK=work, PACED_NO_PROGRESS=1, **env)
    with subprocess.Popen(["bash", str(EXAMPLES / name)], cwd=ROOT, env=e, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"examples/{name} ran past {timeout} s; its process group was killed. The end of stderr:\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_pipeline_script(tmp_path):
    r = run_script("pipeline.sh", tmp_path)
    assert r.returncode == 0, r.stderr
    weights = pl.read_parquet(tmp_path / "weights.parquet")
    assert weights.height == 12 and weights["num_samples"].to_list() == [8] * 12
    assert (tmp_path / "weights.png").exists()
    assert "shape: (12, 5)" in r.stdout  # the script prints the weights table


def test_paced_many_runs_commands_in_one_process_and_stops_at_the_first_failure(tmp_path, chain):
    """examples/paced_many.py: each line a paced command (comments and blank lines skipped),
    the same artifacts as `paced` writes; the first failing command stops the batch with its
    exit code and names it."""
    import sys

    scores = chain / "scores"
    batch = tmp_path / "batch.txt"
    batch.write_text(f"# two weightings\n\nweight --scores {scores} --out {tmp_path / 'a.parquet'} --alpha 1 --beta 1\n"
                     f"weight --scores {scores} --out {tmp_path / 'b.parquet'} --scheme uniform\n")
    r = subprocess.run([sys.executable, str(EXAMPLES / "paced_many.py"), str(batch)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    single = tmp_path / "single.parquet"
    assert paced("weight", "--scores", scores, "--out", single, "--alpha", "1", "--beta", "1").exit_code == 0
    assert pl.read_parquet(tmp_path / "a.parquet").equals(pl.read_parquet(single))
    assert (pl.read_parquet(tmp_path / "b.parquet")["weight"] == 1.0).all()
    batch.write_text(f"weight --scores {tmp_path / 'missing'} --out {tmp_path / 'c.parquet'}\n"
                     f"weight --scores {scores} --out {tmp_path / 'd.parquet'}\n")
    r = subprocess.run([sys.executable, str(EXAMPLES / "paced_many.py"), str(batch)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "command 1 of 2 failed (exit 2): paced weight --scores" in r.stderr and "no such file" in r.stdout + r.stderr
    assert not (tmp_path / "d.parquet").exists()


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
    prov = manifest_record(final)["provenance"]
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


def test_sweep_reduced_end_to_end(tmp_path, quick_models):
    """examples/sweep.sh in its reduced mode, on a 2 x 2 grid: the shared work done once (one
    teacher-logits job over the support, the problems with 0 < p < 1), one weights file, distill
    run and evaluation per setting, and one table whose accuracies are the evaluations'."""
    import schemas

    with_quick_models(tmp_path, quick_models)
    r = run_script("sweep.sh", tmp_path, PACED_QUICK=1, GRID="1 2")
    assert r.returncode == 0, r.stderr[-3000:]
    rates = schemas.read(tmp_path / "support.parquet", schemas.WEIGHTS, option="--weights").frame
    support = set(rates.filter((pl.col("pass_rate") > 0) & (pl.col("pass_rate") < 1))["problem_id"])
    assert support, "the quick student must leave problems at the frontier"
    tl = pl.read_parquet(tmp_path / "teacher_logits" / "part-*.parquet", columns=["problem_id"])
    assert set(tl["problem_id"]) == support
    assert "alpha/beta sweep: 4 settings" in r.stdout and "shape: (4," in r.stdout
    for a, b in [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]:
        w = pl.read_parquet(tmp_path / f"w_a{a}_b{b}.parquet")
        assert set(w.filter(pl.col("weight") > 0)["problem_id"]) == support
        opts = manifest_record(tmp_path / f"student_a{a}_b{b}")["provenance"]["options"]
        assert opts["max_steps"] == 8 and opts["weights"].endswith(f"w_a{a}_b{b}.parquet")
        summary = pl.read_parquet(tmp_path / f"eval_a{a}_b{b}" / "summary.parquet")
        row = pl.read_parquet(tmp_path / "sweep.parquet").filter((pl.col("alpha") == float(a)) & (pl.col("beta") == float(b)))
        assert row.height == 1 and row["trained"].item() == len(support)
        for bench, acc in zip(summary["benchmark"], summary["accuracy_mean"]):
            assert row[bench].item() == pytest.approx(100 * acc)


def test_quickstart_stops_the_step_beside_a_failed_one(tmp_path):
    """The teacher's lane fails at once (its --out holds a directory train_tiny did not make); the
    student trains beside it: the script fails naming the step and its log, and stops the
    student's training rather than leave it running (its model is never finished)."""
    (tmp_path / "models" / "teacher").mkdir(parents=True)
    r = run_script("quickstart.sh", tmp_path, PACED_QUICK=1)
    assert r.returncode != 0
    assert "quickstart.sh: teacher failed (exit 1)" in r.stderr and "was not made by this script" in r.stderr
    assert not (tmp_path / "models" / "student").exists()
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert left == [], left


def test_quickstart_reduced_end_to_end(tmp_path, quick_models):
    """examples/quickstart.sh in its reduced mode: every real command, tiny sizes, and the
    comparison table it prints read back against the artifacts it wrote."""
    import schemas

    with_quick_models(tmp_path, quick_models)
    r = run_script("quickstart.sh", tmp_path, PACED_QUICK=1)
    assert r.returncode == 0, r.stderr[-3000:]
    # Steps that run side by side log to files; the terminal gets one line per step.
    logs = tmp_path / "logs"
    assert all("reused the finished model" in (logs / f"{m}.log").read_text() for m in ("teacher", "student"))
    assert "━" not in r.stderr and "Traceback" not in r.stderr
    assert [line.split("] ", 1)[1][:3] for line in r.stderr.splitlines() if line.startswith("[")] == ["1-3", "3. ", "4. ", "5. "]
    assert (logs / "distill_paced.log").read_text().count("distill summary") == 1
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
    # Budgets read off one run: the exports and the final model, each evaluated greedily.
    for name in ("uniform", "paced"):
        for b in (4, 8):
            assert (tmp_path / f"student_{name}" / f"step-{b}" / "model.safetensors").exists()
    # The table: one row per model and budget, each cell as its evaluation's summary says.
    names = ["base"] + [f"{m}_{b}" for m in ("uniform", "paced") for b in (4, 8, 12)]
    summaries = {m: pl.read_parquet(tmp_path / f"eval_{m}" / "summary.parquet") for m in names}
    assert "| model | steps | add-1d | add-2d | add-3d | add-4d | add-5d | all | copy (retention) |" in out
    for m, s in summaries.items():
        method, _, steps = m.rpartition("_") if m != "base" else ("base", "", "-")
        line = next(x for x in out.splitlines() if x.startswith(f"| {method} | {steps} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        held = s.filter(~pl.col("retain")).sort("benchmark")
        assert cells[2:7] == [f"{a * 100:.1f}" for a in held["accuracy_mean"]], (m, line)
        assert cells[7] == f"{(held['accuracy_mean'] * held['problems']).sum() / held['problems'].sum() * 100:.1f}"
        copy = s.filter(pl.col("retain")).row(0, named=True)
        assert cells[8].startswith(f"{copy['accuracy_mean'] * 100:.1f}")
        assert ("forgetting" in cells[8]) == (m != "base")
    assert "One seed shows what one student did" in out
    unsolved = paced.filter(pl.col("pass_rate") == 0).height
    assert f"{unsolved:,} unsolved (p = 0), {frontier.height:,} at the frontier" in out
    assert (tmp_path / "report.md").read_text().strip() == out.strip()


def test_reproduce_reduced_end_to_end(tmp_path, quick_models):
    """examples/reproduce.sh in its reduced mode: both regimes, every method at every budget,
    pass rates re-estimated between rounds, `paced snr` per regime, and the report: the primary
    comparison named first, the preconditions, and cells that agree with the evaluations."""
    import shutil

    for where, name in [("teacher", "teacher"), ("students/seed0", "student")]:
        shutil.copytree(quick_models[0] / name, tmp_path / where / name)  # the same settings: reused
    r = run_script("reproduce.sh", tmp_path, timeout=1800, PACED_QUICK=1)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == str(tmp_path / "report.md")
    report = (tmp_path / "report.md").read_text()
    order = ["## 0. The primary comparison, named before the run", "## 1. Preconditions", "## 2. The primary result",
             "## 3. Every cell", "## 4. What each weighting did", "## 5. Gradient SNR"]
    assert [report.index(h) for h in order] == sorted(report.index(h) for h in order)
    assert "Regime **capacity**, Paced FKL − uniform FKL" in report
    assert report.count("So this regime **is") == 2  # a verdict for each regime
    # The primary table: each seed's headline is the share of its test problems answered right.
    for seed in (0, 1):
        got = {}
        for m in ("paced", "uniform"):
            res = pl.read_parquet(tmp_path / "capacity" / f"seed{seed}" / f"eval_{m}_8" / "results")
            got[m] = res.filter(pl.col("benchmark") != "copy")["correct"].mean() * 100
        row = f"| {seed} | {got['paced']:.1f} | {got['uniform']:.1f} | {got['paced'] - got['uniform']:+.1f} |"
        assert row in report, row
    # Every method at every budget, in both regimes.
    for regime in ("capacity", "learnable"):
        for m in ("uniform", "hard", "akl", "paced", "paced_post", "paced_re"):
            for b in (4, 8):
                assert (tmp_path / regime / "seed0" / f"eval_{m}_{b}" / "summary.parquet").exists(), (regime, m, b)
        # The two-stage schedule: at the longest budget only (before its half it is paced).
        assert (tmp_path / regime / "seed0" / "eval_paced_2s_8" / "summary.parquet").exists()
        assert not (tmp_path / regime / "seed0" / "eval_paced_2s_4").exists()
    for label in ["uniform FKL", "hard filter FKL", "AKL", "Paced FKL", "Paced FKL, posterior weights",
                  "Paced FKL → RKL (two-stage)", "Paced FKL, re-estimated"]:
        assert report.count(f"| 8 | {label} |") == 2, label
    # Posterior weights: the estimator the weights artifact records.
    meta = pq.read_schema(tmp_path / "capacity" / "seed0" / "base" / "w_post.parquet").metadata
    assert b"posterior" in b"".join(meta.values())
    # The two-stage schedule: stage 2 is reverse KL from the paced run's export at STEPS/2, on the
    # teacher's logits of that student's rollouts, weighted by its re-estimated pass rates.
    two = tmp_path / "capacity" / "seed0" / "paced_2s"
    if (two / "stage2" / "_manifest.parquet").exists():
        opts = manifest_record(two / "stage2")["provenance"]["options"]
        assert opts["loss"] == "rkl" and opts["init"].endswith("paced/step-4") and opts["max_steps"] == 4
        assert opts["teacher_logits"].endswith("paced_2s/teacher_logits") and opts["weights"].endswith("rates/w_paced.parquet")
    # Re-estimated Paced: round 1 is paced's run up to STEPS/ROUNDS (its export, not a second run of
    # the same thing); round 2 starts from it, weighted by the pass rates of that model.
    s0 = tmp_path / "capacity" / "seed0" / "paced_re"
    assert not (s0 / "round1").exists()
    if (s0 / "round2" / "_manifest.parquet").exists():
        opts = manifest_record(s0 / "round2")["provenance"]["options"]
        assert opts["init"].endswith("paced/step-4") and opts["weights"].endswith("rates2/w_paced.parquet")
    rollouts = manifest_record(s0 / "rates2" / "rollouts")["provenance"]["options"]
    assert rollouts["model"].endswith("paced/step-4")
    seed0 = tmp_path / "capacity" / "seed0"
    assert pl.read_parquet(seed0 / "eval_paced_re_4" / "results").equals(pl.read_parquet(seed0 / "eval_paced_4" / "results"))
    for regime in ("capacity", "learnable"):
        assert pl.read_parquet(tmp_path / regime / "snr" / "snr.parquet").height == 10
        assert (tmp_path / f"snr_{regime}.png").stat().st_size > 1000 and f"(snr_{regime}.png)" in report
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    # The reduced run's teacher reads the reference (TEACHER_CONTEXT=reference): its answers,
    # its evaluation and its logits are made with it; the students' are not.
    for job in ("teacher_rollouts", "teacher_logits"):
        assert manifest_record(tmp_path / "shared" / job)["provenance"]["options"]["context"] == "reference", job
    assert manifest_record(tmp_path / "capacity" / "seed0" / "base" / "rollouts")["provenance"]["options"]["context"] == "none"
    assert "reading each problem's reference solution (`--context reference`" in report
    # One student per seed, shared by the regimes; the learnable regime trains and is tested on
    # the problems of 1-3 digits only, with the teacher's logits on those.
    for regime in ("capacity", "learnable"):
        assert (tmp_path / regime / "seed0" / "models").resolve() == (tmp_path / "students" / "seed0").resolve()
    learn = tmp_path / "learnable" / "seed0"
    for path in (learn / "base" / "w_paced.parquet", learn / "test_rates" / "w_uniform.parquet"):
        digits = pl.read_parquet(path)["problem_id"].str.extract(r"-(\d)d-").cast(int)
        assert digits.max() == 3 and digits.min() == 1, path
    assert manifest_record(learn / "uniform")["provenance"]["options"]["teacher_logits"].endswith("reach3_teacher_logits")
    assert "problems of 1-3 digits" in report and "problems of 1-5 digits" in report
    # A rerun of the finished map recomputes nothing and reports the wall time of both invocations.
    done = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("_manifest.parquet")}
    r = run_script("reproduce.sh", tmp_path, timeout=600, PACED_QUICK=1)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("_manifest.parquet")} == done
    assert len((tmp_path / "wall_seconds").read_text().split()) == 2
    assert "of wall time over 2 invocations (resumed or repeated)" in (tmp_path / "report.md").read_text()


def test_report_statistics():
    """The t quantiles and paired intervals of examples/report.py against textbook values."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("report", EXAMPLES / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    for q, df, want in [(0.975, 5, 2.5706), (0.975, 2, 4.3027), (0.80, 5, 0.9195), (0.975, 30, 2.0423), (0.80, 1, 1.3764)]:
        assert abs(report.t_quantile(q, df) - want) < 5e-4, (q, df)
    st = report.paired([0.01, 0.03, -0.02, 0.04, 0.00, 0.02])
    sd = 0.0216025  # statistics.stdev of the six values
    assert abs(st["mean"] - 0.013333) < 1e-6 and abs(st["sd"] - sd) < 1e-6
    half = 2.5706 * sd / 6 ** 0.5
    assert abs(st["lo"] - (0.013333 - half)) < 1e-4 and abs(st["hi"] - (0.013333 + half)) < 1e-4
    assert abs(st["mde"] - (2.5706 + 0.9195) * sd / 6 ** 0.5) < 1e-4
    assert report.paired([0.1])["lo"] is None
    # Far in the tail too (a bisection bracketed at +-60 stopped at 60), and the t CDF is exact
    # where it has a closed form: df = 1 is Cauchy, 1/2 + atan(x) / pi.
    import math

    from stages.stats import t_cdf

    assert abs(report.t_quantile(0.995, 1) - 63.6567) < 5e-4 and abs(report.t_quantile(0.9995, 1) - 636.6192) < 5e-3
    assert abs(report.t_quantile(0.0005, 2) + 31.5991) < 5e-3
    for x in (-300.0, -2.0, 0.0, 0.5, 40.0, 1e4):
        assert abs(t_cdf(x, 1) - (0.5 + math.atan(x) / math.pi)) < 1e-12
    with pytest.raises(ValueError):
        report.t_quantile(1.0, 3)
