"""paced weight: against a hand computation, through the real command line."""

from __future__ import annotations

import math

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.weight import SCHEMES
from tests.conftest import ROOT, paced


def write_scores(path, outcomes: dict[str, list[bool]]) -> None:
    rows = [(pid, k, c) for pid, cs in outcomes.items() for k, c in enumerate(cs)]
    pl.DataFrame(rows, schema=["problem_id", "sample_index", "correct"], orient="row").write_parquet(path)


def by_hand(outcomes, scheme, alpha, beta, normalize):
    raw = {}
    for pid, cs in outcomes.items():
        p = sum(cs) / len(cs)
        if scheme == "uniform":
            w = 1.0
        elif scheme == "hard-filter":
            w = 1.0 if 0 < p < 1 else 0.0
        else:
            w = (p**alpha if p > 0 or alpha > 0 else 1.0) * ((1 - p) ** beta if p < 1 or beta > 0 else 1.0)
        raw[pid] = (len(cs), sum(cs), p, w)
    total = sum(r[3] for r in raw.values())
    scale = len(raw) / total if normalize == "mean" and total > 0 else 1.0
    return {pid: (n, c, p, w * scale) for pid, (n, c, p, w) in raw.items()}


OUTCOMES = {
    "mastered": [True] * 8,
    "unsolved": [False] * 8,
    "half": [True, False] * 4,
    "one": [True] + [False] * 7,
    "seven": [True] * 7 + [False],
    "k4": [True, False, False, False],  # another K: pass rates need not share a denominator
}


CASES = [("beta", a, b) for a, b in [(1, 1), (0.5, 2), (2, 0.5), (0, 1), (1, 0), (0, 0)]] + [
    ("uniform", 1, 1), ("hard-filter", 1, 1)
]


@pytest.mark.parametrize("normalize", ["mean", "none"])
@pytest.mark.parametrize("scheme, alpha, beta", CASES)
def test_weights_match_a_hand_computation(tmp_path, scheme, normalize, alpha, beta):
    write_scores(tmp_path / "scores.parquet", OUTCOMES)
    out = tmp_path / "weights.parquet"
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", out, "--scheme", scheme,
              "--normalize", normalize, "--alpha", alpha, "--beta", beta)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out)
    got = {row["problem_id"]: row for row in pl.read_parquet(out).iter_rows(named=True)}
    want = by_hand(OUTCOMES, scheme, alpha, beta, normalize)
    assert list(got) == list(OUTCOMES)  # one row per problem, in order of first appearance
    for pid, (n, c, p, w) in want.items():
        assert got[pid]["num_samples"] == n and got[pid]["num_correct"] == c
        assert got[pid]["pass_rate"] == pytest.approx(p)
        assert got[pid]["weight"] == pytest.approx(w, rel=1e-12, abs=1e-12)
    if normalize == "mean" and any(v[3] for v in want.values()):
        assert pl.read_parquet(out)["weight"].mean() == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(1, 16), st.integers(0, 16)), min_size=1, max_size=30),
    alpha=st.floats(0, 4), beta=st.floats(0, 4),
)
def test_property_beta_kernel_and_mean_normalisation(counts, alpha, beta):
    from stages.weight import WeightConfig, compute

    outcomes = {f"q{i}": [True] * min(c, n) + [False] * (n - min(c, n)) for i, (n, c) in enumerate(counts)}
    frame = pl.DataFrame(
        [(pid, k, c) for pid, cs in outcomes.items() for k, c in enumerate(cs)],
        schema=["problem_id", "sample_index", "correct"], orient="row",
    )
    got, _ = compute(frame.lazy(), WeightConfig(scores="s", out="o", alpha=alpha, beta=beta))
    want = by_hand(outcomes, "beta", alpha, beta, "mean")
    for row in got.iter_rows(named=True):
        assert row["weight"] == pytest.approx(want[row["problem_id"]][3], rel=1e-9, abs=1e-12)
        assert math.isfinite(row["weight"]) and row["weight"] >= 0
    if alpha > 0 and beta > 0:  # the frontier only: mastered and unsolved problems get nothing
        assert all(r["weight"] == 0 for r in got.iter_rows(named=True) if r["pass_rate"] in (0.0, 1.0))


