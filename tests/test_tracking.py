"""distill --report-to tensorboard|wandb and --plot: train_log's rows where people look at them."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tests.conftest import paced, paced_subprocess


@pytest.fixture(scope="module")
def setup(chain, student_dir):
    """distill's inputs from the session's chain of artifacts (conftest)."""
    return chain, ["--student", student_dir, "--teacher-logits", chain / "tl", "--weights", chain / "weights.parquet",
                   "--lr", "1e-3", "--batch-size", "2", "--micro-batch-size", "2", "--max-steps", "6", "--save-steps", "2"]


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_hold_the_train_log(tmp_path, setup):
    _, args = setup
    out = tmp_path / "run"
    r = paced("distill", *args, "--out", out, "--report-to", "tensorboard", "--plot", tmp_path / "curves.png")
    assert r.exit_code == 0, r.stderr
    log = pl.read_parquet(out / "train_log.parquet")
    got = scalars(out / "tensorboard")
    for col in ("loss", "fkl", "rkl", "lr", "grad_norm", "mean_weight", "visited"):
        steps, values = zip(*got[f"train/{col}"])
        assert list(steps) == log["step"].to_list()
        assert list(values) == pytest.approx(log[col].to_list(), rel=1e-6), col  # float32 in the events
    png = (tmp_path / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_a_resumed_run_purges_its_redone_steps(tmp_path, setup):
    from tests.conftest import kill_when

    _, args = setup
    out = tmp_path / "run"
    kill_when(out / "checkpoints" / "step-4" / "state.json", "distill", *args, "--out", out, "--report-to", "tensorboard")
    r = paced_subprocess("distill", *args, "--out", out, "--report-to", "tensorboard", "--resume")
    assert r.returncode == 0, r.stderr
    got = scalars(out / "tensorboard")
    assert [s for s, _ in got["train/loss"]] == list(range(1, 7))  # each step once


def test_plot_of_a_finished_run_and_what_it_may_replace(tmp_path, setup):
    _, args = setup
    out = tmp_path / "run"
    assert paced("distill", *args, "--out", out).exit_code == 0
    r = paced("distill", *args, "--out", out, "--plot", tmp_path / "p.png")
    assert r.exit_code == 0 and "already complete" in r.stderr and (tmp_path / "p.png").exists()
    (tmp_path / "mine.png").write_bytes(b"\x89PNG not paced's")
    r = paced("distill", *args, "--out", out, "--plot", tmp_path / "mine.png")
    assert r.exit_code == 2 and "never replaces a file it did not write" in r.stderr
    assert (tmp_path / "mine.png").read_bytes() == b"\x89PNG not paced's"


def test_bad_options_exit_2(tmp_path, setup):
    _, args = setup
    r = paced("distill", *args, "--out", tmp_path / "a", "--report-to", "mlflow")
    assert r.exit_code == 2 and "--report-to mlflow: use one of none, tensorboard, wandb" in r.stderr
    r = paced("distill", *args, "--out", tmp_path / "b", "--plot", tmp_path / "x.jpg")
    assert r.exit_code == 2 and "--plot" in r.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def wandb_history(run_file) -> list[dict]:
    """The history rows of an offline wandb run file: records in LevelDB's log format (32 KiB
    blocks, 7-byte record headers: crc32, length, type full/first/middle/last) after a 7-byte
    ':W&B' header, each a wandb Record protobuf."""
    import struct

    from wandb.proto import wandb_internal_pb2

    raw, block, off, records, part = run_file.read_bytes(), 32768, 7, [], b""
    assert raw[:4] == b":W&B"
    while off + 7 <= len(raw):
        left = block - off % block
        _, length, kind = struct.unpack("<IHB", raw[off:off + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):
            off += left
            continue
        data, off = raw[off + 7:off + 7 + length], off + 7 + length
        if kind in (1, 4):
            records.append(part + data)
            part = b""
        else:
            part += data
    rows = []
    for data in records:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
    return rows


def test_wandb_offline_run_in_out(tmp_path, setup):
    _, args = setup
    out = tmp_path / "run"
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_PROJECT": "paced-test"}
    r = paced_subprocess("distill", *args, "--out", out, "--report-to", "wandb", env=env)
    assert r.returncode == 0, r.stderr
    (run_file,) = (out / "wandb").glob("offline-run-*-paced-*/run-paced-*.wandb")
    rows = wandb_history(run_file)
    log = pl.read_parquet(out / "train_log.parquet")
    assert [row["_step"] for row in rows] == log["step"].to_list()
    for col in ("loss", "fkl", "rkl", "lr", "mean_weight"):
        assert [row[f"train/{col}"] for row in rows] == pytest.approx(log[col].to_list(), rel=1e-12), col
