"""Section `sparse`: the teacher kept as its top-k, as tokens drawn from it, or both, at equal bytes.

    python -m bench --only sparse [--quick]

`paced teacher-logits --logits topk|sampled|hybrid` (stages/teacher_logits.py; draws by the
default `--draw-scheme systematic`, and sampled also by `multinomial`, the paper's independent
draws, as a fourth representation) on two teachers:
the English-text teacher of section 2 (bench/text_teacher.py, trained once and cached; its
`--quick` recipe in --quick) on its own temperature-1 responses, and the synthetic teacher of
bench/workload.py (random, output layer scaled to 1.5 nats of entropy on the workload's text),
always at the workload's quick size (V = 8,000), on its own temperature-1 responses to the
workload's kind of prompts. Each teacher answers training prompts and other, held-out ones.

1. Bytes per response token of the real artifact (its part files over the response tokens)
   for a grid of settings of each representation; at each budget (about 90 and 170 B/token)
   the setting of each representation closest to it is used below.
2. The gradient at the output layer of the student before training, on the first `GRAD_SEQS`
   training sequences (distill's per-sequence coefficients), against the dense gradient (the
   full-vocabulary forward KL): cosine and relative norm error of the mean over `SEEDS` draw
   seeds (the bias; top-k is deterministic), and the mean relative error of one seed's gradient
   (bias and variance together: what one training step sees).
3. Short distillations of the same student from each representation and from dense teacher
   log-probs (computed on the fly from the teacher), through distill's own collate and
   `micro_batch_loss`, AdamW with distill's default schedule (cosine to 0), the same steps,
   batches and order for all, in two regimes of equal steps and batch:
   - the primary one, named before it was run: **one epoch** over every training sequence
     (distill's default, `--epochs 1`: each stored draw is seen once);
   - `EPOCHS_FEW` epochs over a tenth of the sequences (where a sampled representation's draws
     are fixed noise the student can fit), at the lower budget only.
   Measured: the student's forward KL to the full teacher per held-out token, and its expected
   calibration error (top-1 confidence against the teacher's sampled next token, 15 bins).
   The goal (within 5 % of the dense student at about 90 B/token) is judged on the primary regime.
"""

from __future__ import annotations

import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from bench import text_teacher, workload
from bench.common import Context, Section

BUDGETS = (90, 170)
DRAWS = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
GRID = {
    "topk": [{"top_k": k} for k in (4, 8, 12, 16, 24, 32, 48, 64, 96)],
    "sampled": [{"draws": s} for s in DRAWS],
    "sampled, multinomial": [{"draws": s, "draw_scheme": "multinomial"} for s in DRAWS],
    "hybrid": [{"top_k": k, "draws": s} for k, s in ((2, 4), (4, 8), (4, 12), (8, 12), (8, 16), (12, 24), (16, 24), (16, 32),
                                                      (24, 48), (32, 64), (32, 128), (48, 96))],
}
SEEDS = 6
GRAD_SEQS = 8
LR = 1e-3
ECE_BINS = 15
EPOCHS_FEW = 10


