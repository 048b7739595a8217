"""Sections `distill` (throughput and memory against TRL) and `floor` (distance from a plain step).

    python -m bench --only distill,floor [--quick]

`distill`: TRL's GKDTrainer (trl.experimental.gkd) with lmbda = 0 (never the student's own
samples), beta = 0 (the generalised JSD is then KL(teacher || student)) and seq_kd off trains
the same forward-KL objective as `paced distill --loss fkl` on fixed teacher sequences, but
runs the teacher online and compares full-vocabulary distributions. Same student, teacher,
token sequences (TRL gets exactly the prompt + response ids paced trains on, through a
collator that masks the prompt), batch, AdamW, learning rate, weight decay and clipping.

Each system runs in its own interpreter (so its peak RSS is its own), first one warm-up call
(one step) and then the timed call, both through the public entry point: `distill.run`,
`teacher_logits.run`, `GKDTrainer(...).train()`. The timed call counts everything a user
waits for in a warm process: loading inputs and models, the steps, and (paced) writing the
output. Systems alternate within each round, so drifting machine load hits all alike.

`floor`: in one process, the same batch through (a) a plain cross-entropy step of the student
(the cheapest thing any trainer does with these tokens) and (b) the paced step as the stage
runs it (`collate` + `micro_batch_loss` + backward + clip + AdamW); and the teacher's plain
forward pass (`model(...)`, full logits) against `stages.backends.hf.score_sequences` on the same
sequences. Each paced part is also timed alone, so a ratio above the goal says where it goes.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

from bench import workload
from bench.common import Context, Section, Stat, in_child, mib, ratio, spread, timed_together

TOP_K = 32
LR = 1e-5  # small: the timing does not care, and nothing diverges


# ---------------------------------------------------------------------------------------
# Helpers shared by the children


def write_uniform_weights(problem_ids: list[str], path: Path, keep: int | None = None) -> Path:
    """A weights file giving weight 1 to every problem (or to the first `keep`, 0 to the rest)."""
    import polars as pl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    n = len(problem_ids)
    w = [1.0 if keep is None or i < keep else 0.0 for i in range(n)]
    pl.DataFrame(
        {"problem_id": problem_ids, "num_samples": [8] * n, "num_correct": [4] * n, "pass_rate": [0.5] * n, "weight": w},
        schema={"problem_id": pl.String, "num_samples": pl.Int32, "num_correct": pl.Int32, "pass_rate": pl.Float64, "weight": pl.Float64},
    ).write_parquet(path)
    return path


def problem_ids(path: Path) -> list[str]:
    import polars as pl

    p = Path(path)
    files = sorted(p.glob("part-*.parquet")) if p.is_dir() else [p]
    return pl.concat([pl.read_parquet(f, columns=["problem_id"]) for f in files])["problem_id"].unique(maintain_order=True).to_list()


def distill_config(student: str, tl: str, weights: Path, out: Path, batch: int, steps: int):
    from stages.distill import DistillConfig

    return DistillConfig(
        student=student, teacher_logits=Path(tl), weights=weights, out=out, loss="fkl", lr=LR,
        batch_size=batch, micro_batch_size=batch, max_steps=steps, schedule="constant", save_steps=0, overwrite=True,
    )


# ---------------------------------------------------------------------------------------
# Children of section `distill` (each runs in its own interpreter)


def child_distill(student: str, tl: str, batch: int, steps: int, calls: int, work: str) -> dict:
    import polars as pl

    from stages import distill

    work = Path(work)
    weights = write_uniform_weights(problem_ids(Path(tl)), work / "weights.parquet")
    distill.run(distill_config(student, tl, weights, work / "warm", batch, 1))
    seconds, step_seconds = [], []
    for c in range(calls):
        gc.collect()
        t = time.perf_counter()
        out = distill.run(distill_config(student, tl, weights, work / f"timed{c}", batch, steps))
        seconds.append(time.perf_counter() - t)
        log = pl.read_parquet(out / "train_log.parquet")
        step_seconds.append(float(log["seconds"].sum()))
    return {"seconds": seconds, "tokens": int(log["tokens"].sum()), "step_seconds": step_seconds, "loss": log["fkl"].to_list()}


def child_teacher_logits(problems: str, sequences: str, teacher: str, batch: int, top_k: int, calls: int, work: str) -> dict:
    import polars as pl

    from stages import teacher_logits as tl

    work = Path(work)
    ids = problem_ids(Path(sequences))
    warm_weights = write_uniform_weights(ids, work / "warm_weights.parquet", keep=batch)

    def config(out: Path, weights: Path | None):
        return tl.TeacherLogitsConfig(problems=Path(problems), sequences=Path(sequences), teacher=teacher, out=out,
                                      top_k=top_k, weights=weights, batch_size=batch, overwrite=True)

    tl.run(config(work / "warm", warm_weights))
    seconds = []
    for c in range(calls):
        gc.collect()
        t = time.perf_counter()
        out = tl.run(config(work / f"timed{c}", None))
        seconds.append(time.perf_counter() - t)
    tokens = pl.read_parquet(out / "part-*.parquet", columns=["token_ids"])["token_ids"].list.len().sum()
    return {"seconds": seconds, "tokens": int(tokens)}


def child_trl(student: str, teacher: str, tl: str, batch: int, steps: int, calls: int, work: str) -> dict:
    """TRL GKDTrainer on exactly the token sequences of the paced teacher_logits artifact."""
    import polars as pl
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    hf_logging.disable_progress_bar()
    frame = pl.read_parquet(Path(tl) / "part-*.parquet", columns=["prompt_token_ids", "token_ids"])
    ds = Dataset.from_dict({
        "input_ids": [p + r for p, r in zip(frame["prompt_token_ids"].to_list(), frame["token_ids"].to_list())],
        "prompt_len": [len(p) for p in frame["prompt_token_ids"].to_list()],
    })
    tokenizer = AutoTokenizer.from_pretrained(student)
    pad = tokenizer.pad_token_id

    def collate(features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), pad, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        for b, f in enumerate(features):
            n, p = len(f["input_ids"]), f["prompt_len"]
            ids[b, :n] = torch.tensor(f["input_ids"])
            attention[b, :n] = 1
            labels[b, p:n] = ids[b, p:n]  # loss on the response tokens only, as paced
        return {"input_ids": ids, "attention_mask": attention, "labels": labels}

    def train(max_steps: int, out: Path) -> list[float]:
        args = GKDConfig(
            output_dir=str(out), per_device_train_batch_size=batch, gradient_accumulation_steps=1, max_steps=max_steps,
            lmbda=0.0, beta=0.0, seq_kd=False, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
            weight_decay=0.1, max_grad_norm=1.0, optim="adamw_torch", use_cpu=True, bf16=False, fp16=False,
            report_to="none", save_strategy="no", logging_strategy="steps", logging_steps=1, disable_tqdm=True, seed=0,
            dataloader_num_workers=0,
        )
        trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=ds,
                             processing_class=tokenizer, data_collator=collate)
        trainer.train()
        return [h["loss"] for h in trainer.state.log_history if "loss" in h]

    train(1, Path(work) / "warm")
    seconds = []
    for c in range(calls):
        gc.collect()
        t = time.perf_counter()
        losses = train(steps, Path(work) / f"timed{c}")
        seconds.append(time.perf_counter() - t)
    return {"seconds": seconds, "tokens": int(sum(len(r) for r in frame["token_ids"].to_list())), "loss": losses}


# ---------------------------------------------------------------------------------------
# Section `distill`


def section(ctx: Context) -> Section:
    from stages import teacher_logits as tl

    w = workload.main(ctx)
    size = w.size
    sec = Section("distill", "1. distill vs TRL")
    d = ctx.work / "distill"
    d.mkdir(parents=True, exist_ok=True)
    n = size.batch * size.steps
    seqs = workload.subset(w.sequences, n, d / "sequences.parquet")
    tl_dir = tl.run(tl.TeacherLogitsConfig(problems=w.problems, sequences=seqs, teacher=str(w.teacher), out=d / "tl",
                                           top_k=TOP_K, batch_size=size.batch, overwrite=True))

    # Full runs: one child per system per round (rounds interleave systems against drifting
    # load). --quick: one round whose children each make `runs` timed calls (interpreter
    # start-up would otherwise dominate).
    rounds, calls = (1, size.runs) if ctx.quick else (size.runs, 1)
    results: dict[str, list] = {"distill": [], "tl": [], "trl": []}
    for r in range(rounds):
        results["distill"].append(in_child("bench.distill:child_distill", student=str(w.student), tl=str(tl_dir),
                                           batch=size.batch, steps=size.steps, calls=calls, work=str(d / f"d{r}")))
        results["tl"].append(in_child("bench.distill:child_teacher_logits", problems=str(w.problems), sequences=str(seqs),
                                      teacher=str(w.teacher), batch=size.batch, top_k=TOP_K, calls=calls, work=str(d / f"t{r}")))
        results["trl"].append(in_child("bench.distill:child_trl", student=str(w.student), teacher=str(w.teacher),
                                       tl=str(tl_dir), batch=size.batch, steps=size.steps, calls=calls, work=str(d / f"g{r}")))

    tokens = results["distill"][0].value["tokens"]
    assert all(x.value["tokens"] == tokens for xs in results.values() for x in xs), "systems trained different tokens"
    secs = {k: Stat(tuple(v for x in xs for v in x.value["seconds"])) for k, xs in results.items()}
    rss = {k: Stat(tuple(float(x.max_rss) for x in xs)) for k, xs in results.items()}
    pipeline = Stat(tuple(a + b for a, b in zip(secs["tl"].values, secs["distill"].values)))
    tps = {k: s.map(lambda v: tokens / v) for k, s in (("distill", secs["distill"]), ("tl", secs["tl"]),
                                                        ("pipeline", pipeline), ("trl", secs["trl"]))}
    runs = size.runs
    sec.add("paced distill: training tokens/s", f"{tps['distill'].median:,.0f}", spread(tps["distill"], "{:,.0f}"), runs)
    sec.add("paced teacher-logits (k = 32): tokens/s", f"{tps['tl'].median:,.0f}", spread(tps["tl"], "{:,.0f}"), runs)
    sec.add("paced teacher-logits + distill: tokens/s", f"{tps['pipeline'].median:,.0f}", spread(tps["pipeline"], "{:,.0f}"), runs)
    sec.add("TRL GKDTrainer (lmbda 0, beta 0): tokens/s", f"{tps['trl'].median:,.0f}", spread(tps["trl"], "{:,.0f}"), runs)
    r_d = ratio(tps["distill"], tps["trl"])
    r_p = ratio(tps["pipeline"], tps["trl"])
    sec.add("speed ratio paced distill / TRL", f"{r_d.median:.2f}x", spread(r_d), runs, ">= 2x", r_d.median >= 2)
    sec.add("speed ratio paced teacher-logits + distill / TRL", f"{r_p.median:.2f}x", spread(r_p), runs)
    for key, name in (("distill", "paced distill"), ("tl", "paced teacher-logits"), ("trl", "TRL GKDTrainer")):
        sec.add(f"peak RSS, {name}", mib(rss[key].median), f"{mib(rss[key].lo)}-{mib(rss[key].hi)}", rounds)
    m_d = ratio(rss["distill"], rss["trl"])
    m_t = ratio(rss["tl"], rss["trl"])
    sec.add("memory ratio paced distill / TRL", f"{m_d.median:.2f}", spread(m_d), rounds, "<= 1", m_d.median <= 1)
    sec.add("memory ratio paced teacher-logits / TRL", f"{m_t.median:.2f}", spread(m_t), rounds)
    step = Stat(tuple(v for x in results["distill"] for v in x.value["step_seconds"]))
    sec.notes.append(
        f"{w.describe()}; batch {size.batch} sequences, {size.steps} optimizer steps per timed call = {tokens:,} response "
        f"tokens; AdamW lr {LR:g}, weight decay 0.1, clip 1.0; top-k {TOP_K}. Times are whole calls in a warm process "
        f"(after a one-step warm-up call in it): inputs and models loaded, steps, output written (paced writes its "
        f"checkpoint; TRL saves nothing). Of paced distill's {secs['distill'].median:.1f} s, the optimizer steps "
        f"themselves took {step.median:.1f} s (train_log `seconds`). Peak RSS is each child's own `ru_maxrss` (os.wait4) "
        f"and includes the interpreter and its imports (TRL also imports datasets, accelerate and trl). Same "
        f"objective, as a check: per-step token-mean forward KL, paced (on k+1 buckets) "
        f"{', '.join(f'{x:.3f}' for x in results['distill'][0].value['loss'])}, TRL (full vocabulary) "
        f"{', '.join(f'{x:.3f}' for x in results['trl'][0].value['loss'])} (each samples its own batch order)."
    )
    return sec


# ---------------------------------------------------------------------------------------
# Section `floor`


def child_floor(student: str, teacher: str, tl: str, batch: int, runs: int, work: str) -> dict:
    import torch
    import torch.nn.functional as F

    import schemas
    from stages import models
    from stages.backends.hf import score_sequences
    from stages.training import data as train_data, forward, losses

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    weights = schemas.read(write_uniform_weights(problem_ids(Path(tl)), work / "weights.parquet"), schemas.WEIGHTS, option="--weights")
    data, _ = train_data.load_data(Path(tl), weights, work / "cache.arrow")
    rows = list(range(batch))
    names = [data.table["problem_id"][r].as_py() for r in rows]
    coef = torch.tensor([data.weight[p] / (batch * data.tokens[p]) for p in names], dtype=torch.float32)
    no_autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731 - what the stage uses on CPU

    model = models.load_model(student, device="cpu", dtype="float32").train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.1)
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    fixed = train_data.collate(data, rows, "cpu")  # the floor's tensors, built once: its input costs nothing
    targets = torch.gather(fixed["input_ids"], 1, fixed["gather"] + 1)
    parts: dict[str, list[float]] = {"collate": [], "forward + loss": [], "backward": [], "clip + AdamW": []}

    def paced_step() -> None:
        t0 = time.perf_counter()
        b = train_data.collate(data, rows, "cpu")
        t1 = time.perf_counter()
        terms = forward.micro_batch_loss(model, b, coef, loss="fkl", mu=0.5, chunk_size=1024, autocast=no_autocast)
        t2 = time.perf_counter()
        terms["loss"].backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[k].append(v)

    def sft_step() -> None:
        hidden = decoder(input_ids=fixed["input_ids"], attention_mask=fixed["attention"]).last_hidden_state
        idx = fixed["gather"].unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        logits = head(torch.gather(hidden, 1, idx))  # [B, R, V], the response positions, like paced
        loss = F.cross_entropy(logits[fixed["mask"]], targets[fixed["mask"]])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    student_t = timed_together({"sft": sft_step, "paced": paced_step}, runs)
    timed_parts = {k: v[-runs:] for k, v in parts.items()}  # drop the warm-up

    # The output layer and the loss alone, forward + backward from the same fixed hidden states
    # [N, H] of the response tokens: what micro_batch_loss runs for a plain nn.Linear head
    # (losses.fused_head_losses) against F.linear + F.cross_entropy.
    seq, resp = fixed["mask"].nonzero(as_tuple=True)
    with torch.no_grad():
        hidden = decoder(input_ids=fixed["input_ids"], attention_mask=fixed["attention"]).last_hidden_state
        hidden = hidden[seq, fixed["gather"][seq, resp]].contiguous()  # [N, H]
    n_coef = coef[seq]

    def ce_loss() -> None:
        h = hidden.clone().requires_grad_()
        F.cross_entropy(F.linear(h, head.weight, head.bias), targets[seq, resp]).backward()

    def paced_loss() -> None:
        h = hidden.clone().requires_grad_()
        terms = losses.fused_head_losses(h, head.weight, head.bias, fixed["topk_ids"][seq, resp], fixed["topk_lp"][seq, resp],
                                         fixed["tail"][seq, resp], loss="fkl", chunk_size=1024)
        (terms["loss"] * n_coef).sum().backward()

    loss_t = timed_together({"ce": ce_loss, "paced": paced_loss}, runs)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        paced_step()
    ops = [(e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()]
    ops.sort(key=lambda x: -x[1])
    del model, opt, params, decoder, head, hidden
    gc.collect()

    t_model = models.load_model(teacher, device="cpu", dtype="float32")
    prompts = data.table["prompt_token_ids"].to_pylist()[:batch]
    responses = data.table["token_ids"].to_pylist()[:batch]
    real_vocab = len(models.load_tokenizer(teacher))

    def teacher_forward() -> None:
        with torch.inference_mode():
            t_model(input_ids=fixed["input_ids"], attention_mask=fixed["attention"]).logits  # noqa: B018

    def teacher_paced() -> None:
        score_sequences(t_model, prompts, responses, top_k=TOP_K, real_vocab=real_vocab, batch_size=batch, chunk_size=1024)

    teacher_t = timed_together({"forward": teacher_forward, "paced": teacher_paced}, runs)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        teacher_paced()
    t_ops = [(e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()]
    t_ops.sort(key=lambda x: -x[1])
    return {
        "ce_loss": list(loss_t["ce"].values), "paced_loss": list(loss_t["paced"].values),
        "ops": ops[:6], "teacher_ops": t_ops[:6],
        "sft": list(student_t["sft"].values), "paced": list(student_t["paced"].values),
        "teacher_forward": list(teacher_t["forward"].values), "teacher_paced": list(teacher_t["paced"].values),
        "parts": timed_parts, "tokens": int(fixed["mask"].sum()),
    }


def section_floor(ctx: Context) -> Section:
    from stages import teacher_logits as tl

    w = workload.main(ctx)
    size = w.size
    sec = Section("floor", "3. distance from the floor")
    d = ctx.work / "floor"
    d.mkdir(parents=True, exist_ok=True)
    seqs = workload.subset(w.sequences, size.batch, d / "sequences.parquet")
    tl_dir = tl.run(tl.TeacherLogitsConfig(problems=w.problems, sequences=seqs, teacher=str(w.teacher), out=d / "tl",
                                           top_k=TOP_K, batch_size=size.batch, overwrite=True))
    res = in_child("bench.distill:child_floor", student=str(w.student), teacher=str(w.teacher), tl=str(tl_dir),
                   batch=size.batch, runs=size.runs, work=str(d / "child")).value
    s = {k: Stat(tuple(res[k])) for k in ("sft", "paced", "teacher_forward", "teacher_paced")}
    runs = size.runs
    sec.add("student: plain cross-entropy step (floor), s", f"{s['sft'].median:.3f}", spread(s["sft"], "{:.3f}"), runs)
    sec.add("student: paced distill step, s", f"{s['paced'].median:.3f}", spread(s["paced"], "{:.3f}"), runs)
    r = ratio(s["paced"], s["sft"])
    sec.add("ratio paced distill step / cross-entropy step", f"{r.median:.2f}", spread(r), runs, "<= 1.2", r.median <= 1.2)
    sec.add("teacher: plain forward pass (floor), s", f"{s['teacher_forward'].median:.3f}", spread(s["teacher_forward"], "{:.3f}"), runs)
    sec.add("teacher: paced score_sequences (k = 32), s", f"{s['teacher_paced'].median:.3f}", spread(s["teacher_paced"], "{:.3f}"), runs)
    rt = ratio(s["teacher_paced"], s["teacher_forward"])
    sec.add("ratio paced teacher-logits / plain forward", f"{rt.median:.2f}", spread(rt), runs, "<= 1.2", rt.median <= 1.2)
    parts = {k: Stat(tuple(v)) for k, v in res["parts"].items()}
    ce, pl_ = Stat(tuple(res["ce_loss"])), Stat(tuple(res["paced_loss"]))
    total = sum(p.median for p in parts.values())
    sec.notes.append(
        f"one batch of {size.batch} sequences ({res['tokens']:,} response tokens) of the distill workload; the "
        f"cross-entropy step runs the same decoder forward, the output layer at the same response positions, "
        f"F.cross_entropy, backward, clip and AdamW on tensors built once. Paced step, median per part: "
        + ", ".join(f"{k} {p.median:.3f} s ({p.median / total:.0%})" for k, p in parts.items())
        + f". Output layer + loss alone, forward + backward from the same fixed [N, H] hidden states of the "
        f"response tokens: F.linear + F.cross_entropy {ce.median:.3f} s, paced `losses.fused_head_losses` (fkl, "
        f"what micro_batch_loss runs for an nn.Linear head) {pl_.median:.3f} s. torch.profiler, one paced step, "
        f"top ops by self CPU time: " + ", ".join(f"{k} {v:.3f} s" for k, v in res["ops"])
        + ". The teacher floor is `model(input_ids, attention_mask).logits` (all positions, float32) under "
        f"inference_mode; torch.profiler of one `score_sequences`, top ops by self CPU time: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in res["teacher_ops"]) + "."
    )
    return sec