def test_summary_names_zero_weight_reasons_and_plot(tmp_path):
    write_scores(tmp_path / "scores.parquet", OUTCOMES)
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", tmp_path / "w.parquet",
              "--plot", tmp_path / "w.png")
    assert r.exit_code == 0, r.stderr
    assert "mastered (p = 1)" in r.stderr and "unsolved (p = 0)" in r.stderr
    assert (tmp_path / "w.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_rewrites_its_own_file_and_other_options_need_overwrite(tmp_path):
    write_scores(tmp_path / "scores.parquet", OUTCOMES)
    out, png = tmp_path / "w.parquet", tmp_path / "w.png"
    base = ["weight", "--scores", tmp_path / "scores.parquet", "--out", out, "--plot", png]
    assert paced(*base).exit_code == 0
    assert paced(*base).exit_code == 0  # the same command: the same file, rewritten
    before = out.read_bytes(), png.read_bytes()
    r = paced(*base, "--alpha", "2")
    assert r.exit_code == 2 and "--out" in r.stderr and "--overwrite" in r.stderr
    assert (out.read_bytes(), png.read_bytes()) == before
    r = paced(*base, "--alpha", "2", "--overwrite")
    assert r.exit_code == 0, r.stderr
    meta = pq.read_schema(out).metadata
    assert b'"alpha": 2.0' in meta[b"paced.provenance"]
    assert png.read_bytes() != before[1]


def test_the_same_command_with_inputs_named_another_way_leaves_the_file_byte_for_byte(tmp_path, monkeypatch):
    """`--scores` by a relative path, then by its absolute one (or from another directory): the
    same rows from the same inputs, so the file stays as it was. It was rewritten (its provenance
    names the path), which changed its fingerprint and refused every job made from it."""
    write_scores(tmp_path / "scores.parquet", OUTCOMES)
    monkeypatch.chdir(tmp_path)
    assert paced("weight", "--scores", "scores.parquet", "--out", "w.parquet").exit_code == 0
    before = (tmp_path / "w.parquet").read_bytes()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", "../w.parquet")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "w.parquet").read_bytes() == before


def test_a_provenance_of_another_shape_is_not_the_same_file(tmp_path):
    """An output whose provenance paced would not write (an input recorded as a bare string) is
    rewritten by the same command, as before, not a traceback."""
    import json

    write_scores(tmp_path / "scores.parquet", OUTCOMES)
    out = tmp_path / "w.parquet"
    base = ["weight", "--scores", tmp_path / "scores.parquet", "--out", out]
    assert paced(*base).exit_code == 0
    table = pq.read_table(out)
    meta = dict(table.schema.metadata)
    prov = json.loads(meta[b"paced.provenance"])
    prov["inputs"] = {"scores": "edited"}
    meta[b"paced.provenance"] = json.dumps(prov).encode()
    pq.write_table(table.replace_schema_metadata(meta), out)
    r = paced(*base)
    assert r.exit_code == 0, r.stderr


def test_plot_never_replaces_a_file_paced_did_not_write(tmp_path):
    write_scores(tmp_path / "scores.parquet", OUTCOMES)
    mine = tmp_path / "figure.png"
    mine.write_bytes(b"\x89PNG\r\n\x1a\n my own figure")
    for extra in ([], ["--overwrite"]):
        r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", tmp_path / "w.parquet", "--plot", mine, *extra)
        assert r.exit_code == 2 and "--plot" in r.stderr and "did not write" in r.stderr, r.stderr
        assert mine.read_bytes() == b"\x89PNG\r\n\x1a\n my own figure"
        assert not (tmp_path / "w.parquet").exists()  # refused before any work


def test_out_and_plot_on_one_path_are_refused(tmp_path):
    write_scores(tmp_path / "scores.parquet", OUTCOMES)
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", tmp_path / "w.png", "--plot", tmp_path / "w.png")
    assert r.exit_code == 2 and "one would write over the other" in r.stderr
    assert not (tmp_path / "w.png").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--alpha", "-1"], "--alpha"),
        (["--beta", "-0.5"], "--beta"),
        (["--alpha", "nan"], "--alpha"),
        (["--alpha", "abc"], "--alpha"),
        (["--scheme", "soft"], f"--scheme soft: use one of {', '.join(SCHEMES)}"),
        (["--normalize", "max"], "--normalize max"),
    ],
)
def test_bad_options_exit_2_and_leave_the_output_untouched(tmp_path, args, needle):
    write_scores(tmp_path / "scores.parquet", OUTCOMES)
    out = tmp_path / "w.parquet"
    assert paced("weight", "--scores", tmp_path / "scores.parquet", "--out", out).exit_code == 0
    before = out.read_bytes()
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", out, *args)
    assert r.exit_code == 2
    assert needle in r.stderr
    assert out.read_bytes() == before


