"""paced snr: per-bin gradient SNR (Figure 3) by hand, against brute-force autograd, and end to end."""

from __future__ import annotations

import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import make_problems, paced

# Pass rates with a spread over 10 bins: bin 0 holds 2 (both p = 0, weight 0), bin 1 holds
# 1 (too few), bin 5 holds 3, bin 9 holds 0.9 and p = 1 (weight 0); the rest are empty.
PASS = [0.0, 0.0, 0.1, 0.5, 0.5, 0.55, 0.9, 1.0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, teacher_dir):
    """Teacher sequences and their logits for every problem (no --weights), and pass rates."""
    d = tmp_path_factory.mktemp("snr")
    make_problems(8).write_parquet(d / "problems.parquet")
    r = paced("rollout", "--problems", d / "problems.parquet", "--model", teacher_dir, "--out", d / "seqs",
              "--samples", "2", "--max-new-tokens", "10", "--seed", "3")
    assert r.exit_code == 0, r.stderr
    r = paced("teacher-logits", "--problems", d / "problems.parquet", "--sequences", d / "seqs", "--teacher", teacher_dir,
              "--out", d / "tl", "--top-k", "16")
    assert r.exit_code == 0, r.stderr
    pl.DataFrame({
        "problem_id": [f"p{i}" for i in range(8)], "num_samples": [20] * 8,
        "num_correct": [round(p * 20) for p in PASS], "pass_rate": PASS,
    }).with_columns(weight=pl.col("pass_rate") * (1 - pl.col("pass_rate"))).write_parquet(d / "weights.parquet")
    return d


# ---------------------------------------------------------------------------------------
# The aggregation alone


def test_bin_stats_matches_a_hand_computation():
    from stages.snr import bin_stats

    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    items = [
        # bin 0 of 3: mean [1, 0], ||mean||^2 = 1, tr Cov = (1 + 5 + 5 - 3 * 1) / 2 = 4 -> SNR 0.25
        (0.0, t(1, 0)), (0.1, t(1, 2)), (0.3, t(1, -2)),
        # bin 1: one problem
        (0.5, t(7, 7)),
        # bin 2, p = 1 included: mean [1, 0], tr Cov = (4 + 0 - 2 * 1) / 1 = 2 -> SNR 0.5
        (1.0, t(2, 0)), (0.9, t(0, 0)),
    ]
    rows = bin_stats(iter(items), 3)
    assert [r["problems"] for r in rows] == [3, 1, 2]
    assert rows[0]["snr"] == pytest.approx(0.25) and rows[0]["status"] == "ok"
    # ||mean||^2 = 1 holds tr Cov / n = 4 / 3 of noise: 0.25 - 1/3 (the signal is below the noise)
    assert rows[0]["snr_debiased"] == pytest.approx(0.25 - 1 / 3)
    assert rows[2]["snr_debiased"] == pytest.approx(0.5 - 1 / 2) and rows[1]["snr_debiased"] is None
    assert rows[0]["mean_pass_rate"] == pytest.approx(0.4 / 3)
    assert rows[1]["snr"] is None and rows[1]["snr_normalized"] is None
    assert rows[1]["status"] == "too few problems (n=1)"
    assert rows[2]["snr"] == pytest.approx(0.5)
    assert [r["snr_normalized"] for r in rows] == [pytest.approx(0.5), None, pytest.approx(1.0)]
    assert [(r["lo"], r["hi"]) for r in rows] == [(0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1)]

    empty = bin_stats(iter([(0.1, t(1, 0)), (0.2, t(0, 1))]), 2)
    assert empty[1] == {"bin": 1, "lo": 0.5, "hi": 1.0, "problems": 0, "mean_pass_rate": None,
                        "snr": None, "snr_normalized": None, "snr_debiased": None, "status": "empty"}
    assert empty[0]["snr"] == pytest.approx(0.5 / 1.0) and empty[0]["snr_normalized"] == 1.0

    same = bin_stats(iter([(0.5, t(1, 2)), (0.5, t(1, 2)), (0.5, t(1, 2))]), 1)
    assert same[0]["snr"] is None and "tr Cov = 0" in same[0]["status"]


def test_streaming_statistics_equal_the_textbook_formula():
    from stages.snr import bin_stats

    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, 7, generator=g, dtype=torch.float64) + 3.0 for _ in range(9)]
    stacked = torch.stack([x.flatten() for x in grads])
    mean = stacked.mean(0)
    tr_cov = stacked.var(0, unbiased=True).sum()
    rows = bin_stats(((0.5, x) for x in grads), 4)
    assert rows[2]["problems"] == 9
    assert rows[2]["snr"] == pytest.approx(float(mean @ mean / tr_cov), rel=1e-12)


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
# The per-problem gradient