@dataclass(frozen=True)
class Sizes:
    prompts: int   # training prompts; each has `samples` teacher responses (the training sequences)
    samples: int
    held: int      # held-out prompts, one response each
    batch: int     # problems per optimizer step (`samples` sequences each)

    @property
    def steps(self) -> int:  # one epoch over every problem
        return -(-self.prompts // self.batch)

    @property
    def few(self) -> int:  # problems of the many-epoch regime: the same steps are EPOCHS_FEW epochs of them
        return self.prompts // EPOCHS_FEW


SIZES = (Sizes(prompts=160, samples=3, held=16, batch=3), Sizes(prompts=20, samples=2, held=8, batch=2))  # full, quick


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Teacher:
    label: str
    teacher: Path
    student: Path
    train_problems: Path
    train: Path            # rollouts: the sequences distilled on
    held_problems: Path
    held: Path             # rollouts: held-out sequences
    vocab: int
    record: dict | None = None  # a trained English-text teacher's (bench.text_teacher's marker)


def english(ctx: Context, d: Path, size: Sizes, recipe: text_teacher.TextRecipe | None = None) -> Teacher:
    """The English-text teacher of `recipe` (default: section 2's, FULL or QUICK) and its samples."""
    from bench.storage import sample
    from stages import models, prompts

    recipe = recipe or (text_teacher.QUICK if ctx.quick else text_teacher.FULL)
    tt = text_teacher.english_teacher(recipe, log=log)
    tokenizer = models.load_tokenizer(str(tt.teacher))
    slack = 4
    texts = [p for p, ids in zip(tt.prompts, prompts.encode_prompts(tokenizer, [{"prompt": p} for p in tt.prompts]))
             if len(ids) <= recipe.prompt_tokens + slack]
    if len(texts) < size.prompts + size.held:
        raise SystemExit(f"sparse: the English-text teacher has {len(texts)} prompts, {size.prompts + size.held} needed")
    train_texts, held_texts = texts[: size.prompts], texts[-size.held:]
    d.mkdir(parents=True, exist_ok=True)
    workload.write_problems(d / "train.parquet", [f"e{i:04d}" for i in range(size.prompts)], train_texts)
    workload.write_problems(d / "held.parquet", [f"h{i:04d}" for i in range(size.held)], held_texts)
    new = recipe.context - recipe.prompt_tokens - slack
    train = sample(d / "train.parquet", tt.teacher, d / "train_rollouts", new, 16, samples=size.samples)
    held = sample(d / "held.parquet", tt.teacher, d / "held_rollouts", new, 16)
    label = "English-text teacher (trained)" if recipe.name in ("full", "quick") else \
        f"English-text teacher (trained {recipe.steps:,} steps)"
    return Teacher(label, tt.teacher, tt.student, d / "train.parquet", train, d / "held.parquet", held, len(tokenizer),
                   tt.record)


def synthetic(ctx: Context, d: Path, size: Sizes) -> Teacher:
    from bench.storage import sample

    work = workload.QUICK
    w = workload.build(work, ctx.work)
    d.mkdir(parents=True, exist_ok=True)
    gen = workload.TextGen(seed=7)
    texts = gen.sentences(size.prompts + size.held, words=(8, 14))
    workload.write_problems(d / "train.parquet", [f"s{i:04d}" for i in range(size.prompts)], texts[: size.prompts])
    workload.write_problems(d / "held.parquet", [f"t{i:04d}" for i in range(size.held)], texts[size.prompts:])
    train = sample(d / "train.parquet", w.teacher, d / "train_rollouts", work.response, 16, samples=size.samples)
    held = sample(d / "held.parquet", w.teacher, d / "held_rollouts", work.response, 16)
    return Teacher(f"synthetic teacher (random, entropy scaled to {workload.TEACHER_ENTROPY} nats, V = {w.vocab:,})",
                   w.teacher, w.student, d / "train.parquet", train, d / "held.parquet", held, w.vocab)


def artifact(t: Teacher, rep: str, cfg: dict, out: Path, seed: int = 0, weights: Path | None = None) -> float:
    """Write the real artifact (of the problems `weights` gives weight > 0; all without it); its
    bytes per response token."""
    import polars as pl

    from stages import teacher_logits as tl

    tl.run(tl.TeacherLogitsConfig(
        problems=t.train_problems, sequences=t.train, teacher=str(t.teacher), out=out, logits=rep.split(",")[0],
        top_k=cfg.get("top_k", 32), draws=cfg.get("draws", 12), draw_scheme=cfg.get("draw_scheme", "systematic"),
        seed=seed, batch_size=16, weights=weights, overwrite=True))
    parts = sorted(out.glob("part-*.parquet"))
    tokens = int(pl.read_parquet(parts, columns=["token_ids"])["token_ids"].list.len().sum())
    return sum(p.stat().st_size for p in parts) / tokens


def slug(rep: str) -> str:
    """A representation's name as a file name ("sampled, multinomial" -> "sampled-multinomial")."""
    return rep.replace(", ", "-")


def describe(rep: str, cfg: dict) -> str:
    scheme = cfg.get("draw_scheme", "systematic")
    return {"topk": f"top-k {cfg.get('top_k')}", "sampled": f"sampled, {cfg.get('draws')} {scheme} draws",
            "sampled, multinomial": f"sampled, {cfg.get('draws')} {scheme} draws",
            "hybrid": f"hybrid, top-{cfg.get('top_k')} + {cfg.get('draws')} {scheme} draws", "dense": "dense"}[rep]


def load(tl_dir: Path, cache: Path, keep: int | None = None):
    """distill's training data from an artifact (its first `keep` problems only, if given)."""
    import schemas
    from bench.distill import problem_ids, write_uniform_weights
    from stages.training import data as train_data

    path = write_uniform_weights(problem_ids(tl_dir), cache.with_suffix(".w.parquet"), keep=keep)
    weights = schemas.read(path, schemas.WEIGHTS, option="--weights")
    return train_data.load_data(tl_dir, weights, cache)[0]


def held_set(t: Teacher, d: Path):
    """The held-out teacher samples as distill's data, scored as a top-1 artifact (only their
    tokens are used)."""
    from stages import teacher_logits as tl

    tl.run(tl.TeacherLogitsConfig(problems=t.held_problems, sequences=t.held, teacher=str(t.teacher), out=d / "held-tl",
                                  top_k=1, batch_size=16, overwrite=True))
    return load(d / "held-tl", d / "held.arrow")


def response_tokens(data) -> int:
    return int(sum(len(x) for x in data.table["token_ids"].to_pylist()))


def grid_bytes(t: Teacher, grid: dict, d: Path, few: Path) -> dict:
    """Bytes per response token of every setting of `grid` (representation -> settings), keyed
    (representation, index), each written as a real artifact of the problems `few` keeps."""
    return {(rep, i): artifact(t, rep, cfg, d / f"grid-{slug(rep)}-{i}", weights=few)
            for rep, cfgs in grid.items() for i, cfg in enumerate(cfgs)}


def closest(grid: dict, sizes: dict, rep: str, budget: float) -> dict:
    """The setting of representation `rep` whose bytes per token (`grid_bytes`) is nearest `budget`."""
    return grid[rep][min(range(len(grid[rep])), key=lambda i: abs(sizes[(rep, i)] - budget))]


def few_weights(t: Teacher, d: Path, keep: int) -> Path:
    """Weight 1 for the first `keep` training problems, 0 (never scored) for the rest."""
    from bench.distill import problem_ids, write_uniform_weights

    return write_uniform_weights(problem_ids(t.train_problems), d / f"first-{keep}.weights.parquet", keep=keep)


def dense_batch(teacher, batch: dict) -> dict:
    """`batch` with the teacher's full log-softmax as its buckets (k = V, empty tail)."""
    import torch

    with torch.inference_mode():
        hidden = teacher.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention"]).last_hidden_state
        idx = batch["gather"].unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        lp = torch.log_softmax(teacher.get_output_embeddings()(torch.gather(hidden, 1, idx)).float(), -1)  # [B, R, V]
    V = lp.shape[-1]
    ids = torch.arange(V).expand(*lp.shape[:2], V)
    return batch | {"topk_ids": ids, "topk_lp": lp.clone(), "tail": torch.full(lp.shape[:2], -1e4),
                    "fkl_shift": torch.zeros(lp.shape[:2]), "has_draws": torch.zeros(lp.shape[:2], dtype=torch.bool)}


def head_gradient(student, batch: dict, coef):
    """d(sum_s coef_s sum_t fkl_{s,t}) / d(output layer weight), as distill computes the loss."""
    from stages.training import forward

    student.zero_grad(set_to_none=True)
    terms = forward.micro_batch_loss(student, batch, coef, loss="fkl", mu=0.5, chunk_size=1024, autocast=nullcontext)
    terms["loss"].backward()
    return student.get_output_embeddings().weight.grad.detach().clone()


def gradients(t: Teacher, chosen: dict, d: Path, few: Path, keep: int) -> dict:
    """Per (budget, representation): cosine and relative error of the mean gradient over the
    draw seeds against the dense one, and the mean relative error of one seed's."""
    import torch

    from stages import models
    from stages.training import data as train_data

    student = models.load_model(str(t.student), device="cpu", dtype="float32")
    teacher = models.load_model(str(t.teacher), device="cpu", dtype="float32")
    ref = load(chosen[BUDGETS[0]]["topk"][2], d / "grad-ref.arrow", keep)  # the first `keep` problems, as `few`
    rows = list(range(min(GRAD_SEQS, ref.table.num_rows)))
    n = len(rows)
    coef = torch.tensor([1.0 / (n * len(ref.table["token_ids"][r])) for r in rows])
    dense = head_gradient(student, dense_batch(teacher, train_data.collate(ref, rows, "cpu")), coef)
    out = {}
    for budget, reps in chosen.items():
        for rep, (cfg, _, path) in reps.items():
            seeds = 1 if rep == "topk" else SEEDS
            grads = []
            for s in range(seeds):
                p = path if s == 0 else d / f"grad-{slug(rep)}-{budget}-seed{s}"
                if s:  # other draw seeds: of the first problems only (draws are seeded per sequence)
                    artifact(t, rep, cfg, p, seed=s, weights=few)
                data = load(p, d / f"grad-{slug(rep)}-{budget}-{s}.arrow", keep)
                assert data.table["problem_id"].to_pylist()[:n] == ref.table["problem_id"].to_pylist()[:n]
                grads.append(head_gradient(student, train_data.collate(data, rows, "cpu"), coef))
            mean = torch.stack(grads).mean(0)
            rel = lambda g: float((g.double() - dense.double()).norm() / dense.double().norm())  # noqa: E731
            cos = float(torch.nn.functional.cosine_similarity(mean.flatten().double(), dense.flatten().double(), dim=0))
            out[(budget, rep)] = {"cos": cos, "bias": rel(mean), "one": sum(rel(g) for g in grads) / len(grads), "seeds": seeds}
    return out


def train(t: Teacher, data, rep: str, steps: int, batch_size: int, teacher=None, order: int = 0):
    """The student after `steps` steps on `data` (or on dense teacher log-probs for rep 'dense'),
    with distill's default learning-rate schedule (cosine decay to 0), the problems in distill's
    order of seed `order`."""
    import torch

    from stages import models
    from stages.training import data as train_data, forward, schedules

    torch.manual_seed(0)
    student = models.load_model(str(t.student), device="cpu", dtype="float32")
    student.train()
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=LR, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedules.lr_lambda(steps, 0, "cosine"))
    for step in range(1, steps + 1):
        _, names = train_data.step_problems(data, order, batch_size, step)
        opt.zero_grad(set_to_none=True)
        for rows, coefs in train_data.step_plan(data, names, batch_size):
            batch = train_data.collate(data, rows, "cpu")
            if rep == "dense":
                batch = dense_batch(teacher, batch)
            terms = forward.micro_batch_loss(student, batch, torch.tensor(coefs), loss="fkl", mu=0.5, chunk_size=1024,
                                             autocast=nullcontext)
            terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        scheduler.step()
    return student.eval()


