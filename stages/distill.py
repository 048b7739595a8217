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

import contextlib
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

import schemas
from schemas import InputError
from schemas.outputs import check_file, check_paths
from stages import models, threads
from stages.common import console, notice, progress, summary_table
from stages.training import checkpoints, data as train_data, forward, losses, schedules, tracking
from stages.training.launch import Launch, launched
from stages.options import (allow_stale_option, key_options, mu_option, option, seed_problems,
                            trust_remote_code_option, INPUT, RUNTIME)

DATA_CACHE = ".train_data.arrow"
TRAIN_LOG_FILE = "train_log.parquet"


@dataclass
class DistillConfig:
    student: str = option("Student model: a local directory or a hub id.", role=INPUT)
    teacher_logits: Path = option("teacher_logits artifact (`paced teacher-logits` output).", role=INPUT)
    weights: Path = option("Weights artifact (`paced weight` output): one scalar per problem; weight-0 problems are never loaded.", role=INPUT)
    out: Path = option("Output directory: a Hugging Face checkpoint plus train_log.parquet.", role=RUNTIME)
    loss: str = option(losses.HELP, "fkl")
    mu: float = mu_option()
    lr: float = option("Peak learning rate (AdamW).", 1e-6)
    weight_decay: float = option("AdamW weight decay.", 0.1)
    max_grad_norm: float = option("Gradient clipping norm.", 1.0)
    epochs: int = option("Passes over the problems with weight > 0.", 1)
    max_steps: int | None = option("Stop after this many optimizer steps (overrides --epochs).", None)
    batch_size: int = option("Problems per optimizer step (N in sum_i w_i L_i / N); under accelerate launch the global batch, split across the processes.", 16)
    micro_batch_size: int = option("Sequences per forward pass; gradients accumulate over a step's micro-batches.", 4, role=RUNTIME)
    schedule: str = option("Learning-rate schedule after warmup: cosine or constant.", "cosine")
    warmup_steps: int = option("Linear warmup steps.", 0)
    seed: int = option("Seeds the data order and torch.", 0)
    save_steps: int = option("Checkpoint every N steps (model, optimizer, scheduler, RNG, data position); 0 = none.", 100)
    export_steps: str | None = option("Also save a loadable model at these steps (e.g. 250,500,1000) as <out>/step-N (with its train_log: a valid --init): several budgets from one run (use --schedule constant).", None)
    resume: bool = option("Continue an interrupted run in --out from its last checkpoint.", False, role=RUNTIME)
    init: Path | None = option("Start from an earlier paced distill output (the two-stage schedule's second stage).", None, role=INPUT)
    gradient_checkpointing: bool = option("Trade compute for activation memory.", False)
    lora_r: int = option("LoRA rank (needs peft); 0 trains all weights. Adapters are merged into the saved model.", 0)
    lora_alpha: float | None = option("LoRA alpha (default 2 * rank).", None)
    chunk_size: int = option("Token positions per loss chunk: bounds float32 positions x vocabulary buffers.", forward.CHUNK_SIZE, role=RUNTIME)
    device: str = option("auto, cpu, cuda or cuda:N. On CUDA the forward runs under bf16 autocast.", "auto", role=RUNTIME)
    trust_remote_code: bool = trust_remote_code_option()
    allow_stale: bool = allow_stale_option()
    overwrite: bool = option("Replace a different or unfinished run in --out instead of refusing.", False, role=RUNTIME)
    report_to: str = option("Also send every step's train_log row to: none, tensorboard (event files in <out>/tensorboard) or wandb (project $WANDB_PROJECT or paced, files in <out>/wandb; WANDB_MODE=offline keeps them local).", "none", role=RUNTIME)
    plot: Path | None = option("Also draw loss, forward and reverse KL, learning rate and mean weight per step to this PNG (also for a finished run).", None, role=RUNTIME)

    def __post_init__(self) -> None:
        p = []
        p += tracking.option_problems(self.report_to)
        p += models.device_problems(self.device)
        if self.plot is not None and Path(self.plot).suffix.lower() != ".png":
            p.append(f"--plot {self.plot}: give a .png file name")
        p += losses.option_problems(self.loss, self.mu)
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
        if self.schedule not in schedules.SCHEDULES:
            p.append(f"--schedule {self.schedule}: use one of {', '.join(schedules.SCHEDULES)}")
        for flag, v in (("--warmup-steps", self.warmup_steps), ("--save-steps", self.save_steps), ("--lora-r", self.lora_r)):
            if v < 0:
                p.append(f"{flag} {v}: must be >= 0")
        if self.lora_alpha is not None:
            if not self.lora_r:
                p.append(f"--lora-alpha {self.lora_alpha}: only LoRA uses it; add --lora-r or drop it")
            elif not (math.isfinite(self.lora_alpha) and self.lora_alpha > 0):
                p.append(f"--lora-alpha {self.lora_alpha}: must be a finite number > 0 (default 2 * rank)")
        p += seed_problems(self.seed)
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
        if self.export_steps is None:
            return []
        items = [s.strip() for s in str(self.export_steps).split(",")]
        if not all(items):  # "", ",", "1,,2": a step left out by mistake
            raise ValueError(self.export_steps)
        return sorted({int(s) for s in items})


