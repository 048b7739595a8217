"""Distill the stored teacher distributions into the student, one weight per problem.

    paced distill --student Qwen/Qwen3-1.7B --teacher-logits teacher_logits/ \
        --weights weights.parquet --out runs/student-paced --loss fkl --lr 1e-6

The loss of problem i is L_i = (sum of token losses over all its sequences) / (its token
count): the mean token loss of that problem's sequences. A step takes `--batch-size`
problems and minimises

    sum_i w_i L_i / N        (N = problems in the step)

so one scalar per problem multiplies its whole loss, never a per-token weight. With
`paced weight --normalize mean` the weights average 1 over all problems. Problems of weight 0
are never loaded, so an epoch has fewer steps, and the summed update per epoch equals the one
you would get with them in the batches contributing 0.

Losses (`--loss`), each on the stored top-k + tail buckets (exact when k = vocabulary):
`fkl` = KL(teacher || student), teacher-forced on the stored responses; `rkl` =
KL(student || teacher) on the same support: on the student's own rollouts this is the
paper's on-policy reverse KL, one rollout round per run; `akl` = the adaptive mix of Wu et
al. (2025) with head mass `--mu`.

The output is a Hugging Face checkpoint (safetensors, tokenizer included) that transformers
and vLLM load unchanged, with `train_log.parquet` beside it. Checkpoints every `--save-steps`
hold model, optimizer, scheduler, RNG and data position; `--resume` continues from the last
one and reproduces the uninterrupted loss curve. `--init` starts from an earlier distill
output: the two-stage schedule (forward KL, then reverse KL) is two runs.

The same command runs unchanged under `accelerate launch` (configs in examples/accelerate/:
DDP, FSDP, DeepSpeed ZeRO-2). `--batch-size` stays the global batch: process r trains on
problems r, r + P, ... of each step's batch, every coefficient keeps the global N, and the loss
is scaled by P before accelerate's gradient averaging, so the synchronised gradient is the
single-process one. Only the main process writes (job directory, data cache, checkpoints,
train_log, model, manifest) and prints. Without a launcher accelerate is never imported and
nothing above changes.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas
from schemas import InputError
from schemas.outputs import check_paths
from stages import losses, models
from stages.common import console, progress, summary_table

SCHEDULES = ("cosine", "constant")
CHECKPOINTS = "checkpoints"
DATA_CACHE = ".train_data.arrow"
TRAIN_LOG_FILE = "train_log.parquet"


@dataclass
class DistillConfig:
    student: str
    teacher_logits: Path
    weights: Path
    out: Path
    loss: str = "fkl"
    mu: float = 0.5
    lr: float = 1e-6
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    micro_batch_size: int = 4
    schedule: str = "cosine"
    warmup_steps: int = 0
    seed: int = 0
    save_steps: int = 100
    export_steps: str | None = None
    """Comma-separated steps (e.g. 250,500,1000) at which to also save a loadable model
    (safetensors + tokenizer) as <out>/step-N: budgets read off one run."""
    resume: bool = False
    init: Path | None = None
    gradient_checkpointing: bool = False
    lora_r: int = 0
    lora_alpha: float | None = None
    chunk_size: int = 1024
    device: str = "auto"
    trust_remote_code: bool = False
    allow_stale: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        p = []
        if self.loss not in losses.LOSSES:
            p.append(f"--loss {self.loss}: use one of {', '.join(losses.LOSSES)}")
        if not 0 < self.mu < 1:
            p.append(f"--mu {self.mu}: the AKL head mass must be in (0, 1)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            p.append(f"--lr {self.lr}: must be a positive number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            p.append(f"--weight-decay {self.weight_decay}: must be a finite number >= 0")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            p.append(f"--max-grad-norm {self.max_grad_norm}: must be a finite number > 0 (1.0 is the default)")
        if self.epochs < 1:
            p.append(f"--epochs {self.epochs}: must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            p.append(f"--max-steps {self.max_steps}: must be at least 1")
        for flag, v in (("--batch-size", self.batch_size), ("--micro-batch-size", self.micro_batch_size), ("--chunk-size", self.chunk_size)):
            if v < 1:
                p.append(f"{flag} {v}: must be at least 1")
        if self.schedule not in SCHEDULES:
            p.append(f"--schedule {self.schedule}: use one of {', '.join(SCHEDULES)}")
        for flag, v in (("--warmup-steps", self.warmup_steps), ("--save-steps", self.save_steps), ("--lora-r", self.lora_r)):
            if v < 0:
                p.append(f"{flag} {v}: must be >= 0")
        if self.lora_alpha is not None:
            if not self.lora_r:
                p.append(f"--lora-alpha {self.lora_alpha}: only LoRA uses it; add --lora-r or drop it")
            elif not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
                p.append(f"--lora-alpha {self.lora_alpha}: must be a finite number > 0 (default 2 * rank)")
        if not 0 <= self.seed <= 2**32 - 1:
            p.append(f"--seed {self.seed}: must be from 0 to {2**32 - 1} (the seeds numpy takes; torch's is a little wider)")
        if self.resume and self.overwrite:
            p.append("--resume and --overwrite contradict each other: pick one")
        try:
            steps = self.exports
        except ValueError:
            p.append(f"--export-steps {self.export_steps}: give step numbers separated by commas, e.g. 250,500,1000")
        else:
            if any(s < 1 for s in steps):
                p.append(f"--export-steps {self.export_steps}: steps count from 1")
            if steps and self.lora_r:
                p.append("--export-steps with --lora-r: not supported (the adapters are merged only into the final model)")
        if p:
            raise InputError("\n".join(p))

    @property
    def exports(self) -> list[int]:
        """The steps of --export-steps, sorted (ValueError if one is not a whole number)."""
        if not self.export_steps:
            return []
        return sorted({int(s) for s in str(self.export_steps).split(",") if s.strip()})


# ---------------------------------------------------------------------------------------
# Data: the teacher_logits rows of problems with weight > 0, memory-mapped.


@dataclass
class TrainData:
    table: pa.Table               # memory-mapped Arrow IPC: one row per sequence
    problems: list[str]           # problems with weight > 0 and at least one sequence
    weight: dict[str, float]
    rows: dict[str, list[int]]    # problem -> its row indices in `table`
    tokens: dict[str, int]        # problem -> response tokens over all its sequences


def load_data(tl: Path, weights: schemas.Artifact, cache: Path) -> tuple[TrainData, dict[str, int]]:
    """Stream teacher_logits parts into one memory-mapped Arrow file of the trained rows.

    Arrow IPC maps zero-copy, so a data set larger than memory is paged in on demand; only
    rows of problems with weight > 0 are copied (zero-weight problems are never loaded).
    """
    w = dict(zip(weights.frame["problem_id"].to_list(), weights.frame["weight"].to_list()))
    files, _ = schemas.io.artifact_files(Path(tl), "--teacher-logits")
    stats = {"sequences": 0, "skipped_zero_weight": 0, "missing_weight": 0}
    columns = ["problem_id", "sample_index", "prompt_token_ids", "token_ids", "topk_ids", "topk_logprobs", "tail_logprob"]
    tmp = cache.with_name(cache.name + f".tmp-{os.getpid()}")
    keep_w = pa.array([k for k, v in w.items() if v > 0], pa.string())
    missing: list[str] = []
    k: tuple[int, Path] | None = None  # the artifact's k, and the part it was first seen in
    with pa.OSFile(str(tmp), "wb") as sink:
        writer = None
        for f in files:
            t = pq.read_table(f, columns=columns)
            try:
                _check_aligned(t, f)
                k = _check_values(t, f, k)
            except InputError:
                tmp.unlink(missing_ok=True)
                raise
            stats["sequences"] += t.num_rows
            ids = t["problem_id"]
            known = pc.is_in(ids, value_set=pa.array(list(w), pa.string()))
            if not pc.all(known).as_py():
                missing += pc.filter(ids, pc.invert(known)).to_pylist()
            mask = pc.is_in(ids, value_set=keep_w)
            kept = t.filter(mask)
            stats["skipped_zero_weight"] += t.num_rows - kept.num_rows
            if writer is None:
                writer = pa.ipc.new_file(sink, kept.schema)
            writer.write_table(kept)
        if writer is not None:
            writer.close()
    stats["missing_weight"] = len(missing)
    if missing:
        tmp.unlink(missing_ok=True)
        raise InputError(
            f"--weights {weights.path}: no weight for {len(set(missing))} problem(s) in --teacher-logits "
            f"({', '.join(repr(x) for x in sorted(set(missing))[:5])}); the weights were computed from "
            f"other scores than these teacher logits: rerun paced weight on the matching scores"
        )
    os.replace(tmp, cache)
    return open_data(cache, w), stats


def open_data(cache: Path, w: dict[str, float]) -> TrainData:
    """The TrainData of a cache that `load_data` wrote (other processes of a launch open it)."""
    table = pa.ipc.open_file(pa.memory_map(str(cache), "r")).read_all()
    frame = pl.DataFrame(
        {
            "problem_id": table["problem_id"].to_pylist(),
            "n": pc.list_value_length(table["token_ids"]).to_pylist(),
        }
    ).with_row_index("row")
    grouped = frame.group_by("problem_id", maintain_order=True).agg(pl.col("row"), pl.col("n").sum())
    rows = dict(zip(grouped["problem_id"].to_list(), grouped["row"].to_list()))
    tokens = dict(zip(grouped["problem_id"].to_list(), grouped["n"].to_list()))
    problems = list(rows)
    return TrainData(table, problems, {p: float(w[p]) for p in problems}, rows, tokens)


def _check_aligned(t: pa.Table, f: Path) -> None:
    n = pc.list_value_length(t["token_ids"])
    bad = pc.equal(n, 0)
    for col in ("topk_ids", "topk_logprobs", "tail_logprob"):
        bad = pc.or_(bad, pc.not_equal(pc.list_value_length(t[col]), n))
    if pc.any(bad).as_py():
        ids = pc.filter(t["problem_id"], bad).to_pylist()
        raise InputError(
            f"--teacher-logits {f}: {len(ids)} row(s) whose topk/tail lists do not match their "
            f"token_ids ({', '.join(repr(x) for x in ids[:5])}); regenerate them with paced teacher-logits"
        )


# How far above 0 a stored log-probability may lie: float32 log-softmax rounds to at most a few
# 1e-7 above it; a value past this is not a log-probability (logits stored by mistake?).
_LOGPROB_SLACK = 1e-3


def _check_values(t: pa.Table, f: Path, k: tuple[int, Path] | None) -> tuple[int, Path] | None:
    """What the losses take on trust, checked per part as it streams by: one k for every position
    of every part and shard (collate reshapes by it), teacher log-probabilities that are
    log-probabilities (no NaN, no +inf, none above 0; -inf is a probability of 0 and allowed),
    token ids >= 0. Returns the artifact's k and the part that set it."""
    problems = []
    ks = pc.list_value_length(pc.list_flatten(t["topk_ids"]))
    if len(ks) == 0:
        return k
    lo, hi = (v.as_py() for v in pc.min_max(ks).values())
    if lo != hi:
        problems.append(f"positions hold from {lo} to {hi} teacher tokens (one k per artifact)")
    elif k is not None and lo != k[0]:
        problems.append(
            f"k = {lo} teacher tokens per position, but {k[1]} has k = {k[0]} (parts or shards made with "
            f"different --top-k; rerun paced teacher-logits with one --top-k for all of them)"
        )
    if not pc.all(pc.equal(ks, pc.list_value_length(pc.list_flatten(t["topk_logprobs"])))).as_py():
        problems.append("topk_logprobs and topk_ids differ in length at some positions")
    for name, depth in (("topk_logprobs", 2), ("tail_logprob", 1)):
        col = t[name].combine_chunks()
        flat = pc.list_flatten(pc.list_flatten(col)) if depth == 2 else pc.list_flatten(col)
        v = flat.to_numpy(zero_copy_only=False)  # float16 or float32, compared as stored (no copy up)
        bad = np.isnan(v) | (v > _LOGPROB_SLACK)
        if bad.any():
            row_of = pc.list_parent_indices(col).to_numpy()  # row of each position
            if depth == 2:
                row_of = row_of[pc.list_parent_indices(pc.list_flatten(col)).to_numpy()]  # row of each value
            rows = sorted(set(row_of[np.flatnonzero(bad)].tolist()))
            worst = "NaN" if np.isnan(v).any() else f"up to {float(np.nanmax(v)):g}"
            problems.append(
                f"{name} holds {int(bad.sum()):,} value(s) that are not log-probabilities ({worst}; must be "
                f"<= 0, -inf for probability 0) in problem(s) {', '.join(list(dict.fromkeys(repr(t['problem_id'][r].as_py()) for r in rows))[:5])}"
            )
    for name in ("token_ids", "prompt_token_ids", "topk_ids"):
        flat = pc.list_flatten(t[name])
        flat = pc.list_flatten(flat) if name == "topk_ids" else flat
        low = pc.min(flat).as_py()
        if low is not None and low < 0:
            problems.append(f"{name} holds negative token id {low}")
    if problems:
        raise InputError(
            f"--teacher-logits {f}: {'; '.join(problems)}; regenerate it with paced teacher-logits"
        )
    return k if k is not None else (lo, f)


