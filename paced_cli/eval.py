from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from paced_cli.common import run_stage
from paced_cli.options import (
    Backend, Context, Device, Dtype, GpuMemoryUtilization, MaxModelLen, PromptSuffix, SystemPrompt, TensorParallelSize,
    TrustRemoteCode, VllmArgs,
)
from stages import eval as stage


def eval_(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model to evaluate: a local directory or a hub id such as Qwen/Qwen3-1.7B.")],
    problems: Annotated[list[Path], typer.Option(help="Problems file (repeat for several). Its `benchmark` column names the benchmark(s), else the file name does (math500.parquet -> math500).")],
    out: Annotated[Path, typer.Option(help="Output directory: per-response results (resumable job) and summary.parquet.")],
    samples: Annotated[int, typer.Option("--samples", "-k", help="Responses per problem; accuracy is the mean over sample indices (the paper uses 8).")] = 8,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 0.6,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass, in (0, 1].")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="Longest response; longer ones stop with finish_reason 'length'.")] = 1024,
    seed: Annotated[int, typer.Option(help="Same seed, options and batch size give the same responses.")] = 0,
    backend: Backend = "hf",
    verifier: Annotated[str, typer.Option(help="math (math-verify equivalence), exact (normalised string), regex:PATTERN (first group), or module:function (your fn(completion, problem_row) -> bool).")] = "math",
    timeout: Annotated[float, typer.Option(help="Seconds one check may take; past it the check is killed and scores false with reason 'timeout'.")] = 5.0,
    workers: Annotated[int, typer.Option(help="Checker processes.")] = 2,
    context: Context = "none",
    system_prompt: SystemPrompt = None,
    prompt_suffix: PromptSuffix = None,
    batch_size: Annotated[int, typer.Option(help="Problems per generate call (each with K samples); vllm takes a whole part at once.")] = 8,
    part_size: Annotated[int, typer.Option(help="Problems per output part: the unit of resumption.")] = 64,
    device: Device = "auto",
    dtype: Dtype = "auto",
    trust_remote_code: TrustRemoteCode = False,
    baseline: Annotated[Optional[Path], typer.Option(help="Another eval's --out (e.g. the student before distillation): report the gain over it per benchmark.")] = None,
    retain: Annotated[Optional[list[str]], typer.Option(help="A benchmark that measures retention (repeat for several): with --baseline, report forgetting = (baseline - accuracy) / baseline * 100.")] = None,
    shard: Annotated[Optional[str], typer.Option(help="Evaluate one shard I/N of the problems into --out/shard-I-of-N; the last shard to finish writes the summary.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an unfinished or different eval job in --out instead of refusing.")] = False,
    tensor_parallel_size: TensorParallelSize = 1,
    gpu_memory_utilization: GpuMemoryUtilization = None,
    max_model_len: MaxModelLen = None,
    vllm_args: VllmArgs = None,
) -> None:
    """Accuracy per benchmark over K samples, with gain and forgetting against a baseline (resumable)."""
    run_stage(
        lambda: stage.EvalConfig(
            problems=list(problems), model=model, out=out, samples=samples, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, seed=seed, backend=backend, context=context,
            system_prompt=system_prompt, prompt_suffix=prompt_suffix, verifier=verifier, timeout=timeout,
            workers=workers, batch_size=batch_size, part_size=part_size, device=device, dtype=dtype,
            trust_remote_code=trust_remote_code, baseline=baseline, retain=list(retain or []), shard=shard, overwrite=overwrite,
            tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len, vllm_args=vllm_args,
        ),
        stage.run,
        ctx,
    )
