"""Section `storage`: bytes per response token of the teacher_logits artifact, and what top-k
truncation loses, on three teachers.

    python -m bench --only storage [--quick]

For each teacher, the real `teacher_logits.run` writes the artifact at k = 8, 32 and 64 over
the teacher's response sequences; bytes per token is the size of its part files over the
response tokens. Dense float16 logits would take 2 bytes x V per token (computed, not written).

The teachers (bench/text_teacher.py builds and caches the two trained ones; the first run
trains them, about 3 minutes each on one core, side by side):

- English-text teacher: a Qwen2 LM trained here from scratch on CPython's and NumPy's English
  documentation (byte-level BPE, about 32,000 tokens; `--quick`: 4,000, the pydoc topics
  alone and a smaller, shorter run), on its own responses: held-out paragraph openings as
  prompts, continuations sampled by the real `paced rollout` at temperature 1 (what
  forward-KL distillation trains on). The goals are judged on it, the one trained teacher with
  natural text and a realistic vocabulary. It is tiny and briefly trained, so its entropy is
  high (about 6.2 nats per token on its own samples, bench/results.md) and few of its tokens
  fall in the low entropy bins where a strong teacher's tokens are.
- train_tiny teacher: examples/train_tiny.py's default teacher (its `--quick` one in `--quick`) on
  its own task: training problems of examples/task.py, sampled at temperature 1. A 258-token
  character vocabulary, so the top-k covers a large share of it; it solves the task, so
  nearly every token is near zero entropy.
- synthetic teacher (random, entropy scaled to 1.5 nats): bench/workload.py's random teacher
  with its output layer scaled to a mean entropy of 1.5 nats, on the workload's generated
  text (not its own samples). Kept because earlier reports quote it.

Truncation, two conventions, both per response token and averaged over tokens, both from the
stored (float16) artifact against the teacher's full float32 distribution recomputed here:

- loss error: |fkl on the k+1 buckets - fkl over the full vocabulary| for a student, where the
  bucket fkl is paced's own `losses.token_losses` on the stored top-k + tail, exactly what
  `distill` optimises. It equals the tail mass times KL(teacher || student) within the tail
  (up to the float16 rounding of the stored log-probs).
  Students: the English teacher's own early checkpoint (bench/text_teacher.py), a random-init
  model for the other two (the start of distillation; there the loss error is about the
  uniform-tail KL, since a random student is about uniform in the tail);
- KL(p || q) where p is the teacher's full distribution and q keeps the stored top-k
  probabilities and spreads the stored tail mass uniformly over the other V - k ids (the
  distribution a reader could rebuild from the artifact). Student-independent.

The KL is broken down by the teacher's per-token entropy (bins ENTROPY_BINS) at k = 32: tokens,
share of tokens, mean tail mass and mean KL per bin, rows for the English-text teacher and a
note for the other two, so a reader can map the result to a teacher of another entropy
profile (a large model on its own reasoning traces has far more low-entropy tokens than these
tiny ones). The note compares the English-text and synthetic teachers bin by bin.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import text_teacher, workload
from bench.common import ROOT, Context, Section

KS = (8, 32, 64)
QWEN_VOCAB = 151_936
GOAL_BYTES = 200
GOAL_ERROR = 0.01
ENTROPY_BINS = (0.5, 1.0, 2.0, 4.0, 6.0)  # nats: < 0.5, 0.5-1, 1-2, 2-4, 4-6, >= 6
BIN_K = 32

SYNTHETIC = f"synthetic teacher (random, entropy scaled to {workload.TEACHER_ENTROPY} nats)"
ENGLISH = "English-text teacher (trained)"
QUICKSTART = "train_tiny teacher (trained, character vocabulary)"

# Sizes of the trained teachers' measurements: (full, quick).
ENGLISH_SEQUENCES = (64, 16)
QUICKSTART_PROBLEMS = (512, 64)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_stage(problems: Path, sequences: Path, teacher: Path, k: int, out: Path, batch: int) -> tuple[float, int, float]:
    """(bytes per token, tokens, seconds) of the real stage at top-k k."""
    import polars as pl

    from stages import teacher_logits as tl

    t = time.perf_counter()
    tl.run(tl.TeacherLogitsConfig(problems=problems, sequences=sequences, teacher=str(teacher), out=out,
                                  top_k=k, batch_size=batch, overwrite=True))
    seconds = time.perf_counter() - t
    parts = sorted(out.glob("part-*.parquet"))
    tokens = int(pl.read_parquet(parts, columns=["token_ids"])["token_ids"].list.len().sum())
    return sum(p.stat().st_size for p in parts) / tokens, tokens, seconds


def truncation(teacher: Path, student: Path, tl_dirs: dict[int, Path], sequences: int | None = None) -> dict[int, dict]:
    """Per k of `tl_dirs` (artifacts of one sequences file at several k): mean per-token loss
    error and uniform-tail KL over the first `sequences` rows (all when None), and per token
    the teacher's entropy, tail mass and KL (numpy arrays). Models run once per row for all k."""
    import numpy as np
    import torch

    import schemas
    from bench.distill import problem_ids, write_uniform_weights
    from stages import models
    from stages.training import data as train_data, losses

    data = {}
    for k, tl_dir in tl_dirs.items():
        weights = schemas.read(write_uniform_weights(problem_ids(tl_dir), tl_dir.parent / f"{tl_dir.name}-w.parquet"),
                               schemas.WEIGHTS, option="--weights")
        data[k], _ = train_data.load_data(tl_dir, weights, tl_dir.parent / f"{tl_dir.name}-cache.arrow")
    student_m = models.load_model(str(student), device="cpu", dtype="float32")
    teacher_m = models.load_model(str(teacher), device="cpu", dtype="float32")
    err = {k: 0.0 for k in tl_dirs}
    per_token = {k: {"entropy": [], "tail_mass": [], "kl": []} for k in tl_dirs}
    first = next(iter(data.values()))
    n_rows = first.table.num_rows if sequences is None else min(sequences, first.table.num_rows)
    with torch.inference_mode():
        for r in range(n_rows):
            batches = {k: train_data.collate(d, [r], "cpu") for k, d in data.items()}  # [1, R, ...]: what distill trains on
            b0 = next(iter(batches.values()))
            assert all(torch.equal(b["input_ids"], b0["input_ids"]) for b in batches.values()), "artifacts disagree"

            def logits(model):
                hidden = model.get_decoder()(input_ids=b0["input_ids"], attention_mask=b0["attention"]).last_hidden_state
                idx = b0["gather"].unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
                return model.get_output_embeddings()(torch.gather(hidden, 1, idx)).float()  # [1, R, V]

            s_logits, t_logits = logits(student_m), logits(teacher_m)
            lp_t = torch.log_softmax(t_logits[0].double(), -1)  # [R, V]
            lp_s = torch.log_softmax(s_logits[0].double(), -1)
            p_t = lp_t.exp()
            full = (p_t * (lp_t - lp_s)).sum(-1)
            entropy = -(p_t * lp_t).sum(-1).numpy()
            vocab = lp_t.shape[-1]
            for k, b in batches.items():
                coarse = losses.token_losses(s_logits, b["topk_ids"], b["topk_lp"], b["tail"], b["mask"], loss="fkl")["fkl"][0]
                err[k] += float((coarse.double() - full).abs().sum())
                # q: stored top-k and tail, normalised over the k+1 buckets as distill does, tail spread uniformly.
                ids = b["topk_ids"][0]
                buckets = torch.log_softmax(torch.cat([b["topk_lp"][0], b["tail"][0, :, None]], -1).double(), -1)
                log_q = (buckets[:, -1:] - torch.log(torch.tensor(vocab - ids.shape[-1], dtype=torch.float64))).expand(-1, vocab).clone()
                log_q.scatter_(-1, ids, buckets[:, :-1])
                per_token[k]["kl"].append((p_t * (lp_t - log_q)).sum(-1).numpy())
                per_token[k]["tail_mass"].append(buckets[:, -1].exp().numpy())
                per_token[k]["entropy"].append(entropy)
    out = {}
    for k in tl_dirs:
        pt = {name: np.concatenate(v) for name, v in per_token[k].items()}
        n = len(pt["kl"])
        out[k] = {"loss_error": err[k] / n, "kl_uniform_tail": float(pt["kl"].mean()), "tail_mass": float(pt["tail_mass"].mean()),
                  "tokens": n, "per_token": pt}
    return out


