"""Evaluate a model: K responses per benchmark problem, each checked, accuracy per benchmark.

    paced eval --model distilled/ --problems math500.parquet --problems aime24.parquet \\
        --out eval/ --samples 8 --baseline eval-base/ --retain mmlu

Each problems file holds one or more benchmarks: its `benchmark` column when it has one,
else the file's name (`math500.parquet` is benchmark `math500`). Generation is exactly
rollout's (same parts, same per-sample seeds, same sampling), then every response is checked
by `--verifier` in bounded time, as in score. --out holds two artifacts: `<out>/results`, the
per-response rows, a resumable job (a killed run resumes with the same command; with --shard
its shards are inside it), and `<out>/summary.parquet`, one row per benchmark, recomputed on
every run, so rerunning a finished eval with a new --baseline only rewrites the summary. Each
reads with one polars call (`pl.read_parquet("eval/results")`). An eval --out of an earlier
paced (responses and summary in one directory) is still read as --baseline.

Accuracy is reported as the paper does (8 samples per problem): the accuracy of each sample
index over the benchmark's problems, then the mean and the population std over sample
indices. Beside it, at k = --at-k (default --samples): pass@k, the unbiased estimator of
Chen et al. 2021 (1 - C(n-c, k) / C(n, k) per problem with c of n responses correct, averaged),
and maj@k, majority voting over the answers of responses 0..k-1, equal answers voting together
as the verifier judges them (`\\frac{1}{2}` and `0.5` are one answer for `math`; ties to the
answer given first). With --baseline (another eval's --out): gain = accuracy - baseline accuracy, the
same for pass@k and maj@k (the baseline's measured from its responses at the same k), and
for --retain benchmarks (sets the distillation must not damage) the relative forgetting
(baseline - accuracy) / baseline * 100.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path


import polars as pl
from rich import box
from rich.table import Table
from rich.text import Text

import schemas
from schemas import InputError
from schemas.outputs import EVAL_RESULTS_DIR, EVAL_SUMMARY_FILE, check_paths, file_identity, job_schema, refuse_link, shards_schema
from schemas.base import quote_rows
from schemas.io import check_file_out
from schemas.outputs import JOB_FILE, MANIFEST_FILE, record_path
from stages import models, prompts, threads, verifiers
from stages.backends.generation import (
    GenerationConfig,
    generate_parts,
    job_options,
    prepared_prompts,
    todo_count,
)
from stages.common import advance, console, notice, parse_shard, progress, select_shard, shard_out
from stages.evaluation.metrics import summarize
from stages.options import (check_problems_options, check_timeout_option, check_workers_option, option, redefault,
                            verifier_option, INPUT, RUNTIME, SHARD_NAME, TOP_K)

SUMMARY_FILE = EVAL_SUMMARY_FILE
RESULTS_DIR = EVAL_RESULTS_DIR
# Options that only change the summary, never a response or a verdict: a rerun with other
# values reuses the finished job and rewrites the summary.
_SUMMARY_ONLY = ("baseline", "retain", "at_k")


@dataclass(kw_only=True)
class EvalConfig(GenerationConfig):
    """Generation options (samples, seed, backend, ...) are GenerationConfig's, as in rollout."""

    problems: list[Path] = option("Problems file (repeat for several). Its `benchmark` column names the benchmark(s), else the file name does (math500.parquet -> math500).", role=INPUT)
    model: str = option("Model to evaluate: a local directory or a hub id such as Qwen/Qwen3-1.7B.", role=INPUT)
    out: Path = option("Output directory: results/ (per-response rows, a resumable job) and summary.parquet.", role=RUNTIME)
    # GenerationConfig's, with eval's defaults (and help)
    samples: int = redefault(GenerationConfig, "samples", 8, "Responses per problem; accuracy is the mean over sample indices (the paper uses 8).")
    temperature: float = redefault(GenerationConfig, "temperature", 0.6, "Sampling temperature; 0 is greedy.")
    top_p: float = redefault(GenerationConfig, "top_p", 0.95)
    top_k: int = redefault(GenerationConfig, "top_k", 0, TOP_K + " Qwen3's authors evaluate at temperature 0.6, top-p 0.8, top-k 20.")
    verifier: str = verifier_option()
    timeout: float = check_timeout_option()
    workers: int = check_workers_option()
    baseline: Path | None = option("Another eval's --out (e.g. the student before distillation): report the gain over it per benchmark.", None, role=INPUT)
    at_k: int | None = option("k of pass@k and maj@k in the summary, from 1 to --samples (default: --samples).", None)
    retain: list[str] = option("A benchmark that measures retention (repeat for several): with --baseline, report forgetting = (baseline - accuracy) / baseline * 100.", default_factory=list)
    shard: str | None = option(f"Evaluate one shard I/N of the problems into --out/results/{SHARD_NAME}; the last shard to finish writes the summary.", None)

    def __post_init__(self) -> None:
        problems = self.generation_problems()
        if not self.problems:
            problems.append("--problems: give at least one problems file")
        problems += check_problems_options(self.timeout, self.workers)
        if self.at_k is not None and not 1 <= self.at_k <= self.samples:
            problems.append(f"--at-k {self.at_k}: must be from 1 to --samples = {self.samples}")
        if problems:
            raise InputError("\n".join(problems))


