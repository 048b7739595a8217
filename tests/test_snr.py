"""paced snr: per-problem gradient SNR over each problem's rollouts, averaged per pass-rate bin
(Figure 3), by hand and against per-rollout gradients computed with torch; the pooled
estimator; end to end through the command line."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import make_problems, paced

# Pass rates with a spread over 10 bins: bin 0 holds p0, p1 (p = 0, weight 0), bin 1 holds p2,
# bin 5 holds p3, p4, p5, bin 9 holds p6 (0.9) and p7 (p = 1, weight 0); the rest are empty.
PASS = [0.0, 0.0, 0.1, 0.5, 0.5, 0.55, 0.9, 1.0]
K = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory, student_dir, teacher_dir):
    """The student's K = 3 rollouts per problem and the teacher's logits on them (no
    --weights), the same with p2 cut to one rollout, and pass rates."""
    d = tmp_path_factory.mktemp("snr")
    make_problems(8).write_parquet(d / "problems.parquet")
    r = paced("rollout", "--problems", d / "problems.parquet", "--model", student_dir, "--out", d / "rollouts",
              "--samples", str(K), "--max-new-tokens", "10", "--seed", "3")
    assert r.exit_code == 0, r.stderr
    r = paced("teacher-logits", "--problems", d / "problems.parquet", "--sequences", d / "rollouts", "--teacher", teacher_dir,
              "--out", d / "tl", "--top-k", "16")
    assert r.exit_code == 0, r.stderr
    whole = pq.read_table(sorted((d / "tl").glob("part-*.parquet")))
    # A user's file: p2 keeps one rollout, every problem one (sample_index 0) in the other.
    keep = pc.or_(pc.not_equal(whole["problem_id"], "p2"), pc.equal(whole["sample_index"], 0))
    pq.write_table(whole.filter(keep), d / "tl_p2_once.parquet")
    pq.write_table(whole.filter(pc.equal(whole["sample_index"], 0)), d / "tl_once.parquet")
    pl.DataFrame({
        "problem_id": [f"p{i}" for i in range(8)], "num_samples": [20] * 8,
        "num_correct": [round(p * 20) for p in PASS], "pass_rate": PASS,
    }).with_columns(weight=pl.col("pass_rate") * (1 - pl.col("pass_rate"))).write_parquet(d / "weights.parquet")
    return d


def brute_force_gradient(model, head, row: dict) -> torch.Tensor:
    """d/d head of one sequence's mean token forward KL on the stored top-k + tail, written out."""
    head.grad = None
    prompt, resp = row["prompt_token_ids"], row["token_ids"]
    logits = model(input_ids=torch.tensor([prompt + resp])).logits[0, len(prompt) - 1 : len(prompt) + len(resp) - 1]
    student = torch.log_softmax(logits.double(), -1)
    s_top = student.gather(-1, torch.tensor(row["topk_ids"]))
    s = torch.cat([s_top, torch.log1p(-s_top.exp().sum(-1, keepdim=True))], -1)
    t = torch.cat([torch.tensor(row["topk_logprobs"], dtype=torch.float64),
                   torch.tensor(row["tail_logprob"], dtype=torch.float64)[:, None]], -1)
    t = torch.log_softmax(t, -1)  # what the loss does against float16 rounding
    ((t.exp() * (t - s)).sum() / len(resp)).backward()
    g, head.grad = head.grad, None
    return g