def run(config: DistillConfig, command: str | None = None) -> Path:
    """Single process (plain `paced distill`) or one process of `accelerate launch ... paced distill`.
    `command`: the command line, for provenance (the CLI passes it)."""
    if not launched():
        return _run(config, None, command)
    launch = Launch(config)
    quiet = console.quiet
    console.quiet = not launch.main  # logs, warnings and the summary from the main process only
    try:
        launch.check(config)
        out = _run(config, launch, command)
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


def _run(config: DistillConfig, launch: Launch | None, command: str | None) -> Path:
    """Setup (inputs, job, rows, model), the training loop, the final model and log."""
    r = _setup(config, launch, command)
    if r is None:
        console.print(f"{config.out}: already complete; nothing to do" + (" but the plot" if config.plot else ""))
        if launch is None or launch.main:  # killed after its manifest: what it had still to delete
            _cleanup(Path(config.out))
        if config.plot is not None and (launch is None or launch.main):
            log = schemas.read(Path(config.out) / TRAIN_LOG_FILE, schemas.TRAIN_LOG, option="--out")
            key = schemas.io.read_job(Path(config.out), "--out").get("key", "")
            tracking.plot(log.frame.to_dicts(), Path(config.plot), f"paced distill: {Path(config.out).name}", key,
                          overwrite=config.overwrite)
        return Path(config.out)
    _train(config, r)
    return _finish(config, r)


@dataclass
class _Run:
    """What the loop and the finish share: set up once by `_setup`."""

    launch: Launch | None
    main: bool
    job: schemas.Job
    prov: dict[str, Any]
    weights: schemas.Artifact
    tokenizer: Any
    data: train_data.TrainData
    stats: dict[str, int]
    total: int
    start: int
    log: list[dict]
    model: Any
    optimizer: Any
    scheduler: Any
    stepper: Any
    params: list
    device: str
    autocast: Any
    started: float = 0.0
    seen: set[str] | None = None


