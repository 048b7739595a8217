"""The generation options and part loop that rollout and eval share, on any backend.

Sample k of a prompt depends only on the options, the prompt and its seed + k, the prompt's
seed derived from --seed, the stage, the shard, its part and its place in the part
(`prompt_seeds`), so a resumed job regenerates exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from schemas import InputError
from stages import backends, prompts
from stages.backends.sampling import MAX_SAMPLES, Sample, derive_seed
from stages.options import (key_options, option, seed_problems, shard_option, trust_remote_code_option, ENGINE, RUNTIME,
                            DEVICE, TOP_K, CHAT_TEMPLATE_KWARGS)

@dataclass(kw_only=True)
class EngineOptions:
    """The options of the engine that runs a model, written once for every command that runs one
    to generate or score (rollout, eval, teacher-logits). The fields a backend alone uses are its
    `OPTIONS`; another backend refuses them when they differ from the defaults here."""

    backend: str = option(backends.BACKEND_HELP, "hf", panel=ENGINE)
    device: str = option(DEVICE, "auto", role=RUNTIME, panel=ENGINE)
    dtype: str = option(backends.DTYPE_HELP, "auto", panel=ENGINE)
    trust_remote_code: bool = trust_remote_code_option(panel=ENGINE)
    tensor_parallel_size: int = option(backends.TENSOR_PARALLEL_SIZE_HELP, 1, role=RUNTIME, panel=ENGINE)
    gpu_memory_utilization: float | None = option(backends.GPU_MEMORY_UTILIZATION_HELP, None, role=RUNTIME, panel=ENGINE)
    max_model_len: int | None = option(backends.MAX_MODEL_LEN_HELP, None, role=RUNTIME, panel=ENGINE)
    vllm_args: str | None = option(backends.VLLM_ARGS_HELP, None, panel=ENGINE)


@dataclass(kw_only=True)
class GenerationConfig(EngineOptions):
    """The generation options `rollout` and `eval` share (each stage adds its own inputs).

    One flat dataclass, so a stage's config (and so its job key and provenance) stays a flat
    dict of every option.
    """

    samples: int = option("K: responses per problem.", 8, flags=("--samples", "-k"))
    temperature: float = option("Sampling temperature; 0 is greedy. The paper samples at 1.0.", 1.0)
    top_p: float = option("Nucleus sampling mass, in (0, 1].", 1.0)
    top_k: int = option(TOP_K, 0, keyed_when_set=True)
    max_new_tokens: int = option("Longest response; longer ones stop with finish_reason 'length'.", 1024)
    seed: int = option("Same seed and options give the same responses (sample k of a problem is seeded with its seed + k).", 0)
    context: str = option("none, or reference: the prompt carries the problem's expert reference solution (privileged context).", "none")
    system_prompt: str | None = option("A system message placed before the problem (chat models).", None)
    chat_template_kwargs: str | None = option(CHAT_TEMPLATE_KWARGS, None, keyed_when_set=True)
    prompt_suffix: str | None = option("Text appended to every prompt, e.g. \" Let's think step by step and output the final answer within \\boxed{}.\"", None)
    batch_size: int = option("Problems per generate call (each with K samples); vllm takes a whole part at once.", 8)
    part_size: int = option("Problems per output part: the unit of resumption.", 64)
    shard: str | None = shard_option()
    overwrite: bool = option("Replace an unfinished or different job in --out instead of refusing.", False, role=RUNTIME)

    def generation_problems(self) -> list[str]:
        """Every bad generation option, each named with its fix (the caller raises them at once)."""
        from stages.common import parse_shard

        problems = []
        try:
            parse_shard(self.shard)
        except InputError as e:
            problems.append(str(e))
        if not 1 <= self.samples <= MAX_SAMPLES:
            problems.append(f"--samples {self.samples}: must be from 1 to {MAX_SAMPLES:,} (the paper uses 8)")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            problems.append(f"--temperature {self.temperature}: must be a finite number >= 0 (0 is greedy)")
        if not 0 < self.top_p <= 1:
            problems.append(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.top_k < 0:
            problems.append(f"--top-k {self.top_k}: must be 0 (off) or a number of tokens >= 1 (Qwen3's evaluation uses 20)")
        if self.max_new_tokens < 1:
            problems.append(f"--max-new-tokens {self.max_new_tokens}: must be at least 1")
        problems += seed_problems(self.seed)
        if self.batch_size < 1:
            problems.append(f"--batch-size {self.batch_size}: must be at least 1")
        if self.part_size < 1:
            problems.append(f"--part-size {self.part_size}: must be at least 1")
        problems += prompts.option_problems(self)
        problems += backends.option_problems(self)
        return problems


def job_options(config, inputs: dict[str, Any]) -> dict:
    """The options that make a job what it is (its key): the identity options (stages.options),
    with the inputs' fingerprints, and for sampled jobs the backend's sampling scheme where it
    names one (a job an older scheme began is then not resumed by a newer one)."""
    scheme = backends.get(config.backend).SAMPLING if config.temperature > 0 else None
    return key_options(config) | {"inputs": inputs} | ({"sampling": scheme} if scheme else {})


def context_limit(config) -> int | None:
    """The longest prompt + response the generating model takes on the chosen backend."""
    return backends.get(config.backend).context_limit(config.model, config)


def check_context_length(ids: Sequence[list[int]], frame, limit: int | None, max_new_tokens: int) -> None:
    """Refuse prompts that, with the response budget, do not fit the model's context."""
    if limit is None:
        return
    too_long = [i for i, p in enumerate(ids) if len(p) + max_new_tokens > limit]
    if too_long:
        names = ", ".join(repr(frame["problem_id"][i]) for i in too_long[:5])
        raise InputError(
            f"--max-new-tokens {max_new_tokens}: {len(too_long)} prompt(s) plus the response "
            f"budget exceed the model's context of {limit} tokens (problems {names}"
            f"{' ...' if len(too_long) > 5 else ''}); lower --max-new-tokens or shorten them"
        )