def tiny_student(student_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.get_output_embeddings().weight
    head.requires_grad_(True)
    return model, head


def load_all(setup, name="tl"):
    import dataclasses

    import schemas
    from stages.training import data as train_data

    w = schemas.read(setup / "weights.parquet", schemas.WEIGHTS, option="--weights")
    every = dataclasses.replace(w, frame=w.frame.with_columns(weight=pl.lit(1.0)))
    data, _ = train_data.load_data(setup / name, every, setup / f"{name}-cache.arrow")
    return data


def run_snr(setup, student_dir, out, *extra, tl="tl"):
    return paced("snr", "--student", student_dir, "--teacher-logits", setup / tl, "--weights", setup / "weights.parquet",
                 "--out", out, *extra)


# ---------------------------------------------------------------------------------------
# The statistics alone


def test_problem_snr_matches_a_hand_computation():
    from stages.snr import problem_snr

    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    # mean [1, 0]: ||mean||^2 = 1; tr Cov = (1 + 5 + 5 - 3 * 1) / (3 - 1) = 4 -> SNR 0.25
    r = problem_snr(iter([t(1, 0), t(1, 2), t(1, -2)]))
    assert r["num_rollouts"] == 3 and r["status"] == "ok"
    assert r["signal"] == pytest.approx(1.0) and r["noise"] == pytest.approx(4.0)
    assert r["snr"] == pytest.approx(0.25)
    # ||mean||^2 = 1 holds tr Cov / K = 4 / 3 of noise: 0.25 - 1/3 (the signal is below the noise)
    assert r["snr_debiased"] == pytest.approx(0.25 - 1 / 3)

    one = problem_snr(iter([t(7, 7)]))
    assert one["snr"] is None and one["status"] == "fewer than 2 rollouts" and one["noise"] is None
    same = problem_snr(iter([t(1, 2), t(1, 2), t(1, 2)]))
    assert same["snr"] is None and same["status"] == "identical gradients (tr Cov = 0)"
    with pytest.raises(RuntimeError, match="not finite"):
        problem_snr(iter([t(1, 2), t(float("nan"), 0)]))


def test_streaming_statistics_equal_the_textbook_formula():
    from stages.snr import pooled_bin_stats, problem_snr

    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, 7, generator=g, dtype=torch.float64) + 3.0 for _ in range(9)]
    stacked = torch.stack([x.flatten() for x in grads])
    mean = stacked.mean(0)
    tr_cov = stacked.var(0, unbiased=True).sum()  # divides by K - 1
    expect = float(mean @ mean / tr_cov)
    # Moments consumes the tensors it is given (in place): hand each function its own copies.
    assert problem_snr(x.clone() for x in grads)["snr"] == pytest.approx(expect, rel=1e-12)
    rows = pooled_bin_stats(((0.5, x.clone()) for x in grads), 4)
    assert rows[2]["problems"] == 9
    assert rows[2]["snr"] == pytest.approx(expect, rel=1e-12)
    assert rows[2]["snr_debiased"] == pytest.approx(expect - 1 / 9, rel=1e-12)


def test_ten_rollouts_never_hold_ten_gradients():
    """O(one parameter): folding K = 10 gradients keeps the running mean (the first gradient's
    memory, taken over) and the gradient at hand alive, never the earlier ones. Tracked by
    their storage, which outlives the tensor objects it is viewed through."""
    from stages.snr import problem_snr

    alive: list[weakref.ref] = []
    most = 0

    def grads():
        nonlocal most
        for k in range(10):
            gc.collect()
            most = max(most, sum(r() is not None for r in alive))
            g = torch.full((1000,), float(k % 3), dtype=torch.float64)
            alive.append(weakref.ref(g.untyped_storage()))
            yield g
            del g

    r = problem_snr(grads())
    assert r["num_rollouts"] == 10 and r["status"] == "ok"
    assert most == 1  # before each new gradient: only the first, now the running mean
    gc.collect()
    assert sum(x() is not None for x in alive) == 0