def epoch_order(problems: list[str], seed: int, epoch: int) -> list[str]:
    """The problems of one epoch in a seeded order: a resumed run replays it exactly."""
    order = list(problems)
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def step_problems(data: TrainData, seed: int, batch_size: int, step: int) -> tuple[int, list[str]]:
    """(epoch, problems) of optimizer step `step` (from 1)."""
    per_epoch = math.ceil(len(data.problems) / batch_size)
    epoch, i = divmod(step - 1, per_epoch)
    order = epoch_order(data.problems, seed, epoch)
    return epoch, order[i * batch_size : (i + 1) * batch_size]


def collate(data: TrainData, rows: list[int], device) -> dict[str, Any]:
    """Right-padded tensors for a micro-batch of sequences.

    input_ids [B, L]; gather [B, R] positions whose hidden state predicts each response
    token; topk_ids [B, R, k] int64; topk_logprobs [B, R, k] float32; tail [B, R]; mask [B, R].
    """
    import torch

    t = data.table.take(pa.array(rows))
    prompts = t["prompt_token_ids"].to_pylist()
    responses = t["token_ids"].to_pylist()
    k = len(t["topk_ids"][0][0])
    B = len(rows)
    L = max(len(p) + len(r) for p, r in zip(prompts, responses))
    R = max(len(r) for r in responses)
    input_ids = torch.zeros((B, L), dtype=torch.long)
    attention = torch.zeros((B, L), dtype=torch.long)
    gather = torch.zeros((B, R), dtype=torch.long)
    mask = torch.zeros((B, R), dtype=torch.bool)
    topk_ids = torch.zeros((B, R, k), dtype=torch.long)
    topk_lp = torch.full((B, R, k), -1e4, dtype=torch.float32)
    tail = torch.full((B, R), -1e4, dtype=torch.float32)
    for b in range(B):
        p, r = prompts[b], responses[b]
        n = len(r)
        input_ids[b, : len(p) + n] = torch.tensor(p + r)
        attention[b, : len(p) + n] = 1
        gather[b, :n] = torch.arange(len(p) - 1, len(p) + n - 1)
        mask[b, :n] = True
        row = t.slice(b, 1)
        ids = pc.list_flatten(pc.list_flatten(row["topk_ids"])).to_numpy()
        lps = pc.list_flatten(pc.list_flatten(row["topk_logprobs"])).to_numpy(zero_copy_only=False)
        topk_ids[b, :n] = torch.from_numpy(ids.astype(np.int64).reshape(n, k))
        topk_lp[b, :n] = torch.from_numpy(lps.astype(np.float32).reshape(n, k))
        tail[b, :n] = torch.from_numpy(pc.list_flatten(row["tail_logprob"]).to_numpy().astype(np.float32))
    batch = dict(input_ids=input_ids, attention=attention, gather=gather, mask=mask, topk_ids=topk_ids, topk_lp=topk_lp, tail=tail)
    return {name: x.to(device) for name, x in batch.items()}


