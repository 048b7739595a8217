"""Sampling K responses per prompt: the options and part loop rollout and eval share, and the
transformers backend (the vLLM backend is in `stages/vllm_backend.py`).

Sampling follows the options exactly: temperature, top-p, and nothing else. transformers
fills every generation option left unset (None) from the model's own generation config
(Qwen3 ships top-k 20, top-p 0.95, temperature 0.6) and then from its global defaults (top-k
50), which would bias the pass rates Paced measures. So the model's generation config is
replaced by an empty one once it is loaded, and every call passes top-k 0 (off) explicitly;
vLLM gets explicit SamplingParams, never the model's defaults.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence

from schemas import InputError

BACKENDS = ("hf", "vllm")
# sample_index is an int32 column.
MAX_SAMPLES = 2**31 - 1
# numpy's RandomState (which vLLM seeds from --seed) takes 0 .. 2**32 - 1; torch a little more.
MAX_SEED = 2**32 - 1

# Options that do not change what is generated, so they may differ on resume: where the job
# writes, and how the engine is laid out on the hardware.
RUNTIME_ONLY = (
    "out", "overwrite", "device", "trust_remote_code",
    "tensor_parallel_size", "gpu_memory_utilization", "max_model_len",
)


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


@dataclass(kw_only=True)
class GenerationConfig:
    """The generation options `rollout` and `eval` share (each stage adds its own inputs).

    One flat dataclass, so a stage's config (and so its job key and provenance) stays a flat
    dict of every option.
    """

    samples: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    seed: int = 0
    backend: str = "hf"
    context: str = "none"
    system_prompt: str | None = None
    prompt_suffix: str | None = None
    batch_size: int = 8
    part_size: int = 64
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    # The vllm backend's engine (see stages/vllm_backend.py).
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    vllm_args: str | None = None
    shard: str | None = None
    overwrite: bool = False

    def generation_problems(self) -> list[str]:
        """Every bad generation option, each named with its fix (the caller raises them at once)."""
        from stages import prompts, vllm_backend
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
        if self.max_new_tokens < 1:
            problems.append(f"--max-new-tokens {self.max_new_tokens}: must be at least 1")
        if not 0 <= self.seed <= MAX_SEED:
            problems.append(f"--seed {self.seed}: must be from 0 to {MAX_SEED} (the seeds numpy and vLLM take)")
        if self.batch_size < 1:
            problems.append(f"--batch-size {self.batch_size}: must be at least 1")
        if self.part_size < 1:
            problems.append(f"--part-size {self.part_size}: must be at least 1")
        if self.context not in prompts.CONTEXTS:
            problems.append(f"--context {self.context}: use one of {', '.join(prompts.CONTEXTS)}")
        problems += vllm_backend.option_problems(self)
        return problems


def check_sampling(c) -> None:
    """Validate the sampling options shared by rollout and eval; name every bad flag at once."""
    problems = GenerationConfig.generation_problems(c)
    if problems:
        raise InputError("\n".join(problems))


# Options that name an input: its content is in the key as a fingerprint, so the same file
# named by a relative path, an absolute one or from another directory resumes the job.
INPUT_PATHS = ("problems", "model", "baseline")


def job_options(config, inputs: dict[str, Any]) -> dict:
    """The options that make a job what it is (its key): every option except the runtime ones
    and the input paths, with the inputs' fingerprints."""
    opts = {k: v for k, v in asdict(config).items() if k not in RUNTIME_ONLY + INPUT_PATHS}
    if opts.get("vllm_args") is None:
        # More engine arguments may change the output (quantization): part of the key when
        # given, absent otherwise, so jobs from before the vllm backend keep their key.
        opts.pop("vllm_args", None)
    return opts | {"inputs": inputs}


def context_limit(config) -> int | None:
    """The longest prompt + response the generating model takes."""
    from stages import models

    limit = models.max_context(config.model)
    if config.backend == "vllm" and config.max_model_len is not None:
        limit = config.max_model_len if limit is None else min(limit, config.max_model_len)
    return limit


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


def prompt_samples(rows: Sequence[Sequence[int]], eos_ids: Sequence[int], options: SamplingOptions) -> list[Sample]:
    """One prompt's K samples from the rows a backend generated for it: each cut at its first
    end-of-sequence token; greedy decoding generates one row, which stands for all K."""
    samples = [split_response(r, eos_ids, options.max_new_tokens) for r in rows]
    return samples * options.n if options.temperature == 0 else samples


def part_bounds(part: int, part_size: int, n: int) -> tuple[int, int]:
    return part * part_size, min((part + 1) * part_size, n)


def todo_count(todo: Sequence[int], part_size: int, n: int) -> int:
    """How many prompts the unfinished parts hold (the progress bar's total)."""
    return sum(hi - lo for lo, hi in (part_bounds(p, part_size, n) for p in todo))


# generate(prompts, seed, on_batch) -> K samples per prompt
Generate = Callable[..., list[list[Sample]]]


@contextmanager
def open_backend(config, tokenizer) -> Iterator[Generate]:
    """Load the model (hf) or start the engine (vllm) once for the whole job, and yield
    `generate(prompts, seed, on_batch) -> K samples per prompt`."""
    options = SamplingOptions(config.samples, config.temperature, config.top_p, config.max_new_tokens)
    if config.backend == "vllm":
        from stages import vllm_backend

        engine = vllm_backend.engine(config.model, config, seeded=True)
        eos = vllm_backend.eos_token_ids(config.model, tokenizer)

        def generate(prompts, seed, on_batch=None):
            return vllm_backend.generate(engine, prompts, options, eos_ids=eos, seed=seed, on_batch=on_batch)

        yield generate
        return

    from transformers import GenerationConfig as HFGenerationConfig

    from stages import models

    model = models.load_model(
        config.model, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code
    )
    eos = models.eos_token_ids(model, tokenizer)  # reads the model's generation config: before it goes
    model.generation_config = HFGenerationConfig()  # none of the model's sampling defaults (see above)

    def generate(prompts, seed, on_batch=None):
        return generate_hf(
            model, tokenizer, prompts, options, eos_ids=eos, batch_size=config.batch_size, seed=seed, on_batch=on_batch
        )

    yield generate


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
) -> None:
    """Generate every unfinished part of a rollout or eval job, one engine for all of them.

    Part p's samples depend only on the options, its prompts and its seed (derived from
    --seed, the stage, the shard and p), so a resumed job regenerates exactly what an
    uninterrupted run would have. `write_part(part, lo, hi, samples)` stores part p, which
    holds prompts ids[lo:hi]. `on_ready()` is called once the model is loaded.
    """
    with open_backend(config, tokenizer) as generate:
        if on_ready:
            on_ready()
        for part in todo:
            lo, hi = part_bounds(part, config.part_size, len(ids))
            seed = derive_seed(config.seed, stage, *([] if shard is None else [f"shard {shard}"]), part)
            write_part(part, lo, hi, generate(ids[lo:hi], seed, on_batch))


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
        # Off when sampling (None would mean transformers' default of 50); unset when greedy,
        # where any value is unused and transformers warns about it.
        top_k=None if greedy else 0,
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
            samples = prompt_samples(new[i * per_prompt : (i + 1) * per_prompt], eos_ids, options)
            tokens += sum(len(s.token_ids) for s in samples)
            results.append(samples)
        if on_batch:
            on_batch(len(batch), tokens)
    return results