def test_scores_from_another_schema_version_exit_2(tmp_path):
    import pyarrow as pa

    path = tmp_path / "scores.parquet"
    t = pa.table({"problem_id": ["a"], "sample_index": pa.array([0], pa.int32()), "correct": [True]})
    pq.write_table(t.replace_schema_metadata({b"paced.schema": b"scores", b"paced.schema_version": b"0"}), path)
    r = paced("weight", "--scores", path, "--out", tmp_path / "w.parquet")
    assert r.exit_code == 2 and "schema version 0" in r.stderr
    assert not (tmp_path / "w.parquet").exists()


def test_duplicate_samples_are_refused(tmp_path):
    path = tmp_path / "scores.parquet"
    pl.DataFrame({"problem_id": ["a", "a"], "sample_index": [0, 0], "correct": [True, False]}).write_parquet(path)
    r = paced("weight", "--scores", path, "--out", tmp_path / "w.parquet")
    assert r.exit_code == 2
    assert "problem_id + sample_index must be unique" in r.stderr and "('a', 0)" in r.stderr
    assert not (tmp_path / "w.parquet").exists()


def test_out_that_is_another_file_is_not_replaced(tmp_path):
    write_scores(tmp_path / "scores.parquet", OUTCOMES)
    precious = tmp_path / "notes.parquet"
    precious.write_text("my notes")
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", precious)
    assert r.exit_code == 2 and "not a weights file paced wrote" in r.stderr
    assert precious.read_text() == "my notes"


# ------------------------------------------------------------------ fast path (rows grouped by problem)
#
# When reading proves that each problem's rows are contiguous and sample_index increases
# within each (how `paced score` writes), the unique-key check and the per-problem counts skip
# hashing every row (schemas.base.key_runs, stages.weight.counts). Everything else takes the
# general path. Both must give the same frame, and both must refuse duplicates.