def micro_batch_loss(model, batch: dict[str, Any], coef, *, loss: str, mu: float, chunk_size: int, autocast):
    """sum_s coef_s * sum_t loss_{s,t} for a micro-batch, and the same for fkl and rkl (detached).

    coef_s = w_i / (N * T_i) for the problem i of sequence s: one scalar per problem.

    The output layer runs inside `losses.fused_head_losses`, `chunk_size` response tokens at a
    time, on the hidden states of the tokens that count only: the [tokens, vocab] logits (5 GB
    in float32 for 8k tokens of Qwen's 151,936-token vocabulary) and their gradient never exist
    whole.
    """
    import torch

    decoder, head = model.get_decoder(), model.get_output_embeddings()
    mask = batch["mask"]
    with autocast():
        hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention"]).last_hidden_state
    # A plain nn.Linear (tied or not) is fused. Anything else, e.g. a LoRA-wrapped or quantised
    # head, or one with hooks (accelerate offloading), computes its output its own way, which
    # F.linear on `.weight` would silently skip: those fall back to materialised logits.
    fused = type(head) is torch.nn.Linear and not (head._forward_hooks or head._forward_pre_hooks)
    if fused:
        seq, resp = mask.nonzero(as_tuple=True)  # [N] each, row-major like token_losses' rows
        with autocast():
            terms = losses.fused_head_losses(
                hidden[seq, batch["gather"][seq, resp]], head.weight, head.bias,
                batch["topk_ids"][seq, resp], batch["topk_lp"][seq, resp], batch["tail"][seq, resp],
                loss=loss, mu=mu, chunk_size=chunk_size,
            )
        rows = seq * mask.shape[1] + resp
        terms = {name: v.new_zeros(mask.numel()).index_copy(0, rows, v).view(mask.shape) for name, v in terms.items()}
    else:
        with autocast():
            idx = batch["gather"].unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
            logits = head(torch.gather(hidden, 1, idx))  # [B, R, V]: response positions only
        terms = losses.token_losses(
            logits, batch["topk_ids"], batch["topk_lp"], batch["tail"], mask, loss=loss, mu=mu, chunk_size=chunk_size
        )
    out = {}
    for name in ("loss", "fkl", "rkl"):
        sums, _ = losses.sequence_sums(terms[name], mask)
        out[name] = (sums * coef).sum()
    return out


