"""paced distill: one weight per problem, KL goes down, kill + --resume reproduces the curve."""

from __future__ import annotations


import math

import polars as pl
import pytest
import torch

from tests.conftest import kill_when, make_problems, manifest_record, paced, paced_subprocess


@pytest.fixture(scope="module")
def setup(tmp_path_factory, student_dir, teacher_dir):
    """Teacher-generated sequences, their teacher logits and per-problem weights."""
    d = tmp_path_factory.mktemp("distill")
    make_problems(8).write_parquet(d / "problems.parquet")
    assert paced("rollout", "--problems", d / "problems.parquet", "--model", teacher_dir, "--out", d / "seqs",
                 "--samples", "2", "--max-new-tokens", "12", "--seed", "5").exit_code == 0
    r = paced("teacher-logits", "--problems", d / "problems.parquet", "--sequences", d / "seqs", "--teacher", teacher_dir,
              "--out", d / "tl", "--top-k", "16")
    assert r.exit_code == 0, r.stderr
    weights = pl.DataFrame({
        "problem_id": [f"p{i}" for i in range(8)], "num_samples": [8] * 8,
        "num_correct": [0, 2, 4, 6, 8, 3, 5, 1], "pass_rate": [0.0, .25, .5, .75, 1.0, .375, .625, .125],
    }).with_columns(weight=(pl.col("pass_rate") * (1 - pl.col("pass_rate"))))
    weights = weights.with_columns(weight=pl.col("weight") * 8 / pl.col("weight").sum())
    weights.write_parquet(d / "weights.parquet")
    return d


ARGS = ["--lr", "3e-3", "--batch-size", "3", "--micro-batch-size", "2", "--schedule", "constant", "--seed", "1"]


def mean_kl(model_dir, tl_dir) -> float:
    """Token-mean forward KL of a model to the stored teacher distributions, over all sequences."""
    from stages.training import data as train_data, forward
    from transformers import AutoModelForCausalLM

    import schemas

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    frame = pl.read_parquet(f"{tl_dir}/part-*.parquet")
    w = pl.DataFrame({"problem_id": frame["problem_id"].unique(), "num_samples": 1, "num_correct": 0,
                      "pass_rate": 0.0, "weight": 1.0})
    wf = tl_dir.parent / "w_all.parquet"
    w.write_parquet(wf)
    data, _ = train_data.load_data(tl_dir, schemas.read(wf, schemas.WEIGHTS, option="--weights"), tl_dir.parent / "cache.arrow")
    rows = list(range(data.table.num_rows))
    batch = train_data.collate(data, rows, "cpu")
    with torch.no_grad():
        terms = forward.micro_batch_loss(model, batch, torch.ones(len(rows)), loss="fkl", mu=0.5, chunk_size=64,
                                         autocast=lambda: torch.autocast("cpu", enabled=False))
    return terms["fkl"].item() / batch["mask"].sum().item()


def test_distill_lowers_the_kl_and_writes_a_loadable_checkpoint(tmp_path, setup, student_dir, tokenizer):
    out = tmp_path / "student"
    r = paced("distill", "--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet",
              "--out", out, *ARGS, "--epochs", "12")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out)
    before, after = mean_kl(student_dir, setup / "tl"), mean_kl(out, setup / "tl")
    assert after < 0.5 * before, (before, after)
    log = pl.read_parquet(out / "train_log.parquet")
    # 6 problems have 0 < p < 1 (weight > 0): 2 steps per epoch of batch 3.
    assert log.height == 24 and log["problems"].to_list() == [3] * 24
    assert log["loss"].to_list() == log["fkl"].to_list()
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert not (out / "checkpoints").exists()
    assert "sequences skipped (weight 0)" in r.stderr and "4 of 16" in r.stderr
    # The output is an ordinary checkpoint: paced rollout loads it.
    assert paced("rollout", "--problems", setup / "problems.parquet", "--model", out, "--out", tmp_path / "ro",
                 "--samples", "1", "--max-new-tokens", "4").exit_code == 0


@pytest.mark.parametrize("loss", ["rkl", "akl"])
def test_other_losses_train(tmp_path, setup, student_dir, loss):
    out = tmp_path / loss
    r = paced("distill", "--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet",
              "--out", out, *ARGS, "--max-steps", "6", "--loss", loss)
    assert r.exit_code == 0, r.stderr
    log = pl.read_parquet(out / "train_log.parquet")
    assert log["loss"][-1] < log["loss"][0]
    if loss == "rkl":
        assert log["loss"].to_list() == log["rkl"].to_list()


