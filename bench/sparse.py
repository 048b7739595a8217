"""Section `sparse`: the teacher kept as its top-k, as tokens drawn from it, or both, at equal bytes.

    python -m bench --only sparse [--quick]

`paced teacher-logits --logits topk|sampled|hybrid` (stages/teacher_logits.py) on two teachers:
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
3. A short distillation of the same student from each representation and from dense teacher
   log-probs (computed on the fly from the teacher), through distill's own collate and
   `micro_batch_loss`, AdamW, constant learning rate, the same steps, batches and order for
   all: the student's forward KL to the full teacher per held-out token, and its expected
   calibration error (top-1 confidence against the teacher's sampled next token, 15 bins).
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from bench import text_teacher, workload
from bench.common import Context, Section

BUDGETS = (90, 170)
GRID = {
    "topk": [{"top_k": k} for k in (4, 8, 12, 16, 24, 32, 48, 64, 96)],
    "sampled": [{"draws": s} for s in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)],
    "hybrid": [{"top_k": k, "draws": s} for k, s in ((2, 4), (4, 8), (4, 12), (8, 12), (8, 16), (12, 24), (16, 24), (16, 32),
                                                      (24, 48), (32, 64), (32, 128), (48, 96))],
}
SEEDS = 6
GRAD_SEQS = 8
LR = 1e-3
ECE_BINS = 15
# (training sequences, held-out sequences, steps, batch): full, quick
SIZES = ((48, 16, 60, 8), (16, 8, 12, 4))


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


def english(ctx: Context, d: Path, n_train: int, n_held: int) -> Teacher:
    from bench.storage import sample
    from stages import models, prompts

    recipe = text_teacher.QUICK if ctx.quick else text_teacher.FULL
    tt = text_teacher.english_teacher(recipe, log=log)
    tokenizer = models.load_tokenizer(str(tt.teacher))
    slack = 4
    texts = [p for p, ids in zip(tt.prompts, prompts.encode_prompts(tokenizer, [{"prompt": p} for p in tt.prompts]))
             if len(ids) <= recipe.prompt_tokens + slack]
    texts = texts[: n_train + n_held]
    d.mkdir(parents=True, exist_ok=True)
    workload.write_problems(d / "train.parquet", [f"e{i:04d}" for i in range(len(texts) - n_held)], texts[:-n_held])
    workload.write_problems(d / "held.parquet", [f"h{i:04d}" for i in range(n_held)], texts[-n_held:])
    new = recipe.context - recipe.prompt_tokens - slack
    train = sample(d / "train.parquet", tt.teacher, d / "train_rollouts", new, 16)
    held = sample(d / "held.parquet", tt.teacher, d / "held_rollouts", new, 16)
    return Teacher("English-text teacher (trained)", tt.teacher, tt.student, d / "train.parquet", train,
                   d / "held.parquet", held, len(tokenizer))


def synthetic(ctx: Context, d: Path, n_train: int, n_held: int) -> Teacher:
    from bench.storage import sample

    size = workload.QUICK
    w = workload.build(size, ctx.work)
    d.mkdir(parents=True, exist_ok=True)
    gen = workload.TextGen(seed=7)
    texts = gen.sentences(n_train + n_held, words=(8, 14))
    workload.write_problems(d / "train.parquet", [f"s{i:04d}" for i in range(n_train)], texts[:n_train])
    workload.write_problems(d / "held.parquet", [f"t{i:04d}" for i in range(n_held)], texts[n_train:])
    train = sample(d / "train.parquet", w.teacher, d / "train_rollouts", size.response, 16)
    held = sample(d / "held.parquet", w.teacher, d / "held_rollouts", size.response, 16)
    return Teacher(f"synthetic teacher (random, entropy scaled to {workload.TEACHER_ENTROPY} nats, V = {w.vocab:,})",
                   w.teacher, w.student, d / "train.parquet", train, d / "held.parquet", held, w.vocab)


def artifact(t: Teacher, rep: str, cfg: dict, out: Path, seed: int = 0) -> float:
    """Write the real artifact; its bytes per response token."""
    import polars as pl

    from stages import teacher_logits as tl

    tl.run(tl.TeacherLogitsConfig(
        problems=t.train_problems, sequences=t.train, teacher=str(t.teacher), out=out, logits=rep,
        top_k=cfg.get("top_k", 32), draws=cfg.get("draws", 12), seed=seed, batch_size=16, overwrite=True))
    parts = sorted(out.glob("part-*.parquet"))
    tokens = int(pl.read_parquet(parts, columns=["token_ids"])["token_ids"].list.len().sum())
    return sum(p.stat().st_size for p in parts) / tokens


def describe(rep: str, cfg: dict) -> str:
    return {"topk": f"top-k {cfg.get('top_k')}", "sampled": f"sampled, {cfg.get('draws')} draws",
            "hybrid": f"hybrid, top-{cfg.get('top_k')} + {cfg.get('draws')} draws", "dense": "dense"}[rep]


def load(tl_dir: Path, cache: Path):
    import schemas
    from bench.distill import problem_ids, write_uniform_weights
    from stages.training import data as train_data

    weights = schemas.read(write_uniform_weights(problem_ids(tl_dir), cache.with_suffix(".w.parquet")), schemas.WEIGHTS,
                           option="--weights")
    return train_data.load_data(tl_dir, weights, cache)[0]


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


def gradients(t: Teacher, chosen: dict, d: Path) -> dict:
    """Per (budget, representation): cosine and relative error of the mean gradient over the
    draw seeds against the dense one, and the mean relative error of one seed's."""
    import torch

    from stages import models
    from stages.training import data as train_data

    student = models.load_model(str(t.student), device="cpu", dtype="float32")
    teacher = models.load_model(str(t.teacher), device="cpu", dtype="float32")
    ref = load(chosen[BUDGETS[0]]["topk"][2], d / "grad-ref.arrow")
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
                p = path if s == 0 else d / f"grad-{rep}-{budget}-seed{s}"
                if s:
                    artifact(t, rep, cfg, p, seed=s)
                data = load(p, d / f"grad-{rep}-{budget}-{s}.arrow")
                assert data.table["problem_id"].to_pylist()[:n] == ref.table["problem_id"].to_pylist()[:n]
                grads.append(head_gradient(student, train_data.collate(data, rows, "cpu"), coef))
            mean = torch.stack(grads).mean(0)
            rel = lambda g: float((g.double() - dense.double()).norm() / dense.double().norm())  # noqa: E731
            cos = float(torch.nn.functional.cosine_similarity(mean.flatten().double(), dense.flatten().double(), dim=0))
            out[(budget, rep)] = {"cos": cos, "bias": rel(mean), "one": sum(rel(g) for g in grads) / len(grads), "seeds": seeds}
    return out