# ---------------------------------------------------------------------------------------
# Checkpoints


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    d = out / CHECKPOINTS
    if not d.exists():
        return []
    found = [(int(p.name.split("-")[1]), p) for p in d.iterdir() if p.name.startswith("step-") and (p / "state.json").exists()]
    return sorted(found)


def export_model(job: schemas.Job, step: int, model, tokenizer) -> None:
    """A loadable model at `step` (safetensors, tokenizer) as <dir>/step-N: written aside,
    recorded as the job's own, renamed into place (a resumed run writes the same one again)."""
    name = f"step-{step}"
    tmp = job.dir / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    job.adopt([name])
    if (job.dir / name).exists():
        shutil.rmtree(job.dir / name)
    os.replace(tmp, job.dir / name)


def rng_state() -> dict:
    import torch

    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def save_checkpoint(out: Path, step: int, model, optimizer, scheduler, log: list[dict], keep: int = 2,
                    rng_ranks: list[dict] | None = None) -> None:
    """Everything a resumed run needs, written to a temporary folder and renamed into place.

    `rng_ranks`: under a launcher, every process's RNG state (gathered to the main process,
    the only one that writes); rank 0's is also the top-level state a 1-process resume uses.
    """
    import torch
    from safetensors.torch import save_model

    d = out / CHECKPOINTS
    d.mkdir(exist_ok=True)
    tmp = d / f".step-{step}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
    _finish_checkpoint(out, tmp, step, log, rng_ranks, keep)