def _setup(config: DistillConfig, launch: Launch | None, command: str | None) -> _Run | None:
    """Every check before a model loads, the job and its training rows, then the model,
    optimizer and schedule, resumed if asked. None when the job is already complete."""
    import torch

    main = launch is None or launch.main
    # 1. Inputs and options, before any model is loaded (every process checks the same files).
    check_paths({"--out": config.out, "--plot": config.plot}, {"--student": config.student, "--teacher-logits": config.teacher_logits,
                                        "--weights": config.weights, "--init": config.init})
    weights = schemas.read(config.weights, schemas.WEIGHTS, option="--weights")
    tl = schemas.read_header(config.teacher_logits, schemas.TEACHER_LOGITS, option="--teacher-logits")
    stale = schemas.io.check_lineage(schemas.io.lineage(tl), f"--teacher-logits {tl.path}", weights, "--weights", config.allow_stale)
    if stale:
        notice("warning", stale)
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
    options = key_options(config)
    prov = schemas.provenance("distill", asdict(config), {"teacher_logits": tl, "weights": weights}, problems=schemas.io.lineage(tl),
                              command=command)
    if launch is not None:
        prov["launch"] = launch.describe
    job = schemas.Job(config.out, schemas.TRAIN_LOG, options | {"inputs": inputs}, prov, overwrite=config.overwrite,
                      contents={"--student": models.model_digest(source)}, runtime={"threads": threads.current()}, own=(checkpoints.CHECKPOINTS, DATA_CACHE, TRAIN_LOG_FILE, tracking.TENSORBOARD_DIR, tracking.WANDB_DIR))
    if config.plot is not None:
        check_file(config.plot, tracking.PLOT_KIND, "--plot", key=job.key, overwrite=config.overwrite, suffix=".png")
    held: dict[str, Any] = {}

    def job_and_rows():
        """The job directory and the training rows: the main process only writes them."""
        job.check()
        if job.complete:
            return None
        if launch is None:  # (a launch's processes each take their share of the cores)
            threads.resume_with(job.began.get("threads"))
        existing = schemas.outputs.record_path(job.dir, schemas.outputs.JOB_FILE) is not None
        if existing and not (config.resume or config.overwrite):
            raise InputError(
                f"--out {config.out}: holds an unfinished distill run with these options; pass --resume to "
                f"continue it from its last checkpoint, or --overwrite to start over"
            )
        if config.overwrite:  # start over: this run's own checkpoints, never anything else
            schemas.outputs.refuse_others(config.out, "--out", schemas.outputs.foreign_inside(job.dir / checkpoints.CHECKPOINTS))
        job.start()
        if config.overwrite:
            checkpoints.clear(job.dir)
        try:  # checks that need the rows: a refused run leaves nothing behind
            data, stats = train_data.load_data(config.teacher_logits, weights, job.dir / DATA_CACHE)
            train_data.check_loss(stats["representation"], config.loss)
            if not data.problems:
                raise InputError(f"--weights {weights.path}: every problem in --teacher-logits has weight 0; nothing to train on")
            train_data.check_lengths(data, source)
            train_data.check_vocab_rows(data, models.vocab_rows(source, config.trust_remote_code), source)
        except InputError:
            job.abandon()
            raise
        _note_untaught(weights, data, tl.path)
        held["data"] = data
        return stats

    stats = job_and_rows() if launch is None else launch.on_main(job_and_rows)
    if stats is None:
        return None
    if main:
        data = held["data"]
    else:  # the rows the main process just wrote, memory-mapped
        job.locate()
        data = train_data.open_data(job.dir / DATA_CACHE, dict(zip(weights.frame["problem_id"].to_list(), weights.frame["weight"].to_list())))
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
        train_data.check_vocab(data, model, source)
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
        model = models.add_lora(model, config.lora_r, config.lora_alpha)
    model.train()

    def autocast():
        # bf16 autocast on GPUs, master weights stay float32; CPUs compute in float32.
        if device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedules.lr_lambda(total, config.warmup_steps, config.schedule))
    stepper = optimizer
    if launch is not None:
        module = forward.loss_module(model, loss=config.loss, mu=config.mu, chunk_size=config.chunk_size, autocast=autocast)
        stepper = launch.prepare(module, optimizer, config)  # the scheduler stays paced's: one step per step
    start, log = 0, []
    found = checkpoints.found(job.dir)
    for i, (_, path) in reversed(list(enumerate(found if config.resume else []))):
        try:  # the latest checkpoint that loads: a damaged one is written again when its step comes
            if launch is None:
                start, log = checkpoints.load_checkpoint(path, model, optimizer, scheduler)
            else:
                start, log = launch.load_checkpoint(path, optimizer, scheduler)
        except checkpoints.Damaged as e:
            if launch is not None:  # (a launch's processes must agree on where they resume: no falling back)
                raise InputError(f"{e}; delete it to resume from the checkpoint before it, or pass --overwrite "
                                 f"to start again") from None
            if i == 0:
                raise InputError(f"{e}, and no checkpoint before it loads; pass --overwrite to start again") from None
            notice("warning", f"{e}; resuming from the checkpoint before it")
            continue
        console.print(f"resumed from {path} (step {start} of {total})")
        break
    return _Run(launch=launch, main=main, job=job, prov=prov, weights=weights, tokenizer=tokenizer, data=data,
                stats=stats, total=total, start=start, log=log, model=model, optimizer=optimizer, scheduler=scheduler,
                stepper=stepper, params=params, device=device, autocast=autocast)