def train(t: Teacher, data, rep: str, steps: int, batch_size: int, teacher=None):
    """The student after `steps` steps on `data` (or on dense teacher log-probs for rep 'dense')."""
    import torch

    from stages import models
    from stages.training import data as train_data, forward

    torch.manual_seed(0)
    student = models.load_model(str(t.student), device="cpu", dtype="float32")
    student.train()
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=LR, weight_decay=0.1)
    for step in range(1, steps + 1):
        _, names = train_data.step_problems(data, 0, batch_size, step)
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


def measure(ctx: Context, t: Teacher, d: Path, steps: int, batch_size: int) -> dict:
    import numpy as np

    from stages import models

    t0 = time.perf_counter()
    grid = {}
    for rep, cfgs in GRID.items():
        for i, cfg in enumerate(cfgs):
            out = d / f"{rep}-{i}"
            grid[(rep, i)] = (cfg, artifact(t, rep, cfg, out), out)
    chosen = {b: {rep: min((grid[(rep, i)] for i in range(len(GRID[rep]))), key=lambda x: abs(x[1] - b)) for rep in GRID}
              for b in BUDGETS}
    log(f"sparse: {t.label}: {len(grid)} artifacts in {time.perf_counter() - t0:.0f} s")
    grads = gradients(t, chosen, d)
    log(f"sparse: {t.label}: gradients done at {time.perf_counter() - t0:.0f} s")
    teacher = models.load_model(str(t.teacher), device="cpu", dtype="float32").eval()
    ref = load(chosen[BUDGETS[0]]["topk"][2], d / "train-ref.arrow")
    students = {"student before distillation": models.load_model(str(t.student), device="cpu", dtype="float32").eval(),
                "dense": train(t, ref, "dense", steps, batch_size, teacher)}
    for b in BUDGETS:
        for rep, (cfg, _, path) in chosen[b].items():
            students[(b, rep)] = train(t, load(path, d / f"train-{rep}-{b}.arrow"), rep, steps, batch_size)
    log(f"sparse: {t.label}: {len(students) - 1} distillations done at {time.perf_counter() - t0:.0f} s")
    # Held-out teacher samples, scored as a top-1 artifact (only their tokens are used).
    held = d / "held-tl"
    from stages import teacher_logits as tl

    tl.run(tl.TeacherLogitsConfig(problems=t.held_problems, sequences=t.held, teacher=str(t.teacher), out=held, top_k=1,
                                  batch_size=16, overwrite=True))
    evals = held_out(t, load(held, d / "held.arrow"), students, teacher)
    entropy = float(np.mean(np.concatenate(
        [np.asarray(x) for x in load(chosen[BUDGETS[0]]["topk"][2], d / "entropy.arrow").table["entropy"].to_pylist()])))
    log(f"sparse: {t.label}: done in {time.perf_counter() - t0:.0f} s")
    return {"chosen": chosen, "grads": grads, "evals": evals, "entropy": entropy, "sequences": ref.table.num_rows,
            "train_tokens": int(sum(len(x) for x in ref.table["token_ids"].to_pylist()))}


