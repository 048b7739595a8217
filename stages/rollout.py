"""Sample K responses per problem from a model: the student's pass-rate estimate starts here.

    paced rollout --problems problems.parquet --model student/ --out rollouts/ --samples 8

Output is a job directory of parts (`--part-size` problems each). A killed run resumes with
the same command: finished parts are kept, the rest is generated with the same seeds (sample
k of a problem from its own generator, seeded with the problem's seed + k), so the artifact
equals an uninterrupted run's. Any option that changes the output is part of
the job's key: rerunning with another one is refused rather than mixing results (--overwrite
starts over).

`--backend hf` samples with transformers, `--backend vllm` with a vLLM engine started once
for the job (stages/backends/); the part loop, seeds and columns are the same
(stages/backends/generation.py, shared with eval).

Adaptive sampling, `--min-samples K0`: every problem first gets K0 samples (parts 0..P-1, the
first K0 samples of a plain `--samples K` run with the same seed), which are checked with
`--verifier` as `paced score` would; only the problems whose K0 samples are neither all right
nor all wrong (0 < c < K0) get the other K - K0 (sample_index K0..K-1, in parts P..: the plain
run's samples K0..K-1 of those problems). So every sample of an adaptive run is the plain
run's sample of the same problem and index (on the same hardware and software: logits that
differ in the last bit can change a draw). A problem at c = 0 or c = K0 keeps K0 samples: its
plug-in weight is 0 either way at K0, and score and weight use each problem's own count. The
selection is recomputed from the first parts on resume, so a killed run resumed gives the
uninterrupted artifact (as long as no check ends on its time limit).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import schemas
from stages import models, prompts, threads
from stages.backends.generation import (
    GenerationConfig,
    generate_parts,
    job_options,
    prepared_prompts,
    prompt_seeds,
    todo_count,
)
from stages.common import advance, console, parse_shard, progress, select_shard, shard_out, summary_table
from schemas import InputError
from schemas.outputs import check_paths
from stages.options import (changed, check_problems_options, check_timeout_option, check_workers_option, option,
                            verifier_option, INPUT, RUNTIME)


@dataclass(kw_only=True)
class RolloutConfig(GenerationConfig):
    """The generation options (samples, temperature, backend, ...) are GenerationConfig's."""

    problems: Path = option("Problems Parquet file or directory (problem_id, prompt, answer, reference).", role=INPUT)
    model: str = option("Model to sample from: a local directory or a hub id such as Qwen/Qwen3-1.7B.", role=INPUT)
    out: Path = option("Output directory of the rollouts artifact (resumable job).", role=RUNTIME)
    min_samples: int | None = option("Adaptive sampling: K0 samples for every problem first, checked with --verifier; the other K - K0 only for problems whose K0 are neither all right nor all wrong (0 < c < K0). Default: K for every problem.", None, keyed_when_set=True)
    verifier: str = verifier_option("With --min-samples: ", keyed_when_set=True)
    timeout: float = check_timeout_option("With --min-samples: ", keyed_when_set=True)
    workers: int = check_workers_option()

    def __post_init__(self) -> None:
        problems = self.generation_problems()
        if self.min_samples is not None:
            if not 1 <= self.min_samples < self.samples:
                problems.append(f"--min-samples {self.min_samples}: must be from 1 to --samples - 1 = {self.samples - 1} "
                                f"(e.g. --samples 8 --min-samples 4)")
        problems += check_problems_options(self.timeout, self.workers)
        if self.min_samples is None and changed(self, "verifier", "timeout"):
            problems.append("--verifier and --timeout: apply with --min-samples only (rollout checks no answer otherwise)")
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
    spec = None
    if config.min_samples is not None:
        from stages import verifiers

        spec = verifiers.resolve(config.verifier)
        inputs["verifier"] = verifiers.fingerprint(spec)
    job = schemas.Job(
        shard_out(config.out, shard, schemas.ROLLOUTS, config.overwrite),
        schemas.ROLLOUTS,
        job_options(config, inputs),
        schemas.provenance("rollout", asdict(config), {"problems": art}, problems=art.fingerprint, command=command),
        overwrite=config.overwrite,
        contents={"--model": models.model_digest(config.model)}, runtime={"threads": threads.current()},
    )
    job.check()
    threads.resume_with(job.began.get("threads"))
    n_parts = (problems.height + config.part_size - 1) // config.part_size
    if job.complete:
        console.print(f"{config.out}: already complete ({problems.height} problems); nothing to do")
        return config.out

    tokenizer = models.load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    # A local model by its absolute path: the same in every part, from whatever directory the
    # job is (re)run, and findable by teacher-logits' tokenizer check.
    model_name = str(Path(config.model).resolve()) if Path(config.model).is_dir() else config.model
    rows = problems.select("problem_id", "prompt", "reference").to_dicts()
    ids = prepared_prompts(config, tokenizer, rows, problems)

    # 2. The job.
    job.start()
    todo = [i for i in range(n_parts) if not job.has(i)]
    started = time.perf_counter()
    stats = dict.fromkeys([*schemas.rollouts.FINISH_REASONS, "tokens"], 0)
    first = config.min_samples or config.samples  # samples per problem in parts 0..n_parts-1
    more: dict = {"parts": 0, "problems": 0, "todo": 0}
    gen_started = time.perf_counter()
    with progress("rollout", total=todo_count(todo, config.part_size, problems.height), unit="problems") as bar:
        def on_ready() -> None:  # the model is loaded: tokens / second counts from here
            nonlocal gen_started
            gen_started = time.perf_counter()

        def on_batch(done: int, tokens: int) -> None:
            stats["tokens"] += tokens
            advance(bar, done, "problems")

        def write_part(part: int, lo: int, hi: int, samples, chosen=None, offset: int = 0) -> None:
            cols: dict[str, list] = {c.name: [] for c in schemas.ROLLOUTS.columns}
            for row, per_problem in zip(rows[lo:hi] if chosen is None else chosen, samples):
                for k, s in enumerate(per_problem, start=offset):
                    cols["problem_id"].append(row["problem_id"])
                    cols["sample_index"].append(k)
                    cols["completion"].append(tokenizer.decode(s.token_ids, skip_special_tokens=True))
                    cols["completion_token_ids"].append(s.token_ids)
                    cols["finish_reason"].append(s.finish_reason)
                    cols["model"].append(model_name)
                    stats[s.finish_reason] += 1
            job.write(part, schemas.table_from_columns(cols, schemas.ROLLOUTS))

        def further(generate) -> None:  # --min-samples: the other K - K0 for the unsettled problems
            chosen = unsettled(job, n_parts, problems, spec, config, bar)
            n_more = (len(chosen) + config.part_size - 1) // config.part_size
            todo_more = [j for j in range(n_more) if not job.has(n_parts + j)]
            more.update(parts=n_more, problems=len(chosen), todo=len(todo_more))
            bar.reset(bar.tasks[0].id, description=f"rollout: {config.samples - config.min_samples} more samples",
                      total=sum(len(chosen[j * config.part_size:(j + 1) * config.part_size]) for j in todo_more))
            for j in todo_more:
                part = chosen[j * config.part_size:(j + 1) * config.part_size]
                samples = generate([ids[i] for i in part], prompt_seeds(config, "rollout", shard, part), on_batch,
                                   n=config.samples - config.min_samples, first=config.min_samples)
                write_part(n_parts + j, 0, 0, samples, chosen=[rows[i] for i in part], offset=config.min_samples)

        generate_parts(config, stage="rollout", tokenizer=tokenizer, ids=ids, todo=todo, shard=shard,
                       on_batch=on_batch, write_part=write_part, on_ready=on_ready, n=first,
                       then=further if config.min_samples is not None else None)
    job.finish(n_parts + more["parts"])
    gen_seconds = time.perf_counter() - gen_started
    drawn = first * problems.height + (config.samples - first) * more["problems"]
    generated = sum(stats[r] for r in schemas.rollouts.FINISH_REASONS)
    summary_table(
        "rollout summary",
        [
            ("problems", f"{problems.height:,}"),
            *([("samples per problem", str(config.samples))] if config.min_samples is None else [
                ("samples per problem", f"{first}, then {config.samples} for {more['problems']:,} (0 < c < {first})"),
                ("samples drawn", f"{drawn:,} of {config.samples * problems.height:,} "
                                  f"({1 - drawn / max(config.samples * problems.height, 1):.1%} saved)")]),
            ("parts (resumed / generated now)", f"{n_parts + more['parts'] - len(todo) - more['todo']} / {len(todo) + more['todo']}"),
            ("responses generated now", f"{generated:,}"),
            ("finished with end-of-sequence", f"{stats['stop']:,}"),
            ("cut at --max-new-tokens", f"{stats['length']:,}"),
            ("response tokens generated now", f"{stats['tokens']:,}"),
            ("tokens / second", f"{stats['tokens'] / max(gen_seconds, 1e-9):,.1f} (generation: from the model loaded)"),
            ("seconds: model load or engine start / generation", f"{time.perf_counter() - started - gen_seconds:.1f} / {gen_seconds:.1f}"),
        ],
    )
    return config.out