def held_out(t: Teacher, held, students: dict, teacher) -> dict:
    """Per student: mean forward KL to the full teacher per held-out token, and ECE."""
    import numpy as np
    import torch

    from stages.training import data as train_data

    def logp(model, b):
        hidden = model.get_decoder()(input_ids=b["input_ids"], attention_mask=b["attention"]).last_hidden_state
        idx = b["gather"].unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return torch.log_softmax(model.get_output_embeddings()(torch.gather(hidden, 1, idx)).double(), -1)[b["mask"]]

    kl = {name: [] for name in students}
    conf = {name: [] for name in students}
    hit = {name: [] for name in students}
    with torch.inference_mode():
        for r in range(held.table.num_rows):
            b = train_data.collate(held, [r], "cpu")
            lp_t = logp(teacher, b)
            target = torch.tensor(held.table["token_ids"][r].as_py())
            for name, model in students.items():
                lp_s = logp(model, b)
                kl[name].append((lp_t.exp() * (lp_t - lp_s)).sum(-1).numpy())
                top = lp_s.max(-1)
                conf[name].append(top.values.exp().numpy())
                hit[name].append((top.indices == target).numpy())
    out = {}
    for name in students:
        c, h = np.concatenate(conf[name]), np.concatenate(hit[name]).astype(float)
        edges = np.linspace(0, 1, ECE_BINS + 1)
        which = np.clip(np.digitize(c, edges[1:-1]), 0, ECE_BINS - 1)
        ece = sum(abs(c[which == i].mean() - h[which == i].mean()) * (which == i).mean() for i in range(ECE_BINS) if (which == i).any())
        out[name] = {"kl": float(np.concatenate(kl[name]).mean()), "ece": float(ece), "tokens": len(c)}
    return out


