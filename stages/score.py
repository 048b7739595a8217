"""Check every rollout's answer against its problem's gold answer.

    paced score --rollouts rollouts/ --problems problems.parquet --out scores/ --verifier math

Verifiers: `math` (math-verify: the last \\boxed{} or final answer, compared for mathematical
equivalence), `exact` (normalised string match), `regex:PATTERN` (first capture group) and
`module:function` (your own `fn(completion, problem_row) -> bool`; only runs when named).
Each check runs in a worker process and is bounded in time (`--timeout`): a check past it
is killed and scores `correct = false` with reason `timeout`, so adversarial LaTeX can never
stall the job. Resumable in parts like rollout.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import schemas
from schemas import InputError
from schemas.outputs import check_paths
from stages import verifiers
from stages.common import advance, console, notice, parse_shard, progress, select_shard, shard_out, summary_table
from stages.options import (allow_stale_option, check_problems_options, check_timeout_option, check_workers_option,
                            key_options, option, shard_option, verifier_option, INPUT, RUNTIME)


@dataclass
class ScoreConfig:
    rollouts: Path = option("Rollouts artifact (`paced rollout` output, or Parquet with problem_id, sample_index, completion).", role=INPUT)
    problems: Path = option("The problems file the rollouts answer (for the gold `answer`).", role=INPUT)
    out: Path = option("Output directory of the scores artifact (resumable job).", role=RUNTIME)
    verifier: str = verifier_option()
    timeout: float = check_timeout_option()
    workers: int = check_workers_option()
    part_size: int = option("Responses per output part: the unit of resumption.", 4096)
    allow_stale: bool = allow_stale_option()
    shard: str | None = shard_option()
    overwrite: bool = option("Replace an unfinished or different scores job in --out instead of refusing.", False, role=RUNTIME)

    def __post_init__(self) -> None:
        parse_shard(self.shard)
        problems = check_problems_options(self.timeout, self.workers)
        if self.part_size < 1:
            problems.append(f"--part-size {self.part_size}: must be at least 1")
        if problems:
            raise InputError("\n".join(problems))


def run(config: ScoreConfig, command: str | None = None) -> Path:
    """`command`: the command line, for provenance (the CLI passes it)."""
    check_paths({"--out": config.out}, {"--rollouts": config.rollouts, "--problems": config.problems})
    spec = verifiers.resolve(config.verifier)
    rollouts = schemas.read(config.rollouts, schemas.ROLLOUTS, option="--rollouts", columns=["completion"])
    problems = schemas.read(config.problems, schemas.PROBLEMS, option="--problems")
    unknown = rollouts.frame.join(problems.frame, on="problem_id", how="anti").get_column("problem_id").unique(maintain_order=True)
    if unknown.len():
        shown = ", ".join(repr(x) for x in unknown.head(5))
        raise InputError(
            f"--rollouts {rollouts.path}: {unknown.len()} problem_id(s) are not in --problems "
            f"{problems.path} ({shown}{' ...' if unknown.len() > 5 else ''}); pass the problems "
            f"file the rollouts were made from"
        )
    stale = schemas.io.check_lineage(problems.fingerprint, f"--problems {problems.path}", rollouts, "--rollouts", config.allow_stale)
    if stale:
        notice("warning", stale)
    inputs = {"rollouts": rollouts.fingerprint, "problems": problems.fingerprint, "verifier": verifiers.fingerprint(spec)}
    # Input paths are left out: their content is in `inputs` (the same file named another way resumes).
    options = key_options(config)
    shard = parse_shard(config.shard)
    job = schemas.Job(
        shard_out(config.out, shard, schemas.SCORES, config.overwrite),
        schemas.SCORES,
        options | {"verifier": spec, "inputs": inputs},
        schemas.provenance("score", asdict(config), {"rollouts": rollouts, "problems": problems}, problems=problems.fingerprint, command=command),
        overwrite=config.overwrite,
    )
    job.check()
    frame = select_shard(rollouts.frame.select("problem_id", "sample_index", "completion"), shard)
    n = frame.height
    n_parts = (n + config.part_size - 1) // config.part_size
    if job.complete:
        console.print(f"{config.out}: already complete ({n} scores); nothing to do")
        return config.out

    rows_by_id = {r["problem_id"]: r for r in problems.frame.to_dicts()}
    job.start()
    todo = [i for i in range(n_parts) if not job.has(i)]
    reasons: Counter[str] = Counter()
    correct = 0
    started = time.perf_counter()
    try:
        with verifiers.CheckPool(spec, workers=config.workers, timeout=config.timeout) as pool, progress(
            "score", total=sum(min(config.part_size, n - i * config.part_size) for i in todo), unit="checks"
        ) as bar:
            for part in todo:
                chunk = frame.slice(part * config.part_size, config.part_size)
                verdicts = []
                for v in pool.check(chunk["completion"], (rows_by_id[pid] for pid in chunk["problem_id"]),
                                    chunk["problem_id"], chunk["sample_index"]):
                    verdicts.append(v)
                    advance(bar, 1, "checks")
                table = schemas.table_from_columns(
                    {
                        "problem_id": chunk["problem_id"],
                        "sample_index": chunk["sample_index"],
                        "correct": [v.correct for v in verdicts],
                        "extracted": [v.extracted for v in verdicts],
                        "reason": [v.reason for v in verdicts],
                    },
                    schemas.SCORES,
                )
                job.write(part, table)
                correct += sum(v.correct for v in verdicts)
                reasons.update((v.reason or "verdict").split(":", 1)[0] for v in verdicts)
    except InputError:
        job.abandon(work_too=True)  # a verifier that raised: a job this run began leaves nothing behind
        raise
    job.finish(n_parts)
    checked = sum(reasons.values())
    seconds = time.perf_counter() - started
    summary_table(
        "score summary",
        [
            ("responses", f"{n:,}"),
            ("parts (resumed / scored now)", f"{n_parts - len(todo)} / {len(todo)}"),
            ("checked now", f"{checked:,}"),
            ("correct", f"{correct:,} ({correct / max(checked, 1):.1%})"),
            ("no answer found", f"{reasons['no_answer']:,}"),
            (f"timed out (> {config.timeout:g} s)", f"{reasons['timeout']:,}"),
            ("verifier errors", f"{reasons['error']:,}"),
            ("checks / second", f"{checked / max(seconds, 1e-9):,.1f}"),
        ],
    )
    return config.out