def unsettled(job: schemas.Job, n_parts: int, problems, spec: str, config: RolloutConfig, bar) -> list[int]:
    """Positions (in `problems`) of the problems whose first K0 samples, in parts 0..n_parts-1,
    are neither all right nor all wrong, checked as `paced score` checks them (progress on `bar`)."""
    import polars as pl
    import pyarrow.parquet as pq

    from stages import verifiers

    first = pl.concat([pl.from_arrow(pq.read_table(job.part(i),
                                                   columns=["problem_id", "sample_index", "completion"]))
                       for i in range(n_parts)]) if n_parts else pl.DataFrame()
    if first.is_empty():
        return []
    rows_by_id = {r["problem_id"]: r for r in problems.to_dicts()}
    correct = []
    bar.reset(bar.tasks[0].id, description=f"rollout: checking the first {config.min_samples}", total=first.height)
    with verifiers.CheckPool(spec, workers=config.workers, timeout=config.timeout) as pool:
        for v in pool.check(first["completion"], (rows_by_id[pid] for pid in first["problem_id"]),
                            first["problem_id"], first["sample_index"]):
            correct.append(v.correct)
            advance(bar, 1, "checks")
    c = first.with_columns(correct=pl.Series(correct, dtype=pl.Boolean)).group_by("problem_id").agg(
        c=pl.col("correct").sum(), k=pl.len())
    mixed = set(c.filter((pl.col("c") > 0) & (pl.col("c") < pl.col("k")))["problem_id"].to_list())
    return [i for i, pid in enumerate(problems["problem_id"].to_list()) if pid in mixed]