def _note_untaught(weights: schemas.Artifact, data: train_data.TrainData, tl: Path) -> None:
    """Say so when problems the weights train have no teacher logits: teacher-logits --weights
    scored only the problems its weights kept, so weights made again with other options (a
    posterior estimate, a smaller beta) can weigh problems it never scored, which distill then
    leaves out with nothing but a count in its summary."""
    wanted = weights.frame.filter(pl.col("weight") > 0).get_column("problem_id")
    lacking = wanted.filter(~wanted.is_in(list(data.problems)))
    if lacking.len():
        notice("warning", (
            f"--weights {weights.path}: {lacking.len():,} of its {wanted.len():,} problems with weight > 0 have no "
            f"teacher logits in --teacher-logits {tl} ({', '.join(repr(x) for x in lacking.head(5))}), so they are "
            f"not trained; if teacher-logits ran with other --weights, rerun it with these to score them"
        ))


def _train(config: DistillConfig, r: _Run) -> None:
    """Steps start+1 .. total: each step's problems, their micro-batches, one optimizer step,
    one train_log row; exports and checkpoints on their steps."""
    import torch

    data, launch, device, work = r.data, r.launch, r.device, r.job.dir  # `out`, or the replacement `job.finish` swaps in
    # `seen`: the problems visited so far (also by the steps before a resume).
    r.seen = set()
    for step in range(1, r.start + 1):
        r.seen.update(train_data.step_problems(data, config.seed, config.batch_size, step)[1])
    r.started = time.perf_counter()
    bar_ctx = progress("distill", total=r.total - r.start, unit="steps", shown=r.main)
    rank, world = (0, 1) if launch is None else (launch.rank, launch.world)
    exports = set(config.exports)  # parsed once, not on every step
    tracker = tracking.Tracker(config.report_to if r.main else "none", work, r.job.key, key_options(config), r.start + 1)
    with bar_ctx as bar, contextlib.closing(tracker):
        for step in range(r.start + 1, r.total + 1):
            t0 = time.perf_counter()
            epoch, names = train_data.step_problems(data, config.seed, config.batch_size, step)
            plan = train_data.step_plan(data, names, config.micro_batch_size, rank, world)
            r.stepper.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "fkl": 0.0, "rkl": 0.0}
            for i, (rows, coefs) in enumerate(plan):
                batch = train_data.collate(data, rows, device)
                coef = torch.tensor(coefs, dtype=torch.float32, device=device)
                if launch is None:
                    terms = forward.micro_batch_loss(r.model, batch, coef, loss=config.loss, mu=config.mu,
                                                     chunk_size=config.chunk_size, autocast=r.autocast)
                    terms["loss"].backward()
                else:
                    terms = launch.forward_backward(batch, coef, last=i == len(plan) - 1)
                for k in sums:
                    sums[k] += float(terms[k].detach())
            if launch is None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(r.params, config.max_grad_norm))
            else:
                sums = launch.reduce_sums(sums)
                grad_norm = launch.clip(config.max_grad_norm)
            # Before the step: no NaN in the model. (DeepSpeed clips inside its own step: its norm is
            # not known yet here, and reads as NaN; its loss is.)
            norm_known = launch is None or launch.kind != "deepspeed"
            if not (math.isfinite(sums["loss"]) and (math.isfinite(grad_norm) or not norm_known)):
                raise InputError(
                    f"step {step}: the loss ({sums['loss']:g}) or the gradient norm ({grad_norm:g}) is not finite; "
                    f"the step was not applied and nothing past the last checkpoint was written. The largest "
                    f"weight of its problems is {max(data.weight[p] for p in names):g} (--weights {config.weights}): "
                    f"scale the weights down (paced weight --normalize mean), or lower --lr {config.lr:g}"
                    + (" or train in float32 (--device cpu, or a GPU without bfloat16 autocast)" if str(device).startswith("cuda") else "")
                )
            lr = r.scheduler.get_last_lr()[0]
            r.stepper.step()
            r.scheduler.step()
            r.seen.update(names)
            weight_sum = sum(data.weight[p] for p in names)
            r.log.append(
                {
                    "step": step, "epoch": epoch, "loss": sums["loss"], "fkl": sums["fkl"], "rkl": sums["rkl"],
                    "lr": lr, "grad_norm": grad_norm, "tokens": sum(data.tokens[p] for p in names),
                    "problems": len(names), "weight_sum": weight_sum, "mean_weight": weight_sum / len(names),
                    "visited": len(r.seen), "seconds": time.perf_counter() - t0,
                }
            )
            tracker.log(r.log[-1])
            bar.update(bar.tasks[0].id, advance=1, rate=f"loss {sums['loss']:.4f}")
            if step in exports and step < r.total:
                checkpoints.export_model(r.job, step, r.model, r.tokenizer, r.log, r.prov)
            if config.save_steps and step % config.save_steps == 0 and step < r.total:
                if launch is None:
                    checkpoints.save_checkpoint(work, step, r.model, r.optimizer, r.scheduler, r.log)
                else:
                    launch.save_checkpoint(work, step, r.optimizer, r.scheduler, r.log)


