"""paced eval: the summary arithmetic by hand, then the real command on a tiny model.

The tiny model answers at random, so the end-to-end tests use `module:function` verifiers
that accept (or reject) every response: the accuracies are then known exactly.
"""

from __future__ import annotations

import json
import math

import polars as pl
import pyarrow.parquet as pq
import pytest

import schemas
from stages.evaluation.metrics import summarize
from tests.conftest import make_problems, paced

FAST = ["--samples", "3", "--max-new-tokens", "6", "--part-size", "3", "--batch-size", "4", "--workers", "1"]
CHECKS = (
    "def yes(completion, problem):\n"
    "    return problem['benchmark'] != ''  # the row carries its benchmark\n"
    "def no(completion, problem):\n"
    "    return False\n"
)


# ---------------------------------------------------------------------------------------
# summarize: known answers


def results_frame(table: dict[str, list[list[bool]]]) -> pl.DataFrame:
    """{benchmark: [per problem: [correct of sample 0, 1, ...]]} as per-response rows."""
    rows = []
    for bench, per_problem in table.items():
        for i, samples in enumerate(per_problem):
            for k, correct in enumerate(samples):
                rows.append({"problem_id": f"{bench}-{i}", "sample_index": k, "benchmark": bench, "correct": correct})
    return pl.DataFrame(rows, schema={"problem_id": pl.String, "sample_index": pl.Int32, "benchmark": pl.String, "correct": pl.Boolean})


RESULTS = results_frame(
    {
        # sample 0: 2/4 right, sample 1: 4/4, sample 2: 0/4 -> per-index 0.5, 1.0, 0.0
        "alpha": [[True, True, False], [True, True, False], [False, True, False], [False, True, False]],
        # one sample index: 1/2 -> 0.5 ± 0
        "beta": [[True], [False]],
        # sample 0: 1/1, sample 1: 0/1 -> 0.5 ± 0.5
        "gamma": [[True, False]],
    }
)


def test_summarize_mean_and_population_std_over_sample_indices():
    s = summarize(RESULTS, set(), None, "m", 1)
    assert s.columns == [c.name for c in schemas.EVAL_SUMMARY.columns]
    assert s["benchmark"].to_list() == ["alpha", "beta", "gamma"]
    assert s["problems"].to_list() == [4, 2, 1]
    assert s["samples"].to_list() == [3, 1, 2]
    assert s["accuracy_mean"].to_list() == pytest.approx([0.5, 0.5, 0.5])
    # population std of (0.5, 1.0, 0.0): sqrt(((0)^2 + 0.5^2 + 0.5^2) / 3)
    assert s["accuracy_std"].to_list() == pytest.approx([math.sqrt(0.5 / 3), 0.0, 0.5])
    assert s["model"].to_list() == ["m"] * 3 and s["retain"].to_list() == [False] * 3
    for col in ("baseline_accuracy", "gain", "forgetting_pct", "baseline_pass_at_k", "pass_at_k_gain", "maj_at_k_gain"):
        assert s[col].null_count() == 3
    assert s["pass_at_k"].to_list() == pytest.approx([0.5, 0.5, 0.5])  # pass@1 is the accuracy
    assert s["maj_at_k"].null_count() == 3  # no extracted answers in these rows
    # The summary builds a table of the artifact's exact schema.
    schemas.table_from_columns(s.to_dict(), schemas.EVAL_SUMMARY)


