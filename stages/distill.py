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
from stages import losses, models
from stages.common import console, progress, summary_table

SCHEDULES = ("cosine", "constant")
CHECKPOINTS = "checkpoints"
DATA_CACHE = ".train_data.arrow"


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
        if not self.weight_decay >= 0:
            p.append(f"--weight-decay {self.weight_decay}: must be >= 0")
        if not self.max_grad_norm > 0:
            p.append(f"--max-grad-norm {self.max_grad_norm}: must be > 0")
        if self.epochs < 1:
            p.append(f"--epochs {self.epochs}: must be at least 1")
        if self.max_steps is not None and self.max_steps < 1:
            p.append(f"--max-steps {self.max_steps}: must be at least 1")
        for flag, v in (("--batch-size", self.batch_size), ("--micro-batch-size", self.micro_batch_size), ("--chunk-size", self.chunk_size)):
            if v < 1:
                p.append(f"{flag} {v}: must be at least 1")
        if self.schedule not in SCHEDULES:
            p.append(f"--schedule {self.schedule}: use one of {', '.join(SCHEDULES)}")
        if self.warmup_steps < 0 or self.save_steps < 0 or self.lora_r < 0:
            p.append("--warmup-steps, --save-steps and --lora-r must be >= 0")
        if self.resume and self.overwrite:
            p.append("--resume and --overwrite contradict each other: pick one")
        if p:
            raise InputError("\n".join(p))


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
    with pa.OSFile(str(tmp), "wb") as sink:
        writer = None
        for f in files:
            t = pq.read_table(f, columns=columns)
            _check_aligned(t, f)
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
    return TrainData(table, problems, {p: float(w[p]) for p in problems}, rows, tokens), stats


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