def test_problem_gradient_equals_brute_force_autograd(setup, student_dir):
    """distill's machinery with coefficient 1/T equals the mean token forward KL, written out."""
    import dataclasses

    from transformers import AutoModelForCausalLM

    import schemas
    from stages import distill
    from stages.snr import problem_gradients

    w = schemas.read(setup / "weights.parquet", schemas.WEIGHTS, option="--weights")
    every = dataclasses.replace(w, frame=w.frame.with_columns(weight=pl.lit(1.0)))
    data, _ = distill.load_data(setup / "tl", every, setup / "grad-cache.arrow")
    assert len(data.problems) == 8  # weight-0 problems included
    name = "p4"
    model = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.get_output_embeddings().weight
    head.requires_grad_(True)
    # micro-batches of 1: the gradient must accumulate over the problem's sequences.
    (got_name, g), = list(problem_gradients(model, head, data, [name], loss="fkl", mu=0.5, micro_batch_size=1, device="cpu"))
    g = g.clone()
    assert got_name == name

    rows = pl.read_parquet(setup / "tl" / "part-*.parquet").filter(pl.col("problem_id") == name)
    assert rows.height == 2
    head.grad = None
    total, tokens = 0.0, 0
    for r in rows.iter_rows(named=True):
        prompt, resp = r["prompt_token_ids"], r["token_ids"]
        logits = model(input_ids=torch.tensor([prompt + resp])).logits[0, len(prompt) - 1 : len(prompt) + len(resp) - 1]
        student = torch.log_softmax(logits.double(), -1)
        ids = torch.tensor(r["topk_ids"])
        s_top = student.gather(-1, ids)
        s = torch.cat([s_top, torch.log1p(-s_top.exp().sum(-1, keepdim=True))], -1)
        t = torch.cat([torch.tensor(r["topk_logprobs"], dtype=torch.float64),
                       torch.tensor(r["tail_logprob"], dtype=torch.float64)[:, None]], -1)
        t = torch.log_softmax(t, -1)  # what the loss does against float16 rounding
        total = total + (t.exp() * (t - s)).sum()
        tokens += len(resp)
    (total / tokens).backward()
    ref = head.grad
    assert ref.abs().max() > 0
    torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------------
# Through the command line


def test_snr_end_to_end(tmp_path, setup, student_dir):
    out, png = tmp_path / "snr.parquet", tmp_path / "snr.png"
    r = paced("snr", "--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet",
              "--out", out, "--plot", png)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out)
    assert "gradient SNR by pass-rate bin" in r.stderr and "lm_head.weight" in r.stderr
    frame = pl.read_parquet(out)
    assert frame.height == 10 and frame["bin"].to_list() == list(range(10))
    assert frame["problems"].sum() == 8  # weight-0 problems (p = 0 and p = 1) are measured
    assert frame["problems"].to_list() == [2, 1, 0, 0, 0, 3, 0, 0, 0, 2]
    status = frame["status"].to_list()
    assert [status[i] for i in (0, 5, 9)] == ["ok"] * 3
    assert status[1] == "too few problems (n=1)" and status[2] == "empty"
    ok = frame.filter(pl.col("status") == "ok")
    assert ok["snr"].min() > 0 and ok["snr_normalized"].max() == pytest.approx(1.0)
    assert frame.filter(pl.col("status") != "ok")["snr"].null_count() == 7
    assert pq.read_schema(out).metadata[b"paced.schema"] == b"snr"
    import schemas

    schemas.read(out, schemas.SNR, option="--snr")  # validates against its own schema
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A seeded subset, another parameter, another loss; rerunning replaces the earlier file.
    r = paced("snr", "--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet",
              "--out", out, "--bins", "2", "--max-problems", "5", "--param", "model.norm.weight", "--loss", "rkl")
    assert r.exit_code == 0, r.stderr
    frame = pl.read_parquet(out)
    assert frame.height == 2 and frame["problems"].sum() == 5


def test_bad_input_exits_2(tmp_path, setup, student_dir):
    base = ["--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet"]
    stale = tmp_path / "stale.parquet"
    pl.read_parquet(setup / "weights.parquet").filter(pl.col("problem_id") != "p3").write_parquet(stale)
    cases = [
        ([*base, "--param", "lm_head.wieght"], ["--param lm_head.wieght", "lm_head.weight"]),
        ([*base, "--bins", "0"], ["--bins 0"]),
        ([*base, "--plot", tmp_path / "snr.jpg"], ["--plot", ".png"]),
        ([*base, "--loss", "jsd", "--max-problems", "1"], ["--loss jsd", "--max-problems 1"]),
        (["--student", student_dir, "--teacher-logits", setup / "tl", "--weights", stale], ["no weight for 1 problem(s)", "'p3'"]),
        (["--student", student_dir, "--teacher-logits", setup / "seqs", "--weights", setup / "weights.parquet"],
         ["--teacher-logits expects"]),
    ]
    for args, needles in cases:
        r = paced("snr", *args, "--out", tmp_path / "o.parquet")
        assert r.exit_code == 2, (args, r.stderr)
        for needle in needles:
            assert needle in r.stderr, (needle, r.stderr)
        assert not (tmp_path / "o.parquet").exists()
        assert not list(tmp_path.glob(".o.parquet*"))  # no data cache left behind