def test_pass_at_k_is_the_unbiased_estimator():
    from stages.stats import pass_at_k

    # alpha: c = 2, 2, 1, 1 of n = 3. pass@2 = 1 - C(n-c, 2) / C(3, 2): 1, 1, 1 - 1/3, 1 - 1/3.
    s = summarize(RESULTS.filter(pl.col("benchmark") == "alpha"), set(), None, "m", 2)
    assert s["pass_at_k"].item() == pytest.approx((1 + 1 + 2 / 3 + 2 / 3) / 4)
    assert s["k"].item() == 2
    assert summarize(RESULTS.filter(pl.col("benchmark") == "alpha"), set(), None, "m", 3)["pass_at_k"].item() == 1.0
    # Fewer than k responses on a problem of the benchmark: no estimate.
    assert summarize(RESULTS, set(), None, "m", 2)["pass_at_k"].to_list() == [pytest.approx(10 / 12), None, 1.0]
    # Against the definition by combinations, and against sampling k of n without replacement.
    for n, c, k in ((8, 0, 1), (8, 3, 1), (8, 3, 4), (8, 5, 4), (10, 1, 10), (16, 2, 5)):
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    import itertools

    draws = list(itertools.combinations([True] * 3 + [False] * 5, 4))
    assert pass_at_k(8, 3, 4) == pytest.approx(sum(any(d) for d in draws) / len(draws))
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_maj_at_k_votes_over_extracted_answers_with_ties_to_the_first():
    rows = [  # (problem, extracted answers of samples 0, 1, 2, their verdicts)
        ("A", ["7", "7", "8"], [True, True, False]),    # 7 wins: right
        ("B", ["5", "6", "6"], [True, False, False]),   # maj@3: 6 wins, wrong; maj@1: 5, right
        ("C", ["3", "4", None], [False, True, False]),  # a 1-1 tie: 3 came first, wrong
        ("D", [None, None, None], [False, False, False]),  # no answer at all: wrong
    ]
    frame = pl.DataFrame(
        [{"problem_id": p, "sample_index": i, "benchmark": "b", "correct": v, "extracted": e}
         for p, ex, ok in rows for i, (e, v) in enumerate(zip(ex, ok))],
        schema={"problem_id": pl.String, "sample_index": pl.Int32, "benchmark": pl.String, "correct": pl.Boolean,
                "extracted": pl.String},
    )
    assert summarize(frame, set(), None, "m", 3)["maj_at_k"].item() == pytest.approx(1 / 4)
    assert summarize(frame, set(), None, "m", 2)["maj_at_k"].item() == pytest.approx(2 / 4)  # A; B's 5-6 tie goes to 5
    assert summarize(frame, set(), None, "m", 1)["maj_at_k"].item() == pytest.approx(2 / 4)  # A, B
    # The sample order decides ties, not the order of the rows.
    assert summarize(frame.reverse(), set(), None, "m", 3)["maj_at_k"].item() == pytest.approx(1 / 4)
    # A verifier that extracts no answer at all (module:function): no vote to count.
    silent = frame.with_columns(extracted=pl.lit(None, pl.String))
    assert summarize(silent, set(), None, "m", 3, votes=False)["maj_at_k"].item() is None
    # One that extracts answers but found none: every problem is wrong, 0, whatever other
    # benchmarks of the run answered (it was null when none of the run's responses had one).
    assert summarize(silent, set(), None, "m", 3)["maj_at_k"].item() == 0.0
    both = pl.concat([frame, silent.with_columns(benchmark=pl.lit("mute"), problem_id="mute-" + pl.col("problem_id"))])
    assert summarize(both, set(), None, "m", 3)["maj_at_k"].to_list() == [pytest.approx(1 / 4), 0.0]


def votes_frame(rows) -> pl.DataFrame:
    """[(problem, extracted answers of samples 0, 1, ..., their verdicts)] as per-response rows."""
    return pl.DataFrame(
        [{"problem_id": p, "sample_index": i, "benchmark": "b", "correct": v, "extracted": e}
         for p, ex, ok in rows for i, (e, v) in enumerate(zip(ex, ok))],
        schema={"problem_id": pl.String, "sample_index": pl.Int32, "benchmark": pl.String, "correct": pl.Boolean,
                "extracted": pl.String},
    )