@dataclass
class Measured:
    """One teacher at every k: bytes per token and truncation."""

    label: str
    vocab: int
    sequences: int
    response_tokens: int           # in the artifact
    bytes: dict[int, float] = field(default_factory=dict)
    trunc: dict[int, dict] = field(default_factory=dict)

    @property
    def entropy(self) -> float:
        return float(self.trunc[KS[0]]["per_token"]["entropy"].mean())

    def bins(self, k: int = BIN_K) -> list[tuple[str, int, float, float | None, float | None]]:
        """(bin name, tokens, share of tokens, mean tail mass, mean KL) per entropy bin."""
        pt = self.trunc[k]["per_token"]
        edges = (0.0, *ENTROPY_BINS, float("inf"))
        out = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            name = f"< {hi:g}" if lo == 0 else (f">= {lo:g}" if hi == float("inf") else f"{lo:g}-{hi:g}")
            sel = (pt["entropy"] >= lo) & (pt["entropy"] < hi)
            n = int(sel.sum())
            out.append((name, n, n / len(sel), float(pt["tail_mass"][sel].mean()) if n else None,
                        float(pt["kl"][sel].mean()) if n else None))
        return out


def measure(label: str, problems: Path, sequences: Path, teacher: Path, student: Path, d: Path, batch: int,
            rows: int | None = None) -> Measured:
    """The real stage at every k over `sequences`, and truncation on its first `rows` rows (all when None)."""
    from bench.distill import problem_ids
    from stages import models

    d.mkdir(parents=True, exist_ok=True)
    vocab = len(models.load_tokenizer(str(teacher)))
    m = Measured(label, vocab, 0, 0)
    t = time.perf_counter()
    for k in KS:
        m.bytes[k], m.response_tokens, _ = run_stage(problems, sequences, teacher, k, d / f"tl-k{k}", batch)
    t1 = time.perf_counter()
    m.trunc = truncation(teacher, student, {k: d / f"tl-k{k}" for k in KS}, rows)
    log(f"storage: {label}: teacher-logits at k = {', '.join(map(str, KS))} {t1 - t:.0f} s, truncation {time.perf_counter() - t1:.0f} s")
    m.sequences = len(problem_ids(d / f"tl-k{KS[0]}"))
    return m