def _finish_checkpoint(out: Path, tmp: Path, step: int, log: list[dict], rng_ranks: list[dict] | None, keep: int,
                       fmt: str | None = None) -> None:
    """RNG, train log and state.json (last: complete) into `tmp`, then rename it into place."""
    import torch

    rng = rng_state() if rng_ranks is None else dict(rng_ranks[0], ranks=rng_ranks)
    torch.save(rng, tmp / "rng.pt")
    pl.DataFrame(log, schema=_log_schema()).write_parquet(tmp / "train_log.parquet")
    state = {"step": step} if fmt is None else {"step": step, "format": fmt}
    (tmp / "state.json").write_text(json.dumps(state))  # written last: complete
    d = out / CHECKPOINTS
    final = d / f"step-{step}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for _, old in _checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer, scheduler, rank: int = 0, world: int = 1) -> tuple[int, list[dict]]:
    import torch
    from safetensors.torch import load_model

    if not (path / "model.safetensors").exists():
        raise InputError(
            f"--resume: checkpoint {path} was written under accelerate launch with FSDP or DeepSpeed; "
            f"resume it under the same launch configuration"
        )
    load_model(model, str(path / "model.safetensors"))
    state = torch.load(path / "optim.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return _load_rng_and_log(path, rank, world)


def _load_rng_and_log(path: Path, rank: int, world: int) -> tuple[int, list[dict]]:
    import torch

    rng = torch.load(path / "rng.pt", weights_only=True)
    if len(rng.get("ranks") or []) == world:  # this process's own state, saved by the same launch shape
        rng = rng["ranks"][rank]
    torch.set_rng_state(rng["torch"])
    random.setstate(_as_random_state(rng["python"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    step = json.loads((path / "state.json").read_text())["step"]
    return step, pl.read_parquet(path / "train_log.parquet").to_dicts()


def _as_random_state(s):
    return (s[0], tuple(s[1]), s[2])


def _log_schema() -> dict:
    return {c.name: pl.from_arrow(pa.array([], type=c.type)).dtype for c in schemas.TRAIN_LOG.columns}


# ---------------------------------------------------------------------------------------


def lr_lambda(total: int, warmup: int, schedule: str):
    def f(step: int) -> float:  # step counts from 0 (LambdaLR), learning rate of step + 1
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress_ = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))

    return f


def step_plan(data: TrainData, names: list[str], micro_batch_size: int, rank: int = 0, world: int = 1) -> list[tuple[list[int], list[float]]]:
    """The micro-batches (rows, coefs) this process runs for one step of global batch `names`.

    coef_s = w_i / (N * T_i) with N = len(names), the GLOBAL batch, on every process: the
    normalisation never depends on how the batch is split. Process r takes the problems
    names[r::world] (whole problems: all sequences of a problem stay together). Every process
    runs the same number of micro-batches (collectives in DDP's forward, FSDP's all-gathers):
    a process with fewer pads with copies of one sequence at coef 0, which add exactly 0.
    With world = 1 this is the single-process plan, unchanged.
    """
    n = len(names)

    def chunks(share: list[str]) -> list[tuple[list[int], list[float]]]:
        seqs = [(r, data.weight[p] / (n * data.tokens[p])) for p in share for r in data.rows[p]]
        seqs.sort(key=lambda x: x[0])
        return [([r for r, _ in seqs[m : m + micro_batch_size]], [c for _, c in seqs[m : m + micro_batch_size]])
                for m in range(0, len(seqs), micro_batch_size)]

    plan = chunks(names[rank::world])
    if world > 1:
        most = max(math.ceil(sum(len(data.rows[p]) for p in names[r::world]) / micro_batch_size) for r in range(world))
        pad = ([data.rows[names[0]][0]], [0.0])
        plan += [pad] * (most - len(plan))
    return plan


def _loss_module(model, *, loss: str, mu: float, chunk_size: int, autocast):
    """The student behind one forward that returns the weighted loss terms of a micro-batch.

    DDP, FSDP and DeepSpeed hook a module's forward; `micro_batch_loss` calls the decoder and the
    output layer separately (the fused, chunked head), so under a launcher the whole loss runs
    inside this module's forward and accelerate wraps this module.
    """
    import torch

    class _LossModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            # FSDP's transformer auto-wrap policy reads the layer classes from here.
            self._no_split_modules = list(getattr(model, "_no_split_modules", None) or [])

        def forward(self, batch, coef):
            return micro_batch_loss(self.model, batch, coef, loss=loss, mu=mu, chunk_size=chunk_size, autocast=autocast)

    return _LossModule()


def launched() -> bool:
    """True in a process started by `accelerate launch` / torchrun with more than one process,
    or by `accelerate launch` with an FSDP or DeepSpeed config (even on one process)."""
    env = os.environ
    return (
        int(env.get("WORLD_SIZE", "1") or 1) > 1
        or env.get("ACCELERATE_USE_FSDP", "").lower() in ("true", "1")
        or env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("true", "1")
    )


class Launch:
    """This process's part in a run under `accelerate launch`: Hugging Face accelerate owns the
    process group, the DDP / FSDP / DeepSpeed wrapping, gradient synchronisation, gathering of
    sharded state and checkpoints of sharded state. paced only decides which problems each
    process trains on and which process writes (the main one)."""

    def __init__(self, config: DistillConfig) -> None:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        # CPU processes (--device cpu, or a machine without an accelerator) join one gloo group
        # even when started by torchrun / `accelerate launch --multi_gpu` rather than mpirun.
        cpu = config.device == "cpu" or not torch.accelerator.is_available()
        self.acc = Accelerator(cpu=cpu)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        if self.world != int(os.environ.get("WORLD_SIZE", "1") or 1):
            raise RuntimeError(
                f"accelerate set up {self.world} process(es) but the launcher started "
                f"{os.environ.get('WORLD_SIZE')}: each would train its own copy; check the accelerate config"
            )
        self.main = self.acc.is_main_process
        kind = self.acc.distributed_type
        self.kind = "deepspeed" if kind == DistributedType.DEEPSPEED else "fsdp" if kind == DistributedType.FSDP else "ddp"
        self.sharded = self.kind != "ddp"
        self.device = str(self.acc.device)
        self.describe = {"processes": self.world, "distributed_type": str(getattr(kind, "value", kind))}
        self.model = None

    def check(self, config: DistillConfig) -> None:
        from accelerate.utils import DistributedType

        kind = self.acc.distributed_type
        problems = []
        if kind in (DistributedType.XLA, DistributedType.MEGATRON_LM):
            problems.append(f"accelerate launch: {kind} is not supported by paced distill; use DDP, FSDP or DeepSpeed")
        if config.device != "auto" and config.device.split(":")[0] != self.acc.device.type:
            problems.append(
                f"--device {config.device}: under accelerate launch each process uses the launcher's device "
                f"({self.device} here); drop --device, or pass --device cpu to run every process on CPU"
            )
        if config.lora_r and self.sharded:
            problems.append(f"--lora-r: LoRA is supported under DDP, not under {self.kind.upper()}; use the DDP config")
        if problems:
            raise InputError("\n".join(problems))
        env = os.environ
        wanted = "fsdp" if env.get("ACCELERATE_USE_FSDP", "").lower() == "true" else (
            "deepspeed" if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" else None)
        if wanted and wanted != self.kind:
            console.print(
                f"[yellow]warning:[/] the accelerate config asks for {wanted.upper()}, which accelerate runs on GPUs "
                f"only; these {self.device} processes run {self.kind.upper()} (each holds the whole model)"
            )

    def on_main(self, fn):
        """fn() on the main process only; its result, or its failure, reaches every process."""
        from accelerate.utils import broadcast_object_list

        box: list[Any] = [None]
        error: BaseException | None = None
        if self.main:
            try:
                box[0] = ("ok", fn())
            except InputError as e:
                box[0], error = ("input", str(e)), e
            except BaseException as e:
                box[0], error = ("fail", f"{type(e).__name__}: {e}"), e
        broadcast_object_list(box, from_process=0)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "input":
            raise InputError(value)
        if kind == "fail":
            raise RuntimeError(f"the main process failed: {value}")
        return value

    def prepare(self, module, optimizer, config: DistillConfig):
        if self.kind == "deepspeed":  # batch size and clipping come from paced's options
            plugin = self.acc.state.deepspeed_plugin
            if plugin.is_auto("train_micro_batch_size_per_gpu"):
                plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.micro_batch_size
            plugin.deepspeed_config["gradient_clipping"] = config.max_grad_norm
        self.model, prepared = self.acc.prepare(module, optimizer)
        return prepared

    def forward_backward(self, batch, coef, last: bool) -> dict:
        """One micro-batch. Gradients are averaged over processes by DDP/FSDP/DeepSpeed, so the
        loss is scaled by the process count: the synchronised gradient is then the SUM over
        processes, i.e. the single-process gradient of sum_i w_i L_i / N over the global batch."""
        import contextlib

        ctx = contextlib.nullcontext()
        if self.kind == "deepspeed":
            self.acc.sync_gradients = last  # DeepSpeed reduces and steps at the boundary only
        elif self.kind == "ddp" and not last:
            ctx = self.acc.no_sync(self.model)  # one all-reduce per step, after the last micro-batch
        with ctx:
            terms = self.model(batch, coef)
            self.acc.backward(terms["loss"] * self.world)
        return terms

    def reduce_sums(self, sums: dict[str, float]) -> dict[str, float]:
        import torch

        keys = list(sums)
        t = self.acc.reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=self.acc.device), "sum")
        return {k: float(v) for k, v in zip(keys, t.tolist())}

    def clip(self, max_norm: float) -> float:
        norm = self.acc.clip_grad_norm_(self.model.parameters(), max_norm)
        if norm is None and self.kind == "deepspeed":  # DeepSpeed clipped inside its step
            norm = self.acc.deepspeed_engine_wrapped.get_global_grad_norm()
        return float("nan") if norm is None else float(norm)

    def inner(self):
        """The student itself (unwrapped from DDP/FSDP/DeepSpeed and from the loss module)."""
        return self.acc.unwrap_model(self.model).model

    def rng_ranks(self) -> list[dict]:
        from accelerate.utils import gather_object

        return gather_object([rng_state()])

    def save_checkpoint(self, out: Path, step: int, optimizer, scheduler, log: list[dict]) -> None:
        rngs = self.rng_ranks()  # a collective: every process
        if not self.sharded:  # DDP: every process holds the same model and optimizer state
            if self.main:
                save_checkpoint(out, step, self.inner(), optimizer, scheduler, log, rng_ranks=rngs)
            return
        import torch

        tmp = out / CHECKPOINTS / f".step-{step}.tmp-launch"
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp / "accelerate"))  # sharded model + optimizer, accelerate's format
        self.acc.wait_for_everyone()
        if self.main:
            torch.save({"scheduler": scheduler.state_dict()}, tmp / "scheduler.pt")
            _finish_checkpoint(out, tmp, step, log, rngs, keep=2, fmt=f"accelerate-{self.kind}")
        self.acc.wait_for_everyone()

    def load_checkpoint(self, path: Path, optimizer, scheduler) -> tuple[int, list[dict]]:
        import torch

        if (path / "accelerate").exists():
            if not self.sharded:
                raise InputError(f"--resume: checkpoint {path} was written under FSDP or DeepSpeed; resume it under the same launch configuration")
            self.acc.load_state(str(path / "accelerate"))
            scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True)["scheduler"])
            return _load_rng_and_log(path, self.rank, self.world)
        if self.sharded:
            raise InputError(f"--resume: checkpoint {path} was written without FSDP/DeepSpeed; resume it with DDP or one process")
        return load_checkpoint(path, self.inner(), optimizer, scheduler, self.rank, self.world)

    def save_final(self, out: Path, lora: bool) -> None:
        """The final model, unwrapped, written once by the main process (safetensors)."""
        if not self.sharded:
            if self.main:
                model = self.inner()
                if lora:
                    model = model.merge_and_unload()
                model.eval()
                model.save_pretrained(out, safe_serialization=True)
            return
        state = self.acc.get_state_dict(self.model)  # gathers FSDP shards / ZeRO-3 partitions: every process
        if self.main:
            state = {k.removeprefix("model."): v for k, v in state.items()}
            self.inner().save_pretrained(out, state_dict=state, safe_serialization=True)

    def end(self) -> None:
        self.acc.wait_for_everyone()
        self.acc.end_training()