def test_maj_at_k_counts_equal_answers_written_differently_as_one():
    """Votes go to answers, not strings: three correct responses written three ways outvote two
    equal wrong strings; wrong answers written two ways vote together too (math-verify's equality,
    in bounded worker processes); problems a grouping cannot change are never compared."""
    from stages.evaluation.metrics import majority
    from stages.verifiers import SameAnswer

    rows = [
        ("A", ["\\frac{1}{2}", "0.5", "1/2", "3", "3"], [True, True, True, False, False]),  # 1/2 x3 beats 3 x2
        ("B", ["7", "\\frac{1}{2}", "0.5", "2/4"], [True, False, False, False]),  # the wrong 1/2 x3 beats 7
        ("C", ["7", "8", "9"], [True, False, False]),  # a 1-1-1 tie, 7 first: right
        ("D", ["8", "7", "7", "\\frac{16}{2}"], [False, True, True, False]),  # 8 x2 ties 7 x2, 8 first: wrong
        ("E", ["7", "7", "7", "1", "2"], [True, True, True, False, False]),  # 3 > 2: decided without a comparison
    ]
    frame = votes_frame(rows)
    asked: list = []
    with SameAnswer("math", workers=1, timeout=10.0) as math_same:
        def same(pairs):
            asked.extend(pairs)
            return math_same(pairs)

        got = dict(zip(*majority(frame, 5, same).select("problem_id", "maj")))
        # Without a judge only equal strings group (the right answers are one all the same: the
        # reference's): B's and D's wrong answers each vote alone, and 7 wins.
        alone = dict(zip(*majority(frame, 5).select("problem_id", "maj")))
        assert math_same([("\\frac{1}{2}", "0.5"), ("1/2", "0.5"), ("3", "4"), ("10", "010"), ("x+1", "1+x")]) == [
            True, True, False, True, True]
    assert got == {"A": True, "B": False, "C": True, "D": False, "E": True}
    assert alone == {"A": True, "B": True, "C": True, "D": True, "E": True}
    assert all(a not in ("1", "2") for pair in asked for a in pair)  # E was not compared
    bd = frame.filter(pl.col("problem_id").is_in(["B", "D"]))  # 4 responses each: the summary at k = 4
    assert summarize(bd, set(), None, "m", 4)["maj_at_k"].item() == 1.0
    with SameAnswer("math", workers=1, timeout=10.0) as math_same:
        assert summarize(bd, set(), None, "m", 4, same=math_same)["maj_at_k"].item() == 0.0


def test_maj_at_k_grouping_round_by_round_matches_all_pairs_with_fewer_comparisons():
    """Random problems whose wrong answers are spellings of a few values (an equality the judge
    knows): maj@k equals a brute-force greedy grouping that knows every pair, and asks only pairs
    against a group's first answer, fewer than all pairs where answers merge."""
    import itertools
    import random

    from stages.evaluation.metrics import majority

    value = lambda a: a.split("~")[0]  # "3~b" is the value 3 written another way
    rng = random.Random(0)
    rows, truth = [], {}
    for n in range(300):
        k = rng.randint(2, 12)
        answers = [f"{rng.randint(0, 4)}~{rng.choice('abc')}{n}" for _ in range(k)]  # no string in two problems
        correct = [value(a) == "0" for a in answers]
        rows.append((f"p{n}", answers, correct))
        # brute force: the correct ones are one answer; wrong strings in order of first response
        # join the first group whose first string has their value; ties go to the earlier first
        votes: dict[str, list] = {}
        for i, (a, c) in enumerate(zip(answers, correct)):
            votes.setdefault("R" if c else a, [0, i])[0] += 1
        groups: list[list] = []
        for a, (v, first) in votes.items():
            if a == "R":
                continue
            home = next((g for g in groups if value(g[0]) == value(a)), None)
            if home is None:
                groups.append([a, v, first])
            else:
                home[1] += v
        right = votes.get("R", [0, 0])
        truth[f"p{n}"] = right[0] > 0 and (right[0], -right[1]) > max(((g[1], -g[2]) for g in groups), default=(0, 0))
    asked: list = []

    def same(pairs):
        asked.extend(pairs)
        return [value(a) == value(b) for a, b in pairs]

    frame = votes_frame(rows)
    got = dict(zip(*majority(frame, 12, same).select("problem_id", "maj")))
    assert got == truth
    compared = {a.split("~")[1][1:] for pair in asked for a in pair}  # the problems judged pair by pair
    all_pairs = {p for pid, answers, correct in rows if pid[1:] in compared
                 for p in itertools.combinations(dict.fromkeys(a for a, c in zip(answers, correct) if not c), 2)}
    assert set(asked) <= all_pairs and len(asked) == len(set(asked))
    assert len(asked) < 0.8 * len(all_pairs)  # all pairs of those problems were asked before


