from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from paced_cli.common import run_stage
from paced_cli.options import (
    Backend, Device, Dtype, GpuMemoryUtilization, MaxModelLen, TensorParallelSize, TrustRemoteCode, VllmArgs,
)
from stages import teacher_logits as stage


def teacher_logits(
    ctx: typer.Context,
    problems: Annotated[Path, typer.Option(help="The problems file (prompts, and references for --context reference).")],
    sequences: Annotated[Path, typer.Option(help="What the student will learn: a rollouts artifact (teacher's responses for forward KL, the student's for reverse KL) or a problems file whose `reference` solutions are the responses.")],
    teacher: Annotated[str, typer.Option(help="Teacher model: a local directory or a hub id. Must share the student's tokenizer.")],
    out: Annotated[Path, typer.Option(help="Output directory of the teacher_logits artifact (resumable job).")],
    top_k: Annotated[int, typer.Option(help="Teacher token ids kept per position (the rest is one tail bucket).")] = 32,
    context: Annotated[str, typer.Option(help="none, or reference: the teacher's prompt carries the expert reference solution; the stored response and student prompt do not change.")] = "none",
    weights: Annotated[Optional[Path], typer.Option(help="Weights artifact: problems with weight 0 are skipped (no teacher forward pass).")] = None,
    system_prompt: Annotated[Optional[str], typer.Option(help="System message of the prompts (default: the one the rollouts used).")] = None,
    prompt_suffix: Annotated[Optional[str], typer.Option(help="Text appended to every prompt (default: the one the rollouts used).")] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per teacher forward pass (hf; vllm batches by itself).")] = 8,
    chunk_size: Annotated[int, typer.Option(help="Positions per output-layer chunk: bounds the float32 [positions, vocabulary] buffer (hf).")] = 1024,
    part_size: Annotated[int, typer.Option(help="Sequences per output part: the unit of resumption.")] = 256,
    device: Device = "auto",
    dtype: Dtype = "auto",
    trust_remote_code: TrustRemoteCode = False,
    shard: Annotated[Optional[str], typer.Option(help="Run one shard I/N of the job (problems split by a stable hash of problem_id) into --out/shard-I-of-N; downstream stages read --out as one artifact once every shard is done.")] = None,
    allow_stale: Annotated[bool, typer.Option(help="Accept inputs made from another problems file than the others (normally refused as stale).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an unfinished or different job in --out instead of refusing.")] = False,
    backend: Backend = "hf",
    tensor_parallel_size: TensorParallelSize = 1,
    gpu_memory_utilization: GpuMemoryUtilization = None,
    max_model_len: MaxModelLen = None,
    vllm_args: VllmArgs = None,
) -> None:
    """Store the teacher's top-k log-probabilities on every response token (resumable)."""
    run_stage(
        lambda: stage.TeacherLogitsConfig(
            problems=problems, sequences=sequences, teacher=teacher, out=out, top_k=top_k, context=context,
            weights=weights, system_prompt=system_prompt, prompt_suffix=prompt_suffix, batch_size=batch_size,
            chunk_size=chunk_size, part_size=part_size, device=device, dtype=dtype,
            trust_remote_code=trust_remote_code, allow_stale=allow_stale, shard=shard, overwrite=overwrite,
            backend=backend, tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len, vllm_args=vllm_args,
        ),
        stage.run,
        ctx,
    )
