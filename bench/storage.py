"""Section `storage`: bytes per response token of the teacher_logits artifact, and what top-k
truncation loses.

    python -m bench --only storage [--quick]

The real `teacher_logits.run` writes the artifact at k = 8, 32 and 64 over the workload's
sequences; bytes per token is the size of its part files over the response tokens. Dense
float16 logits would take 2 bytes x V per token (computed, not written).

Truncation, two conventions, both per response token and averaged over tokens, both from the
stored (float16) artifact against the teacher's full float32 distribution recomputed here:

- loss error: |fkl on the k+1 buckets - fkl over the full vocabulary|, for the workload's
  (random) student, where the bucket fkl is paced's own `losses.token_losses` on the stored
  top-k + tail, exactly what `distill` optimises;
- KL(p || q) where p is the teacher's full distribution and q keeps the stored top-k
  probabilities and spreads the stored tail mass uniformly over the other V - k ids (the
  distribution a reader could rebuild from the artifact).
"""

from __future__ import annotations

import time
from pathlib import Path

from bench import workload
from bench.common import Context, Section

KS = (8, 32, 64)
QWEN_VOCAB = 151_936
GOAL_BYTES = 200
GOAL_ERROR = 0.01


def run_stage(w: workload.Workload, k: int, out: Path) -> tuple[float, int, float]:
    """(bytes per token, tokens, seconds) of the real stage at top-k k."""
    import polars as pl

    from stages import teacher_logits as tl

    t = time.perf_counter()
    tl.run(tl.TeacherLogitsConfig(problems=w.problems, sequences=w.sequences, teacher=str(w.teacher), out=out,
                                  top_k=k, batch_size=w.size.batch, overwrite=True))
    seconds = time.perf_counter() - t
    parts = sorted(out.glob("part-*.parquet"))
    tokens = int(pl.read_parquet(parts, columns=["token_ids"])["token_ids"].list.len().sum())
    return sum(p.stat().st_size for p in parts) / tokens, tokens, seconds


def truncation(w: workload.Workload, tl_dir: Path, sequences: int) -> dict[str, float]:
    """Mean per-token loss error and uniform-tail KL for the first `sequences` rows of tl_dir."""
    import torch

    import schemas
    from bench.distill import problem_ids, write_uniform_weights
    from stages import distill, losses, models

    weights = schemas.read(write_uniform_weights(problem_ids(tl_dir), tl_dir.parent / f"{tl_dir.name}-w.parquet"),
                           schemas.WEIGHTS, option="--weights")
    data, _ = distill.load_data(tl_dir, weights, tl_dir.parent / f"{tl_dir.name}-cache.arrow")
    student = models.load_model(str(w.student), device="cpu", dtype="float32")
    teacher = models.load_model(str(w.teacher), device="cpu", dtype="float32")
    err = kl_uniform = tail_mass = 0.0
    tokens = 0
    with torch.inference_mode():
        for r in range(min(sequences, data.table.num_rows)):
            b = distill.collate(data, [r], "cpu")  # [1, R, ...]: the tensors distill trains on

            def logits(model):
                hidden = model.get_decoder()(input_ids=b["input_ids"], attention_mask=b["attention"]).last_hidden_state
                idx = b["gather"].unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
                return model.get_output_embeddings()(torch.gather(hidden, 1, idx)).float()  # [1, R, V]

            s_logits, t_logits = logits(student), logits(teacher)
            coarse = losses.token_losses(s_logits, b["topk_ids"], b["topk_lp"], b["tail"], b["mask"], loss="fkl")["fkl"][0]
            lp_t = torch.log_softmax(t_logits[0].double(), -1)  # [R, V]
            lp_s = torch.log_softmax(s_logits[0].double(), -1)
            full = (lp_t.exp() * (lp_t - lp_s)).sum(-1)
            err += float((coarse.double() - full).abs().sum())

            # q: stored top-k and tail, normalised over the k+1 buckets as distill does, tail spread uniformly.
            ids = b["topk_ids"][0]
            buckets = torch.log_softmax(torch.cat([b["topk_lp"][0], b["tail"][0, :, None]], -1).double(), -1)
            vocab = lp_t.shape[-1]
            log_q = (buckets[:, -1:] - torch.log(torch.tensor(vocab - ids.shape[-1], dtype=torch.float64))).expand(-1, vocab).clone()
            log_q.scatter_(-1, ids, buckets[:, :-1])
            kl_uniform += float((lp_t.exp() * (lp_t - log_q)).sum())
            tail_mass += float(buckets[:, -1].exp().sum())
            tokens += ids.shape[0]
    return {"loss_error": err / tokens, "kl_uniform_tail": kl_uniform / tokens, "tail_mass": tail_mass / tokens, "tokens": tokens}


def section(ctx: Context) -> Section:
    w = workload.main(ctx)
    sec = Section("storage", "2. teacher-logit storage")
    d = ctx.work / "storage"
    d.mkdir(parents=True, exist_ok=True)
    dense_model, dense_qwen = 2 * w.vocab, 2 * QWEN_VOCAB
    fidelity_rows = max(2, w.size.sequences // 4)
    results = {}
    for k in KS:
        bpt, tokens, _ = run_stage(w, k, d / f"tl-k{k}")
        results[k] = (bpt, truncation(w, d / f"tl-k{k}", fidelity_rows))
    for k, (bpt, _) in results.items():
        goal = f"<= {GOAL_BYTES} B/token" if k == 32 else ""
        sec.add(f"teacher_logits on disk, k = {k}: bytes per response token", f"{bpt:,.1f}", runs="1",
                goal=goal, met=(bpt <= GOAL_BYTES) if k == 32 else None)
        sec.add(f"  k = {k} vs dense float16 (V = {w.vocab:,}: {dense_model:,} B) / (V = {QWEN_VOCAB:,}: {dense_qwen:,} B)",
                f"{bpt / dense_model:.2%} / {bpt / dense_qwen:.3%}", runs="1")
    for k, (_, f) in results.items():
        goal = f"< {GOAL_ERROR} nats" if k == 32 else ""
        sec.add(f"k = {k}: loss error abs(fkl on k+1 buckets - full fkl), nats/token", f"{f['loss_error']:.5f}", runs="1",
                goal=goal, met=(f["loss_error"] < GOAL_ERROR) if k == 32 else None)
        sec.add(f"k = {k}: KL(full teacher || top-k + uniform tail), nats/token", f"{f['kl_uniform_tail']:.5f}", runs="1")
    masses = ", ".join(f"k = {k}: {f['tail_mass']:.4f}" for k, (_, f) in results.items())
    sec.notes.append(
        f"the real stage over {w.size.sequences} sequences x {w.size.response} response tokens, parquet zstd as written "
        f"(ids int32, top-k log-probs float16, tail and target float32, the student prompt once per row). Deterministic, "
        f"so one run. Truncation is measured on {results[KS[0]][1]['tokens']:,} tokens against the teacher's full "
        f"distribution, whose mean entropy is {w.teacher_entropy:.2f} nats (a random teacher with its output layer "
        f"scaled to that; see bench/workload.py); its mean mass outside the top-k: {masses}. The loss error is for the "
        f"random-init student (the start of distillation, far from the teacher); it is the tail mass times the "
        f"student-teacher KL within the tail, so it shrinks as the student learns. DistillKit's compressed top-k "
        f"format is about 114-300 B/token for reference."
    )
    return sec