def measure(ctx: Context, t: Teacher, d: Path, size: Sizes) -> dict:
    from stages import models, teacher_logits

    t0 = time.perf_counter()
    few = few_weights(t, d, size.few)
    grid = grid_bytes(t, GRID, d, few)  # bytes per token of every setting, on the first problems' sequences
    chosen = {}  # per budget and representation: (setting, bytes per token of the whole artifact, its path)
    for b in BUDGETS:
        chosen[b] = {}
        for rep in GRID:
            cfg = closest(GRID, grid, rep, b)
            path = d / f"{slug(rep)}-{b}"
            chosen[b][rep] = (cfg, artifact(t, rep, cfg, path), path)
    log(f"sparse: {t.label}: {len(grid)} grid artifacts and {len(BUDGETS) * len(GRID)} whole ones in "
        f"{time.perf_counter() - t0:.0f} s")
    grads = gradients(t, chosen, d, few, size.few)
    log(f"sparse: {t.label}: gradients done at {time.perf_counter() - t0:.0f} s")
    teacher = models.load_model(str(t.teacher), device="cpu", dtype="float32").eval()
    ref_dir = chosen[BUDGETS[0]]["topk"][2]
    students = {"student before distillation": models.load_model(str(t.student), device="cpu", dtype="float32").eval()}
    regimes = {"one": None, "few": size.few}
    refs = {regime: load(ref_dir, d / f"train-ref-{regime}.arrow", keep) for regime, keep in regimes.items()}
    for regime, keep in regimes.items():
        students[("dense", regime)] = train(t, refs[regime], "dense", size.steps, size.batch, teacher)
        for b in BUDGETS if regime == "one" else BUDGETS[:1]:
            for rep, (cfg, _, path) in chosen[b].items():
                data = load(path, d / f"train-{slug(rep)}-{b}-{regime}.arrow", keep)
                students[(b, rep, regime)] = train(t, data, rep, size.steps, size.batch)
        log(f"sparse: {t.label}: distillations of regime {regime!r} done at {time.perf_counter() - t0:.0f} s")
    evals = held_out(t, held_set(t, d), students, teacher)
    entropy = teacher_logits.entropy_profile(sorted(ref_dir.glob("part-*.parquet")))["entropy"]
    log(f"sparse: {t.label}: done in {time.perf_counter() - t0:.0f} s")
    return {"chosen": chosen, "grads": grads, "evals": evals, "entropy": entropy,
            "sequences": {r: data.table.num_rows for r, data in refs.items()},
            "train_tokens": {r: response_tokens(data) for r, data in refs.items()}}


