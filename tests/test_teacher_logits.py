"""paced teacher-logits: stored top-k equals the teacher's own log-softmax; context and skipping."""

from __future__ import annotations

import re

import polars as pl
import pytest
import torch

from tests.conftest import paced


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory, student_dir):
    from tests.conftest import make_problems

    d = tmp_path_factory.mktemp("tl")
    make_problems(4).write_parquet(d / "problems.parquet")
    r = paced("rollout", "--problems", d / "problems.parquet", "--model", student_dir, "--out", d / "rollouts",
              "--samples", "2", "--max-new-tokens", "10", "--seed", "1")
    assert r.exit_code == 0, r.stderr
    return d / "problems.parquet", d / "rollouts"


def read(out) -> pl.DataFrame:
    return pl.read_parquet(f"{out}/part-*.parquet").sort("problem_id", "sample_index")


def test_topk_logprobs_are_the_teachers_log_softmax(tmp_path, rollouts, teacher_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    problems, seqs = rollouts
    out = tmp_path / "tl"
    r = paced("teacher-logits", "--problems", problems, "--sequences", seqs, "--teacher", teacher_dir, "--out", out,
              "--top-k", "5", "--chunk-size", "3", "--batch-size", "3")
    assert r.exit_code == 0, r.stderr
    tl = read(out)
    ro = pl.read_parquet(f"{seqs}/part-*.parquet").sort("problem_id", "sample_index")
    assert tl.height == 8 and tl["token_ids"].to_list() == ro["completion_token_ids"].to_list()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    for row in tl.iter_rows(named=True):
        p, y = row["prompt_token_ids"], row["token_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(teacher(torch.tensor([p + y])).logits[0].double(), -1)[len(p) - 1 : len(p) + len(y) - 1]
        ids = torch.tensor(row["topk_ids"])
        want_ids = logp[:, : len(tokenizer)].topk(5).indices
        assert torch.equal(ids, want_ids)
        got = torch.tensor(row["topk_logprobs"], dtype=torch.float64)
        assert torch.allclose(got, logp.gather(1, ids), atol=1e-2)  # stored as float16
        tail = torch.log1p(-logp.gather(1, ids).exp().sum(-1))
        assert torch.allclose(torch.tensor(row["tail_logprob"], dtype=torch.float64), tail, atol=1e-4)
        target = logp.gather(1, torch.tensor(y)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(row["target_logprobs"], dtype=torch.float64), target, atol=1e-4)
    assert "bytes per token on disk" in r.stderr
    # what decides the representation, over every response token of the job
    tokens = tl.select(pl.col("entropy").explode(), pl.col("tail_logprob").explode())
    m = re.search(r"teacher entropy, nats per token\s*│\s*mean ([\d.]+); ([\d.]+)% of tokens under 2", r.stderr)
    assert m, r.stderr
    assert float(m[1]) == pytest.approx(tokens["entropy"].mean(), abs=0.006)
    assert float(m[2]) == pytest.approx(100 * (tokens["entropy"] < 2).mean(), abs=0.06)
    t = re.search(r"teacher mass outside the top-k\s*│\s*mean ([\d.]+)%", r.stderr)
    assert t and float(t[1]) == pytest.approx(100 * tokens["tail_logprob"].exp().mean(), abs=0.06)


def test_context_reference_changes_the_teacher_not_the_tokens(tmp_path, rollouts, teacher_dir):
    problems, seqs = rollouts
    for ctx in ("none", "reference"):
        assert paced("teacher-logits", "--problems", problems, "--sequences", seqs, "--teacher", teacher_dir,
                     "--out", tmp_path / ctx, "--top-k", "4", "--context", ctx).exit_code == 0
    a, b = read(tmp_path / "none"), read(tmp_path / "reference")
    assert a["token_ids"].to_list() == b["token_ids"].to_list()
    assert a["prompt_token_ids"].to_list() == b["prompt_token_ids"].to_list()  # the student's view
    assert a["target_logprobs"].to_list() != b["target_logprobs"].to_list()    # the teacher saw more


def test_zero_weight_problems_are_skipped(tmp_path, rollouts, teacher_dir):
    problems, seqs = rollouts
    w = tmp_path / "w.parquet"
    pl.DataFrame({"problem_id": ["p0", "p1", "p2", "p3"], "num_samples": [2] * 4, "num_correct": [0, 1, 1, 2],
                  "pass_rate": [0.0, 0.5, 0.5, 1.0], "weight": [0.0, 2.0, 2.0, 0.0]}).write_parquet(w)
    r = paced("teacher-logits", "--problems", problems, "--sequences", seqs, "--teacher", teacher_dir,
              "--out", tmp_path / "tl", "--top-k", "4", "--weights", w)
    assert r.exit_code == 0, r.stderr
    assert sorted(read(tmp_path / "tl")["problem_id"].unique()) == ["p1", "p2"]
    assert "2 problems, 4 sequences" in r.stderr


def test_reference_solutions_as_sequences(tmp_path, rollouts, teacher_dir, tokenizer):
    problems, _ = rollouts
    r = paced("teacher-logits", "--problems", problems, "--sequences", problems, "--teacher", teacher_dir,
              "--out", tmp_path / "tl", "--top-k", "4")
    assert r.exit_code == 0, r.stderr
    tl = read(tmp_path / "tl")
    assert tl.height == 4 and set(tl["sample_index"]) == {0}
    ref = pl.read_parquet(problems).sort("problem_id")["reference"][0]
    assert tokenizer.decode(tl["token_ids"][0]) == ref + tokenizer.eos_token


def test_refusals(tmp_path, rollouts, teacher_dir, raw_model_dir):
    problems, seqs = rollouts
    r = paced("teacher-logits", "--problems", problems, "--sequences", seqs, "--teacher", raw_model_dir, "--out", tmp_path / "a")
    assert r.exit_code == 2 and "do not share a tokenizer" in r.stderr
    r = paced("teacher-logits", "--problems", problems, "--sequences", seqs, "--teacher", teacher_dir, "--out", tmp_path / "b",
              "--top-k", "100000")
    assert r.exit_code == 2 and "larger than the teacher's vocabulary" in r.stderr
    w = tmp_path / "w.parquet"
    pl.DataFrame({"problem_id": ["p0"], "num_samples": [2], "num_correct": [1], "pass_rate": [0.5], "weight": [1.0]}).write_parquet(w)
    r = paced("teacher-logits", "--problems", problems, "--sequences", seqs, "--teacher", teacher_dir, "--out", tmp_path / "c", "--weights", w)
    assert r.exit_code == 2 and "has no weight for 3 problem(s)" in r.stderr
    assert not any((tmp_path / x).exists() for x in "abc")


def test_the_summary_profile_of_a_teacher_without_entropy(tmp_path):
    """vLLM stores no entropy (null): the summary then shows the top-k's tail mass only."""
    import math

    from stages.teacher_logits import teacher_profile

    f = tmp_path / "part-00000.parquet"
    pl.DataFrame({"entropy": [None, None], "tail_logprob": [[math.log(0.5), math.log(0.1)], [math.log(0.3)]]},
                 schema={"entropy": pl.List(pl.Float32), "tail_logprob": pl.List(pl.Float32)}).write_parquet(f)
    rows = dict(teacher_profile([f], "topk"))
    assert list(rows) == ["teacher mass outside the top-k"] and rows["teacher mass outside the top-k"] == "mean 30.0%"
    g = tmp_path / "part-00001.parquet"
    pl.DataFrame({"entropy": [[0.5, 3.0], [1.0]], "tail_logprob": [[0.0, 0.0], [0.0]]},
                 schema={"entropy": pl.List(pl.Float32), "tail_logprob": pl.List(pl.Float32)}).write_parquet(g)
    assert teacher_profile([g], "sampled") == [("teacher entropy, nats per token", "mean 1.50; 66.7% of tokens under 2 nats")]
    # over parts: the entropy of the tokens that have one, the tail mass of every token
    assert dict(teacher_profile([f, g], "hybrid")) == {"teacher entropy, nats per token": "mean 1.50; 66.7% of tokens under 2 nats",
                                                       "teacher mass outside the top-k": "mean 65.0%"}
