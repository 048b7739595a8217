"""paced score through the command line: verdicts, time bounds, user verifiers, bad input."""

from __future__ import annotations

import polars as pl
import pytest

from tests.conftest import make_problems, paced

COMPLETIONS = {
    ("p0", 0): "0 + 1 = 1, so \\boxed{1}",          # right
    ("p0", 1): "I think \\boxed{2}",                 # wrong
    ("p1", 0): "First \\boxed{7}, no wait: \\boxed{3}",  # last box wins: right
    ("p1", 1): "",                                    # empty
    ("p2", 0): "\\boxed{\\frac{10}{2}}",             # math-equivalent to 5, not an exact match
    ("p2", 1): "\\boxed{" * 5000 + "5" + "}" * 5000,  # adversarially nested
    ("p3", 0): "The answer is 7",                    # no box
    ("p3", 1): "x" * 1_000_000,                      # a megabyte of junk
}


def write_rollouts(path, completions=COMPLETIONS):
    pl.DataFrame(
        {
            "problem_id": [k[0] for k in completions],
            "sample_index": [k[1] for k in completions],
            "completion": list(completions.values()),
            "completion_token_ids": [[1, 2]] * len(completions),
            "finish_reason": ["stop"] * len(completions),
            "model": ["hand"] * len(completions),
        }
    ).write_parquet(path)
    return path


def verdicts(out) -> dict:
    df = pl.read_parquet(f"{out}/part-*.parquet")
    return {(r["problem_id"], r["sample_index"]): r for r in df.iter_rows(named=True)}


@pytest.fixture
def files(tmp_path, problems_file):
    return write_rollouts(tmp_path / "rollouts.parquet"), problems_file


def test_math_verifier(tmp_path, files):
    rollouts, problems = files
    r = paced("score", "--rollouts", rollouts, "--problems", problems, "--out", tmp_path / "s", "--part-size", "3")
    assert r.exit_code == 0, r.stderr
    v = verdicts(tmp_path / "s")
    assert len(v) == len(COMPLETIONS)
    assert v[("p0", 0)]["correct"] and not v[("p0", 1)]["correct"]
    assert v[("p1", 0)]["correct"] and v[("p1", 0)]["extracted"] == "3"
    assert not v[("p1", 1)]["correct"] and v[("p1", 1)]["reason"] == "no_answer"
    assert v[("p2", 0)]["correct"]  # 10/2 == 5
    assert v[("p3", 0)]["correct"]  # math-verify also reads a final "answer is"
    assert not v[("p3", 1)]["correct"]
    assert "score summary" in r.stderr


def test_exact_and_regex_verifiers(tmp_path, files):
    rollouts, problems = files
    assert paced("score", "--rollouts", rollouts, "--problems", problems, "--out", tmp_path / "e", "--verifier", "exact").exit_code == 0
    v = verdicts(tmp_path / "e")
    assert v[("p0", 0)]["correct"] and v[("p1", 0)]["correct"]
    assert not v[("p2", 0)]["correct"]  # \frac{10}{2} is not the string 5
    r = paced("score", "--rollouts", rollouts, "--problems", problems, "--out", tmp_path / "r", "--verifier", r"regex:answer is (\d+)")
    assert r.exit_code == 0, r.stderr
    v = verdicts(tmp_path / "r")
    assert v[("p3", 0)]["correct"] and v[("p3", 0)]["extracted"] == "7"
    assert not v[("p0", 0)]["correct"]


def test_user_function_and_timeouts(tmp_path, files, monkeypatch):
    rollouts, problems = files
    (tmp_path / "mychecks.py").write_text(
        "import time\n"
        "def ends_with_answer(completion, problem):\n"
        "    if problem['problem_id'] == 'p3':\n"
        "        time.sleep(60)\n"
        "    return completion.rstrip('}').endswith(problem['answer'])\n"
    )
    monkeypatch.chdir(tmp_path)
    r = paced("score", "--rollouts", rollouts, "--problems", problems, "--out", tmp_path / "u",
              "--verifier", "mychecks:ends_with_answer", "--timeout", "1")
    assert r.exit_code == 0, r.stderr
    v = verdicts(tmp_path / "u")
    assert v[("p0", 0)]["correct"] and not v[("p0", 1)]["correct"]
    assert v[("p3", 0)]["reason"] == "timeout" and not v[("p3", 0)]["correct"]
    assert v[("p3", 1)]["reason"] == "timeout"
    assert "timed out (> 1 s)" in r.stderr


def test_a_verifier_function_that_raises_exits_2_and_leaves_nothing(tmp_path, files, monkeypatch):
    rollouts, problems = files
    (tmp_path / "badcheck.py").write_text("def check(completion, problem):\n    raise ValueError('boom')\n")
    monkeypatch.chdir(tmp_path)
    r = paced("score", "--rollouts", rollouts, "--problems", problems, "--out", tmp_path / "s", "--verifier", "badcheck:check")
    assert r.exit_code == 2
    assert "badcheck:check" in r.stderr and "boom" in r.stderr and "problem_id='p0'" in r.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "verifier, needle",
    [("sympy", "unknown verifier"), ("nosuchmodule:fn", "nosuchmodule"), ("regex:(", "regex")],
)
def test_bad_verifiers_exit_2(tmp_path, files, verifier, needle):
    rollouts, problems = files
    r = paced("score", "--rollouts", rollouts, "--problems", problems, "--out", tmp_path / "s", "--verifier", verifier)
    assert r.exit_code == 2 and needle in r.stderr and "--verifier" in r.stderr
    assert not (tmp_path / "s").exists()


def test_rollouts_of_unknown_problems_are_refused(tmp_path, files):
    rollouts, _ = files
    few = tmp_path / "few.parquet"
    make_problems(2).write_parquet(few)
    r = paced("score", "--rollouts", rollouts, "--problems", few, "--out", tmp_path / "s")
    assert r.exit_code == 2 and "not in --problems" in r.stderr and "'p2'" in r.stderr


def test_pipeline_rollout_score_weight(tmp_path, problems_file, student_dir):
    """The three stages chained through the real commands, each reading the last one's output."""
    ro, sc, we = tmp_path / "rollouts", tmp_path / "scores", tmp_path / "weights.parquet"
    assert paced("rollout", "--problems", problems_file, "--model", student_dir, "--out", ro,
                 "--samples", "4", "--max-new-tokens", "8").exit_code == 0
    assert paced("score", "--rollouts", ro, "--problems", problems_file, "--out", sc, "--verifier", "exact").exit_code == 0
    r = paced("weight", "--scores", sc, "--out", we, "--scheme", "uniform")
    assert r.exit_code == 0, r.stderr
    w = pl.read_parquet(we)
    assert w.height == 6 and w["num_samples"].to_list() == [4] * 6
    s = pl.read_parquet(f"{sc}/part-*.parquet")
    assert s.height == 24 and s["correct"].sum() == w["num_correct"].sum()