# ---------------------------------------------------------------------------------------
# Inputs


def _benchmark_column(art: schemas.Artifact) -> pl.DataFrame:
    """The problems with a `benchmark` column: the file's own, or its name."""
    frame, source = art.frame, f"--problems {art.path}"
    if "benchmark" not in frame.columns:
        return frame.with_columns(benchmark=pl.lit(art.path.stem, pl.String))
    if frame.schema["benchmark"] != pl.String:
        raise InputError(
            f"{source}: column 'benchmark' has type {frame.schema['benchmark']}, expected a "
            f"string; cast it, e.g. in polars `pl.col('benchmark').cast(pl.String)`"
        )
    empty = pl.col("benchmark").is_null() | (pl.col("benchmark").str.strip_chars() == "")
    if frame.select(empty.sum()).item():
        raise InputError(
            f"{source}: column 'benchmark' is null or empty in rows "
            f"{quote_rows(frame, empty, ('problem_id',))}; name every row's benchmark, or drop "
            f"the column to use the file name ({art.path.stem!r})"
        )
    return frame


def read_problems(paths: list[Path], context: str) -> tuple[list[schemas.Artifact], list[pl.DataFrame]]:
    """Every --problems file, validated, with its benchmark column; problem ids unique across them."""
    arts, frames, errors = [], [], []
    for path in paths:
        try:
            art = schemas.read(path, schemas.PROBLEMS, option="--problems")
            frame = _benchmark_column(art)
            prompts.check_references(frame, context, f"--problems {art.path}")
        except InputError as e:
            errors.append(str(e))
            continue
        arts.append(art)
        frames.append(frame)
    if errors:
        raise InputError("\n".join(errors))
    seen: dict[str, Path] = {}
    clashes: dict[tuple[Path, Path], list[str]] = {}
    for art, frame in zip(arts, frames):
        for pid in frame["problem_id"]:
            if pid in seen:
                clashes.setdefault((seen[pid], art.path), []).append(pid)
            else:
                seen[pid] = art.path
    if clashes:
        lines = [
            f"problem_id(s) {', '.join(repr(i) for i in ids[:5])}{' ...' if len(ids) > 5 else ''} "
            f"appear in both {a} and {b}"
            for (a, b), ids in clashes.items()
        ]
        raise InputError(
            "--problems: problem_id must be unique across all problems files, but "
            + "; ".join(lines)
            + "; rename them (e.g. prefix each file's ids with its benchmark)"
        )
    # A benchmark is one file's: two files that name the same one (by a `benchmark` column or
    # by their file name, math/test.parquet and aime/test.parquet) would be reported as one.
    files_of: dict[str, list[str]] = {}
    for art, frame in zip(arts, frames):
        how = "its benchmark column" if "benchmark" in art.frame.columns else "its file name"
        for b in frame["benchmark"].unique(maintain_order=True):
            files_of.setdefault(b, []).append(f"{art.path} ({how})")
    shared = {b: files for b, files in files_of.items() if len(files) > 1}
    if shared:
        raise InputError(
            "--problems: "
            + "; ".join(f"benchmark {b!r} is named by {' and '.join(files)}" for b, files in shared.items())
            + "; their problems would be reported as one benchmark: rename a file or give each file a "
            "`benchmark` column of its own (to evaluate one benchmark kept in several files, join them "
            "into one file first)"
        )
    return arts, frames


