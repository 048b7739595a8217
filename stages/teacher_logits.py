"""The teacher's distribution at every token of the sequences the student will learn, kept sparse.

    paced teacher-logits --problems problems.parquet --sequences teacher_rollouts/ \
        --teacher Qwen/Qwen3-8B --out teacher_logits/ --top-k 32 --weights weights.parquet
    paced teacher-logits ... --logits hybrid --top-k 8 --draws 12      # top-8, 12 draws from the rest

`--sequences` is a rollouts artifact (the teacher's own responses for forward KL, the
student's rollouts for reverse KL) or a problems file, whose `reference` solutions are then
the responses (distillation on expert solutions). With `--context reference` the teacher's
prompt carries the expert solution (the paper's Figure 2) while the stored response tokens,
and the student prompt stored beside them, stay the same.

Stored per response token (`--logits topk`, the default): the teacher's k most likely ids among
real tokens and their true log-probabilities under the full softmax, the log of the remaining
mass (tail bucket), the log-probability of the actual token and the teacher's entropy. The
vocabulary is never materialised for a whole batch: hidden states go through the output layer
`--chunk-size` positions at a time.

Top-k is biased where the teacher's entropy is high: the loss sees the tail as one bucket, so
the student is taught to put the tail's mass anywhere outside the top-k, and at natural-text
entropy k = 32 holds about half the mass. `--logits sampled` (Random-Sampling KD, Anshumann et
al., ACL 2025, "Sparse Logit Sampling: Accelerating Knowledge Distillation in LLMs") stores
instead `--draws` S ids drawn from the teacher's distribution, kept as the distinct ids with the
mass m_v = c_v / S each stands for (c_v draws of v). E[m_v] = p_T(v), so the forward-KL gradient
on these buckets, softmax(z) - m, has expectation softmax(z) - p_T: the full-vocabulary
gradient, unbiased. How the S are drawn (`--draw-scheme`): `multinomial`, independently with
replacement, the paper's (var m_v = p (1 - p) / S); `systematic`, the default, S evenly spaced
points (u + j) / S through the cumulative distribution from one uniform u, the systematic
resampling of particle filters: still E[c_v] = S p_v, but c_v is floor(S p_v) or its ceiling, so
a token of mass over 1/S is kept with its mass almost exact and the variance of each token's
mass falls (not of every sum over tokens: systematic resampling can lose to independent draws
on a weighted sum, Douc, Cappé and Moulines 2005; bench section 10 measures the gradient of
both at equal bytes); see `backends.sparse.draw`. `--logits hybrid` stores the
top-k exactly and draws the S ids from the rest only (m_v = P_rest c_v / S): unbiased too, with
less variance where the teacher is peaked. With `--sample-temperature t` the draws come from
the proposal q ∝ p_T^(1/t) (more distinct tokens of the tail at t > 1) and each is
importance-weighted (w = p_T / q), the weights normalised to the rest's mass: self-normalised
importance sampling, consistent but biased by O(1/S) at t != 1. The estimate of the KL's value
uses the stored entropy (distill reports -H_T - sum_v m_v log q_S(v), unbiased at t = 1). A
sampled representation gives no estimate of the reverse KL or of AKL (they need p_T wherever
the student puts mass): distill and snr refuse those losses for it. Draws are seeded per
sequence (--seed, problem, sample index), so a resumed or re-batched job writes the same
artifact.
Problems whose weight is 0 (`--weights`) are skipped entirely: no teacher forward pass.

`--backend vllm` scores with a vLLM engine instead (prompt log-probs over prompt + response,
see stages/backends/vllm.py) and writes the same columns for `--logits topk` (the entropy
left null); the engine starts once per job. It cannot draw: vLLM returns each prompt
position's top log-probs (at most `max_logprobs`) as Python objects, never the distribution,
so a draw from the tail would need all vocabulary log-probs of every position as Python
objects (151,936 per token for Qwen); `sampled` and `hybrid` are refused on it.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

import schemas
from schemas import InputError
from schemas.base import quote_rows
from schemas.outputs import check_paths
from stages import backends, models, prompts, threads
from stages.backends import sparse
from stages.backends.generation import EngineOptions
from stages.common import advance, console, notice, parse_shard, progress, select_shard, shard_out, summary_table
from stages.options import (allow_stale_option, changed, key_options, option, seed_problems, shard_option, INPUT, RUNTIME,
                            CHAT_TEMPLATE_KWARGS)


LOGITS = ("topk", "sampled", "hybrid")
DRAW_SCHEMES = sparse.SCHEMES
MAX_DRAWS_AT_ONCE = 1 << 25  # draws of one output-layer chunk: --draws x --chunk-size, about 40 B each (1.3 GB)


@dataclass
class TeacherLogitsConfig(EngineOptions):
    problems: Path = option("The problems file (prompts, and references for --context reference).", role=INPUT)
    sequences: Path = option("What the student will learn: a rollouts artifact (teacher's responses for forward KL, the student's for reverse KL) or a problems file whose `reference` solutions are the responses.", role=INPUT)
    teacher: str = option("Teacher model: a local directory or a hub id. Must share the student's tokenizer.", role=INPUT)
    out: Path = option("Output directory of the teacher_logits artifact (resumable job).", role=RUNTIME)
    top_k: int = option("Teacher token ids kept per position (the rest is one tail bucket, or --draws draws); none with --logits sampled.", 32)
    logits: str = option("topk: the top-k and one tail bucket; sampled: --draws ids drawn from the teacher (unbiased forward-KL gradient); hybrid: the top-k, then --draws draws from the rest.", "topk", keyed_when_set=True)
    draws: int = option("Draws per response token for --logits sampled or hybrid (kept as distinct ids with their mass).", 12, keyed_when_set=True)
    draw_scheme: str = option("How the --draws are drawn: systematic (one uniform, S evenly spaced points through the teacher's cumulative distribution: each token's count is floor or ceiling of S p: less variance in each token's mass for the same draws) or multinomial (S independent draws, the paper's); both unbiased.", "systematic", keyed_when_set=True)
    sample_temperature: float = option("Proposal temperature of the draws (1: from the teacher itself, unbiased; > 1 reaches further into the tail, importance-weighted).", 1.0, keyed_when_set=True)
    seed: int = option("Seed of the draws (each sequence's are seeded by it, its problem and its sample index).", 0, keyed_when_set=True)
    context: str = option("none, or reference: the teacher's prompt carries the expert reference solution; the stored response and student prompt do not change.", "none")
    weights: Path | None = option("Weights artifact: problems with weight 0 are skipped (no teacher forward pass).", None, role=INPUT)
    system_prompt: str | None = option("System message of the prompts (default: the one the rollouts used).", None)
    prompt_suffix: str | None = option("Text appended to every prompt (default: the one the rollouts used).", None)
    chat_template_kwargs: str | None = option(CHAT_TEMPLATE_KWARGS[:-1] + "; default: those the rollouts used, which a different value may not contradict.", None, keyed_when_set=True)
    batch_size: int = option("Sequences per teacher forward pass (hf; vllm batches by itself).", 8, role=RUNTIME)
    chunk_size: int = option("Positions per output-layer chunk: bounds the float32 positions x vocabulary buffer (hf).", 1024, role=RUNTIME)
    part_size: int = option("Sequences per output part: the unit of resumption.", 256)
    allow_stale: bool = allow_stale_option()
    shard: str | None = shard_option()
    overwrite: bool = option("Replace an unfinished or different job in --out instead of refusing.", False, role=RUNTIME)

    def __post_init__(self) -> None:
        parse_shard(self.shard)
        problems = backends.option_problems(self)
        if self.logits not in LOGITS:
            problems.append(f"--logits {self.logits}: use one of {', '.join(LOGITS)}")
        elif self.logits != "topk" and self.backend in backends.REGISTRY and not backends.get(self.backend).DRAWS:
            problems.append(f"--logits {self.logits}: not with --backend {self.backend}: {backends.get(self.backend).NO_DRAWS}; "
                            "use --backend hf, or --logits topk")
        elif self.logits == "sampled":
            if changed(self, "top_k"):
                problems.append(f"--top-k {self.top_k}: not with --logits sampled (no top-k: every bucket is drawn); "
                                f"use --logits hybrid for the top-k plus draws from the rest")
            self.top_k = 0  # no top-k: every bucket is drawn
        elif self.top_k < 1:
            problems.append(f"--top-k {self.top_k}: must be at least 1 (32 is a good default)")
        if self.logits == "topk":
            extra = changed(self, "draws", "sample_temperature", "seed", "draw_scheme")
            if extra:
                problems.append(f"{', '.join(extra)}: only with --logits sampled or hybrid (top-k draws nothing)")
        else:
            if self.draws < 1:
                problems.append(f"--draws {self.draws}: must be at least 1 (the paper's sampled KD uses about 12)")
            elif self.draws > MAX_DRAWS_AT_ONCE:
                problems.append(f"--draws {self.draws}: at most {MAX_DRAWS_AT_ONCE:,} (beyond the vocabulary's size more "
                                f"draws add almost nothing, as the artifact keeps distinct ids)")
            elif self.chunk_size >= 1 and self.draws * self.chunk_size > MAX_DRAWS_AT_ONCE:
                problems.append(
                    f"--draws {self.draws} with --chunk-size {self.chunk_size}: {self.draws * self.chunk_size:,} draws at once, "
                    f"about 40 B each in memory; at most {MAX_DRAWS_AT_ONCE:,}: lower --chunk-size to "
                    f"{MAX_DRAWS_AT_ONCE // self.draws:,} or below, or draw fewer")
            problems += seed_problems(self.seed)
            if self.draw_scheme not in DRAW_SCHEMES:
                problems.append(f"--draw-scheme {self.draw_scheme}: use one of {', '.join(DRAW_SCHEMES)}")
            if not (math.isfinite(self.sample_temperature) and self.sample_temperature > 0):
                problems.append(f"--sample-temperature {self.sample_temperature}: must be a finite number > 0 (1: unbiased)")
        problems += prompts.option_problems(self)
        for flag, v in (("--batch-size", self.batch_size), ("--chunk-size", self.chunk_size), ("--part-size", self.part_size)):
            if v < 1:
                problems.append(f"{flag} {v}: must be at least 1")
        if problems:
            raise InputError("\n".join(problems))


def inherited_template_kwargs(given: str | None, rollout_opts: dict, kind: str, path: Path) -> str | None:
    """The chat template variables of both prompts: the rollouts' (a student's responses were
    sampled under them, and its prompt here must be that one), or --chat-template-kwargs, which
    may repeat them but not contradict them."""
    if kind != "rollouts":
        return given
    sampled = rollout_opts.get("chat_template_kwargs")
    if given is not None and given != sampled:
        raise InputError(
            f"--chat-template-kwargs {given}: the rollouts in --sequences {path} were sampled with "
            f"{sampled if sampled is not None else 'none'}, and the prompt their responses follow must be "
            f"the same here (a Qwen3 response sampled without thinking follows an empty <think></think> "
            f"block in its prompt); drop the option, as it is inherited, or sample the rollouts with it"
        )
    return sampled


def _declared_columns(path: Path, option: str) -> list[str]:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{option} {p}: no such file or directory; check the path")
    files, _ = schemas.io.artifact_files(p, option)
    return schemas.io.parquet_schema(files[0], option).names


def load_sequences(path: Path, problems: pl.DataFrame) -> tuple[pl.DataFrame, schemas.Artifact, str]:
    """Sequences as (problem_id, sample_index, response text or token ids); and their kind."""
    columns = _declared_columns(path, "--sequences")
    if "completion_token_ids" in columns:
        art = schemas.read(path, schemas.ROLLOUTS, option="--sequences", columns=["completion_token_ids", "model"])
        frame = art.frame.select("problem_id", "sample_index", pl.col("completion_token_ids").alias("response_ids"))
        return frame, art, "rollouts"
    if "reference" in columns:
        art = schemas.read(path, schemas.PROBLEMS, option="--sequences")
        frame = art.frame.filter(pl.col("reference").is_not_null() & (pl.col("reference").str.strip_chars() != ""))
        if frame.height == 0:
            raise InputError(
                f"--sequences {path}: every 'reference' is null or empty ({art.frame.height:,} problems), so "
                f"there are no reference solutions to score; fill the column, or pass a rollouts artifact"
            )
        frame = frame.select("problem_id", pl.lit(0, pl.Int32).alias("sample_index"), pl.col("reference").alias("response_text"))
        return frame, art, "references"
    raise InputError(
        f"--sequences {path}: neither a rollouts artifact (with completion_token_ids) nor a problems "
        f"file (with reference); pass `paced rollout` output or a problems file with reference solutions"
    )


def apply_weights(seqs: pl.DataFrame, weights_path: Path | None) -> tuple[pl.DataFrame, pl.DataFrame, schemas.Artifact | None]:
    """Split sequences into those to score and those skipped for weight 0."""
    if weights_path is None:
        return seqs, seqs.head(0), None
    art = schemas.read(weights_path, schemas.WEIGHTS, option="--weights")
    joined = seqs.join(art.frame.select("problem_id", "weight"), on="problem_id", how="left")
    missing = joined.filter(pl.col("weight").is_null()).get_column("problem_id").unique(maintain_order=True)
    if missing.len():
        raise InputError(
            f"--weights {art.path}: has no weight for {missing.len()} problem(s) of --sequences "
            f"({', '.join(repr(x) for x in missing.head(5))}); the weights were computed from other "
            f"scores: rerun paced weight on the scores of these problems"
        )
    keep = joined.filter(pl.col("weight") > 0).drop("weight")
    skipped = joined.filter(pl.col("weight") == 0).drop("weight")
    return keep, skipped, art


def run(config: TeacherLogitsConfig, command: str | None = None) -> Path:
    """`command`: the command line, for provenance (the CLI passes it)."""
    # 1. Inputs, all checked before the teacher is loaded.
    check_paths({"--out": config.out}, {"--problems": config.problems, "--sequences": config.sequences,
                                        "--teacher": config.teacher, "--weights": config.weights})
    problems = schemas.read(config.problems, schemas.PROBLEMS, option="--problems")
    seqs, seq_art, kind = load_sequences(config.sequences, problems.frame)
    unknown = seqs.join(problems.frame, on="problem_id", how="anti").get_column("problem_id").unique(maintain_order=True)
    if unknown.len():
        raise InputError(
            f"--sequences {seq_art.path}: {unknown.len()} problem_id(s) are not in --problems "
            f"{problems.path} ({', '.join(repr(x) for x in unknown.head(5))}); pass the matching problems file"
        )
    prompts.check_references(problems.frame.join(seqs.select("problem_id").unique(), on="problem_id"),
                             config.context, f"--problems {problems.path}")
    shard = parse_shard(config.shard)
    kept, skipped, weights_art = apply_weights(seqs, config.weights)  # (every shard's: weights for all, one of them > 0)
    if weights_art is not None and kept.height == 0:
        raise InputError(f"--weights {config.weights}: every problem of --sequences has weight 0; there is nothing to distill on")
    seqs, skipped = select_shard(kept, shard), select_shard(skipped, shard)
    for flag, art in (("--sequences", seq_art), ("--weights", weights_art)):
        if art is not None and art is not problems:
            stale = schemas.io.check_lineage(problems.fingerprint, f"--problems {problems.path}", art, flag, config.allow_stale)
            if stale:
                notice("warning", stale)
    models.check_model(config.teacher, "--teacher")
    # The student prompt must be the one the sequences were sampled under: inherit the
    # rollout's system prompt, suffix and chat template variables unless given.
    rollout_opts = ((seq_art.provenance or {}).get("options") or {}) if kind == "rollouts" else {}
    system_prompt = config.system_prompt if config.system_prompt is not None else rollout_opts.get("system_prompt")
    suffix = config.prompt_suffix if config.prompt_suffix is not None else rollout_opts.get("prompt_suffix")
    template_kwargs = inherited_template_kwargs(config.chat_template_kwargs, rollout_opts, kind, seq_art.path)

    tokenizer = models.load_tokenizer(config.teacher, trust_remote_code=config.trust_remote_code)
    signature = models.tokenizer_signature(tokenizer)
    if kind == "rollouts":
        for name in seq_art.frame.get_column("model").unique().to_list():
            if Path(name).is_dir():
                models.check_model(name, "the rollouts' model", need_weights=False)
                other = models.load_tokenizer(name, trust_remote_code=config.trust_remote_code)
                models.check_same_tokenizer(signature, models.tokenizer_signature(other), f"--teacher {config.teacher}", f"the rollouts' model {name}")
    if config.top_k > len(tokenizer):
        raise InputError(f"--top-k {config.top_k}: larger than the teacher's vocabulary ({len(tokenizer):,} tokens)")
    if config.logits == "hybrid" and config.top_k >= len(tokenizer):
        raise InputError(f"--top-k {config.top_k}: with --logits hybrid it leaves no token to draw from (the vocabulary "
                         f"has {len(tokenizer):,}); use --logits topk, or a smaller --top-k")

    rows = seqs.join(problems.frame, on="problem_id", how="left").to_dicts()
    student_prompts = prompts.encode_prompts(tokenizer, rows, context="none", system_prompt=system_prompt, suffix=suffix,
                                             chat_template_kwargs=template_kwargs)
    teacher_prompts = prompts.encode_prompts(tokenizer, rows, context=config.context, system_prompt=system_prompt, suffix=suffix,
                                             chat_template_kwargs=template_kwargs)
    eos = tokenizer.eos_token_id
    responses = [
        list(r["response_ids"]) if kind == "rollouts" else tokenizer(r["response_text"], add_special_tokens=False)["input_ids"] + [eos]
        for r in rows
    ]
    if kind == "rollouts":
        check_token_ids(seqs, models.vocab_rows(config.teacher, config.trust_remote_code) or len(tokenizer), seq_art.path)
    empty = [i for i, r in enumerate(responses) if not r]
    if empty:
        raise InputError(
            f"--sequences {seq_art.path}: {len(empty)} sequence(s) have no response tokens "
            f"({', '.join(repr((rows[i]['problem_id'], rows[i]['sample_index'])) for i in empty[:5])}); drop them"
        )
    backend = backends.get(config.backend)
    limit = backend.context_limit(config.teacher, config)
    room = backend.SCORE_ROOM
    plural = "s" * (room > 1)
    if limit is not None:
        long = [i for i in range(len(rows)) if len(teacher_prompts[i]) + len(responses[i]) + room > limit]
        if long:
            raise InputError(
                f"--sequences {seq_art.path}: {len(long)} sequence(s) are longer than the teacher's context of "
                f"{limit} tokens with their prompt{f' ({backend.LABEL}: less {room} token{plural})' if room else ''} "
                f"({', '.join(repr(rows[i]['problem_id']) for i in long[:5])}); "
                f"drop them or use a teacher with a longer context"
            )

    inputs = {"problems": problems.fingerprint, "sequences": seq_art.fingerprint,
              "teacher": models.model_fingerprint(config.teacher),
              "weights": weights_art.fingerprint if weights_art else None}
    options = key_options(config)
    # Jobs made before --draw-scheme drew independently and have no such key: multinomial stays
    # out of the key (so they resume), systematic is always in it (so they are never finished so).
    options.pop("draw_scheme", None)
    if config.logits != "topk" and config.draw_scheme != "multinomial":
        options["draw_scheme"] = config.draw_scheme
    options |= {"system_prompt": system_prompt, "prompt_suffix": suffix, "inputs": inputs}
    if template_kwargs is not None:  # absent when none, as in jobs made before the option
        options["chat_template_kwargs"] = template_kwargs
    prov_inputs = {"problems": problems, "sequences": seq_art} | ({"weights": weights_art} if weights_art else {})
    used = {"tokenizer": signature, "chat_template_kwargs": template_kwargs}
    prov = schemas.provenance("teacher-logits", asdict(config) | used, prov_inputs, problems=problems.fingerprint,
                              command=command)
    job = schemas.Job(shard_out(config.out, shard, schemas.TEACHER_LOGITS, config.overwrite), schemas.TEACHER_LOGITS, options, prov,
                      overwrite=config.overwrite, contents={"--teacher": models.model_digest(config.teacher)},
                      runtime={"threads": threads.current()})
    job.check()
    threads.resume_with(job.began.get("threads"))
    n = len(rows)
    n_parts = (n + config.part_size - 1) // config.part_size
    if job.complete:
        console.print(f"{config.out}: already complete ({n} sequences); nothing to do")
        return config.out
    if n == 0:  # as rollout does: a finished empty shard, so the sharded artifact can complete
        job.start()
        job.finish(0)
        why = "its problems all have weight 0" if skipped.height else "no problem of --sequences falls in it"
        console.print(f"shard {config.shard}: no sequences to score ({why}); finished as an empty shard")
        return config.out
    backend.prepare(config)

    # 2. The job.
    job.start()
    todo = [i for i in range(n_parts) if not job.has(i)]
    started = time.perf_counter()
    score = backend.open_scorer(config.teacher, config, tokenizer, sparse.ScoringOptions.of(config))
    ready = time.perf_counter()  # tokens / second counts from here, as in rollout
    tokens_now = 0
    with progress("teacher-logits", total=sum(len(r) for p in todo for r in responses[p * config.part_size:(p + 1) * config.part_size]), unit="tok") as bar:
        for part in todo:
            lo, hi = part * config.part_size, min((part + 1) * config.part_size, n)
            cols: dict[str, list] = {c.name: [] for c in schemas.TEACHER_LOGITS.columns}
            extra = {} if config.logits == "topk" else {
                "seeds": [draw_seed(config.seed, rows[i]["problem_id"], rows[i]["sample_index"]) for i in range(lo, hi)]}
            results = score(teacher_prompts[lo:hi], responses[lo:hi], lambda t: advance(bar, t, "tok"), **extra)
            for i, res in zip(range(lo, hi), results):
                cols["problem_id"].append(rows[i]["problem_id"])
                cols["sample_index"].append(rows[i]["sample_index"])
                cols["prompt_token_ids"].append(student_prompts[i])
                cols["token_ids"].append(responses[i])
                for key in ("topk_ids", "topk_logprobs", "tail_logprob", "target_logprobs", "sample_ids", "sample_logmass", "entropy"):
                    cols[key].append(res[key])
                tokens_now += len(responses[i])
            job.write(part, schemas.table_from_columns(cols, schemas.TEACHER_LOGITS))
    job.finish(n_parts)
    seconds = time.perf_counter() - ready
    total_tokens = sum(len(r) for r in responses)
    saved_tokens = _skipped_tokens(skipped, kind, tokenizer)
    size = sum(job.part(i).stat().st_size for i in range(n_parts))  # (a shard's in its folder)
    summary_table(
        "teacher-logits summary",
        [
            ("sequences scored", f"{n:,} ({kind})"),
            ("response tokens", f"{total_tokens:,}"),
            ("parts (resumed / scored now)", f"{n_parts - len(todo)} / {len(todo)}"),
            ("skipped: weight-0 problems", f"{skipped.get_column('problem_id').n_unique():,} problems, {skipped.height:,} sequences"),
            ("teacher tokens saved by skipping", f"{saved_tokens:,} ({saved_tokens / max(saved_tokens + total_tokens, 1):.1%})"),
            ("representation", config.logits + (f", top-k {config.top_k}" if config.top_k else "")
             + (f", {config.draws} {config.draw_scheme} draws per token" if config.logits != "topk" else "")
             + (f" at temperature {config.sample_temperature:g}" if config.logits != "topk" and config.sample_temperature != 1 else "")),
            *teacher_profile([job.part(i) for i in range(n_parts)], config.logits),
            ("bytes per token on disk", f"{size / max(total_tokens, 1):.1f}"),
            ("tokens / second", f"{tokens_now / max(seconds, 1e-9):,.1f} (scoring: from the model loaded)"),
            ("seconds: model load or engine start / scoring", f"{ready - started:.1f} / {seconds:.1f}"),
        ],
    )
    return config.out


LOW_ENTROPY = 2.0  # nats: the summary counts the tokens below it (README: "which representation for which teacher")


def entropy_profile(parts: list[Path]) -> dict[str, float | None]:
    """Over every response token of the part files: the teacher's mean entropy (`entropy`), the
    share of tokens under LOW_ENTROPY (`low`), and the mean mass outside the top-k (`tail`); None
    where no token has one (vLLM stores no entropy). Summed part by part (of --part-size
    sequences), so the job is never held whole."""
    entropy, tail = (pl.col(c).cast(pl.List(pl.Float64)) for c in ("entropy", "tail_logprob"))
    h = n_h = low = t = n_t = 0.0
    for part in parts:
        sums = pl.scan_parquet(part).select(
            entropy.list.sum().sum().alias("h"), entropy.list.len().sum().alias("n_h"),
            entropy.list.eval((pl.element() < LOW_ENTROPY).cast(pl.Int64)).list.sum().sum().alias("low"),
            tail.list.eval(pl.element().exp()).list.sum().sum().alias("t"), tail.list.len().sum().alias("n_t"),
        ).collect().row(0)
        h, n_h, low, t, n_t = (a + (b or 0) for a, b in zip((h, n_h, low, t, n_t), sums))
    return {"entropy": h / n_h if n_h else None, "low": low / n_h if n_h else None, "tail": t / n_t if n_t else None}


def teacher_profile(parts: list[Path], logits: str) -> list[tuple[str, str]]:
    """Summary rows of what decides the representation (README, "Drawn tokens instead of, or
    beside, the top-k"): `entropy_profile`'s entropy, and for a top-k the mass it leaves in the
    tail bucket. No entropy row where the scorer stores none (vLLM)."""
    profile = entropy_profile(parts)
    rows = []
    if profile["entropy"] is not None:
        rows.append(("teacher entropy, nats per token",
                     f"mean {profile['entropy']:.2f}; {profile['low']:.1%} of tokens under {LOW_ENTROPY:g} nats"))
    if logits != "sampled" and profile["tail"] is not None:
        rows.append(("teacher mass outside the top-k", f"mean {profile['tail']:.1%}"))
    return rows


def draw_seed(seed: int, problem_id: str, sample_index: int) -> int:
    """The seed of one sequence's draws: its own, whatever its part, batch or shard."""
    digest = hashlib.sha256(f"teacher-draws:{seed}:{problem_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def check_token_ids(seqs: pl.DataFrame, vocab: int, path: Path) -> None:
    """Every response token id of the rollouts must be a row of the teacher's embedding: an id
    from another tokenizer would index past it (or, negative, wrap around) mid-job."""
    bad = pl.col("response_ids").list.eval((pl.element() < 0) | (pl.element() >= vocab)).list.any()
    n = seqs.select(bad.sum()).item()
    if n:
        lo, hi = seqs.select(pl.col("response_ids").list.min().min().alias("lo"), pl.col("response_ids").list.max().max().alias("hi")).row(0)
        raise InputError(
            f"--sequences {path}: {n} sequence(s) have completion_token_ids outside the teacher's vocabulary of "
            f"{vocab:,} ids (ids from {lo} to {hi}; rows {quote_rows(seqs, bad, ('problem_id', 'sample_index'))}); the "
            f"rollouts were tokenized by another tokenizer: sample them with a model that shares the teacher's"
        )


def _skipped_tokens(skipped: pl.DataFrame, kind: str, tokenizer: Any) -> int:
    if skipped.height == 0:
        return 0
    if kind == "rollouts":
        return int(skipped.select(pl.col("response_ids").list.len().sum()).item())
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in skipped.get_column("response_text"))