def run(config: DistillConfig) -> Path:
    """Single process (plain `paced distill`) or one process of `accelerate launch ... paced distill`."""
    if not launched():
        return _run(config, None)
    launch = Launch(config)
    quiet = console.quiet
    console.quiet = not launch.main  # logs, warnings and the summary from the main process only
    try:
        launch.check(config)
        out = _run(config, launch)
        launch.end()
        return out
    except InputError:
        raise  # the same files, the same message on every process: the main one prints it
    except BaseException:
        console.quiet = quiet  # a failure of this process: it says so itself
        raise
    finally:
        if launch.main:
            console.quiet = quiet


def _run(config: DistillConfig, launch: Launch | None) -> Path:
    import torch

    main = launch is None or launch.main
    # 1. Inputs and options, before any model is loaded (every process checks the same files).
    check_paths({"--out": config.out}, {"--student": config.student, "--teacher-logits": config.teacher_logits,
                                        "--weights": config.weights, "--init": config.init})
    weights = schemas.read(config.weights, schemas.WEIGHTS, option="--weights")
    tl = schemas.read_header(config.teacher_logits, schemas.TEACHER_LOGITS, option="--teacher-logits")
    stale = schemas.io.check_lineage(schemas.io.lineage(tl), f"--teacher-logits {tl.path}", weights, "--weights", config.allow_stale)
    if stale:
        console.print(f"[yellow]warning:[/] {stale}")
    source = str(config.init) if config.init else config.student
    if config.init is not None and not (Path(config.init) / TRAIN_LOG_FILE).exists():
        raise InputError(f"--init {config.init}: not a paced distill output (no train_log.parquet); pass the --out of an earlier paced distill")
    models.check_model(source, "--init" if config.init else "--student")
    tokenizer = models.load_tokenizer(source, trust_remote_code=config.trust_remote_code)
    teacher_sig = ((tl.provenance or {}).get("options") or {}).get("tokenizer")
    if teacher_sig:
        models.check_same_tokenizer(teacher_sig, models.tokenizer_signature(tokenizer), "the teacher of --teacher-logits", f"--student {source}")
    if config.lora_r:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise InputError("--lora-r: LoRA needs peft; install it with `pip install peft` (or pip install 'paced[lora]')") from None

    inputs = {"student": models.model_fingerprint(source), "teacher_logits": tl.fingerprint, "weights": weights.fingerprint}
    runtime = ("out", "overwrite", "resume", "device", "trust_remote_code", "micro_batch_size", "chunk_size", "allow_stale",
               "student", "teacher_logits", "weights", "init")  # input paths: their content is in `inputs`
    options = {k: v for k, v in asdict(config).items() if k not in runtime}
    prov = schemas.provenance("distill", asdict(config), {"teacher_logits": tl, "weights": weights}, problems=schemas.io.lineage(tl))
    if launch is not None:
        prov["launch"] = launch.describe
    job = schemas.Job(config.out, schemas.TRAIN_LOG, options | {"inputs": inputs}, prov, overwrite=config.overwrite,
                      own=(CHECKPOINTS, DATA_CACHE, TRAIN_LOG_FILE))
    out = Path(config.out)
    held: dict[str, Any] = {}

    def setup():
        """The job directory and the training rows: the main process only writes them."""
        job.check()
        if job.complete:
            return None
        existing = (job.dir / schemas.io.JOB_FILE).exists()
        if existing and not (config.resume or config.overwrite):
            raise InputError(
                f"--out {out}: holds an unfinished distill run with these options; pass --resume to "
                f"continue it from its last checkpoint, or --overwrite to start over"
            )
        job.start()
        if config.overwrite:  # start over: this run's own checkpoints, never anything else
            shutil.rmtree(job.dir / CHECKPOINTS, ignore_errors=True)
        try:  # checks that need the rows: a refused run leaves nothing behind
            data, stats = load_data(config.teacher_logits, weights, job.dir / DATA_CACHE)
            if not data.problems:
                raise InputError(f"--weights {weights.path}: every problem in --teacher-logits has weight 0; nothing to train on")
            check_lengths(data, source)
            check_vocab_rows(data, models.vocab_rows(source, config.trust_remote_code), source)
        except InputError:
            job.abandon()
            raise
        held["data"] = data
        return stats

    stats = setup() if launch is None else launch.on_main(setup)
    if stats is None:
        console.print(f"{out}: already complete; nothing to do")
        return out
    if main:
        data = held["data"]
    else:  # the rows the main process just wrote, memory-mapped
        job.locate()
        data = open_data(job.dir / DATA_CACHE, dict(zip(weights.frame["problem_id"].to_list(), weights.frame["weight"].to_list())))
    work = job.dir  # `out`, or the replacement beside it that `job.finish` swaps in
    per_epoch = math.ceil(len(data.problems) / config.batch_size)
    total = config.max_steps or config.epochs * per_epoch

    def abandon():
        if main:
            job.abandon()

    if config.exports and (config.exports[-1] > total or launch is not None):
        abandon()
        raise InputError(
            f"--export-steps {config.export_steps}: not under accelerate launch (yet); run it in one process"
            if launch is not None else
            f"--export-steps {config.export_steps}: step {config.exports[-1]} is past the run's last step {total}; "
            f"the final model is --out itself"
        )

    # 2. Model, optimizer, schedule; then resume if asked.
    if launch is None:
        device = load_device = models.resolve_device(config.device)
    else:  # FSDP / DeepSpeed place (and shard) the model themselves
        device = launch.device
        load_device = "cpu" if launch.sharded else device
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model = models.load_model(source, device=load_device, dtype="float32", trust_remote_code=config.trust_remote_code)
    try:  # the loaded embeddings themselves, in case the config did not say
        check_vocab(data, model, source)
    except InputError:
        abandon()
        raise
    if config.gradient_checkpointing:
        if launch is None:
            model.gradient_checkpointing_enable()
        else:  # reentrant checkpointing does not mix with DDP's gradient hooks
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if config.lora_r:
        model = add_lora(model, config.lora_r, config.lora_alpha)
    model.train()

    def autocast():
        # bf16 autocast on GPUs, master weights stay float32; CPUs compute in float32.
        if device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, config.warmup_steps, config.schedule))
    stepper = optimizer
    if launch is not None:
        module = _loss_module(model, loss=config.loss, mu=config.mu, chunk_size=config.chunk_size, autocast=autocast)
        stepper = launch.prepare(module, optimizer, config)  # the scheduler stays paced's: one step per step
    start, log = 0, []
    found = _checkpoints(work)
    if config.resume and found:
        if launch is None:
            start, log = load_checkpoint(found[-1][1], model, optimizer, scheduler)
        else:
            start, log = launch.load_checkpoint(found[-1][1], optimizer, scheduler)
        console.print(f"resumed from {found[-1][1]} (step {start} of {total})")

    # 3. Train. `seen`: the problems visited so far (also by the steps before a resume).
    seen: set[str] = set()
    for step in range(1, start + 1):
        seen.update(step_problems(data, config.seed, config.batch_size, step)[1])
    started = time.perf_counter()
    bar_ctx = progress("distill", total=total - start, unit="steps") if main else _NoBar()
    rank, world = (0, 1) if launch is None else (launch.rank, launch.world)
    with bar_ctx as bar:
        for step in range(start + 1, total + 1):
            t0 = time.perf_counter()
            epoch, names = step_problems(data, config.seed, config.batch_size, step)
            plan = step_plan(data, names, config.micro_batch_size, rank, world)
            stepper.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "fkl": 0.0, "rkl": 0.0}
            for i, (rows, coefs) in enumerate(plan):
                batch = collate(data, rows, device)
                coef = torch.tensor(coefs, dtype=torch.float32, device=device)
                if launch is None:
                    terms = micro_batch_loss(model, batch, coef, loss=config.loss, mu=config.mu, chunk_size=config.chunk_size, autocast=autocast)
                    terms["loss"].backward()
                else:
                    terms = launch.forward_backward(batch, coef, last=i == len(plan) - 1)
                for k in sums:
                    sums[k] += float(terms[k].detach())
            if launch is None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            else:
                sums = launch.reduce_sums(sums)
                grad_norm = launch.clip(config.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            stepper.step()
            scheduler.step()
            seen.update(names)
            weight_sum = sum(data.weight[p] for p in names)
            log.append(
                {
                    "step": step, "epoch": epoch, "loss": sums["loss"], "fkl": sums["fkl"], "rkl": sums["rkl"],
                    "lr": lr, "grad_norm": grad_norm, "tokens": sum(data.tokens[p] for p in names),
                    "problems": len(names), "weight_sum": weight_sum, "mean_weight": weight_sum / len(names),
                    "visited": len(seen), "seconds": time.perf_counter() - t0,
                }
            )
            bar.update(bar.tasks[0].id, advance=1, rate=f"loss {sums['loss']:.4f}")
            if step in config.exports and step < total:
                export_model(job, step, model, tokenizer)
            if config.save_steps and step % config.save_steps == 0 and step < total:
                if launch is None:
                    save_checkpoint(work, step, model, optimizer, scheduler, log)
                else:
                    launch.save_checkpoint(work, step, optimizer, scheduler, log)

    # 4. The final checkpoint, loadable by transformers and vLLM, written aside and recorded as
    # the job's own before it is moved in (so --overwrite may remove it later); the manifest last.
    final = work / f".final.tmp-{os.getpid()}"
    if main:
        shutil.rmtree(final, ignore_errors=True)
        final.mkdir()
    if launch is None:
        if config.lora_r:
            model = model.merge_and_unload()
        model.eval()
        model.save_pretrained(final, safe_serialization=True)
    else:
        launch.save_final(final, bool(config.lora_r))
        if not main:
            return out
    tokenizer.save_pretrained(final)
    names = sorted(os.listdir(final))
    job.adopt(names)
    for name in names:
        os.replace(final / name, work / name)
    final.rmdir()
    table = pl.DataFrame(log, schema=_log_schema()).to_arrow().cast(schemas.TRAIN_LOG.arrow)
    schemas.write_file(work / TRAIN_LOG_FILE, table, schemas.TRAIN_LOG, prov, overwrite=True)
    job.finish(0)
    shutil.rmtree(job.dir / CHECKPOINTS, ignore_errors=True)
    (job.dir / DATA_CACHE).unlink(missing_ok=True)
    first, last = log[0], log[-1]
    # What a weighting changed besides the loss: which problems were trained, how often.
    n_all = weights.frame.height
    visits = sum(r["problems"] for r in log)
    zero = int((weights.frame["weight"] <= 0).sum())
    unreached = len(data.problems) - len(seen)
    never = n_all - len(seen)
    summary_table(
        "distill summary",
        [
            ("loss", f"{config.loss}" + (f" (mu {config.mu:g})" if config.loss == "akl" else "")),
            ("steps", f"{total} ({total - start} now)"),
            *([("processes", f"{world} ({launch.kind.upper()} via accelerate)")] if launch is not None else []),
            ("problems trained (weight > 0)", f"{len(data.problems):,}"),
            ("mean weight per step", f"{sum(r['mean_weight'] for r in log) / len(log):.3f}"),
            ("epochs per trained problem", f"{visits / len(data.problems):.2f}"),
            ("problems of --weights never visited", f"{never:,} of {n_all:,} ({never / n_all:.1%}): weight 0 "
                                                    f"{zero:,}, not reached in {total} steps {unreached:,}, "
                                                    f"no teacher logits {never - zero - unreached:,}"),
            ("sequences skipped (weight 0)", f"{stats['skipped_zero_weight']:,} of {stats['sequences']:,}"),
            ("tokens per epoch", f"{sum(data.tokens.values()):,}"),
            ("loss first -> last step", f"{first['loss']:.4f} -> {last['loss']:.4f}"),
            ("forward KL first -> last", f"{first['fkl']:.4f} -> {last['fkl']:.4f}"),
            ("reverse KL first -> last", f"{first['rkl']:.4f} -> {last['rkl']:.4f}"),
            ("seconds", f"{time.perf_counter() - started:.1f}"),
        ],
    )
    return out


class _NoBar:
    """The progress bar of a process that is not the main one: nothing shown."""

    class _Task:
        id = 0

    tasks = [_Task()]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *args, **kwargs):
        pass