def test_per_problem_bin_means_normalisation_and_bootstrap():
    from stages.snr import bootstrap_interval, per_problem_bin_stats

    measured = [
        {"pass_rate": 0.05, "snr": 1.0, "snr_debiased": 1.0 - 1 / 4, "status": "ok"},
        {"pass_rate": 0.1, "snr": 3.0, "snr_debiased": 3.0 - 1 / 4, "status": "ok"},
        {"pass_rate": 0.5, "snr": 8.0, "snr_debiased": 8.0 - 1 / 2, "status": "ok"},
        {"pass_rate": 0.6, "snr": 2.0, "snr_debiased": 2.0 - 1 / 4, "status": "ok"},
        {"pass_rate": 0.65, "snr": 5.0, "snr_debiased": 5.0 - 1 / 4, "status": "ok"},
        {"pass_rate": 0.7, "snr": None, "snr_debiased": None, "status": "identical gradients (tr Cov = 0)"},
        {"pass_rate": 1.0, "snr": None, "snr_debiased": None, "status": "identical gradients (tr Cov = 0)"},
    ]
    rows = per_problem_bin_stats(measured, 3, seed=7)
    assert [(r["lo"], r["hi"]) for r in rows] == [(0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1)]
    assert [r["problems"] for r in rows] == [2, 3, 0]  # problems with an SNR only
    assert [r["snr"] for r in rows] == [pytest.approx(2.0), pytest.approx(5.0), None]
    assert rows[1]["snr_debiased"] == pytest.approx((7.5 + 1.75 + 4.75) / 3)  # mean of SNR_i - 1/K_i
    assert rows[1]["mean_pass_rate"] == pytest.approx((0.5 + 0.6 + 0.65) / 3)
    assert [r["snr_normalized"] for r in rows] == [pytest.approx(0.4), pytest.approx(1.0), None]
    assert [r["status"] for r in rows] == ["ok", "ok", "no problem with an SNR"]
    assert {r["estimator"] for r in rows} == {"per-problem"}
    for r, values in zip(rows[:2], ([1.0, 3.0], [8.0, 2.0, 5.0])):
        assert r["snr_ci_low"] <= r["snr"] <= r["snr_ci_high"]
        assert min(values) <= r["snr_ci_low"] < r["snr_ci_high"] <= max(values)
        assert (r["snr_ci_low"], r["snr_ci_high"]) == bootstrap_interval(np.array(values), [7, r["bin"]])
    assert rows[2]["snr_ci_low"] is None and rows[2]["snr_ci_high"] is None
    assert per_problem_bin_stats(measured, 3, seed=7) == rows  # seeded
    # One problem in a bin: its mean, but no interval.
    lone = per_problem_bin_stats(measured[2:3], 2, seed=0)
    assert lone[1]["snr"] == 8.0 and lone[1]["snr_ci_low"] is None and lone[0]["status"] == "empty"

    # The percentile bootstrap, against numpy written out.
    x = np.random.default_rng(0).gamma(0.5, size=40)
    lo, hi = bootstrap_interval(x, 3, resamples=500)
    rng = np.random.default_rng(3)
    means = x[rng.integers(0, 40, size=(500, 40))].mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), rel=1e-12)
    assert lo < x.mean() < hi
    # Seeded: the same seed, the same interval; another seed, another one.
    assert bootstrap_interval(x, 3, resamples=500) == (lo, hi) and bootstrap_interval(x, 4, resamples=500) != (lo, hi)


def kernel_rows(pass_rates, snr_of, *, k=4, seed=0):
    """Per-bin rows (per_problem_bin_stats, 10 bins) of problems whose SNR_i - 1/K follows snr_of(p)."""
    from stages.snr import per_problem_bin_stats

    measured = [{"pass_rate": p, "snr": snr_of(p) + 1 / k, "snr_debiased": snr_of(p), "status": "ok"} for p in pass_rates]
    return per_problem_bin_stats(measured, 10, seed)


