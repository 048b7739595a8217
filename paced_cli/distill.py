from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from paced_cli.common import run_stage
from paced_cli.options import TrustRemoteCode
from stages import distill as stage


def distill(
    ctx: typer.Context,
    student: Annotated[str, typer.Option(help="Student model: a local directory or a hub id.")],
    teacher_logits: Annotated[Path, typer.Option(help="teacher_logits artifact (`paced teacher-logits` output).")],
    weights: Annotated[Path, typer.Option(help="Weights artifact (`paced weight` output): one scalar per problem; weight-0 problems are never loaded.")],
    out: Annotated[Path, typer.Option(help="Output directory: a Hugging Face checkpoint plus train_log.parquet.")],
    loss: Annotated[str, typer.Option(help="fkl: KL(teacher||student); rkl: KL(student||teacher), on-policy on student rollouts; akl: adaptive mix (Wu et al. 2025).")] = "fkl",
    mu: Annotated[float, typer.Option(help="AKL: teacher cumulative mass that defines the head.")] = 0.5,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-6,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.1,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm.")] = 1.0,
    epochs: Annotated[int, typer.Option(help="Passes over the problems with weight > 0.")] = 1,
    max_steps: Annotated[Optional[int], typer.Option(help="Stop after this many optimizer steps (overrides --epochs).")] = None,
    batch_size: Annotated[int, typer.Option(help="Problems per optimizer step (N in sum_i w_i L_i / N); under accelerate launch the global batch, split across the processes.")] = 16,
    micro_batch_size: Annotated[int, typer.Option(help="Sequences per forward pass; gradients accumulate over a step's micro-batches.")] = 4,
    schedule: Annotated[str, typer.Option(help="Learning-rate schedule after warmup: cosine or constant.")] = "cosine",
    warmup_steps: Annotated[int, typer.Option(help="Linear warmup steps.")] = 0,
    seed: Annotated[int, typer.Option(help="Seeds the data order and torch.")] = 0,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps (model, optimizer, scheduler, RNG, data position); 0 = none.")] = 100,
    export_steps: Annotated[Optional[str], typer.Option(help="Also save a loadable model at these steps (e.g. 250,500,1000) as <out>/step-N: several budgets from one run (use --schedule constant).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out from its last checkpoint.")] = False,
    init: Annotated[Optional[Path], typer.Option(help="Start from an earlier paced distill output (the two-stage schedule's second stage).")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for activation memory.")] = False,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (needs peft); 0 trains all weights. Adapters are merged into the saved model.")] = 0,
    lora_alpha: Annotated[Optional[float], typer.Option(help="LoRA alpha (default 2 * rank).")] = None,
    chunk_size: Annotated[int, typer.Option(help="Token positions per loss chunk: bounds float32 [positions, vocabulary] buffers.")] = 1024,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N. On CUDA the forward runs under bf16 autocast.")] = "auto",
    trust_remote_code: TrustRemoteCode = False,
    allow_stale: Annotated[bool, typer.Option(help="Accept inputs made from another problems file than the others (normally refused as stale).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a different or unfinished run in --out instead of refusing.")] = False,
) -> None:
    """Distill the teacher into the student with one weight per problem (fkl, rkl or akl).

    Runs unchanged under `accelerate launch` (DDP, FSDP, DeepSpeed): --batch-size stays the
    global batch, split across the processes, and only the main process writes and prints.
    """
    with _main_process_stdout():
        run_stage(
            lambda: stage.DistillConfig(
                student=student, teacher_logits=teacher_logits, weights=weights, out=out, loss=loss, mu=mu, lr=lr,
                weight_decay=weight_decay, max_grad_norm=max_grad_norm, epochs=epochs, max_steps=max_steps,
                batch_size=batch_size, micro_batch_size=micro_batch_size, schedule=schedule, warmup_steps=warmup_steps,
                seed=seed, save_steps=save_steps, export_steps=export_steps, resume=resume, init=init, gradient_checkpointing=gradient_checkpointing,
                lora_r=lora_r, lora_alpha=lora_alpha, chunk_size=chunk_size, device=device,
                trust_remote_code=trust_remote_code, allow_stale=allow_stale, overwrite=overwrite,
            ),
            stage.run,
            ctx,
        )


def _main_process_stdout():
    """Under a launcher every process runs this command; only the main one (RANK 0) prints the
    output path on stdout, so `out=$(accelerate launch ... paced distill ...)` gets it once."""
    if int(os.environ.get("RANK", "0") or 0) == 0:
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(open(os.devnull, "w"))  # noqa: SIM115 (the process ends with the command)
