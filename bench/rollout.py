"""Section `rollout`: tokens per second of `paced rollout` (transformers backend, K = 8).

    python -m bench --only rollout [--quick]

On a tiny model (examples/tiny_model.build defaults: Qwen2, hidden 64, 2 layers, the test
fixtures' 400-token vocabulary), the whole stage (`rollout.run`: read and validate problems,
load the model, generate, decode, write parts and manifest) against the floor of
`model.generate` alone on the same prompts with the same sampling (K return sequences per
prompt, temperature 1, top-p 1, no top-k, the same batches). Tokens are response tokens up
to and including the end-of-sequence token, counted the same way for both. Alternated, the
median of several runs after a warm-up.
"""

from __future__ import annotations

from pathlib import Path

from bench.common import Context, Section, Stat, ratio, spread, timed_together
from bench.workload import TextGen, tiny_model, write_problems

K = 8


def section(ctx: Context) -> Section:
    import polars as pl
    import torch
    from transformers import GenerationConfig

    from stages import models, prompts, rollout
    from stages.generate import split_response

    sec = Section("rollout", "4. rollout")
    d = ctx.work / "rollout"
    d.mkdir(parents=True, exist_ok=True)
    n, max_new, runs = (8, 32, 3) if ctx.quick else (32, 128, 5)
    model_dir = tiny_model.build(d / "model", seed=0)
    ids = [f"r{i:03d}" for i in range(n)]
    write_problems(d / "problems.parquet", ids, TextGen(seed=1, lexicon=2_000).sentences(n, words=(4, 10)))

    state = {"call": 0, "paced_tokens": [], "floor_tokens": []}

    def paced() -> None:
        state["call"] += 1
        out = rollout.run(rollout.RolloutConfig(problems=d / "problems.parquet", model=str(model_dir), out=d / f"out{state['call']}",
                                                samples=K, temperature=1.0, top_p=1.0, max_new_tokens=max_new, seed=state["call"]))
        frame = pl.read_parquet(Path(out) / "part-*.parquet", columns=["completion_token_ids"])
        state["paced_tokens"].append(int(frame["completion_token_ids"].list.len().sum()))

    model = models.load_model(str(model_dir), device="cpu")
    tokenizer = models.load_tokenizer(str(model_dir))
    prompt_ids = prompts.encode_prompts(tokenizer, pl.read_parquet(d / "problems.parquet").to_dicts())
    eos = models.eos_token_ids(model, tokenizer)
    gen = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=None, max_new_tokens=max_new,
                           num_return_sequences=K, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    batch = rollout.RolloutConfig.batch_size

    def floor() -> None:
        tokens = 0
        for s in range(0, n, batch):
            chunk = prompt_ids[s : s + batch]
            width = max(len(p) for p in chunk)
            input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in chunk])
            attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            with torch.inference_mode():
                out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=gen)
            tokens += sum(len(split_response(r, eos, max_new).token_ids) for r in out[:, width:].tolist())
        state["floor_tokens"].append(tokens)

    t = timed_together({"paced": paced, "floor": floor}, runs)
    paced_tps = Stat(tuple(k / s for k, s in zip(state["paced_tokens"][-runs:], t["paced"].values)))
    floor_tps = Stat(tuple(k / s for k, s in zip(state["floor_tokens"][-runs:], t["floor"].values)))
    r = ratio(paced_tps, floor_tps)
    sec.add(f"paced rollout, transformers backend, K = {K}: tokens/s", f"{paced_tps.median:,.0f}", spread(paced_tps, "{:,.0f}"), runs)
    sec.add(f"floor: model.generate alone, K = {K}: tokens/s", f"{floor_tps.median:,.0f}", spread(floor_tps, "{:,.0f}"), runs)
    sec.add("ratio paced rollout / model.generate", f"{r.median:.2f}", spread(r), runs)
    sec.add(f"paced rollout, vLLM backend, K = {K}", "n/a (no vLLM backend yet)")
    sec.notes.append(
        f"{n} problems x K = {K} samples, up to {max_new} new tokens, batches of {batch} prompts, temperature 1; "
        f"tiny random model ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, vocabulary "
        f"{len(tokenizer)}), so per-token Python overhead, not arithmetic, is what this measures. The paced figure is "
        f"the whole stage call (model loading and Parquet writing included)."
    )
    return sec