def section(ctx: Context) -> Section:
    sec = Section("sparse", "10. sparse teacher: top-k, drawn, hybrid")
    size = SIZES[ctx.quick]
    d = ctx.work / "sparse"
    teachers = [english(ctx, d / "english", size), synthetic(ctx, d / "synthetic", size)]
    for t in teachers:
        m = measure(ctx, t, d / ("english" if t is teachers[0] else "synthetic"), size)
        ev = m["evals"]
        one = f"one epoch over {m['sequences']['one']} sequences"
        few = f"{EPOCHS_FEW} epochs over {m['sequences']['few']} sequences"
        sec.add(f"{t.label}: teacher entropy, mean over training tokens, nats", f"{m['entropy']:.2f}", runs="1")
        base = ev["student before distillation"]
        dense = {r: ev[("dense", r)] for r in ("one", "few")}
        sec.add(f"{t.label}: held-out KL(teacher ‖ student) / ECE: before distillation; after, dense teacher, {one}; "
                f"{few}", f"{base['kl']:.4f} / {base['ece']:.4f}; {dense['one']['kl']:.4f} / {dense['one']['ece']:.4f}; "
                f"{dense['few']['kl']:.4f} / {dense['few']['ece']:.4f}", runs="1")

        def best_row(b: int, regime: str, label: str, goal: bool) -> None:
            best = min(m["chosen"][b], key=lambda rep: ev[(b, rep, regime)]["kl"])
            gap = ev[(b, best, regime)]["kl"] / dense[regime]["kl"] - 1
            sec.add(f"{t.label}, about {b} B/token, {label}: best representation, held-out KL vs the dense-teacher student",
                    f"{best}: {gap:+.1%}", runs="1", goal="within +5 % at about 90 B/token" if goal else "",
                    met=(gap <= 0.05) if goal else None)

        for b in BUDGETS:
            for rep, (cfg, size_b, _) in m["chosen"][b].items():
                g = m["grads"][(b, rep)]
                e = ev[(b, rep, "one")]
                sec.add(f"{t.label}, about {b} B/token: {describe(rep, cfg)} ({size_b:.0f} B/token): gradient at init "
                        f"cos / bias / one draw's error (rel. norm, {g['seeds']} seed{'s' if g['seeds'] > 1 else ''})",
                        f"{g['cos']:.4f} / {g['bias']:.4f} / {g['one']:.4f}", runs=str(g["seeds"]))
                sec.add(f"{t.label}, about {b} B/token: {describe(rep, cfg)}: held-out KL / ECE after {one} "
                        f"(KL vs dense)", f"{e['kl']:.4f} / {e['ece']:.4f} ({e['kl'] / dense['one']['kl'] - 1:+.1%})", runs="1")
            best_row(b, "one", one, goal=b == BUDGETS[0])
        b = BUDGETS[0]
        for rep, (cfg, _, _) in m["chosen"][b].items():
            e = ev[(b, rep, "few")]
            sec.add(f"{t.label}, about {b} B/token: {describe(rep, cfg)}: held-out KL / ECE after {few} (KL vs dense)",
                    f"{e['kl']:.4f} / {e['ece']:.4f} ({e['kl'] / dense['few']['kl'] - 1:+.1%})", runs="1")
        best_row(b, "few", few, goal=False)
        sec.notes.append(
            f"{t.label}: {size.prompts} training prompts x {size.samples} teacher samples; {one} "
            f"({m['train_tokens']['one']:,} response tokens) and {few} (the first {size.few} prompts' sequences, "
            f"{m['train_tokens']['few']:,} tokens), each {size.steps} steps of {size.batch} problems "
            f"({size.batch * size.samples} sequences), AdamW lr {LR:g} with distill's cosine decay to 0, weight decay "
            f"0.1, clip 1.0; the same student, order and steps for every representation; held-out: "
            f"{dense['one']['tokens']:,} tokens of the teacher's own samples on other prompts.")
    sec.notes.append(
        "bytes: the real artifact's part files (parquet zstd) over its response tokens; each representation's setting "
        "is the one of its grid closest to the budget on the first prompts' sequences, and the bytes shown are those "
        "of its whole artifact; a drawn id costs 8 B (id, float32 mass) against a top-k id's 6 B (id, float16 "
        "log-prob), and draws of one token repeat, so S draws store fewer ids than S. Gradient at the output layer of "
        "the untrained student, distill's coefficients, on the first training sequences: bias = the mean over draw "
        "seeds against the dense gradient (top-k: one seed, deterministic); one draw's error: what a single training "
        "step sees. Regimes: one epoch is distill's default (each stored draw is seen once, so draw noise averages "
        "over steps like batch noise); many epochs over few sequences show what repeated, fixed draws cost.")
    return sec


STEP_SAMPLES = ((3, 6, 12, 24), (2, 4))  # teacher samples per prompt (full, quick): sequences per step = batch x samples
STEP_DRAWS = (48, 12)                     # the primary cell's draws at about 90 B/token (full), and --quick's