def _grads(model, data, rows, coef):
    from stages.training import data as train_data, forward

    model.zero_grad()
    batch = train_data.collate(data, rows, "cpu")
    terms = forward.micro_batch_loss(model, batch, torch.tensor(coef), loss="fkl", mu=0.5, chunk_size=8,
                                     autocast=lambda: torch.autocast("cpu", enabled=False))
    terms["loss"].backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone()


def test_weight_zero_gives_zero_gradient_and_doubling_doubles(setup, student_dir):
    from stages.training import data as train_data
    from transformers import AutoModelForCausalLM

    import schemas

    w = schemas.read(setup / "weights.parquet", schemas.WEIGHTS, option="--weights")
    data, _ = train_data.load_data(setup / "tl", w, setup / "cache2.arrow")
    model = AutoModelForCausalLM.from_pretrained(student_dir)
    a, b = data.rows[data.problems[0]][0], data.rows[data.problems[1]][0]
    g_a = _grads(model, data, [a], [1.0])
    g_b = _grads(model, data, [b], [1.0])
    assert torch.allclose(_grads(model, data, [a, b], [1.0, 0.0]), g_a, atol=1e-6)  # b's weight 0: no gradient from b
    assert torch.allclose(_grads(model, data, [a, b], [1.0, 2.0]), g_a + 2 * g_b, atol=1e-5)