def sample(problems: Path, teacher: Path, out: Path, max_new_tokens: int, batch: int, samples: int = 1) -> Path:
    """The teacher's own responses: `samples` per problem, temperature 1, by the real rollout stage."""
    from stages import rollout

    t = time.perf_counter()
    path = Path(rollout.run(rollout.RolloutConfig(
        problems=problems, model=str(teacher), out=out, samples=samples, temperature=1.0, top_p=1.0,
        max_new_tokens=max_new_tokens, seed=0, batch_size=batch, overwrite=True)))
    log(f"storage: sampled {teacher}'s responses in {time.perf_counter() - t:.0f} s")
    return path


def english(ctx: Context, d: Path) -> tuple[Measured, text_teacher.TextTeacher]:
    from stages import models, prompts

    recipe = text_teacher.QUICK if ctx.quick else text_teacher.FULL
    tt = text_teacher.english_teacher(recipe, log=log)
    tokenizer = models.load_tokenizer(str(tt.teacher))
    n = ENGLISH_SEQUENCES[ctx.quick]
    # The prompt re-encodes to about prompt_tokens tokens; leave the rest of the context to the response.
    slack = 4
    texts = [p for p, ids in zip(tt.prompts, prompts.encode_prompts(tokenizer, [{"prompt": p} for p in tt.prompts]))
             if len(ids) <= recipe.prompt_tokens + slack][:n]
    d.mkdir(parents=True, exist_ok=True)
    workload.write_problems(d / "problems.parquet", [f"e{i:04d}" for i in range(len(texts))], texts)
    seqs = sample(d / "problems.parquet", tt.teacher, d / "rollouts", recipe.context - recipe.prompt_tokens - slack, 16)
    return measure(ENGLISH, d / "problems.parquet", seqs, tt.teacher, tt.student, d, batch=16), tt