def section_steps(ctx: Context) -> Section:
    """Section `sparse-steps`: does the drawn student's gap to dense shrink with the sequences per step?

    Premise, from section 10: at about 90 B/token the student of 48 systematic draws is about 12 %
    further from the teacher than the dense-logit one after one epoch of 9 sequences per step, and
    the gap is the draws' noise (the estimate is unbiased). If so, averaging more sequences in each
    step must shrink it, as it does for any unbiased noise, while a bias would not move. A real
    distillation's step holds hundreds of times the tokens of this bench's. Primary comparison,
    named before the run: the gap at 4x the sequences per step (3 -> 12 teacher samples per
    prompt, the same prompts, 54 steps, one epoch, so 4x the data) against the gap at 1x.
    Dense and drawn students see the same sequences in the same order at every setting.
    Follow-up, added after the first run (1x, 2x, 4x: +11.7 %, +7.9 %, +6.1 %) and named before
    its result: at 8x (24 samples per prompt, about 8,000 response tokens per step) is the gap
    within the 5 % that section 10's goal asks at 1x? The primary comparison stays 4x against 1x.
    """
    from stages import models

    sec = Section("sparse-steps", "11. sparse teacher: drawn-token noise against sequences per step")
    base = SIZES[ctx.quick]
    draws = STEP_DRAWS[ctx.quick]
    d = ctx.work / "sparse-steps"
    t0 = time.perf_counter()
    teacher = students = held = None
    results = []
    for samples in STEP_SAMPLES[ctx.quick]:
        size = Sizes(prompts=base.prompts, samples=samples, held=base.held, batch=base.batch)
        t = english(ctx, d / f"english-{samples}", size)
        if teacher is None:
            teacher = models.load_model(str(t.teacher), device="cpu", dtype="float32").eval()
            held = held_set(t, d)
            students = {"before": models.load_model(str(t.student), device="cpu", dtype="float32").eval()}
        path = d / f"sampled-{samples}"
        size_b = artifact(t, "sampled", {"draws": draws}, path)
        data = load(path, d / f"train-{samples}.arrow")
        tokens = response_tokens(data)
        students[("dense", samples)] = train(t, data, "dense", size.steps, size.batch, teacher)
        students[("drawn", samples)] = train(t, data, "sampled", size.steps, size.batch)
        results.append((samples, size, size_b, tokens))
        log(f"sparse-steps: {samples} samples per prompt done at {time.perf_counter() - t0:.0f} s")
    ev = held_out(t, held, students, teacher)
    sec.add("English-text teacher: held-out KL(teacher ‖ student) before distillation", f"{ev['before']['kl']:.4f}", runs="1")
    gaps = {}
    for samples, size, size_b, tokens in results:
        dense, drawn = ev[("dense", samples)], ev[("drawn", samples)]
        gaps[samples] = drawn["kl"] / dense["kl"] - 1
        per_step = size.batch * samples
        sec.add(f"English-text teacher, {per_step} sequences per step (about {tokens / size.steps:,.0f} response tokens), "
                f"one epoch of {size.steps} steps: held-out KL / ECE, dense vs {draws} systematic draws ({size_b:.0f} B/token)",
                f"{dense['kl']:.4f} / {dense['ece']:.4f} vs {drawn['kl']:.4f} / {drawn['ece']:.4f} ({gaps[samples]:+.1%})",
                runs="1")
    lo = min(gaps)
    hi = max(s for s in gaps if s <= 4 * lo)  # the primary comparison: 4x (--quick: 2x) against 1x
    sec.add(f"English-text teacher, {draws} systematic draws: gap to dense at {hi // lo}x the sequences per step / at 1x",
            f"{gaps[hi]:+.1%} / {gaps[lo]:+.1%}", runs="1")
    sec.notes.append(
        f"sparse-steps: the English-text teacher of section 10 and its student; {base.prompts} training prompts with "
        f"{', '.join(str(s) for s, *_ in results)} teacher samples each (temperature 1), {base.batch} prompts per step, "
        f"one epoch ({base.steps} steps) with distill's loss and cosine schedule, AdamW lr {LR:g}, the same order for "
        f"dense and drawn; held-out: {ev['before']['tokens']:,} tokens of the teacher's samples on {base.held} other "
        f"prompts. One run per cell (one draw seed, one student seed). {time.perf_counter() - t0:.0f} s.")
    return sec


SEED_REPLICATES = (5, 2)  # replicates of section 12 (full, quick)


def replicate(t: Teacher, d: Path, size: Sizes, reps: dict, n: int, log_name: str) -> dict:
    """The dense student and one student per representation in `reps` (name -> (rep, cfg)) for
    each of `n` replicates: replicate r draws its artifacts with teacher-logits --seed r and
    trains every student on distill's problem order of seed r, from the same checkpoint. Returns
    the held-out evaluation (keys "before", ("dense", r), (name, r)), each artifact's bytes per
    token (keys (name, r)) and the training tokens."""
    from stages import models

    t0 = time.perf_counter()
    teacher = models.load_model(str(t.teacher), device="cpu", dtype="float32").eval()
    held = held_set(t, d)
    students = {"before": models.load_model(str(t.student), device="cpu", dtype="float32").eval()}
    sizes = {}
    for r in range(n):
        for i, (name, (rep, cfg)) in enumerate(reps.items()):
            seed = 0 if rep == "topk" else r  # top-k draws nothing: one artifact serves every replicate
            path = d / f"{slug(rep)}-seed{seed}"
            sizes[(name, r)] = sizes[(name, 0)] if seed != r else artifact(t, rep, cfg, path, seed=seed)
            data = load(path, d / f"train-{slug(rep)}-seed{seed}.arrow")
            if i == 0:
                students[("dense", r)] = train(t, data, "dense", size.steps, size.batch, teacher, order=r)
            students[(name, r)] = train(t, data, rep, size.steps, size.batch, order=r)
        log(f"{log_name}: replicate {r} done at {time.perf_counter() - t0:.0f} s")
    return {"evals": held_out(t, held, students, teacher), "sizes": sizes, "tokens": response_tokens(data)}


def gap_row(sec: Section, label: str, ev: dict, name: str, n: int, bytes_: float, goal: bool, who: str) -> dict:
    """The paired relative gap of student `name` to the dense one over n replicates, as a row; then
    a row of what that gap is in absolute terms: nats/token, and its share of what the dense
    student gained over the epoch (held-out KL before distillation minus after). The share is what
    compares teachers whose students end at different distances from them."""
    from stages.stats import paired

    def interval(st: dict, fmt: str) -> str:
        mean = format(st["mean"], fmt)
        return f"{mean} (one replicate: no interval)" if st["lo"] is None else \
            f"{mean}, 95 % CI [{format(st['lo'], fmt)}, {format(st['hi'], fmt)}]"

    st = paired([ev[(name, r)]["kl"] / ev[("dense", r)]["kl"] - 1 for r in range(n)])
    value, met = interval(st, "+.1%"), None
    if st["lo"] is not None:
        value += f", detectable {st['mde']:.1%}"
        met = st["hi"] <= 0.05
    sec.add(label.format(bytes=round(bytes_), n=n), value, runs=str(n),
            goal="within +5 % (the interval's upper end)" if goal else "", met=met if goal else None)
    before = ev["before"]["kl"]
    gap = paired([ev[(name, r)]["kl"] - ev[("dense", r)]["kl"] for r in range(n)])
    share = paired([(ev[(name, r)]["kl"] - ev[("dense", r)]["kl"]) / (before - ev[("dense", r)]["kl"]) for r in range(n)])
    sec.add(f"{who}: {name} student's held-out KL minus the dense student's, nats/token; that gap as a share of the "
            f"dense student's gain over the epoch (KL before distillation minus after), paired over {n} replicates",
            f"{interval(gap, '+.4f')}; {interval(share, '.1%')}", runs=str(n))
    return st


