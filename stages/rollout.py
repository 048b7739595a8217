"""Sample K responses per problem from a model: the student's pass-rate estimate starts here.

    paced rollout --problems problems.parquet --model student/ --out rollouts/ --samples 8

Output is a job directory of parts (`--part-size` problems each). A killed run resumes with
the same command: finished parts are kept, the rest is generated with the same per-part seed,
so the artifact equals an uninterrupted run's. Any option that changes the output is part of
the job's key: rerunning with another one is refused rather than mixing results (--overwrite
starts over).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

import schemas
from schemas import InputError
from stages import models, prompts
from stages.common import advance, console, parse_shard, progress, select_shard, shard_out, summary_table
from stages.generate import SamplingOptions, derive_seed, generate_hf

BACKENDS = ("hf",)


@dataclass
class RolloutConfig:
    problems: Path
    model: str
    out: Path
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
    shard: str | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_sampling(self)
        parse_shard(self.shard)
        problems = []
        if self.backend not in BACKENDS:
            problems.append(f"--backend {self.backend}: use one of {', '.join(BACKENDS)}")
        if self.part_size < 1:
            problems.append(f"--part-size {self.part_size}: must be at least 1")
        if problems:
            raise InputError("\n".join(problems))


def check_sampling(c) -> None:
    """Validate the sampling options shared by rollout and eval; name every bad flag at once."""
    problems = []
    if c.samples < 1:
        problems.append(f"--samples {c.samples}: must be at least 1 (the paper uses 8)")
    if not c.temperature >= 0:
        problems.append(f"--temperature {c.temperature}: must be >= 0 (0 is greedy)")
    if not 0 < c.top_p <= 1:
        problems.append(f"--top-p {c.top_p}: must be in (0, 1]")
    if c.max_new_tokens < 1:
        problems.append(f"--max-new-tokens {c.max_new_tokens}: must be at least 1")
    if c.batch_size < 1:
        problems.append(f"--batch-size {c.batch_size}: must be at least 1")
    if c.context not in prompts.CONTEXTS:
        problems.append(f"--context {c.context}: use one of {', '.join(prompts.CONTEXTS)}")
    if problems:
        raise InputError("\n".join(problems))


# Options that do not change what is generated, so they may differ on resume.
_RUNTIME_ONLY = ("out", "overwrite", "device", "trust_remote_code")


def job_options(config, inputs: dict[str, str]) -> dict:
    opts = {k: v for k, v in asdict(config).items() if k not in _RUNTIME_ONLY}
    return opts | {"inputs": inputs}


def check_context_length(tokenizer, ids: list[list[int]], frame: pl.DataFrame, model: str, max_new_tokens: int) -> None:
    limit = models.max_context(model)
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


def run(config: RolloutConfig) -> Path:
    # 1. Everything that can be checked before loading a model.
    art = schemas.read(config.problems, schemas.PROBLEMS, option="--problems")
    shard = parse_shard(config.shard)
    problems = select_shard(art.frame, shard)
    prompts.check_references(problems, config.context, f"--problems {art.path}")
    models.check_model(config.model, "--model")
    inputs = {"problems": art.fingerprint, "model": models.model_fingerprint(config.model)}
    job = schemas.Job(
        shard_out(config.out, shard),
        schemas.ROLLOUTS,
        job_options(config, inputs),
        schemas.provenance("rollout", asdict(config), {"problems": art}, problems=art.fingerprint),
        overwrite=config.overwrite,
    )
    job.check()
    n_parts = (problems.height + config.part_size - 1) // config.part_size
    if job.complete:
        console.print(f"{config.out}: already complete ({problems.height} problems); nothing to do")
        return config.out

    tokenizer = models.load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    rows = problems.select("problem_id", "prompt", "reference").to_dicts()
    ids = prompts.encode_prompts(
        tokenizer, rows, context=config.context, system_prompt=config.system_prompt, suffix=config.prompt_suffix
    )
    check_context_length(tokenizer, ids, problems, config.model, config.max_new_tokens)

    # 2. The job.
    job.start()
    todo = [i for i in range(n_parts) if not job.has(i)]
    started = time.perf_counter()
    model = models.load_model(
        config.model, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code
    )
    eos = models.eos_token_ids(model, tokenizer)
    sampling = SamplingOptions(config.samples, config.temperature, config.top_p, config.max_new_tokens)
    stats = {"stop": 0, "length": 0, "tokens": 0}
    gen_started = time.perf_counter()
    todo_problems = sum(min(config.part_size, problems.height - i * config.part_size) for i in todo)
    with progress("rollout", total=todo_problems, unit="problems") as bar:
        def on_batch(done: int, tokens: int) -> None:
            stats["tokens"] += tokens
            advance(bar, done, "problems")

        for part in todo:
            lo, hi = part * config.part_size, min((part + 1) * config.part_size, problems.height)
            samples = generate_hf(
                model,
                tokenizer,
                ids[lo:hi],
                sampling,
                eos_ids=eos,
                batch_size=config.batch_size,
                seed=derive_seed(config.seed, "rollout", *([] if shard is None else [f"shard {shard}"]), part),
                on_batch=on_batch,
            )
            cols: dict[str, list] = {c.name: [] for c in schemas.ROLLOUTS.columns}
            for row, per_problem in zip(rows[lo:hi], samples):
                for k, s in enumerate(per_problem):
                    cols["problem_id"].append(row["problem_id"])
                    cols["sample_index"].append(k)
                    cols["completion"].append(tokenizer.decode(s.token_ids, skip_special_tokens=True))
                    cols["completion_token_ids"].append(s.token_ids)
                    cols["finish_reason"].append(s.finish_reason)
                    cols["model"].append(config.model)
                    stats[s.finish_reason] += 1
            job.write(part, schemas.table_from_columns(cols, schemas.ROLLOUTS))
    job.finish(n_parts)
    gen_seconds = time.perf_counter() - gen_started
    generated = stats["stop"] + stats["length"]
    summary_table(
        "rollout summary",
        [
            ("problems", f"{problems.height:,}"),
            ("samples per problem", str(config.samples)),
            ("parts (resumed / generated now)", f"{n_parts - len(todo)} / {len(todo)}"),
            ("responses generated now", f"{generated:,}"),
            ("finished with end-of-sequence", f"{stats['stop']:,}"),
            ("cut at --max-new-tokens", f"{stats['length']:,}"),
            ("response tokens generated now", f"{stats['tokens']:,}"),
            ("tokens / second", f"{stats['tokens'] / max(gen_seconds, 1e-9):,.1f}"),
            ("seconds (incl. model load)", f"{time.perf_counter() - started:.1f}"),
        ],
    )
    return config.out