def quickstart(ctx: Context, d: Path) -> tuple[Measured, dict]:
    sys.path.insert(0, str(ROOT / "examples"))
    import task
    import train_tiny

    teacher, record = text_teacher.quickstart_teacher(ctx.quick)
    n = QUICKSTART_PROBLEMS[ctx.quick]
    paths = task.write_splits(d / "data", seed=0, train=n, test_per_digit=1, retain=1)
    r = train_tiny.STUDENT
    student = workload.tiny_model.build(d / "student", arch="qwen2", hidden=r.hidden, layers=r.layers, heads=r.heads,
                                        seed=0, max_positions=r.max_positions, tokenizer=train_tiny.build_tokenizer())
    seqs = sample(paths["train"], teacher, d / "rollouts", train_tiny.MAX_NEW_TOKENS, 128)
    return measure(QUICKSTART, paths["train"], seqs, teacher, student, d, batch=128), record


def fmt3(values: list[float], spec: str) -> str:
    return " / ".join(format(v, spec) for v in values)


def shown(path: Path) -> str:
    """path with the home directory as ~."""
    home = str(Path.home())
    return "~" + str(path)[len(home):] if str(path).startswith(home + "/") else str(path)


def num(v: float, places: int) -> str:
    """Fixed point, or two significant digits where fixed point would print only zeros."""
    return f"{v:.1e}" if 0 < abs(v) < 0.5 * 10**-places else f"{v:.{places}f}"


def nums(values: list[float], places: int) -> str:
    return " / ".join(num(v, places) for v in values)