def save_checkpoint(out: Path, step: int, model, optimizer, scheduler, log: list[dict], keep: int = 2) -> None:
    """Everything a resumed run needs, written to a temporary folder and renamed into place."""
    import torch
    from safetensors.torch import save_model

    d = out / CHECKPOINTS
    d.mkdir(exist_ok=True)
    tmp = d / f".step-{step}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    pl.DataFrame(log, schema=_log_schema()).write_parquet(tmp / "train_log.parquet")
    (tmp / "state.json").write_text(json.dumps({"step": step}))  # written last: complete
    final = d / f"step-{step}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for _, old in _checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, list[dict]]:
    import torch
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"))
    state = torch.load(path / "optim.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = torch.load(path / "rng.pt", weights_only=True)
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


def run(config: DistillConfig) -> Path:
    import torch

    # 1. Inputs and options, before any model is loaded.
    weights = schemas.read(config.weights, schemas.WEIGHTS, option="--weights")
    tl = schemas.read_header(config.teacher_logits, schemas.TEACHER_LOGITS, option="--teacher-logits")
    stale = schemas.io.check_lineage(schemas.io.lineage(tl), f"--teacher-logits {tl.path}", weights, "--weights", config.allow_stale)
    if stale:
        console.print(f"[yellow]warning:[/] {stale}")
    source = str(config.init) if config.init else config.student
    if config.init is not None and not (Path(config.init) / "train_log.parquet").exists():
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
    options = {k: v for k, v in asdict(config).items() if k not in ("out", "overwrite", "resume", "device", "trust_remote_code", "micro_batch_size", "chunk_size", "allow_stale")}
    prov = schemas.provenance("distill", asdict(config), {"teacher_logits": tl, "weights": weights}, problems=schemas.io.lineage(tl))
    job = schemas.Job(config.out, schemas.TRAIN_LOG, options | {"inputs": inputs}, prov, overwrite=config.overwrite)
    job.check()
    out = Path(config.out)
    if job.complete:
        console.print(f"{out}: already complete; nothing to do")
        return out
    existing = (out / "_job.json").exists() and not config.overwrite
    if existing and not config.resume:
        raise InputError(
            f"--out {out}: holds an unfinished distill run with these options; pass --resume to "
            f"continue it from its last checkpoint, or --overwrite to start over"
        )

    job.start()
    try:  # checks that need the rows: a refused run leaves nothing behind
        data, stats = load_data(config.teacher_logits, weights, out / DATA_CACHE)
        if not data.problems:
            raise InputError(f"--weights {weights.path}: every problem in --teacher-logits has weight 0; nothing to train on")
        check_lengths(data, source)
    except InputError:
        job.abandon()
        raise
    per_epoch = math.ceil(len(data.problems) / config.batch_size)
    total = config.max_steps or config.epochs * per_epoch

    # 2. Model, optimizer, schedule; then resume if asked.
    device = models.resolve_device(config.device)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model = models.load_model(source, device=device, dtype="float32", trust_remote_code=config.trust_remote_code)
    try:
        check_vocab(data, model)
    except InputError:
        job.abandon()
        raise
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if config.lora_r:
        model = add_lora(model, config.lora_r, config.lora_alpha)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, config.warmup_steps, config.schedule))
    start, log = 0, []
    found = _checkpoints(out)
    if config.resume and found:
        start, log = load_checkpoint(found[-1][1], model, optimizer, scheduler)
        console.print(f"resumed from {found[-1][1]} (step {start} of {total})")

    def autocast():
        # bf16 autocast on GPUs, master weights stay float32; CPUs compute in float32.
        if device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    # 3. Train.
    started = time.perf_counter()
    with progress("distill", total=total - start, unit="steps") as bar:
        for step in range(start + 1, total + 1):
            t0 = time.perf_counter()
            epoch, names = step_problems(data, config.seed, config.batch_size, step)
            seqs = [(r, data.weight[p] / (len(names) * data.tokens[p])) for p in names for r in data.rows[p]]
            seqs.sort(key=lambda x: x[0])
            optimizer.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "fkl": 0.0, "rkl": 0.0}
            for m in range(0, len(seqs), config.micro_batch_size):
                chunk = seqs[m : m + config.micro_batch_size]
                batch = collate(data, [r for r, _ in chunk], device)
                coef = torch.tensor([c for _, c in chunk], dtype=torch.float32, device=device)
                terms = micro_batch_loss(model, batch, coef, loss=config.loss, mu=config.mu, chunk_size=config.chunk_size, autocast=autocast)
                terms["loss"].backward()
                for k in sums:
                    sums[k] += float(terms[k].detach())
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            log.append(
                {
                    "step": step, "epoch": epoch, "loss": sums["loss"], "fkl": sums["fkl"], "rkl": sums["rkl"],
                    "lr": lr, "grad_norm": grad_norm, "tokens": sum(data.tokens[p] for p in names),
                    "problems": len(names), "weight_sum": sum(data.weight[p] for p in names),
                    "seconds": time.perf_counter() - t0,
                }
            )
            bar.update(bar.tasks[0].id, advance=1, rate=f"loss {sums['loss']:.4f}")
            if config.save_steps and step % config.save_steps == 0 and step < total:
                save_checkpoint(out, step, model, optimizer, scheduler, log)

    # 4. The final checkpoint, loadable by transformers and vLLM; the manifest last.
    if config.lora_r:
        model = model.merge_and_unload()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    table = pl.DataFrame(log, schema=_log_schema()).to_arrow().cast(schemas.TRAIN_LOG.arrow)
    schemas.write_file(out / "train_log.parquet", table, schemas.TRAIN_LOG, prov)
    job.finish(0)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    (out / DATA_CACHE).unlink(missing_ok=True)
    first, last = log[0], log[-1]
    summary_table(
        "distill summary",
        [
            ("loss", f"{config.loss}" + (f" (mu {config.mu:g})" if config.loss == "akl" else "")),
            ("steps", f"{total} ({total - start} now)"),
            ("problems trained (weight > 0)", f"{len(data.problems):,}"),
            ("sequences skipped (weight 0)", f"{stats['skipped_zero_weight']:,} of {stats['sequences']:,}"),
            ("tokens per epoch", f"{sum(data.tokens.values()):,}"),
            ("loss first -> last step", f"{first['loss']:.4f} -> {last['loss']:.4f}"),
            ("forward KL first -> last", f"{first['fkl']:.4f} -> {last['fkl']:.4f}"),
            ("reverse KL first -> last", f"{first['rkl']:.4f} -> {last['rkl']:.4f}"),
            ("seconds", f"{time.perf_counter() - started:.1f}"),
        ],
    )
    return out


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


def check_vocab(data: TrainData, model) -> None:
    rows = model.get_output_embeddings().weight.shape[0]
    top = pc.max(pc.list_flatten(pc.list_flatten(data.table["topk_ids"]))).as_py()
    if top is not None and top >= rows:
        raise InputError(f"--teacher-logits: teacher token id {top} is outside the student's vocabulary of {rows:,} rows; use a student with the teacher's tokenizer")


def add_lora(model, r: int, alpha: float | None):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)