def test_kill_then_resume_reproduces_the_loss_curve(tmp_path, setup, student_dir):
    args = ["--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet",
            *ARGS, "--max-steps", "24", "--save-steps", "4"]
    ref = paced_subprocess("distill", *args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "killed"
    kill_when(out / "checkpoints" / "step-8" / "state.json", "distill", *args, "--out", out)
    assert not (out / "_manifest.parquet").exists()

    refused = paced_subprocess("distill", *args, "--out", out)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = paced_subprocess("distill", *args, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    a = pl.read_parquet(tmp_path / "ref" / "train_log.parquet")
    b = pl.read_parquet(out / "train_log.parquet")
    assert a["step"].to_list() == b["step"].to_list() == list(range(1, 25))
    for col in ("loss", "fkl", "rkl", "grad_norm", "lr"):
        assert b[col].to_list() == pytest.approx(a[col].to_list(), rel=1e-5, abs=1e-7), col
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "ref" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_a_damaged_checkpoint_resumes_from_the_one_before_and_gives_the_same_run(tmp_path, setup, student_dir):
    """The latest checkpoint cut short (a node lost before its writes reached the disk): --resume
    warns and resumes from the one before, to the uninterrupted run's weights; with every one
    damaged it exits 2 naming the checkpoint (each file's own error was a traceback, every rerun)."""
    args = ["--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet",
            *ARGS, "--max-steps", "12", "--save-steps", "4"]
    ref = paced_subprocess("distill", *args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    kill_when(out / "checkpoints" / "step-8" / "state.json", "distill", *args, "--out", out)
    step8, step4 = out / "checkpoints" / "step-8", out / "checkpoints" / "step-4"
    assert step4.is_dir() and step8.is_dir()
    with open(step8 / "optim.pt", "r+b") as f:
        f.truncate(100)
    resumed = paced("distill", *args, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert f"checkpoint {step8} is damaged" in resumed.stderr and f"resumed from {step4} (step 4 of 12)" in resumed.stderr
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "ref" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)

    again = tmp_path / "again"
    kill_when(again / "checkpoints" / "step-8" / "state.json", "distill", *args, "--out", again)
    (again / "checkpoints" / "step-8" / "state.json").write_text('{"step": 8, "fil')  # cut short
    (again / "checkpoints" / "step-4" / "model.safetensors").write_bytes(b"")
    r = paced("distill", *args, "--out", again, "--resume")
    assert r.exit_code == 2, r.stderr
    assert "checkpoint" in r.stderr and "step-4 is damaged" in r.stderr and "--overwrite" in r.stderr


def test_bad_input_exits_2(tmp_path, setup, student_dir, raw_model_dir):
    base = ["--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet"]
    cases = [
        (["--student", raw_model_dir, *base], "do not share a tokenizer"),
        (["--student", student_dir, *base, "--loss", "no-such-loss"], "--loss no-such-loss"),
        (["--student", student_dir, *base, "--lr", "-1"], "--lr -1.0"),
        (["--student", student_dir, "--teacher-logits", setup / "seqs", "--weights", setup / "weights.parquet"],
         "paced 'rollouts' artifact, but --teacher-logits expects"),
        (["--student", student_dir, *base, "--init", setup], "not a paced distill output"),
    ]
    for args, needle in cases:
        r = paced("distill", *args, "--out", tmp_path / "o")
        assert r.exit_code == 2, (args, r.stderr)
        assert needle in r.stderr, (needle, r.stderr)
        assert not (tmp_path / "o").exists()
    stale = tmp_path / "stale.parquet"
    pl.read_parquet(setup / "weights.parquet").filter(pl.col("problem_id") != "p1").write_parquet(stale)
    r = paced("distill", "--student", student_dir, "--teacher-logits", setup / "tl", "--weights", stale, "--out", tmp_path / "o2")
    assert r.exit_code == 2 and "no weight for 1 problem(s)" in r.stderr and "'p1'" in r.stderr


def test_gradient_checkpointing_gives_the_same_curve_and_lora_merges(tmp_path, setup, student_dir):
    base = ["--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet", *ARGS, "--max-steps", "3"]
    assert paced("distill", *base, "--out", tmp_path / "plain").exit_code == 0
    assert paced("distill", *base, "--out", tmp_path / "gc", "--gradient-checkpointing").exit_code == 0
    a = pl.read_parquet(tmp_path / "plain" / "train_log.parquet")["loss"].to_list()
    b = pl.read_parquet(tmp_path / "gc" / "train_log.parquet")["loss"].to_list()
    assert b == pytest.approx(a, rel=1e-5)

    r = paced("distill", *base, "--out", tmp_path / "lora", "--lora-r", "4")
    assert r.exit_code == 0, r.stderr
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    merged = load_file(tmp_path / "lora" / "model.safetensors")
    original = load_file(student_dir / "model.safetensors")
    assert set(merged) == set(original)  # adapters merged: an ordinary checkpoint
    assert any(not torch.equal(merged[k], original[k]) for k in original)
    AutoModelForCausalLM.from_pretrained(tmp_path / "lora")


def test_the_log_and_summary_say_which_problems_were_visited_and_the_step_weight(tmp_path, setup, student_dir):
    """Paced changes which problems are trained and how often, not only the loss scale: the log
    and summary say so (mean weight per step, distinct problems visited, never visited and why)."""
    out = tmp_path / "student"
    r = paced("distill", "--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet",
              "--out", out, *ARGS, "--max-steps", "3", "--save-steps", "0")
    assert r.exit_code == 0, r.stderr
    log = pl.read_parquet(out / "train_log.parquet")
    assert log["mean_weight"].to_list() == pytest.approx((log["weight_sum"] / log["problems"]).to_list())
    # 6 problems with weight > 0 (p0, p4 have p = 0 and 1), 3 per step: an epoch is 2 steps.
    assert log["visited"].to_list() == [3, 6, 6]
    assert "epochs per trained problem" in r.stderr and "1.50" in r.stderr
    assert "never visited" in r.stderr and "2 of 8" in r.stderr and "weight 0 2" in r.stderr
    assert "have no teacher logits" not in r.stderr  # the weight-0 problems are not owed any


def test_problems_weighted_without_teacher_logits_are_said(tmp_path, setup, student_dir):
    """Weights made again after teacher-logits --weights (a posterior estimate keeps every
    problem) can weigh problems that were never scored: distill trains the others and says so
    on stderr, naming them, where only a count in its summary said it before."""
    weights = pl.read_parquet(setup / "weights.parquet")
    extra = weights.head(2).with_columns(problem_id=pl.Series(["q-new-1", "q-new-2"]), weight=pl.lit(1.0))
    pl.concat([weights, extra]).write_parquet(tmp_path / "weights.parquet")
    r = paced("distill", "--student", student_dir, "--teacher-logits", setup / "tl", "--weights", tmp_path / "weights.parquet",
              "--out", tmp_path / "student", *ARGS, "--max-steps", "1", "--save-steps", "0")
    assert r.exit_code == 0, r.stderr
    assert "2 of its 8 problems with weight > 0 have no teacher logits" in r.stderr
    assert "'q-new-1', 'q-new-2'" in r.stderr and "rerun it with these" in r.stderr


def test_export_steps_save_loadable_models_equal_to_shorter_runs(tmp_path, setup, student_dir):
    """Budgets read off one run: with a constant schedule, the model exported at step 2 of a
    4-step run is the model of a 2-step run (the same prefix), and it loads with transformers."""
    from safetensors.torch import load_file

    base = ["distill", "--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet",
            "--lr", "3e-3", "--batch-size", "3", "--micro-batch-size", "3", "--schedule", "constant", "--seed", "1",
            "--save-steps", "0"]
    r = paced(*base, "--out", tmp_path / "long", "--max-steps", "4", "--export-steps", "2,1")
    assert r.exit_code == 0, r.stderr
    assert paced(*base, "--out", tmp_path / "short", "--max-steps", "2").exit_code == 0
    exported = load_file(tmp_path / "long" / "step-2" / "model.safetensors")
    short = load_file(tmp_path / "short" / "model.safetensors")
    assert exported.keys() == short.keys() and all(torch.equal(exported[k], short[k]) for k in short)
    assert (tmp_path / "long" / "step-1" / "tokenizer_config.json").exists()
    job = manifest_record(tmp_path / "long")
    assert {"step-1", "step-2"} <= set(job["files"])
    # An export carries the train log of its steps, as the short run's, so --init accepts it
    # (a two-stage schedule started from a budget of a longer run).
    cols = ["step", "loss", "fkl", "problems", "visited"]
    assert pl.read_parquet(tmp_path / "long" / "step-2" / "train_log.parquet").select(cols).equals(
        pl.read_parquet(tmp_path / "short" / "train_log.parquet").select(cols))
    r = paced(*base, "--out", tmp_path / "second", "--max-steps", "1", "--init", tmp_path / "long" / "step-2", "--loss", "rkl")
    assert r.exit_code == 0, r.stderr
    r = paced(*base, "--out", tmp_path / "bad", "--max-steps", "4", "--export-steps", "9")
    assert r.exit_code == 2 and "past the run's last step 4" in r.stderr and not (tmp_path / "bad").exists()
    r = paced(*base, "--out", tmp_path / "bad", "--max-steps", "4", "--export-steps", "two")
    assert r.exit_code == 2 and "--export-steps two" in r.stderr


def test_a_step_whose_loss_is_not_finite_stops_before_it_is_applied(tmp_path, setup, student_dir, monkeypatch):
    """A loss or gradient that overflows (weights too large, a learning rate too high, a bad
    half-precision step) stops distill with exit 2 before the optimizer applies it, instead of
    writing a model of NaN and exiting 0; the same command resumes from the last checkpoint."""
    from stages.training import data as train_data, forward

    real, real_problems = forward.micro_batch_loss, train_data.step_problems
    current = []

    def step_problems(data, seed, batch_size, step):
        current.append(step)
        return real_problems(data, seed, batch_size, step)

    def overflowing(*a, **k):
        terms = real(*a, **k)
        if current[-1] >= 3:  # from step 3: infinite
            terms = {name: v * float("inf") for name, v in terms.items()}
        return terms

    monkeypatch.setattr(train_data, "step_problems", step_problems)
    monkeypatch.setattr(forward, "micro_batch_loss", overflowing)
    out = tmp_path / "student"
    args = ("distill", "--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet",
            "--out", out, *ARGS, "--max-steps", "4", "--save-steps", "2")
    r = paced(*args)
    assert r.exit_code == 2, r.stderr
    assert "step 3: the loss (inf) or the gradient norm" in r.stderr and "not applied" in r.stderr
    assert "largest weight of its problems is" in r.stderr and "Traceback" not in r.stderr
    assert not (out / "model.safetensors").exists()  # no final model
    assert (out / "checkpoints" / "step-2").is_dir()  # the last checkpoint, before it
    monkeypatch.setattr(forward, "micro_batch_loss", real)
    monkeypatch.setattr(train_data, "step_problems", real_problems)
    r = paced(*args, "--resume")
    assert r.exit_code == 0, r.stderr
    log = pl.read_parquet(out / "train_log.parquet")
    assert log["step"].to_list() == [1, 2, 3, 4] and all(math.isfinite(x) for x in log["loss"].to_list())