def check_lengths(data: TrainData, model_dir: str) -> None:
    limit = models.max_context(model_dir)
    if limit is None:
        return
    n = pc.add(pc.list_value_length(data.table["prompt_token_ids"]), pc.list_value_length(data.table["token_ids"]))
    too_long = pc.greater(n, limit)
    if pc.any(too_long).as_py():
        ids = pc.filter(data.table["problem_id"], too_long).to_pylist()
        raise InputError(
            f"--teacher-logits: {len(ids)} sequence(s) are longer than the student's context of {limit} "
            f"tokens ({', '.join(repr(x) for x in ids[:5])}); drop them or use a longer-context student"
        )


def check_vocab(data: TrainData, model, student: str = "") -> None:
    """`check_vocab_rows` against a loaded model's embeddings (input and output)."""
    rows = min(model.get_input_embeddings().weight.shape[0], model.get_output_embeddings().weight.shape[0])
    check_vocab_rows(data, rows, student)


def check_vocab_rows(data: TrainData, rows: int | None, student: str) -> None:
    """Every token id the student is fed (prompt and response) or scored on (the teacher's
    top-k) must be a row of its embeddings: one past them fails mid-step on an index."""
    if rows is None:
        return
    t = data.table
    for name, flat in (
        ("topk_ids", pc.list_flatten(pc.list_flatten(t["topk_ids"]))),
        ("token_ids", pc.list_flatten(t["token_ids"])),
        ("prompt_token_ids", pc.list_flatten(t["prompt_token_ids"])),
    ):
        top = pc.max(flat).as_py()
        if top is not None and top >= rows:
            raise InputError(
                f"--teacher-logits: {name} holds token id {top}, outside the vocabulary of the student"
                f"{' ' + student if student else ''} ({rows:,} rows); use a student with the teacher's tokenizer"
            )


def add_lora(model, r: int, alpha: float | None):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)
