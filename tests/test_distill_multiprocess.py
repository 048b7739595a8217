"""paced distill under `accelerate launch` with 2 CPU processes (DDP over gloo) equals 1 process.

The global batch (--batch-size) is split across the processes; the loss is normalised over the
global batch, so the loss curve and the final weights match a single-process run of the same
--batch-size up to float32 summation order. Tolerances: rtol 1e-4 (with an absolute floor of
2e-7, see LOSS_ATOL) on the logged loss, fkl, rkl and grad norm, and exact equality of step,
epoch, lr, tokens, problems and weight sum; atol 1e-5 on every final weight. Measured on the
2-core dev machine: losses within 1.6e-4 relative / 6e-8 absolute, grad norms within 1.3e-6
relative, weights within 2.5e-7. Only process 0 writes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import ROOT, manifest_record, paced, wait_for
from tests.test_distill import setup  # noqa: F401 (the module fixture: teacher logits and weights)

pytestmark = pytest.mark.slow
# 6 problems of weight > 0 (2 sequences each). --batch-size 5: step 1 splits 3/2 problems, so
# the processes run 3 and 2 micro-batches of 2 sequences and the second pads with a coef-0
# micro-batch; step 2 has 1 problem, so process 1 has none and runs only the padding.
ARGS = ["--lr", "3e-3", "--batch-size", "5", "--micro-batch-size", "2", "--schedule", "cosine", "--warmup-steps", "2", "--seed", "1"]
CURVE = ("loss", "fkl", "rkl", "grad_norm")
# A step's loss is a sum of token KLs, each a difference of float32 log-probabilities, so its
# float32 error has an absolute floor (~1e-7) however small the loss gets late in training
# (measured: at most 6e-8 for losses down to 2e-4); above ~2e-3 the relative bound decides.
LOSS_ATOL = 2e-7
EXACT = ("step", "epoch", "lr", "tokens", "problems", "weight_sum")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_cmd(*args) -> list[str]:
    """What the README documents: accelerate launch with the shipped DDP config, 2 processes."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "examples/accelerate/ddp.yaml"),
        "--num_processes", "2", "--main_process_port", str(_free_port()), "-m", "paced_cli", "distill", *map(str, args),
    ]


def launch_env(progress: bool = False) -> dict:
    # CUDA hidden: the test is the CPU (gloo) path even on a machine with GPUs.
    return os.environ | {"PACED_NO_PROGRESS": "0" if progress else "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def base_args(setup, student_dir):
    return ["--student", student_dir, "--teacher-logits", setup / "tl", "--weights", setup / "weights.parquet", *ARGS]


def assert_same_run(single, multi):
    a, b = pl.read_parquet(single / "train_log.parquet"), pl.read_parquet(multi / "train_log.parquet")
    for col in EXACT:
        assert a[col].to_list() == b[col].to_list(), col
    for col in CURVE:
        assert b[col].to_list() == pytest.approx(a[col].to_list(), rel=1e-4, abs=LOSS_ATOL), col
    from safetensors.torch import load_file

    wa, wb = load_file(single / "model.safetensors"), load_file(multi / "model.safetensors")
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=1e-5), (k, (wa[k] - wb[k]).abs().max())
    # The trained model moved: equal weights are not the untouched student.
    return a, b


def test_two_processes_match_one_process_and_only_rank_0_writes(tmp_path, setup, student_dir):  # noqa: F811
    args = base_args(setup, student_dir) + ["--epochs", "2"]
    r = paced("distill", *args, "--out", tmp_path / "single")
    assert r.exit_code == 0, r.stderr

    multi = tmp_path / "multi"
    p = subprocess.run(launch_cmd(*args, "--out", multi), cwd=ROOT, env=launch_env(progress=True),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    assert p.stdout.splitlines() == [str(multi)]  # the output path, printed once
    assert p.stderr.count("distill summary") == 1
    assert p.stderr.count("2 (DDP via accelerate)") == 1
    assert p.stderr.count("━ 4/4") == 1  # one progress bar (4 steps: 2 epochs of 5 + 1 problems)

    a, b = assert_same_run(tmp_path / "single", multi)
    assert b.height == 4 and b["problems"].to_list() == [5, 1, 5, 1]
    # Same artifacts, written once: no lock, data cache, checkpoints or temporary files left.
    assert sorted(os.listdir(multi)) == sorted(os.listdir(tmp_path / "single"))
    assert not any(n.startswith(".") or n in ("_lock.parquet", "checkpoints") for n in os.listdir(multi))
    # The same job (options and inputs) as the 1-process run: --resume may switch launch modes.
    manifest = manifest_record(multi)
    assert manifest["key"] == manifest_record(tmp_path / "single")["key"]
    prov = json.loads(pq.read_schema(multi / "train_log.parquet").metadata[b"paced.provenance"])
    assert prov["launch"] == {"processes": 2, "distributed_type": "MULTI_CPU"}
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(multi)  # the unwrapped model: an ordinary checkpoint


def test_kill_then_resume_under_the_launcher(tmp_path, setup, student_dir):  # noqa: F811
    """SIGKILL every process of a 2-process run after a checkpoint; --resume under the same
    launcher finishes it, and the result equals an uninterrupted single-process run."""
    import psutil

    args = base_args(setup, student_dir) + ["--max-steps", "12", "--save-steps", "2"]
    ref = paced("distill", *args, "--out", tmp_path / "ref")
    assert ref.exit_code == 0, ref.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen(launch_cmd(*args, "--out", out), cwd=ROOT, env=launch_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(proc, out / "checkpoints" / "step-2" / "state.json")
        workers = psutil.Process(proc.pid).children(recursive=True)
        for w in workers:  # the node dies: every worker at once, then the launcher
            w.send_signal(signal.SIGKILL)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    psutil.wait_procs(workers, timeout=30)
    assert not (out / "_manifest.parquet").exists()

    p = subprocess.run(launch_cmd(*args, "--out", out, "--resume"), cwd=ROOT, env=launch_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    assert p.stderr.count("resumed from") == 1  # logged by process 0 only
    assert p.stdout.splitlines() == [str(out)]
    a, b = assert_same_run(tmp_path / "ref", out)
    assert b["step"].to_list() == list(range(1, 13))
    assert not (out / "checkpoints").exists() and not (out / "_lock.parquet").exists()
