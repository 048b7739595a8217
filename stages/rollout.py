"""Sample K responses per problem from a model: the student's pass-rate estimate starts here.

    paced rollout --problems problems.parquet --model student/ --out rollouts/ --samples 8

Output is a job directory of parts (`--part-size` problems each). A killed run resumes with
the same command: finished parts are kept, the rest is generated with the same per-part seed,
so the artifact equals an uninterrupted run's. Any option that changes the output is part of
the job's key: rerunning with another one is refused rather than mixing results (--overwrite
starts over).

`--backend hf` samples with transformers, `--backend vllm` with a vLLM engine started once
for the job (stages/backends/); the part loop, seeds and columns are the same
(stages/backends/generation.py, shared with eval).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import schemas
from stages import backends, models, prompts
from stages.backends.generation import (
    GenerationConfig,
    check_context_length,
    context_limit,
    generate_parts,
    job_options,
    todo_count,
)
from stages.common import advance, console, parse_shard, progress, select_shard, shard_out, summary_table
from schemas import InputError
from schemas.outputs import check_paths
from stages.options import option, INPUT, RUNTIME


@dataclass(kw_only=True)
class RolloutConfig(GenerationConfig):
    """The generation options (samples, temperature, backend, ...) are GenerationConfig's."""

    problems: Path = option("Problems Parquet file or directory (problem_id, prompt, answer, reference).", role=INPUT)
    model: str = option("Model to sample from: a local directory or a hub id such as Qwen/Qwen3-1.7B.", role=INPUT)
    out: Path = option("Output directory of the rollouts artifact (resumable job).", role=RUNTIME)

    def __post_init__(self) -> None:
        problems = self.generation_problems()
        if problems:
            raise InputError("\n".join(problems))


def run(config: RolloutConfig, command: str | None = None) -> Path:
    """`command`: the command line, for provenance (the CLI passes it)."""
    # 1. Everything that can be checked before loading a model.
    check_paths({"--out": config.out}, {"--problems": config.problems, "--model": config.model})
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
        schemas.provenance("rollout", asdict(config), {"problems": art}, problems=art.fingerprint, command=command),
        overwrite=config.overwrite,
    )
    job.check()
    n_parts = (problems.height + config.part_size - 1) // config.part_size
    if job.complete:
        console.print(f"{config.out}: already complete ({problems.height} problems); nothing to do")
        return config.out

    tokenizer = models.load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    # A local model by its absolute path: the same in every part, from whatever directory the
    # job is (re)run, and findable by teacher-logits' tokenizer check.
    model_name = str(Path(config.model).resolve()) if Path(config.model).is_dir() else config.model
    rows = problems.select("problem_id", "prompt", "reference").to_dicts()
    ids = prompts.encode_prompts(
        tokenizer, rows, context=config.context, system_prompt=config.system_prompt, suffix=config.prompt_suffix
    )
    check_context_length(ids, problems, context_limit(config), config.max_new_tokens)
    backends.get(config.backend).prepare(config)

    # 2. The job.
    job.start()
    todo = [i for i in range(n_parts) if not job.has(i)]
    started = time.perf_counter()
    stats = {"stop": 0, "length": 0, "tokens": 0}
    gen_started = time.perf_counter()
    with progress("rollout", total=todo_count(todo, config.part_size, problems.height), unit="problems") as bar:
        def on_ready() -> None:  # the model is loaded: tokens / second counts from here
            nonlocal gen_started
            gen_started = time.perf_counter()

        def on_batch(done: int, tokens: int) -> None:
            stats["tokens"] += tokens
            advance(bar, done, "problems")

        def write_part(part: int, lo: int, hi: int, samples) -> None:
            cols: dict[str, list] = {c.name: [] for c in schemas.ROLLOUTS.columns}
            for row, per_problem in zip(rows[lo:hi], samples):
                for k, s in enumerate(per_problem):
                    cols["problem_id"].append(row["problem_id"])
                    cols["sample_index"].append(k)
                    cols["completion"].append(tokenizer.decode(s.token_ids, skip_special_tokens=True))
                    cols["completion_token_ids"].append(s.token_ids)
                    cols["finish_reason"].append(s.finish_reason)
                    cols["model"].append(model_name)
                    stats[s.finish_reason] += 1
            job.write(part, schemas.table_from_columns(cols, schemas.ROLLOUTS))

        generate_parts(config, stage="rollout", tokenizer=tokenizer, ids=ids, todo=todo, shard=shard,
                       on_batch=on_batch, write_part=write_part, on_ready=on_ready)
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