def section(ctx: Context) -> Section:
    sec = Section("storage", "2. teacher-logit storage")
    d = ctx.work / "storage"
    d.mkdir(parents=True, exist_ok=True)
    background = None if ctx.quick else text_teacher.start_quickstart_teacher(log=log)  # trains beside the rest, if not cached

    t = time.perf_counter()
    w = workload.main(ctx)
    log(f"storage: workload built in {time.perf_counter() - t:.0f} s")
    synthetic = measure(SYNTHETIC, w.problems, w.sequences, w.teacher, w.student, d / "synthetic", w.size.batch,
                        rows=max(2, w.size.sequences // 4))
    eng, tt = english(ctx, d / "english")
    if background is not None:
        text_teacher.wait_quickstart_teacher(background, log=log)
    qs, qs_record = quickstart(ctx, d / "quickstart")

    ks = " / ".join(str(k) for k in KS)
    for m in (eng, qs, synthetic):
        goals = m is eng
        t = {k: m.trunc[k] for k in KS}
        sec.add(f"{m.label}: teacher entropy, mean over response tokens, nats", f"{m.entropy:.3f}", runs="1")
        sec.add(f"{m.label}: bytes per response token on disk, k = {ks}", fmt3([m.bytes[k] for k in KS], ",.1f"), runs="1",
                goal=f"<= {GOAL_BYTES} B/token at k = 32" if goals else "", met=(m.bytes[32] <= GOAL_BYTES) if goals else None)
        if goals:
            sec.add(f"  {m.label}: bytes vs dense float16 at V = {m.vocab:,} ({2 * m.vocab:,} B), k = {ks}",
                    fmt3([m.bytes[k] / (2 * m.vocab) for k in KS], ".2%"), runs="1")
            sec.add(f"  {m.label}: bytes vs dense float16 at Qwen's V = {QWEN_VOCAB:,} ({2 * QWEN_VOCAB:,} B), k = {ks}",
                    fmt3([m.bytes[k] / (2 * QWEN_VOCAB) for k in KS], ".3%"), runs="1")
        sec.add(f"{m.label}: tail mass (teacher probability outside the top-k), k = {ks}",
                nums([t[k]["tail_mass"] for k in KS], 4), runs="1")
        goal = f"< {GOAL_ERROR} nats at k = 32" if goals else ""
        sec.add(f"{m.label}: KL(full teacher || top-k + uniform tail), nats/token, k = {ks}",
                nums([t[k]["kl_uniform_tail"] for k in KS], 5), runs="1",
                goal=goal, met=(t[32]["kl_uniform_tail"] < GOAL_ERROR) if goals else None)
        sec.add(f"{m.label}: loss error abs(fkl on k+1 buckets - full fkl), nats/token, k = {ks}",
                nums([t[k]["loss_error"] for k in KS], 5), runs="1",
                goal=goal, met=(t[32]["loss_error"] < GOAL_ERROR) if goals else None)
        if goals:
            for name, n, share, tail, kl in m.bins():
                value = f"{n:,} / {share:.2%} / " + (f"{num(tail, 4)} / {num(kl, 5)}" if tail is not None else "- / -")
                sec.add(f"  {m.label}, k = {BIN_K}, tokens of entropy {name} nats: tokens / share / tail mass / KL",
                        value, runs="1")

    def bins_note(m: Measured) -> str:
        return "; ".join(f"{name}: {n:,} tokens ({share:.2%})" + (f", tail {num(tail, 4)}, KL {num(kl, 5)}" if n else "")
                         for name, n, share, tail, kl in m.bins())

    def versus(a: Measured, b: Measured, least: int = 20) -> str:
        """How a's per-bin KL and tail mass compare with b's, in the bins where both have `least` tokens or more."""
        pairs = [(name, ka / kb, ta / tb) for (name, na, _, ta, ka), (_, nb, _, tb, kb) in zip(a.bins(), b.bins())
                 if na >= least and nb >= least and kb > 0 and tb > 0]
        if not pairs:
            return f"no entropy bin has {least} tokens of both the {a.label} and the {b.label}"
        verb = ("loses more than" if all(r > 1 for _, r, _ in pairs) else
                "loses less than" if all(r < 1 for _, r, _ in pairs) else "differs from")
        ratios = "; ".join(f"{name} nats: KL x {rk:.1f}, tail mass x {rt:.1f}" for name, rk, rt in pairs)
        return (f"at equal entropy the {a.label} {verb} the {b.label} ({a.label.split(' (')[0]} / "
                f"{b.label.split(' (')[0]}, in the bins with {least} tokens or more of both: {ratios})")

    rec, recipe = tt.record, tt.record["settings"]["recipe"]
    corpus = rec["settings"]["corpus"]
    eng_low = sum(n for name, n, *_ in eng.bins() if name in ("< 0.5", "0.5-1", "1-2"))
    sec.notes.append(
        "the real stage per teacher at k = 8, 32, 64, parquet zstd as written (ids int32, top-k log-probs float16, "
        "tail and target float32, the student prompt once per row); deterministic (seeded sampling, cached "
        "teachers), so one run. DistillKit's compressed top-k format is about 114-300 B/token for reference."
    )
    sec.notes.append(
        f"English-text teacher (the goals are judged on it: the one trained teacher with natural text and a "
        f"realistic vocabulary): Qwen2 {rec['parameters'] / 1e6:.1f} M parameters, byte-level BPE V = {eng.vocab:,}"
        + (f" (asked for {recipe['vocab']:,}: the training split has no more merges)" if eng.vocab < recipe["vocab"] else "")
        + ", "
        f"trained from scratch on {rec['documents']:,} documents ({rec['characters'] / 1e6:.2f} MB, "
        f"{rec['train_tokens']:,} training tokens) of CPython {corpus['python']}'s English documentation"
        + (f" (pydoc help topics and stdlib docstrings) and NumPy {corpus['numpy']}'s docstrings" if "numpy" in corpus
           else " (the pydoc help topics)")
        + f", bench/text_teacher.py: {recipe['steps']} steps of {recipe['batch']} x {recipe['context']} tokens in "
        f"{rec['train_seconds']:.0f} s on 1 thread, once (cached in {shown(tt.dir)}); train loss "
        f"{rec['train_loss_last_10pct']:.2f} (mean of the last 10 % of steps), held-out loss {rec['held_out_loss']:.2f} "
        f"nats/token. Measured on its own temperature-1 responses to {eng.sequences} held-out paragraph openings, "
        f"{eng.response_tokens:,} response tokens. Loss-error student: its own checkpoint at step "
        f"{recipe['student_step']} (held-out loss {rec['student_held_out_loss']:.2f}). It is a tiny LM that saw "
        f"{recipe['steps'] * recipe['batch'] * recipe['context']:,} tokens: mean entropy {eng.entropy:.2f} nats on "
        f"its own samples, {eng_low:,} of {eng.response_tokens:,} tokens below 2 nats, so its figures are those of a "
        f"high-entropy teacher, not of a strong model on its own outputs; read the per-entropy rows to map them to "
        f"another teacher."
    )
    qs_seconds = qs_record.get("train_seconds")
    sec.notes.append(
        f"train_tiny teacher: examples/train_tiny.py's default {'--quick ' if ctx.quick else ''}teacher "
        f"({qs_record['steps_run']} steps{f', {qs_seconds:.0f} s once, cached' if qs_seconds is not None else ''}"
        f"{'; not a trained teacher' if ctx.quick else ''}), V = {qs.vocab} characters, so k = 8 / 32 / 64 is "
        f"{fmt3([k / qs.vocab for k in KS], '.0%')} of the vocabulary; measured on its own temperature-1 answers to "
        f"{qs.sequences} training problems of examples/task.py, {qs.response_tokens:,} response tokens (answer digits "
        f"and end of sequence, so the prompt stored per row weighs on bytes per token). Loss-error student: "
        f"random-init, train_tiny's student size. By entropy at k = {BIN_K}: {bins_note(qs)}."
    )
    sec.notes.append(
        f"synthetic teacher: bench/workload.py's random teacher, its output layer scaled to a mean entropy of "
        f"{workload.TEACHER_ENTROPY} nats on 4 sequences ({synthetic.entropy:.2f} on the {synthetic.trunc[32]['tokens']:,} "
        f"tokens measured: the first {synthetic.trunc[32]['tokens'] // w.size.response} of {synthetic.sequences} "
        f"sequences x {w.size.response} response tokens of the workload's generated text, not the teacher's own "
        f"samples), V = {synthetic.vocab:,}. Kept because earlier reports quote it. Loss-error student: the "
        f"workload's random-init student. By entropy at k = {BIN_K}: {bins_note(synthetic)}. So {versus(eng, synthetic)}."
    )
    sec.notes.append(
        "the loss error is the tail mass times KL(teacher || student) within the tail (the k+1-bucket fkl drops "
        "exactly that term), so it shrinks as the student learns the teacher's tail; for a random-init student it "
        "is about the uniform-tail KL."
    )
    return sec