def section(ctx: Context) -> Section:
    sec = Section("sparse", "10. sparse teacher: top-k, drawn, hybrid")
    n_train, n_held, steps, batch_size = SIZES[ctx.quick]
    d = ctx.work / "sparse"
    teachers = [english(ctx, d / "english", n_train, n_held), synthetic(ctx, d / "synthetic", n_train, n_held)]
    for t in teachers:
        m = measure(ctx, t, d / ("english" if t is teachers[0] else "synthetic"), steps, batch_size)
        sec.add(f"{t.label}: teacher entropy, mean over training tokens, nats", f"{m['entropy']:.2f}", runs="1")
        base, dense = m["evals"]["student before distillation"], m["evals"]["dense"]
        sec.add(f"{t.label}: held-out KL(teacher ‖ student) / ECE: before distillation; after, dense teacher",
                f"{base['kl']:.4f} / {base['ece']:.4f}; {dense['kl']:.4f} / {dense['ece']:.4f}", runs="1")
        for b in BUDGETS:
            best = None
            for rep, (cfg, size, _) in m["chosen"][b].items():
                g = m["grads"][(b, rep)]
                e = m["evals"][(b, rep)]
                gap = e["kl"] / dense["kl"] - 1
                best = rep if best is None or e["kl"] < m["evals"][(b, best)]["kl"] else best
                sec.add(f"{t.label}, about {b} B/token: {describe(rep, cfg)} ({size:.0f} B/token): gradient at init "
                        f"cos / bias / one draw's error (rel. norm, {g['seeds']} seed{'s' if g['seeds'] > 1 else ''})",
                        f"{g['cos']:.4f} / {g['bias']:.4f} / {g['one']:.4f}", runs=str(g["seeds"]))
                sec.add(f"{t.label}, about {b} B/token: {describe(rep, cfg)}: held-out KL / ECE after distillation "
                        f"(KL vs dense)", f"{e['kl']:.4f} / {e['ece']:.4f} ({gap:+.1%})", runs="1")
            e = m["evals"][(b, best)]
            gap = e["kl"] / dense["kl"] - 1
            goal = b == BUDGETS[0]
            sec.add(f"{t.label}, about {b} B/token: best representation, held-out KL vs the dense-teacher student",
                    f"{best}: {gap:+.1%}", runs="1", goal="within +5 % at about 90 B/token" if goal else "",
                    met=(gap <= 0.05) if goal else None)
        sec.notes.append(
            f"{t.label}: {m['train_tokens']:,} training response tokens ({m['sequences']} sequences), "
            f"{steps} steps of {batch_size} sequences, AdamW lr {LR:g}, weight decay 0.1, clip 1.0, constant rate; "
            f"the same student, order and steps for every representation; held-out: {dense['tokens']:,} tokens of "
            f"the teacher's own samples on other prompts.")
    sec.notes.append(
        "bytes: the real artifact's part files (parquet zstd) over its response tokens, at the grid setting of each "
        "representation closest to the budget; a drawn id costs 8 B (id, float32 mass) against a top-k id's 6 B "
        "(id, float16 log-prob), and draws of one token repeat, so S draws store fewer ids than S. Gradient at the "
        "output layer of the untrained student, distill's coefficients: bias = the mean over draw seeds against the "
        "dense gradient (top-k: one seed, deterministic); one draw's error: what a single training step sees.")
    return sec