def results_dir(out: Path) -> Path:
    """Where the per-response rows of eval --out `out` are: `out/results`, or `out` itself for
    an eval of an earlier paced (responses and summary in one directory)."""
    legacy = record_path(out, JOB_FILE) is not None or any(
        schemas.io.SHARD_NAME.match(d.name) for d in (out.iterdir() if out.is_dir() else []))
    return out if legacy and not (out / RESULTS_DIR).exists() else out / RESULTS_DIR


def check_out(out: Path, overwrite: bool) -> None:
    """--out must be new, or an eval --out of this paced (results/ and summary.parquet and the
    job's temporaries): an earlier paced's layout or a directory of other files is refused; with
    --overwrite, never one reached through a symbolic link."""
    if out.is_symlink() and not out.exists():
        raise InputError(f"--out {out}: is a broken symbolic link; remove it or give another path")
    if overwrite:
        refuse_link(out, "--out")
    if not out.exists():
        if not out.parent.is_dir():
            raise InputError(f"--out {out}: parent directory {out.parent} does not exist or is not a directory; create it first")
        return
    if not out.is_dir():
        raise InputError(f"--out {out}: is a file; eval writes a directory (results/ and summary.parquet)")
    kind = job_schema(out) or shards_schema(out)
    if kind is not None and kind != schemas.EVAL_RESULTS.name:
        raise InputError(f"--out {out}: holds a paced {kind} artifact, not an eval; give this eval a new --out")
    if results_dir(out) == out:
        raise InputError(
            f"--out {out}: holds an eval job itself (an earlier paced's layout, responses and summary in one "
            f"directory, or another eval's results/); it reads as --baseline; give this eval a new --out"
        )
    mine = (RESULTS_DIR, SUMMARY_FILE, f".{RESULTS_DIR}.replacing")
    others = sorted(e.name for e in out.iterdir() if e.name not in mine and not e.name.startswith(
        (f".{RESULTS_DIR}.replaced-", f"{RESULTS_DIR}.kept-", f".{SUMMARY_FILE}.tmp-")))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise InputError(
            f"--out {out}: exists and is not a paced eval directory (it holds {shown}); choose a new path "
            f"(paced never writes into a directory of other files)"
        )


