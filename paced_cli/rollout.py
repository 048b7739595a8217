from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from paced_cli.common import run_stage
from paced_cli.options import (
    Backend, Context, Device, Dtype, GpuMemoryUtilization, MaxModelLen, PromptSuffix, SystemPrompt, TensorParallelSize,
    TrustRemoteCode, VllmArgs,
)
from stages import rollout as stage


def rollout(
    ctx: typer.Context,
    problems: Annotated[Path, typer.Option(help="Problems Parquet file or directory (problem_id, prompt, answer, reference).")],
    model: Annotated[str, typer.Option(help="Model to sample from: a local directory or a hub id such as Qwen/Qwen3-1.7B.")],
    out: Annotated[Path, typer.Option(help="Output directory of the rollouts artifact (resumable job).")],
    samples: Annotated[int, typer.Option("--samples", "-k", help="K: responses per problem.")] = 8,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy. The paper samples at 1.0.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass, in (0, 1].")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Longest response; longer ones stop with finish_reason 'length'.")] = 1024,
    seed: Annotated[int, typer.Option(help="Same seed, options and batch size give the same completions.")] = 0,
    backend: Backend = "hf",
    context: Context = "none",
    system_prompt: SystemPrompt = None,
    prompt_suffix: PromptSuffix = None,
    batch_size: Annotated[int, typer.Option(help="Problems per generate call (each with K samples); vllm takes a whole part at once.")] = 8,
    part_size: Annotated[int, typer.Option(help="Problems per output part: the unit of resumption.")] = 64,
    device: Device = "auto",
    dtype: Dtype = "auto",
    trust_remote_code: TrustRemoteCode = False,
    shard: Annotated[Optional[str], typer.Option(help="Run one shard I/N of the job (problems split by a stable hash of problem_id) into --out/shard-I-of-N; downstream stages read --out as one artifact once every shard is done.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an unfinished or different rollouts job in --out instead of refusing.")] = False,
    tensor_parallel_size: TensorParallelSize = 1,
    gpu_memory_utilization: GpuMemoryUtilization = None,
    max_model_len: MaxModelLen = None,
    vllm_args: VllmArgs = None,
) -> None:
    """Sample K responses per problem (resumable: rerun the same command after a crash)."""
    run_stage(
        lambda: stage.RolloutConfig(
            problems=problems, model=model, out=out, samples=samples, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, seed=seed, backend=backend, context=context,
            system_prompt=system_prompt, prompt_suffix=prompt_suffix, batch_size=batch_size,
            part_size=part_size, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
            shard=shard, overwrite=overwrite, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, vllm_args=vllm_args,
        ),
        stage.run,
        ctx,
    )