def prepared_prompts(config, tokenizer, rows: list[dict[str, Any]], frame) -> list[list[int]]:
    """The token ids of `rows`' prompts as the model sees them (`prompts.encode_prompts` with the
    config's prompt options), refused if one does not fit the model's context with the response
    budget, and the backend's own checks done: what rollout and eval do before a job starts."""
    ids = prompts.encode_prompts(
        tokenizer, rows, context=config.context, system_prompt=config.system_prompt, suffix=config.prompt_suffix,
        chat_template_kwargs=config.chat_template_kwargs,
    )
    check_context_length(ids, frame, context_limit(config), config.max_new_tokens)
    backends.get(config.backend).prepare(config)
    return ids


def part_bounds(part: int, part_size: int, n: int) -> tuple[int, int]:
    return part * part_size, min((part + 1) * part_size, n)


def todo_count(todo: Sequence[int], part_size: int, n: int) -> int:
    """How many prompts the unfinished parts hold (the progress bar's total)."""
    return sum(hi - lo for lo, hi in (part_bounds(p, part_size, n) for p in todo))


def prompt_seeds(config, stage: str, shard: tuple[int, int] | None, positions: Sequence[int]) -> list[int]:
    """The seeds of the prompts at `positions` in a job's input: prompt i of part p has
    derive_seed(part seed, i), the part seed derived from --seed, the stage, the shard and p."""
    part_seeds = {part: derive_seed(config.seed, stage, *([] if shard is None else [f"shard {shard}"]), part)
                  for part in {pos // config.part_size for pos in positions}}
    return [derive_seed(part_seeds[pos // config.part_size], pos % config.part_size) for pos in positions]


def generate_parts(
    config,
    *,
    stage: str,
    tokenizer: Any,
    ids: Sequence[list[int]],
    todo: Sequence[int],
    shard: tuple[int, int] | None,
    on_batch: Callable[[int, int], None] | None,
    write_part: Callable[[int, int, int, list[list[Sample]]], None],
    on_ready: Callable[[], None] | None = None,
    n: int | None = None,
    then: Callable[[Callable[..., list[list[Sample]]]], None] | None = None,
) -> None:
    """Generate every unfinished part of a rollout or eval job, one engine for all of them.

    Part p's samples depend only on the options, its prompts and their seeds
    (`prompt_seeds`), so a resumed job regenerates exactly what an uninterrupted run would
    have. `write_part(part, lo, hi, samples)` stores part p, which
    holds prompts ids[lo:hi]. `on_ready()` is called once the model is loaded. `n`: samples
    per prompt when not --samples; `then(generate)` runs after the parts with the same engine
    (rollout --min-samples draws its further samples there).
    """
    with backends.get(config.backend).open_generator(config.model, config, tokenizer) as generate:
        if on_ready:
            on_ready()
        for part in todo:
            lo, hi = part_bounds(part, config.part_size, len(ids))
            write_part(part, lo, hi, generate(ids[lo:hi], prompt_seeds(config, stage, shard, range(lo, hi)), on_batch, n=n))
        if then:
            then(generate)