def _cleanup(out: Path) -> None:
    """Delete a finished run's checkpoints and training-rows cache (files of the user's kept)."""
    kept = checkpoints.clear(out)
    if kept:
        notice("note", f"the checkpoints are deleted; files of yours among them are kept: {', '.join(kept[:5])}")
    (out / DATA_CACHE).unlink(missing_ok=True)


def _finish(config: DistillConfig, r: _Run) -> Path:
    """The final model, loadable by transformers and vLLM, written aside and recorded as the
    job's own before it is moved in (so --overwrite may remove it later); the manifest last."""
    out, work, launch, data, log = Path(config.out), r.job.dir, r.launch, r.data, r.log
    final = schemas.outputs.temp_path(work / "final")
    if r.main:
        shutil.rmtree(final, ignore_errors=True)
        final.mkdir()
    if launch is None:
        model = r.model.merge_and_unload() if config.lora_r else r.model
        model.eval()
        with schemas.outputs.writing(out):
            model.save_pretrained(final, safe_serialization=True)
    else:
        launch.save_final(final, bool(config.lora_r))
        if not r.main:
            return out
    with schemas.outputs.writing(out):
        r.tokenizer.save_pretrained(final)
    names = sorted(os.listdir(final))
    r.job.adopt(names)
    for name in names:
        os.replace(final / name, work / name)
    final.rmdir()
    table = pl.DataFrame(log, schema=checkpoints.log_schema()).to_arrow().cast(schemas.TRAIN_LOG.arrow)
    schemas.write_file(work / TRAIN_LOG_FILE, table, schemas.TRAIN_LOG, r.prov, overwrite=True)
    r.job.finish(0)
    if config.plot is not None:
        tracking.plot(log, Path(config.plot), f"paced distill: {out.name}", r.job.key, overwrite=config.overwrite)
    _cleanup(r.job.dir)
    first, last = log[0], log[-1]
    # What a weighting changed besides the loss: which problems were trained, how often.
    n_all = r.weights.frame.height
    visits = sum(row["problems"] for row in log)
    zero = int((r.weights.frame["weight"] <= 0).sum())
    seen = r.seen or set()
    unreached = len(data.problems) - len(seen)
    never = n_all - len(seen)
    total, start = r.total, r.start
    summary_table(
        "distill summary",
        [
            ("loss", f"{config.loss}" + (f" (mu {config.mu:g})" if config.loss == "akl" else "")
             + f", teacher {r.stats.get('representation', 'topk')}"),
            ("steps", f"{total} ({total - start} now)"),
            *([("processes", f"{launch.world} ({launch.kind.upper()} via accelerate)")] if launch is not None else []),
            ("problems trained (weight > 0)", f"{len(data.problems):,}"),
            ("mean weight per step", f"{sum(row['mean_weight'] for row in log) / len(log):.3f}"),
            ("epochs per trained problem", f"{visits / len(data.problems):.2f}"),
            ("problems of --weights never visited", f"{never:,} of {n_all:,} ({never / n_all:.1%}): weight 0 "
                                                    f"{zero:,}, not reached in {total} steps {unreached:,}, "
                                                    f"no teacher logits {never - zero - unreached:,}"),
            ("sequences skipped (weight 0)", f"{r.stats['skipped_zero_weight']:,} of {r.stats['sequences']:,}"),
            ("tokens per epoch", f"{sum(data.tokens.values()):,}"),
            ("loss first -> last step", f"{first['loss']:.4f} -> {last['loss']:.4f}"),
            ("forward KL first -> last", f"{first['fkl']:.4f} -> {last['fkl']:.4f}"),
            ("reverse KL first -> last", f"{first['rkl']:.4f} -> {last['rkl']:.4f}" if math.isfinite(first["rkl"])
             else "not estimated: the teacher's tokens were drawn"),
            ("seconds", f"{time.perf_counter() - r.started:.1f}"),
        ],
    )
    return out