def test_fit_kernel_recovers_an_exact_kernel_and_solves_the_weighted_normal_equations():
    from stages.snr import describe_fit, fit_kernel
    from stages.stats import t_quantile

    # Two problems per bin, SNR - 1/K = 3 p^1.5 (1-p)^0.7 times a factor that differs between
    # the two (so each bin has a bootstrap interval) and is the same in every bin (its mean is
    # one constant): the fit gives alpha 1.5 and beta 0.7 exactly. Bin 0 (p = 0) is left out.
    ps = [0.0, 0.0] + [x for b in range(1, 10) for x in (b / 10 + 0.02, b / 10 + 0.06)]
    factor = {0: 0.5, 1: 1.5}
    snr_of = lambda p: 3 * p**1.5 * (1 - p) ** 0.7 * factor[round((p * 100) % 10) > 3]  # noqa: E731
    rows = kernel_rows(ps, snr_of)
    fit = fit_kernel(rows)
    assert fit["status"] == "ok" and fit["bins_used"] == 9 and fit["dof"] == 6
    # The bins' mean p is not where the mean SNR is exact for a curved kernel: compare with the
    # fit of the bin means written out (unweighted residuals are not zero, so use the formula).
    use = [r for r in rows if r["status"] == "ok" and 0 < r["mean_pass_rate"] < 1]
    p = np.array([r["mean_pass_rate"] for r in use])
    y = np.log([r["snr_debiased"] for r in use])
    se = np.array([(r["snr_ci_high"] - r["snr_ci_low"]) / (2 * 1.959964) for r in use])
    w = (np.exp(y) / se) ** 2
    x = np.stack([np.ones_like(p), np.log(p), np.log(1 - p)], axis=1)
    coef = np.linalg.solve(x.T @ np.diag(w) @ x, x.T @ np.diag(w) @ y)
    assert [fit["log_scale"], fit["alpha"], fit["beta"]] == pytest.approx(list(coef), rel=1e-9)
    r = y - x @ coef
    s2 = (w * r * r).sum() / 6
    half = t_quantile(0.975, 6) * np.sqrt(np.diag(s2 * np.linalg.inv(x.T @ np.diag(w) @ x)))
    assert fit["alpha_ci"] == pytest.approx([coef[1] - half[1], coef[1] + half[1]], rel=1e-9)
    assert fit["beta_ci"] == pytest.approx([coef[2] - half[2], coef[2] + half[2]], rel=1e-9)
    assert abs(fit["alpha"] - 1.5) < 0.1 and abs(fit["beta"] - 0.7) < 0.1
    assert describe_fit(fit).startswith(f"alpha {fit['alpha']:.2f} [") and "6 dof" in describe_fit(fit)

    # Points exactly on a kernel: alpha and beta exact, intervals of zero width.
    exact = [dict(r, mean_pass_rate=q, snr_debiased=3 * q**1.5 * (1 - q) ** 0.7) for r, q in zip(use, p)]
    fit = fit_kernel(exact)
    assert (fit["alpha"], fit["beta"]) == (pytest.approx(1.5), pytest.approx(0.7))
    assert fit["alpha_ci"] == pytest.approx([1.5, 1.5], abs=1e-6)
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=5e-4)

    # Three usable bins: an exact fit, no interval; fewer: no fit, and why.
    assert fit_kernel(exact[:3])["dof"] == 0 and fit_kernel(exact[:3])["alpha_ci"] is None
    assert "no interval" in describe_fit(fit_kernel(exact[:3]))
    two = fit_kernel(exact[:2] + [dict(exact[2], snr_debiased=-0.1)])  # SNR under the 1/K floor: out
    assert two["status"].startswith("too few bins: 2") and two["alpha"] is None
    assert describe_fit(two).startswith("no fit (too few bins")
    # Pooled rows (no interval): equal weights.
    pooled = fit_kernel([dict(r, estimator="pooled", snr_ci_low=None, snr_ci_high=None) for r in exact])
    assert pooled["weighting"] == "equal" and pooled["alpha"] == pytest.approx(1.5)


def test_the_summary_counts_identical_gradient_problems_per_bin():
    """Problems whose K rollouts give one gradient have an SNR without bound that the bin means
    leave out: the summary says how many, and in which bins (the last one closed: it holds p = 1)."""
    from stages.snr import identical_by_bin

    same = "identical gradients (tr Cov = 0)"
    rows = [{"bin": 9, "status": same}, {"bin": 9, "status": same}, {"bin": 2, "status": same}, {"bin": 2, "status": "ok"}]
    assert identical_by_bin(rows, 10) == "3 (in [0.2, 0.3): 1, in [0.9, 1]: 2; left out of those bins' means)"
    assert identical_by_bin(rows[3:], 10) == "0"