def test_maj_at_k_equality_of_exact_and_user_verifiers(tmp_path):
    from stages.verifiers import SameAnswer

    with SameAnswer("exact") as same:  # as the exact check compares: case, spaces, $, a final period
        assert same([("Paris", " paris."), ("$x + 1$", "x  + 1"), ("Paris", "Rome")]) == [True, True, False]
    (tmp_path / "myverifier.py").write_text("def ok(completion, problem):\n    return True\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with SameAnswer("myverifier:ok") as same:
            assert same([("a", "a"), ("a", "A")]) == [True, False]
    finally:
        sys.path.remove(str(tmp_path))


def test_summarize_gain_and_forgetting_against_a_baseline():
    # The baseline's per-response results: alpha 4 of 5 right (0.8), beta 0 of 2, delta 9 of 10.
    baseline = results_frame({"alpha": [[True]] * 4 + [[False]], "beta": [[False]] * 2, "delta": [[True]] * 9 + [[False]]})
    s = summarize(RESULTS, {"alpha", "beta", "gamma"}, baseline, "m", 1)
    by = {r["benchmark"]: r for r in s.iter_rows(named=True)}
    assert by["alpha"]["baseline_accuracy"] == 0.8
    assert by["alpha"]["gain"] == pytest.approx(0.5 - 0.8)
    assert by["alpha"]["forgetting_pct"] == pytest.approx((0.8 - 0.5) / 0.8 * 100)  # 37.5
    assert by["alpha"]["baseline_pass_at_k"] == pytest.approx(0.8)  # pass@1 = accuracy, measured again
    assert by["alpha"]["pass_at_k_gain"] == pytest.approx(0.5 - 0.8)
    assert by["beta"]["gain"] == pytest.approx(0.5)
    assert by["beta"]["forgetting_pct"] is None  # baseline 0: no relative drop
    assert by["gamma"]["baseline_accuracy"] is None  # not in the baseline
    assert by["gamma"]["gain"] is None and by["gamma"]["forgetting_pct"] is None
    # Forgetting is only for retention sets; gain is for all.
    s = summarize(RESULTS, {"beta"}, baseline, "m", 1)
    alpha = s.filter(pl.col("benchmark") == "alpha").row(0, named=True)
    assert alpha["gain"] == pytest.approx(-0.3) and alpha["forgetting_pct"] is None and not alpha["retain"]
    # At k = 2 the one-response baseline has no pass@2: null, while accuracy's gain stays.
    s = summarize(RESULTS.filter(pl.col("benchmark") == "alpha"), set(), baseline, "m", 2)
    assert s["baseline_pass_at_k"].item() is None and s["pass_at_k_gain"].item() is None
    assert s["gain"].item() == pytest.approx(-0.3)


# ---------------------------------------------------------------------------------------
# Through the command line


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Two problems files: `math500` named by its file, `mixed` by its benchmark column."""
    d = tmp_path_factory.mktemp("bench")
    make_problems(4).write_parquet(d / "math500.parquet")
    make_problems(3).with_columns(
        problem_id=pl.format("q{}", pl.col("problem_id")),
        benchmark=pl.Series(["gsm8k", "aime", "aime"]),
    ).write_parquet(d / "mixed.parquet")
    (d / "evalchecks.py").write_text(CHECKS)
    return d


def eval_cmd(bench, model, out, verifier, *extra):
    return paced("eval", "--model", model, "--problems", bench / "math500.parquet", "--problems", bench / "mixed.parquet",
                 "--out", out, "--verifier", verifier, *FAST, *extra)


@pytest.fixture(scope="module")
def evals(bench, student_dir):
    """One eval where every response is right, one where every response is wrong."""
    mp = pytest.MonkeyPatch()
    mp.chdir(bench)  # the verifier module sits in the current directory
    runs = {}
    for name in ("yes", "no"):
        r = eval_cmd(bench, student_dir, bench / f"eval-{name}", f"evalchecks:{name}")
        assert r.exit_code == 0, r.stderr
        runs[name] = (bench / f"eval-{name}", r)
    yield runs
    mp.undo()


def summary_rows(out) -> dict[str, dict]:
    return {r["benchmark"]: r for r in pl.read_parquet(out / "summary.parquet").iter_rows(named=True)}


def test_per_response_rows_and_summary(evals, student_dir):
    out, r = evals["yes"]
    assert r.stdout.strip() == str(out)
    assert "eval summary" in r.stderr and "100.0 ± 0.0" in r.stderr and "pass@3" in r.stderr and "maj@3" in r.stderr
    df = pl.read_parquet(out / "results")
    assert df.height == (4 + 3) * 3
    assert df.select(pl.struct("problem_id", "sample_index").n_unique()).item() == df.height
    benchmarks = dict(df.select("problem_id", "benchmark").unique().iter_rows())
    assert {benchmarks[f"p{i}"] for i in range(4)} == {"math500"}  # from the file name
    assert [benchmarks[f"qp{i}"] for i in range(3)] == ["gsm8k", "aime", "aime"]  # from the column
    assert df["correct"].all() and set(df["finish_reason"]) <= {"stop", "length"}

    summary = pl.read_parquet(out / "summary.parquet")
    assert summary.columns == [c.name for c in schemas.EVAL_SUMMARY.columns]
    s = summary_rows(out)
    assert set(s) == {"math500", "gsm8k", "aime"}
    assert (s["math500"]["problems"], s["gsm8k"]["problems"], s["aime"]["problems"]) == (4, 1, 2)
    for row in s.values():
        assert (row["samples"], row["accuracy_mean"], row["accuracy_std"]) == (3, 1.0, 0.0)
        assert (row["k"], row["pass_at_k"], row["maj_at_k"]) == (3, 1.0, None)  # the module verifier extracts nothing
        assert row["model"] == str(student_dir)
    meta = pq.read_schema(out / "summary.parquet").metadata
    assert meta[b"paced.schema"] == b"eval_summary"
    assert json.loads(meta[b"paced.provenance"])["stage"] == "eval"
    assert all(row["accuracy_mean"] == 0.0 for row in summary_rows(evals["no"][0]).values())


def test_rerun_with_a_baseline_regenerates_nothing_and_reports_gain_and_forgetting(evals, bench, student_dir, monkeypatch):
    monkeypatch.chdir(bench)
    yes, no = evals["yes"][0], evals["no"][0]
    before = {p.name: p.stat().st_mtime_ns for p in (yes / "results").glob("part-*.parquet")}

    # All right now, all wrong in the baseline: gain 1; a retention set at baseline 0 has no forgetting.
    r = eval_cmd(bench, student_dir, yes, "evalchecks:yes", "--baseline", no, "--retain", "aime")
    assert r.exit_code == 0, r.stderr
    assert "already complete" in r.stderr and "0 / 0" not in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (yes / "results").glob("part-*.parquet")} == before
    s = summary_rows(yes)
    assert all(row["baseline_accuracy"] == 0.0 and row["gain"] == 1.0 for row in s.values())
    assert s["aime"]["retain"] and s["aime"]["forgetting_pct"] is None
    assert not s["math500"]["retain"] and s["math500"]["forgetting_pct"] is None
    assert all(row["pass_at_k_gain"] == 1.0 and row["k"] == 3 for row in s.values())

    # Another k only rewrites the summary: pass@k and maj@k (the baseline's too) at k = 2.
    r = eval_cmd(bench, student_dir, yes, "evalchecks:yes", "--baseline", no, "--at-k", "2")
    assert r.exit_code == 0 and "already complete" in r.stderr and "pass@2" in r.stderr, r.stderr
    assert "+100.0" in r.stderr and "gain over the baseline" in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (yes / "results").glob("part-*.parquet")} == before
    assert all((row["k"], row["pass_at_k"], row["baseline_pass_at_k"]) == (2, 1.0, 0.0) for row in summary_rows(yes).values())
    r = eval_cmd(bench, student_dir, yes, "evalchecks:yes", "--at-k", "4")
    assert r.exit_code == 2 and "--at-k 4: must be from 1 to --samples = 3" in r.stderr

    # The reverse: all wrong now, all right in the baseline: retention sets forgot 100 %.
    r = eval_cmd(bench, student_dir, no, "evalchecks:no", "--baseline", yes, "--retain", "aime", "--retain", "gsm8k")
    assert r.exit_code == 0, r.stderr
    s = summary_rows(no)
    assert s["aime"]["forgetting_pct"] == 100.0 and s["gsm8k"]["forgetting_pct"] == 100.0
    assert s["math500"]["forgetting_pct"] is None and s["math500"]["gain"] == -1.0
    assert "forgetting" in r.stderr


def test_baseline_missing_a_benchmark_gives_nulls_and_a_warning(evals, bench, student_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(bench)
    partial = tmp_path / "partial"
    r = paced("eval", "--model", student_dir, "--problems", bench / "math500.parquet", "--out", partial,
              "--verifier", "evalchecks:no", *FAST)
    assert r.exit_code == 0, r.stderr
    r = eval_cmd(bench, student_dir, evals["yes"][0], "evalchecks:yes", "--baseline", partial)
    assert r.exit_code == 0, r.stderr
    assert "warning" in r.stderr and "gsm8k" in r.stderr
    s = summary_rows(evals["yes"][0])
    assert s["math500"]["gain"] == 1.0
    assert s["aime"]["baseline_accuracy"] is None and s["aime"]["gain"] is None


def test_resume_regenerates_only_the_missing_part(bench, student_dir, tmp_path):
    out = tmp_path / "resumed"
    assert eval_cmd(bench, student_dir, out, "exact").exit_code == 0  # a built-in verifier
    full = pl.read_parquet(out / "results")
    # A run killed after its first part: later parts and the manifest are not there yet.
    (out / "results" / "_manifest.parquet").unlink()
    (out / "summary.parquet").unlink()
    (out / "results" / "part-00002.parquet").unlink()
    r = eval_cmd(bench, student_dir, out, "exact")
    assert r.exit_code == 0, r.stderr
    assert "parts resumed / generated now: 2 / 1" in r.stderr
    assert pl.read_parquet(out / "results").equals(full)
    assert (out / "summary.parquet").exists()


def test_a_math_verifier_eval_groups_answers_and_leaves_no_process(bench, student_dir, tmp_path):
    """With `math`, maj@k's grouping of answers runs in bounded verifier processes after the
    responses are checked: the summary is written and no worker outlives the command."""
    import multiprocessing

    out = tmp_path / "math"
    r = eval_cmd(bench, student_dir, out, "math")
    assert r.exit_code == 0, r.stderr
    assert "maj@3" in r.stderr and (out / "summary.parquet").is_file()
    assert not multiprocessing.active_children()


def test_bad_input_exits_2_before_loading_anything(evals, bench, student_dir, tmp_path, problems_file):
    clash = tmp_path / "clash.parquet"
    make_problems(2).write_parquet(clash)  # p0, p1 are also in math500.parquet
    files = ["--problems", bench / "math500.parquet", "--problems", bench / "mixed.parquet"]
    (tmp_path / "plain").mkdir()
    cases = [
        ([*files, "--retain", "mmlu"], "--retain mmlu: no such benchmark"),
        ([*files, "--baseline", tmp_path / "plain"], "not a paced eval directory"),
        ([*files, "--baseline", tmp_path], "--out " + str(tmp_path / "out") + ": lies inside --baseline"),
        ([*files, "--baseline", tmp_path / "nowhere"], "--baseline"),
        ([*files, "--baseline", problems_file], "not a paced eval directory"),
        (["--problems", bench / "math500.parquet", "--problems", clash], "'p0', 'p1' appear in both"),
        ([*files, "--samples", "0"], "--samples 0"),
        ([*files, "--timeout", "0", "--top-p", "2"], "--timeout 0.0"),
    ]
    for args, needle in cases:
        out = tmp_path / "out"
        r = paced("eval", "--model", student_dir, "--out", out, *args)
        assert r.exit_code == 2, (args, r.stderr)
        assert needle in r.stderr, (needle, r.stderr)
        assert not out.exists()
    r = paced("eval", "--model", student_dir, "--out", tmp_path / "o", *files, "--timeout", "0", "--top-p", "2")
    assert "--top-p 2.0" in r.stderr  # every bad option named at once


def test_a_verifier_function_that_raises_exits_2_and_leaves_nothing(bench, student_dir, tmp_path, monkeypatch):
    (tmp_path / "evalbad.py").write_text("def check(completion, problem):\n    raise ValueError('boom')\n")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "e"
    r = eval_cmd(bench, student_dir, out, "evalbad:check")
    assert r.exit_code == 2
    assert "evalbad:check" in r.stderr and "boom" in r.stderr and "problem_id='p0'" in r.stderr
    assert not out.exists()