def section_seeds(ctx: Context) -> Section:
    """Section `sparse-seeds`: section 10's primary comparison, replicated, with its interval.

    Section 10 judges its goal on one run of each student. Primary comparison, named before the
    run: at about 90 B/token (48 systematic draws; --quick: 12) after one epoch of 9 sequences per
    step (section 10's primary regime), the drawn student's held-out KL relative to the dense
    student's, paired by replicate. Replicate r draws its artifact with teacher-logits --seed r and
    trains both students on distill's problem order of seed r; the student starts from the same
    checkpoint in every replicate (a distillation starts from a given student; it has no dropout),
    the teacher's samples and the held-out set are the same. The goal (within +5 %) is met when the
    95 % interval of the paired relative gap lies below +5 %. The gap is also printed in nats/token
    and as a share of the dense student's gain over the epoch (gap_row; added on 2026-12-06, after
    the first run, to compare this teacher with section 13's).
    """
    sec = Section("sparse-seeds", "12. sparse teacher: the primary comparison, replicated")
    size = SIZES[ctx.quick]
    draws = STEP_DRAWS[ctx.quick]
    d = ctx.work / "sparse-seeds"
    t0 = time.perf_counter()
    t = english(ctx, d / "english", size)
    n = SEED_REPLICATES[ctx.quick]
    out = replicate(t, d, size, {"drawn": ("sampled", {"draws": draws})}, n, "sparse-seeds")
    ev = out["evals"]
    sec.add("English-text teacher: held-out KL(teacher ‖ student) before distillation", f"{ev['before']['kl']:.4f}", runs="1")
    for r in range(n):
        dense, drawn = ev[("dense", r)], ev[("drawn", r)]
        sec.add(f"English-text teacher, replicate {r} (draw seed {r}, order seed {r}): held-out KL / ECE, dense vs "
                f"{draws} systematic draws ({out['sizes'][('drawn', r)]:.0f} B/token)",
                f"{dense['kl']:.4f} / {dense['ece']:.4f} vs {drawn['kl']:.4f} / {drawn['ece']:.4f} "
                f"({drawn['kl'] / dense['kl'] - 1:+.1%})", runs="1")
    dense_kl = [ev[("dense", r)]["kl"] for r in range(n)]
    sec.add(f"English-text teacher: the dense student's held-out KL over the {n} problem orders",
            f"{statistics.median(dense_kl):.4f}", spread=f"{min(dense_kl):.4f}-{max(dense_kl):.4f}", runs=str(n))
    gap_row(sec, "English-text teacher, about {bytes} B/token, one epoch: drawn student's held-out KL vs dense, paired "
            "over {n} replicates (mean, interval, smallest effect the design detects at about 80 % power)", ev, "drawn",
            n, sum(out["sizes"].values()) / n, goal=True, who="English-text teacher")
    sec.notes.append(
        f"sparse-seeds: section 10's English-text teacher, student and primary regime: {size.prompts} training prompts x "
        f"{size.samples} teacher samples ({out['tokens']:,} response tokens), one epoch of {size.steps} steps of "
        f"{size.batch} problems, distill's loss and cosine schedule, AdamW lr {LR:g}; the same teacher samples in every "
        f"replicate; held-out: {ev['before']['tokens']:,} tokens of the teacher's samples on {size.held} other prompts. "
        f"The interval is Student's t on the paired relative gaps. {time.perf_counter() - t0:.0f} s.")
    return sec


TRAINED_RECIPES = (text_teacher.TRAINED, text_teacher.TRAINED_QUICK)   # section 13's teacher (full, quick)
TRAINED_BUDGET = 90
TRAINED_GRID = {"sampled": [{"draws": s} for s in DRAWS], "topk": GRID["topk"]}