def test_pooled_bin_stats_matches_a_hand_computation():
    from stages.snr import pooled_bin_stats

    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    items = [
        # bin 0 of 3: mean [1, 0], ||mean||^2 = 1, tr Cov = (1 + 5 + 5 - 3 * 1) / 2 = 4 -> SNR 0.25
        (0.0, t(1, 0)), (0.1, t(1, 2)), (0.3, t(1, -2)),
        # bin 1: one problem
        (0.5, t(7, 7)),
        # bin 2, p = 1 included: mean [1, 0], tr Cov = (4 + 0 - 2 * 1) / 1 = 2 -> SNR 0.5
        (1.0, t(2, 0)), (0.9, t(0, 0)),
    ]
    rows = pooled_bin_stats(iter(items), 3)
    assert [r["problems"] for r in rows] == [3, 1, 2]
    assert rows[0]["snr"] == pytest.approx(0.25) and rows[0]["status"] == "ok"
    # debiased by 1/n before it is normalised: bin 0 is below its noise floor (0.25 - 1/3 < 0)
    assert rows[0]["snr_debiased"] == pytest.approx(0.25 - 1 / 3)
    assert rows[2]["snr_debiased"] == pytest.approx(0.5 - 1 / 2)  # exactly at the floor: 0
    assert rows[0]["mean_pass_rate"] == pytest.approx(0.4 / 3)
    assert rows[1]["snr"] is None and rows[1]["status"] == "too few problems (n=1)"
    assert rows[2]["snr"] == pytest.approx(0.5)
    assert all(r["snr_normalized"] is None for r in rows)  # no bin's debiased SNR is > 0
    assert {r["estimator"] for r in rows} == {"pooled"} and rows[0]["snr_ci_low"] is None

    rows = pooled_bin_stats(iter([(0.1, t(3, 0)), (0.2, t(1, 0)), (0.3, t(2, 0)), (0.6, t(1, 1)), (0.7, t(1, -1))]), 2)
    # bin 0: mean [2, 0], tr Cov 1 -> SNR 4, debiased 4 - 1/3; bin 1: mean [1, 0], tr Cov 2 -> 0.5 - 1/2 = 0
    assert rows[0]["snr_debiased"] == pytest.approx(4 - 1 / 3) and rows[1]["snr_debiased"] == pytest.approx(0.0, abs=1e-12)
    assert [r["snr_normalized"] for r in rows] == [pytest.approx(1.0), pytest.approx(0.0, abs=1e-12)]

    empty = pooled_bin_stats(iter([(0.1, t(1, 0)), (0.2, t(0, 1))]), 2)
    assert empty[1]["problems"] == 0 and empty[1]["status"] == "empty" and empty[1]["snr"] is None
    same = pooled_bin_stats(iter([(0.5, t(1, 2)), (0.5, t(1, 2)), (0.5, t(1, 2))]), 1)
    assert same[0]["snr"] is None and "tr Cov = 0" in same[0]["status"]
    with pytest.raises(ValueError, match="grouped by bin"):  # one running mean at a time
        pooled_bin_stats(iter([(0.1, t(1, 0)), (0.9, t(1, 0)), (0.2, t(1, 0))]), 2)


def test_bin_edges_and_the_stratified_subset():
    from stages.snr import bin_of, choose_problems

    assert [bin_of(k / 10, 10) for k in range(11)] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]
    assert [bin_of(k / 3, 3) for k in range(4)] == [0, 1, 2, 2]
    assert bin_of(0.0, 1) == bin_of(1.0, 1) == 0

    rates = {f"a{i}": 0.05 for i in range(60)} | {f"b{i}": 0.55 for i in range(30)} | {f"c{i}": 1.0 for i in range(10)}
    pick = choose_problems(rates, 10, 10, seed=1)
    assert len(pick) == 10 and pick == choose_problems(rates, 10, 10, seed=1)
    assert [sum(x.startswith(c) for x in pick) for c in "abc"] == [6, 3, 1]
    assert pick != choose_problems(rates, 10, 10, seed=2)
    assert choose_problems(rates, 10, None, seed=0) == sorted(rates)