def read_baseline(path: Path) -> schemas.Artifact:
    """The per-response results of a finished eval, given to --baseline (its metrics are
    measured again at this eval's k)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"--baseline {p}: no such directory; give the --out of an earlier `paced eval`")
    # A sharded eval (`--shard I/N` into one --out) is finished when every shard is: its shards
    # hold the job files, --out the summary.
    p = results_dir(p) if p.is_dir() else p
    if not p.exists():
        raise InputError(f"--baseline {path}: not a paced eval directory (no {RESULTS_DIR}/); give the --out of an "
                         f"earlier `paced eval`")
    shards = schemas.io.shard_dirs(p, "--baseline") if p.is_dir() else None
    for d in shards or [p]:
        if record_path(d, JOB_FILE) is None or not d.is_dir():
            raise InputError(
                f"--baseline {p}: not a paced eval directory (no {JOB_FILE}); give the --out of an "
                f"earlier `paced eval`"
            )
        kind = schemas.io.read_job(d, "--baseline").get("schema")
        if kind != schemas.EVAL_RESULTS.name:
            raise InputError(f"--baseline {p}: holds a paced {kind!r} artifact, not an eval; give the --out of an earlier `paced eval`")
        if record_path(d, MANIFEST_FILE) is None:
            raise InputError(
                f"--baseline {p}: this eval is not finished (no {MANIFEST_FILE}); rerun the command "
                f"that made it to finish it"
            )
    return schemas.read(p, schemas.EVAL_RESULTS, option="--baseline")


# ---------------------------------------------------------------------------------------
# Summary (its metrics: stages/evaluation/metrics.py)


def _percent(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}" if signed else f"{x * 100:.1f}"


def print_summary(summary: pl.DataFrame, with_baseline: bool, footer: str) -> None:
    """The summary as a table; with a baseline each metric's cell has its gain on a second line
    (one column per metric keeps the table within a terminal's width)."""
    k = summary["k"][0] if summary.height else 0
    table = Table(title="eval summary", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("benchmark", style="bold")
    table.add_column("problems", justify="right")
    table.add_column("samples", justify="right")
    table.add_column("accuracy", justify="right", no_wrap=True)
    table.add_column(f"pass@{k}", justify="right", no_wrap=True)
    table.add_column(f"maj@{k}", justify="right", no_wrap=True)
    if with_baseline:
        table.add_column("forgetting", justify="right")
    for r in summary.iter_rows(named=True):
        cells = [f"{r['accuracy_mean'] * 100:.1f} ± {r['accuracy_std'] * 100:.1f}", _percent(r["pass_at_k"]), _percent(r["maj_at_k"])]
        if with_baseline:
            gains = (r["gain"], r["pass_at_k_gain"], r["maj_at_k_gain"])
            cells = [Text.assemble(cell, "\n", (_percent(g, signed=True), "dim")) for cell, g in zip(cells, gains)]
        row = [r["benchmark"] + (" *" if r["retain"] else ""), f"{r['problems']:,}", str(r["samples"]), *cells]
        if with_baseline:
            forgetting = r["forgetting_pct"]
            row.append("-" if forgetting is None else f"{forgetting:.1f}")
        table.add_row(*row)
    console.print(table)
    notes = [f"accuracy: % correct, mean ± std over sample indices; pass@{k}: unbiased estimate (Chen et al. 2021); "
             f"maj@{k}: majority vote over the answers of the first {k} responses (equal answers, as the verifier judges, vote together)"]
    if with_baseline:
        notes.append("second line: gain over the baseline (measured from its responses at the same k), in percentage points")
    if summary["retain"].any():
        notes.append("* retention set (--retain): forgetting = (baseline - accuracy) / baseline * 100")
    console.print("\n".join([*notes, footer]), soft_wrap=True)


# ---------------------------------------------------------------------------------------
# The stage


def run(config: EvalConfig, command: str | None = None) -> Path:
    """`command`: the command line, for provenance (the CLI passes it)."""
    # 1. Everything that can be checked before loading a model.
    check_paths({"--out": config.out}, {"--model": config.model, "--problems": config.problems, "--baseline": config.baseline})
    spec = verifiers.resolve(config.verifier)
    arts, frames = read_problems(config.problems, config.context)
    benchmarks = list(dict.fromkeys(b for f in frames for b in f["benchmark"]))
    shard = parse_shard(config.shard)
    frames = [select_shard(f, shard) for f in frames]
    unknown = [b for b in config.retain if b not in benchmarks]
    if unknown:
        raise InputError(
            f"--retain {', '.join(unknown)}: no such benchmark; the benchmarks are "
            f"{', '.join(benchmarks)} (a file's `benchmark` column, else its name)"
        )
    baseline = read_baseline(config.baseline) if config.baseline is not None else None
    models.check_model(config.model, "--model")
    inputs = {
        "problems": [a.fingerprint for a in arts],
        "model": models.model_fingerprint(config.model),
        "verifier": verifiers.fingerprint(spec),
    }
    options = {k: v for k, v in job_options(config, inputs).items() if k not in _SUMMARY_ONLY}
    named_inputs = {f"problems[{i}]": a for i, a in enumerate(arts)}
    check_out(config.out, config.overwrite)
    made = [d for d in (config.out, config.out / RESULTS_DIR) if not d.exists()]
    config.out.mkdir(exist_ok=True)  # every input is checked: only results/ and the summary go in it
    try:
        return _evaluate(config, spec, shard, frames, options, named_inputs, baseline, command)
    except BaseException:
        for d in reversed(made):  # a refused first run leaves no empty directory behind
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _evaluate(
    config: EvalConfig,
    spec: str,
    shard: tuple[int, int] | None,
    frames: list[pl.DataFrame],
    options: dict,
    named_inputs: dict[str, schemas.Artifact],
    baseline: schemas.Artifact | None,
    command: str | None,
) -> Path:
    """Generate and check the responses into --out/results (resumable), then the summary."""
    job = schemas.Job(
        shard_out(config.out / RESULTS_DIR, shard, schemas.EVAL_RESULTS, config.overwrite),
        schemas.EVAL_RESULTS,
        options | {"verifier": spec},
        schemas.provenance("eval", asdict(config), named_inputs, command=command),
        overwrite=config.overwrite,
        contents={"--model": models.model_digest(config.model)}, runtime={"threads": threads.current()},
    )
    job.check()
    threads.resume_with(job.began.get("threads"))
    # The summary is keyed by the responses it summarizes (every shard's alike): another eval's is
    # replaced only with --overwrite; this one's is recomputed (at another --at-k, --baseline ...).
    summary_key = schemas.io.hash_options({k: v for k, v in job.options.items() if k != "shard"})
    kind, got, _ = file_identity(config.out / SUMMARY_FILE)
    ours = kind == schemas.EVAL_SUMMARY.name and got is None and job.in_place  # an earlier paced's, unkeyed
    check_file_out(config.out / SUMMARY_FILE, schemas.EVAL_SUMMARY, key=None if ours else summary_key, overwrite=config.overwrite)

    problems = pl.concat([f.select("problem_id", "prompt", "reference", "benchmark") for f in frames])
    n = problems.height
    n_parts = (n + config.part_size - 1) // config.part_size
    todo: list[int] = []
    if job.complete:
        console.print(
            f"{config.out}: responses already complete ({n} problems); recomputing the summary", soft_wrap=True
        )
    else:
        todo = _generate_and_check(config, spec, job, problems, frames, n_parts, shard)

    # 2. The summary, from every part (also those of earlier runs, and of every shard).
    if shard is not None:
        waiting = [f"{i}/{shard[1]}" for i in range(shard[1])
                   if record_path(config.out / RESULTS_DIR / schemas.io.shard_name(i, shard[1]), MANIFEST_FILE) is None]
        if waiting:
            console.print(f"shard {shard[0]}/{shard[1]} done; the summary is written when shard(s) "
                          f"{', '.join(waiting)} are done too (by the last to finish)")
            return config.out
    results = schemas.read(config.out / RESULTS_DIR, schemas.EVAL_RESULTS, option="--out")
    with verifiers.SameAnswer(spec, workers=config.workers, timeout=config.timeout) as same:
        summary = summarize(
            results.frame, set(config.retain), baseline.frame if baseline is not None else None, config.model,
            config.at_k or config.samples, same, votes=verifiers.extracts_answers(spec),
        )
    if baseline is not None:
        missing = summary.filter(pl.col("baseline_accuracy").is_null())["benchmark"].to_list()
        if missing:
            notice("warning", f"--baseline {config.baseline} has no benchmark "
                              f"{', '.join(missing)}; their gain and forgetting are left empty")
    elif config.retain:
        notice("note", "--retain without --baseline: forgetting needs a baseline")
    prov = schemas.provenance(
        "eval", asdict(config), {"results": results} | ({"baseline": baseline} if baseline is not None else {}),
        command=command,
    )
    table = schemas.table_from_columns(summary.to_dict(), schemas.EVAL_SUMMARY)
    schemas.write_file(config.out / SUMMARY_FILE, table, schemas.EVAL_SUMMARY, prov, key=summary_key,
                       overwrite=config.overwrite or ours)
    cut = int((results.frame["finish_reason"] == "length").sum())
    print_summary(
        summary,
        baseline is not None,
        f"parts resumed / generated now: {n_parts - len(todo)} / {len(todo)}; "
        f"responses cut at --max-new-tokens: {cut:,} of {results.frame.height:,}",
    )
    return config.out


def _generate_and_check(
    config: EvalConfig,
    spec: str,
    job: schemas.Job,
    problems: pl.DataFrame,
    frames: list[pl.DataFrame],
    n_parts: int,
    shard: tuple[int, int] | None,
) -> list[int]:
    """Generate and check every unfinished part, as rollout then score would; return their indices."""
    tokenizer = models.load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    rows = problems.select("prompt", "reference").to_dicts()
    ids = prepared_prompts(config, tokenizer, rows, problems)
    # What a module:function verifier sees: the whole row of its own file, with its benchmark.
    checked_rows = [r for f in frames for r in f.to_dicts()]

    job.start()
    todo = [i for i in range(n_parts) if not job.has(i)]
    n = problems.height
    reasons: Counter[str] = Counter()
    try:
        # Workers start (and import their verifier) while the model loads.
        with verifiers.CheckPool(spec, workers=config.workers, timeout=config.timeout) as pool, \
                progress("eval", total=todo_count(todo, config.part_size, n), unit="problems") as bar:

            def write_part(part: int, lo: int, hi: int, samples) -> None:
                cols: dict[str, list] = {c.name: [] for c in schemas.EVAL_RESULTS.columns}
                row_of_response = []
                for row, per_problem in zip(checked_rows[lo:hi], samples):
                    for k, s in enumerate(per_problem):
                        cols["problem_id"].append(row["problem_id"])
                        cols["sample_index"].append(k)
                        cols["benchmark"].append(row["benchmark"])
                        cols["completion"].append(tokenizer.decode(s.token_ids, skip_special_tokens=True))
                        cols["finish_reason"].append(s.finish_reason)
                        row_of_response.append(row)
                for v in pool.check(cols["completion"], row_of_response, cols["problem_id"], cols["sample_index"]):
                    cols["correct"].append(v.correct)
                    cols["extracted"].append(v.extracted)
                    cols["reason"].append(v.reason)
                    reasons[(v.reason or "verdict").split(":", 1)[0]] += 1
                job.write(part, schemas.table_from_columns(cols, schemas.EVAL_RESULTS))

            generate_parts(config, stage="eval", tokenizer=tokenizer, ids=ids, todo=todo, shard=shard,
                           on_batch=lambda done, tokens: advance(bar, done, "problems"), write_part=write_part)
    except InputError:
        job.abandon(work_too=True)  # a verifier that raised: a job this run began leaves nothing behind
        raise
    job.finish(n_parts)
    if reasons["timeout"] or reasons["error"]:
        notice("note", f"{reasons['timeout']:,} check(s) timed out (> {config.timeout:g} s) and "
                       f"{reasons['error']:,} raised in the verifier; they count as wrong (see column 'reason')")
    return todo