def section_trained(ctx: Context) -> Section:
    """Section `sparse-trained`: section 12's comparison on an English-text teacher trained longer.

    Section 12 misses the goal (+12 % on the run of 2026-12-05) on a teacher of 6.2 nats of mean
    entropy on its own samples (150 training steps, held-out loss 6.43 nats/token): no token of it
    below 2 nats, where a real language model on its own samples has many. This section trains the same model on the
    same corpus for 1,000 steps (text_teacher.TRAINED; all else equal; its student is this run's
    checkpoint at the same step, 30, which is not section 12's student: the warm-up, 5 % of the
    steps, is longer) and repeats section 12 on it. Premise, printed first: the teacher's held-out loss,
    its mean entropy on its training sequences and the share of their tokens below 2 nats, beside
    the student's distance from it before distillation.

    Primary comparison, named before the run: at about 90 B/token (the systematic-draws setting of
    DRAWS whose artifact, on the first tenth of the training problems, is closest to 90 B/token on
    this teacher), after one epoch of 9 sequences per step, the drawn student's held-out KL
    relative to the dense student's, paired over 5 replicates (draw seed r, order seed r), as in
    section 12. The goal (within +5 %) is met when the 95 % interval's upper end is at most +5 %.
    Secondary, also paired: the top-k student at about 90 B/token (the top-k setting closest to
    it), trained on the same orders. Each gap is also printed in nats/token and as a share of the
    dense student's gain over the epoch (gap_row; added on 2026-12-06, after the first run, since
    the relative gap alone mixes the draws' cost with how far the dense student ends from its
    teacher).
    """
    from stages import teacher_logits

    sec = Section("sparse-trained", "13. sparse teacher: the primary comparison on a teacher trained longer")
    size = SIZES[ctx.quick]
    recipe = TRAINED_RECIPES[ctx.quick]
    d = ctx.work / "sparse-trained"
    t0 = time.perf_counter()
    t = english(ctx, d / "english", size, recipe)
    record = t.record
    grid = grid_bytes(t, TRAINED_GRID, d, few_weights(t, d, size.few))
    chosen = {rep: closest(TRAINED_GRID, grid, rep, TRAINED_BUDGET) for rep in TRAINED_GRID}
    log(f"sparse-trained: settings at about {TRAINED_BUDGET} B/token: {chosen} ({time.perf_counter() - t0:.0f} s)")
    n = SEED_REPLICATES[ctx.quick]
    names = {"drawn": ("sampled", chosen["sampled"]), "top-k": ("topk", chosen["topk"])}
    out = replicate(t, d, size, names, n, "sparse-trained")
    ev = out["evals"]
    # the teacher's entropy on the training sequences (every artifact holds it; the drawn one of replicate 0's)
    profile = teacher_logits.entropy_profile(sorted((d / f"{slug(names['drawn'][0])}-seed0").glob("part-*.parquet")))
    who = t.label
    base = text_teacher.QUICK if ctx.quick else text_teacher.FULL
    before = text_teacher.english_teacher(base, log=log).record  # cached, or trained now (minutes)
    sec.add(f"{who}: held-out loss, nats/token; its student's (step {recipe.student_step}); section 10's teacher's "
            f"({base.steps} steps)", f"{record['held_out_loss']:.2f}; {record['student_held_out_loss']:.2f}; "
            f"{before['held_out_loss']:.2f}", runs="1")
    sec.add(f"{who}: entropy on its training sequences, mean nats (section 10 gives its teacher's); share of tokens "
            f"below {teacher_logits.LOW_ENTROPY:g} nats", f"{profile['entropy']:.2f}; {profile['low']:.1%}", runs="1")
    sec.add(f"{who}: held-out KL(teacher ‖ student) before distillation", f"{ev['before']['kl']:.4f}", runs="1")
    for r in range(n):
        dense = ev[("dense", r)]
        cells = "; ".join(f"{name} ({describe(rep, cfg)}, {out['sizes'][(name, r)]:.0f} B/token) {ev[(name, r)]['kl']:.4f} / "
                          f"{ev[(name, r)]['ece']:.4f} ({ev[(name, r)]['kl'] / dense['kl'] - 1:+.1%})"
                          for name, (rep, cfg) in names.items())
        sec.add(f"{who}, replicate {r} (draw seed {r}, order seed {r}): held-out KL / ECE, dense; then each representation",
                f"{dense['kl']:.4f} / {dense['ece']:.4f}; {cells}", runs="1")
    dense_kl = [ev[("dense", r)]["kl"] for r in range(n)]
    sec.add(f"{who}: the dense student's held-out KL over the {n} problem orders", f"{statistics.median(dense_kl):.4f}",
            spread=f"{min(dense_kl):.4f}-{max(dense_kl):.4f}", runs=str(n))
    for name, (rep, cfg) in names.items():
        mean_bytes = sum(out["sizes"][(name, r)] for r in range(n)) / n
        gap_row(sec, f"{who}, about {{bytes}} B/token, one epoch: {name} student ({describe(rep, cfg)}) held-out KL vs "
                f"dense, paired over {{n}} replicates (mean, interval, smallest effect the design detects at about 80 % "
                f"power)", ev, name, n, mean_bytes, goal=name == "drawn", who=who)
    sec.notes.append(
        f"sparse-trained: {t.label}: text_teacher.{'TRAINED_QUICK' if ctx.quick else 'TRAINED'} ({recipe.steps:,} steps of "
        f"{recipe.batch} x {recipe.context} tokens, lr {recipe.lr:g}; trained in {record['train_seconds']:.0f} s); section "
        f"12's regime: {size.prompts} training prompts x {size.samples} teacher samples ({out['tokens']:,} response "
        f"tokens), one epoch of {size.steps} steps of {size.batch} problems, distill's loss and cosine schedule, AdamW lr "
        f"{LR:g}; the same teacher samples in every replicate; held-out: {ev['before']['tokens']:,} tokens of the "
        f"teacher's samples on {size.held} other prompts. Settings at about {TRAINED_BUDGET} B/token chosen on the "
        f"first {size.few} problems' sequences. {time.perf_counter() - t0:.0f} s.")
    return sec