# ---------------------------------------------------------------------------------------
# The gradients


def test_rollout_gradients_equal_brute_force_autograd(setup, student_dir):
    """One gradient per rollout, each that sequence's mean token forward KL, written out."""
    from stages.snr import problem_gradients, rollout_gradients

    data = load_all(setup)
    assert len(data.problems) == 8  # weight-0 problems included
    model, head = tiny_student(student_dir)
    rows = pl.read_parquet(setup / "tl" / "part-*.parquet").filter(pl.col("problem_id") == "p4").sort("sample_index")
    assert rows.height == K
    got = [g.clone() for g in rollout_gradients(model, head, data, "p4", loss="fkl", mu=0.5, device="cpu")]
    assert len(got) == K and head.grad is None
    refs = [brute_force_gradient(model, head, r) for r in rows.iter_rows(named=True)]
    for g, ref in zip(got, refs):
        assert ref.abs().max() > 0
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(got[0], got[1])  # the rollouts differ

    # The pooled estimator's g_i: the problem's mean token loss over all its sequences, in
    # micro-batches of 1 (the gradient accumulates over them).
    (name, g), = list(problem_gradients(model, head, data, ["p4"], loss="fkl", mu=0.5, micro_batch_size=1, device="cpu"))
    tokens = [len(r) for r in rows["token_ids"].to_list()]
    expect = sum(ref * n for ref, n in zip(refs, tokens)) / sum(tokens)
    assert name == "p4"
    torch.testing.assert_close(g, expect.to(g.dtype), rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------------
# Through the command line


def test_snr_end_to_end_per_problem(tmp_path, setup, student_dir):
    import schemas
    from stages.snr import bootstrap_interval

    out, png = tmp_path / "snr.parquet", tmp_path / "snr.png"
    r = run_snr(setup, student_dir, out, "--plot", png, "--fit", tl="tl_p2_once.parquet")
    assert r.exit_code == 0, r.stderr
    assert "fitted kernel p^alpha (1-p)^beta" in r.stderr
    assert r.stdout.strip() == str(out)
    assert "gradient SNR by pass-rate bin, per-problem estimator" in r.stderr and "lm_head.weight" in r.stderr
    assert "snr summary (per-problem estimator)" in r.stderr
    assert "skipped: fewer than 2 rollouts" in r.stderr

    # Per problem: SNR_i from K per-rollout gradients computed here with torch.
    table = tmp_path / "snr.problems.parquet"
    per = schemas.read(table, schemas.snr.PROBLEMS, option="--table").frame
    assert pq.read_schema(table).metadata[b"paced.schema"] == b"snr_problems"
    assert sorted(per["problem_id"].to_list()) == [f"p{i}" for i in range(8) if i != 2]  # p2: one rollout, skipped
    assert set(per["num_rollouts"].to_list()) == {K} and set(per["status"].to_list()) == {"ok"}
    model, head = tiny_student(student_dir)
    tl = pl.read_parquet(setup / "tl" / "part-*.parquet")
    for row in per.iter_rows(named=True):
        seqs = tl.filter(pl.col("problem_id") == row["problem_id"]).iter_rows(named=True)
        g = torch.stack([brute_force_gradient(model, head, s).flatten() for s in seqs])
        mean = g.mean(0)
        snr = float(mean @ mean / g.var(0, unbiased=True).sum())
        assert row["snr"] == pytest.approx(snr, rel=1e-3), row
        assert row["snr_debiased"] == pytest.approx(snr - 1 / K, rel=1e-3, abs=1e-6)
        assert row["pass_rate"] == PASS[int(row["problem_id"][1:])] and row["bin"] == min(int(row["pass_rate"] * 10), 9)

    # Per bin: the mean over its problems, normalised by the largest bin mean, the interval.
    frame = schemas.read(out, schemas.SNR, option="--snr").frame  # validates against its own schema
    assert pq.read_schema(out).metadata[b"paced.schema"] == b"snr"
    assert frame.height == 10 and frame["bin"].to_list() == list(range(10))
    assert set(frame["estimator"].to_list()) == {"per-problem"}
    assert frame["problems"].to_list() == [2, 0, 0, 0, 0, 3, 0, 0, 0, 2]  # p2's bin: empty
    assert [frame["status"][i] for i in (0, 5, 9)] == ["ok"] * 3 and frame["status"][1] == "empty"
    means = per.group_by("bin").agg(pl.col("snr").mean(), pl.col("snr_debiased").mean(), pl.col("snr").alias("values"))
    top = means["snr"].max()
    for m in means.iter_rows(named=True):
        b = frame.row(m["bin"], named=True)
        assert b["snr"] == pytest.approx(m["snr"], rel=1e-12)
        assert b["snr_debiased"] == pytest.approx(m["snr_debiased"], rel=1e-12)
        assert b["snr_normalized"] == pytest.approx(m["snr"] / top, rel=1e-12)
        assert (b["snr_ci_low"], b["snr_ci_high"]) == bootstrap_interval(np.array(m["values"]), [0, m["bin"]])
        assert b["snr_ci_low"] <= b["snr"] <= b["snr_ci_high"]
    assert frame["snr_normalized"].max() == pytest.approx(1.0)
    assert frame.filter(pl.col("status") != "ok")["snr"].null_count() == 7
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    prov = pq.read_schema(out).metadata[b"paced.provenance"].decode()
    assert '"estimator": "per-problem"' in prov and '"skipped_fewer_than_2_rollouts": 1' in prov
    # The kernel fit, stored whatever --fit: the fit of the bins as written.
    from stages.snr import fit_kernel

    assert __import__("json").loads(prov)["kernel_fit"] == fit_kernel(frame.to_dicts())

    # The same command rewrites both files (same bootstrap: seeded); a seeded subset, another
    # parameter, another loss need --overwrite, and leave the files as they were without it.
    r = run_snr(setup, student_dir, out, tl="tl_p2_once.parquet")
    assert r.exit_code == 0, r.stderr
    assert pl.read_parquet(out).drop("snr_ci_low", "snr_ci_high").equals(frame.drop("snr_ci_low", "snr_ci_high"))
    assert pl.read_parquet(out)["snr_ci_low"].to_list() == frame["snr_ci_low"].to_list()
    other = ["--bins", "2", "--max-problems", "5", "--param", "model.norm.weight", "--loss", "rkl"]
    before = out.read_bytes(), table.read_bytes()
    r = run_snr(setup, student_dir, out, *other)
    assert r.exit_code == 2 and "--overwrite" in r.stderr
    assert (out.read_bytes(), table.read_bytes()) == before
    r = run_snr(setup, student_dir, out, *other, "--overwrite")
    assert r.exit_code == 0, r.stderr
    frame = pl.read_parquet(out)
    assert frame.height == 2 and frame["problems"].sum() == 5 and pl.read_parquet(table).height == 5


def test_snr_pooled_estimator(tmp_path, setup, student_dir):
    out = tmp_path / "pooled.parquet"
    r = run_snr(setup, student_dir, out, "--estimator", "pooled", "--micro-batch-size", "2", tl="tl_once.parquet")
    assert r.exit_code == 0, r.stderr
    assert "pooled estimator" in r.stderr and "SNR - 1/n" in r.stderr
    frame = pl.read_parquet(out)
    assert set(frame["estimator"].to_list()) == {"pooled"}
    assert frame["problems"].to_list() == [2, 1, 0, 0, 0, 3, 0, 0, 0, 2]  # one gradient per problem, one rollout is enough
    ok = frame.filter(pl.col("status") == "ok")
    assert ok["bin"].to_list() == [0, 5, 9] and frame["status"][1] == "too few problems (n=1)"
    # debiased by 1/n, then normalised by the largest debiased value
    assert ok["snr_debiased"].to_list() == pytest.approx((ok["snr"] - 1 / ok["problems"]).to_list(), rel=1e-12)
    top = ok["snr_debiased"].max()
    if top > 0:
        assert ok["snr_normalized"].to_list() == pytest.approx((ok["snr_debiased"] / top).to_list(), rel=1e-12)
    assert frame["snr_ci_low"].null_count() == 10
    assert not (tmp_path / "pooled.problems.parquet").exists()  # no per-problem values to write


def test_bad_input_exits_2(tmp_path, setup, student_dir):
    base = ["--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet"]
    stale = tmp_path / "stale.parquet"
    pl.read_parquet(setup / "weights.parquet").filter(pl.col("problem_id") != "p3").write_parquet(stale)
    cases = [
        ([*base, "--param", "lm_head.wieght"], ["--param lm_head.wieght", "lm_head.weight"]),
        ([*base, "--param", ""], ["--param : the student has no parameter of that name"]),  # not the default, silently
        ([*base, "--bins", "0"], ["--bins 0"]),
        ([*base, "--plot", tmp_path / "snr.jpg"], ["--plot", ".png"]),
        ([*base, "--loss", "no-such-loss", "--max-problems", "1"], ["--loss no-such-loss", "--max-problems 1"]),
        ([*base, "--estimator", "median"], ["--estimator median", "per-problem, pooled"]),
        ([*base, "--micro-batch-size", "4"], ["--micro-batch-size 4", "one sequence per pass", "--estimator pooled"]),
        ([*base, "--estimator", "pooled", "--micro-batch-size", "0"], ["--micro-batch-size 0"]),
        (["--student", student_dir, "--teacher-logits", setup / "tl", "--weights", stale], ["no weight for 1 problem(s)", "'p3'"]),
        (["--student", student_dir, "--teacher-logits", setup / "rollouts", "--weights", setup / "weights.parquet"],
         ["--teacher-logits expects"]),
        (["--student", student_dir, "--teacher-logits", setup / "tl_once.parquet", "--weights", setup / "weights.parquet"],
         ["--teacher-logits", "one sequence", "K >= 2", "--estimator pooled"]),
    ]
    for args, needles in cases:
        r = paced("snr", *args, "--out", tmp_path / "o.parquet")
        assert r.exit_code == 2, (args, r.stderr)
        for needle in needles:
            assert needle in r.stderr, (needle, r.stderr)
        assert not (tmp_path / "o.parquet").exists() and not (tmp_path / "o.problems.parquet").exists()
        assert not list(tmp_path.glob(".o.parquet*"))  # no data cache left behind

    # The per-problem table is an output too: a user's file there is never replaced.
    pl.DataFrame({"x": [1]}).write_parquet(tmp_path / "o.problems.parquet")
    r = paced("snr", *base, "--out", tmp_path / "o.parquet")
    assert r.exit_code == 2 and "--out (its per-problem table)" in r.stderr and "o.problems.parquet" in r.stderr, r.stderr
    assert pl.read_parquet(tmp_path / "o.problems.parquet")["x"].to_list() == [1]


def test_a_directory_as_out_is_named_even_the_working_one(tmp_path, setup, student_dir, monkeypatch):
    """`--out .` (and `/`) have no file name to put `.problems` beside: a traceback once; now
    refused like any directory, before anything is written."""
    from stages.snr import problems_path

    base = ["--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet"]
    monkeypatch.chdir(tmp_path)
    for out in (".", tmp_path):
        r = paced("snr", *base, "--out", out)
        assert r.exit_code == 2 and "is a directory; give a file name such as" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
    assert problems_path(Path("/")) == Path("/.problems.parquet")
