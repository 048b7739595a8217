"""Sampling K responses per prompt: the transformers backend.

Shared by `rollout` and `eval`. Sampling follows the options exactly: temperature, top-p,
and nothing else. transformers' defaults would add top-k 50 and the model's own generation
config (Qwen3 ships top-k 20, temperature 0.6), which would bias the pass rates Paced
measures, so a fresh GenerationConfig is built for every call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class SamplingOptions:
    n: int
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class Sample:
    token_ids: list[int]
    finish_reason: str  # "stop" | "length"


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed for one unit of work, so a rerun of that unit draws the same numbers."""
    body = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(body.encode()).digest()[:8], "little") >> 1


def split_response(new_tokens: Sequence[int], eos_ids: Sequence[int], max_new_tokens: int) -> Sample:
    """Cut a generated row at its first end-of-sequence token (kept: the student must learn to stop)."""
    eos = set(eos_ids)
    for i, t in enumerate(new_tokens):
        if t in eos:
            return Sample(list(new_tokens[: i + 1]), "stop")
    return Sample(list(new_tokens[:max_new_tokens]), "length")


def generate_hf(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    options: SamplingOptions,
    *,
    eos_ids: Sequence[int],
    batch_size: int,
    seed: int,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[list[Sample]]:
    """K = options.n samples for each prompt, prompts batched `batch_size` at a time.

    The torch RNG is seeded with `seed` once, then batches run in order: for a fixed seed,
    batch size and device the samples are reproducible. `on_batch(prompts_done, tokens)`
    reports progress.
    """
    import torch
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    greedy = options.temperature == 0
    gen = GenerationConfig(
        do_sample=not greedy,
        temperature=None if greedy else options.temperature,
        top_p=None if greedy else options.top_p,
        top_k=None,
        max_new_tokens=options.max_new_tokens,
        # Greedy decoding gives K identical samples: decode once and copy.
        num_return_sequences=1 if greedy else options.n,
        eos_token_id=list(eos_ids),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    results: list[list[Sample]] = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        # Left padding: every prompt ends where generation starts.
        input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in batch], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=gen)
        new = out[:, width:].tolist()
        per_prompt = gen.num_return_sequences
        tokens = 0
        for i in range(len(batch)):
            rows = new[i * per_prompt : (i + 1) * per_prompt]
            samples = [split_response(r, eos_ids, options.max_new_tokens) for r in rows]
            if greedy:
                samples = samples * options.n
            tokens += sum(len(s.token_ids) for s in samples)
            results.append(samples)
        if on_batch:
            on_batch(len(batch), tokens)
    return results