def random_scores(seed: int, problems: int = 300) -> pl.DataFrame:
    """Scores as `paced score` writes them: each problem's samples together, in sample order,
    with K varying per problem (1 to 9) and some problems fully right or wrong."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ks = rng.integers(1, 10, problems)
    p = rng.choice([0.0, 1.0, 0.3, 0.5, 0.9], problems)
    return pl.DataFrame(
        {
            "problem_id": np.repeat([f"q{rng.integers(1 << 40):x}-{i}" for i in range(problems)], ks),
            "sample_index": np.concatenate([np.arange(k) for k in ks]).astype(np.int32),
            "correct": rng.random(int(ks.sum())) < np.repeat(p, ks),
        }
    )


def general_path(monkeypatch):
    """Make reading never find the runs: every stage then takes the general path."""
    import schemas.base

    monkeypatch.setattr(schemas.base, "key_runs", lambda frame, key: None)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_and_general_counts_are_equal_frames(seed):
    from polars.testing import assert_frame_equal

    from schemas.base import key_runs
    from stages.weight import WeightConfig, compute, counts

    grouped = random_scores(seed)
    runs = key_runs(grouped, ("problem_id", "sample_index"))
    assert runs is not None  # the grouped order is the fast path's
    assert_frame_equal(counts(grouped, runs), counts(grouped.lazy()), check_exact=True)
    config = WeightConfig(scores="s", out="o", alpha=0.7, beta=1.3)
    fast, f_fast = compute(grouped, config, runs)
    general, f_general = compute(grouped.lazy(), config)
    assert_frame_equal(fast, general, check_exact=True)
    assert f_fast == f_general

    # Shuffled rows: not contiguous, so the fast path is refused, and the general path gives
    # the same per-problem rows (in the shuffled order of first appearance; the normalisation
    # sums the weights in that order, hence the last-bit tolerance on the weight alone).
    shuffled = grouped.sample(fraction=1.0, shuffle=True, seed=seed)
    assert key_runs(shuffled, ("problem_id", "sample_index")) is None
    reordered, _ = compute(shuffled, config, None)
    assert_frame_equal(counts(shuffled.lazy()).sort("problem_id"), counts(grouped, runs).sort("problem_id"), check_exact=True)
    assert_frame_equal(reordered.sort("problem_id"), fast.sort("problem_id"), check_exact=False, rel_tol=1e-12, abs_tol=0)


@pytest.mark.parametrize("order", ["grouped", "shuffled", "samples-reversed", "split-problem"])
def test_weight_stage_output_is_the_same_on_both_paths(tmp_path, monkeypatch, order):
    from polars.testing import assert_frame_equal

    import schemas
    from stages import weight

    frame = random_scores(7)
    if order == "shuffled":
        frame = frame.sample(fraction=1.0, shuffle=True, seed=3)
    elif order == "samples-reversed":  # grouped, but sample_index decreasing within a problem
        frame = frame.reverse()
    elif order == "split-problem":  # one problem's rows in two places (e.g. two parts)
        frame = pl.concat([frame.slice(3), frame.slice(0, 3)])
    scores = tmp_path / "scores.parquet"
    frame.write_parquet(scores)
    art = schemas.read(scores, schemas.SCORES, option="--scores", columns=["correct"])
    assert (art.key_runs is not None) == (order == "grouped")
    fast = weight.run(weight.WeightConfig(scores=scores, out=tmp_path / "fast.parquet"))
    general_path(monkeypatch)
    assert schemas.read(scores, schemas.SCORES, option="--scores", columns=["correct"]).key_runs is None
    general = weight.run(weight.WeightConfig(scores=scores, out=tmp_path / "general.parquet"))
    a, b = pl.read_parquet(fast), pl.read_parquet(general)
    assert_frame_equal(a, b, check_exact=True)
    assert a["problem_id"].to_list() == frame["problem_id"].unique(maintain_order=True).to_list()
    assert pq.read_schema(fast) == pq.read_schema(general).with_metadata(pq.read_schema(fast).metadata)


@pytest.mark.parametrize("path", ["fast", "general"])
@pytest.mark.parametrize(
    "rows, dup",
    [
        ([("a", 0), ("a", 1), ("a", 1), ("b", 0)], "('a', 1)"),  # grouped, a repeated sample
        ([("a", 0), ("b", 0), ("a", 0)], "('a', 0)"),  # the repeat comes back later
        ([("a", 0), ("a", 1), ("b", 0), ("b", 0)], "('b', 0)"),  # in the last problem
        ([("a", 1), ("a", 0), ("a", 1)], "('a', 1)"),  # not increasing
    ],
)
def test_duplicates_are_refused_on_both_paths(tmp_path, monkeypatch, path, rows, dup):
    if path == "general":
        general_path(monkeypatch)
    scores = tmp_path / "scores.parquet"
    pl.DataFrame(
        [(p, i, i % 2 == 0) for p, i in rows], schema=["problem_id", "sample_index", "correct"], orient="row"
    ).write_parquet(scores)
    r = paced("weight", "--scores", scores, "--out", tmp_path / "w.parquet")
    assert r.exit_code == 2
    assert "problem_id + sample_index must be unique" in r.stderr and dup in r.stderr
    assert not (tmp_path / "w.parquet").exists()


# --estimator posterior: the kernel's expectation under the Beta posterior of p.


def numeric_posterior(c, k, alpha, beta, a, b, n=200_000):
    """E[p^alpha (1-p)^beta] under Beta(c + a, k - c + b) by the midpoint rule on the density
    (integrable endpoint singularities need a fine grid: the midpoints avoid them)."""
    x0, y0 = c + a, k - c + b
    log_norm = math.lgamma(x0 + y0) - math.lgamma(x0) - math.lgamma(y0)
    h = 1.0 / n
    total = 0.0
    for i in range(n):
        p = (i + 0.5) * h
        total += p ** alpha * (1 - p) ** beta * math.exp(log_norm + (x0 - 1) * math.log(p) + (y0 - 1) * math.log1p(-p))
    return total * h


@pytest.mark.parametrize("c, k, alpha, beta, a, b", [
    (0, 8, 1, 1, 0.5, 0.5), (8, 8, 1, 1, 0.5, 0.5), (3, 8, 1, 1, 0.5, 0.5), (1, 4, 2, 0.5, 1, 1),
    (5, 16, 0.5, 2, 2, 3), (0, 1, 1, 1, 1, 1), (7, 8, 0, 1, 0.5, 0.5),
])
def test_posterior_kernel_matches_numerical_integration(c, k, alpha, beta, a, b):
    from stages.weight import posterior_kernel

    want = numeric_posterior(c, k, alpha, beta, a, b)
    assert posterior_kernel(c, k, alpha, beta, a, b) == pytest.approx(want, rel=2e-3)


def test_posterior_weights_through_the_command(tmp_path):
    """0 of 8 and 8 of 8 get a small weight instead of none; each problem's weight is the
    posterior expectation of its (c, K), mean-normalised; estimator and prior are recorded."""
    import json

    from stages.weight import posterior_kernel

    write_scores(tmp_path / "scores.parquet", OUTCOMES)
    out = tmp_path / "weights.parquet"
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", out, "--estimator", "posterior", "--prior", "1,1",
              "--plot", tmp_path / "w.png")
    assert r.exit_code == 0, r.stderr
    w = pl.read_parquet(out).sort("problem_id")
    raw = {x["problem_id"]: posterior_kernel(x["num_correct"], x["num_samples"], 1, 1, 1, 1) for x in w.iter_rows(named=True)}
    scale = len(raw) / sum(raw.values())
    for x in w.iter_rows(named=True):
        assert x["weight"] == pytest.approx(raw[x["problem_id"]] * scale, rel=1e-12)
        assert x["pass_rate"] == x["num_correct"] / x["num_samples"]  # p stays c / K
    assert w.filter(pl.col("problem_id") == "unsolved")["weight"][0] > 0
    options = json.loads(pq.read_metadata(out).metadata[b"paced.provenance"])["options"]
    assert options["estimator"] == "posterior" and options["prior"] == "1,1"
    assert (tmp_path / "w.png").stat().st_size > 1000
    # Another prior is another output: refused without --overwrite.
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", out, "--estimator", "posterior")
    assert r.exit_code == 2 and "--overwrite" in r.stderr


@pytest.mark.parametrize("args, needle", [
    (["--estimator", "bayes"], "--estimator bayes"),
    (["--estimator", "posterior", "--scheme", "uniform"], "--scheme uniform takes --estimator plugin"),
    (["--estimator", "posterior", "--prior", "0,1"], "--prior 0,1"),
    (["--estimator", "posterior", "--prior", "half"], "--prior half"),
    (["--prior", "1,1"], "applies to --estimator posterior only"),
])
def test_bad_estimator_options_exit_2(tmp_path, args, needle):
    write_scores(tmp_path / "scores.parquet", OUTCOMES)
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", tmp_path / "w.parquet", *args)
    assert r.exit_code == 2 and needle in r.stderr, r.stderr
    assert not (tmp_path / "w.parquet").exists()


def write_snr(path, fit_of_rows=None, *, alpha=1.5, beta=0.7, drop_fit=False):
    """An snr artifact as `paced snr` writes it, from per-problem SNRs that follow
    p^alpha (1-p)^beta (two problems per bin), with the fit `paced snr` stores."""
    import schemas
    from schemas.snr import FIT_KEY
    from stages.snr import fit_kernel, per_problem_bin_stats

    ps = [x for b in range(1, 10) for x in (b / 10 + 0.02, b / 10 + 0.06)]
    measured = [{"pass_rate": p, "snr": 2 * p**alpha * (1 - p) ** beta * (1 + (i % 2)) + 0.25,
                 "snr_debiased": 2 * p**alpha * (1 - p) ** beta * (1 + (i % 2)), "status": "ok"}
                for i, p in enumerate(ps)]
    rows = per_problem_bin_stats(measured, 10, 0)
    prov = schemas.provenance("snr", {"estimator": "per-problem"})
    if not drop_fit:
        prov[FIT_KEY] = fit_kernel(rows)
    table = schemas.table_from_columns({c.name: [r[c.name] for r in rows] for c in schemas.SNR.columns}, schemas.SNR)
    schemas.write_file(path, table, schemas.SNR, prov)
    return prov.get(FIT_KEY)


def test_from_snr_takes_alpha_and_beta_from_the_fit(tmp_path):
    """paced weight --from-snr: the weights of --alpha/--beta set to the stored fit; the fit is in
    the weights' provenance; the snr file is an input (its content, not its name, in the key)."""
    import json

    outcomes = {f"q{i}": [j < i for j in range(8)] for i in range(9)}
    write_scores(tmp_path / "scores.parquet", outcomes)
    fit = write_snr(tmp_path / "snr.parquet")
    assert fit["status"] == "ok" and 1.2 < fit["alpha"] < 1.8 and 0.4 < fit["beta"] < 1.0
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", tmp_path / "w.parquet",
              "--from-snr", tmp_path / "snr.parquet")
    assert r.exit_code == 0, r.stderr
    assert f"alpha={fit['alpha']:g}" in r.stderr
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", tmp_path / "by_hand.parquet",
              "--alpha", repr(fit["alpha"]), "--beta", repr(fit["beta"]))
    assert r.exit_code == 0, r.stderr
    got, want = pl.read_parquet(tmp_path / "w.parquet"), pl.read_parquet(tmp_path / "by_hand.parquet")
    assert got["weight"].to_list() == want["weight"].to_list()
    prov = json.loads(pq.read_schema(tmp_path / "w.parquet").metadata[b"paced.provenance"])
    assert prov["options"]["kernel_fit"] == fit and prov["options"]["alpha"] == fit["alpha"]
    # The same command rewrites its own file.
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", tmp_path / "w.parquet",
              "--from-snr", tmp_path / "snr.parquet")
    assert r.exit_code == 0, r.stderr
    # weight starts without torch, --from-snr too (it read the fit through stages.snr, which imports it)
    import subprocess
    import sys

    code = ("import sys, runpy\nsys.argv = ['paced', 'weight', '--scores', {s!r}, '--out', {o!r}, '--from-snr', {f!r}]\n"
            "try:\n    runpy.run_module('paced_cli', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n").format(
        s=str(tmp_path / "scores.parquet"), o=str(tmp_path / "w.parquet"), f=str(tmp_path / "snr.parquet"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("case, needle", [
    ("alpha", "leave --alpha and --beta out"),
    ("scheme", "--scheme uniform takes no alpha and beta"),
    ("no fit", "has no kernel fit"),
    ("few bins", "no kernel was fitted (too few bins"),
    ("negative", "negative exponent"),
    ("missing", "no such file"),
])
def test_from_snr_refusals_exit_2(tmp_path, case, needle):
    import schemas
    from schemas.snr import FIT_KEY

    write_scores(tmp_path / "scores.parquet", {"q0": [True, False], "q1": [False, False]})
    snr = tmp_path / "snr.parquet"
    extra = []
    if case == "alpha":
        write_snr(snr)
        extra = ["--alpha", "2"]
    elif case == "scheme":
        write_snr(snr)
        extra = ["--scheme", "uniform"]
    elif case == "no fit":
        write_snr(snr, drop_fit=True)
    elif case in ("few bins", "negative"):
        write_snr(tmp_path / "base.parquet")
        t = pq.read_table(tmp_path / "base.parquet")
        prov = json_prov = __import__("json").loads(t.schema.metadata[b"paced.provenance"])
        json_prov[FIT_KEY] = (dict(prov[FIT_KEY], status="too few bins: 2 with 0 < mean p < 1", alpha=None, beta=None)
                              if case == "few bins" else dict(prov[FIT_KEY], alpha=-0.4))
        schemas.write_file(snr, t.replace_schema_metadata(None), schemas.SNR, json_prov)
    r = paced("weight", "--scores", tmp_path / "scores.parquet", "--out", tmp_path / "w.parquet", "--from-snr", snr, *extra)
    assert r.exit_code == 2 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "w.parquet").exists()


def test_one_part_of_a_job_given_alone_is_said(chain, tmp_path):
    """A part of a paced job read as a file of its own leaves the job's other parts out: said."""
    part = chain / "rollouts" / "part-00000.parquet"
    r = paced("score", "--rollouts", part, "--problems", chain / "problems.parquet", "--out", tmp_path / "s",
              "--verifier", "exact", "--workers", "1")
    assert r.exit_code == 0, r.stderr
    assert f"note: --rollouts {part} is one of the 2 part(s) of the paced job {chain / 'rollouts'}: only its rows" in r.stderr
    assert r.stderr.count("note: --rollouts") == 1
    assert pq.read_table(tmp_path / "s").num_rows == pq.read_metadata(part).num_rows < 12
