"""Peak memory of one distill step: the fused output layer + losses against materialised logits.

    python -m bench.memory                          # lengths 512, 2048, 8192: about 5 minutes on 2 cores
    python -m bench.memory --lengths 512 2048

One step is `stages.training.forward.micro_batch_loss` + backward on one sequence (a 16-token prompt and
a response of the given length, teacher top-32 + tail) of a Qwen2 model built from a config
with a small body (hidden 64, 2 layers) and Qwen's FULL vocabulary of 151,936 tokens, so that
the output layer dominates as it does for long reasoning traces. Two ways:

- fused: `micro_batch_loss` as the stage runs it (`losses.fused_head_losses`: logits exist
  one chunk of positions at a time, in forward and backward);
- materialised: the same function made to take its unfused path (the one it keeps for heads
  that are not a plain nn.Linear): [1, R, V] float32 logits, then `losses.token_losses`.

Each runs in its own interpreter (`bench.common.in_child`, which reads the child's own
`ru_maxrss` through `os.wait4`); a third child per length only builds the model and the batch,
and its peak is the baseline subtracted from both. The materialised step at 8,192 tokens needs
two float32 [8192, 151936] tensors (logits and their gradient, 5.0 GB each): a child that runs
out of memory is reported as OOM, not a crash.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bench import common

VOCAB = 151_936  # Qwen2/Qwen2.5/Qwen3 vocab_size (config.json of Qwen/Qwen2.5-1.5B)
PROMPT = 16
TOP_K = 32
MODES = ("baseline", "materialised", "fused")


def build(length: int):
    """The model (float32, train mode) and a one-sequence batch as `stages.training.data.collate` makes it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=PROMPT + length, tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config).float().train()
    g = torch.Generator().manual_seed(1)
    # Teacher top-k: distinct ids (a random window), sorted log-probs and the tail, like the artifact.
    start = torch.randint(0, VOCAB - TOP_K, (1, length, 1), generator=g)
    buckets = torch.log_softmax(torch.randn(1, length, TOP_K + 1, generator=g) * 3, dim=-1)
    top = buckets[..., :TOP_K].sort(dim=-1, descending=True).values
    batch = dict(
        input_ids=torch.randint(0, VOCAB, (1, PROMPT + length), generator=g),
        attention=torch.ones(1, PROMPT + length, dtype=torch.long),
        gather=torch.arange(PROMPT - 1, PROMPT + length - 1)[None],
        mask=torch.ones(1, length, dtype=torch.bool),
        topk_ids=start + torch.arange(TOP_K),
        topk_lp=top,
        tail=buckets[..., TOP_K],
    )
    return model, batch


def child_step(mode: str, length: int, chunk_size: int) -> dict:
    """Runs in its own interpreter: build, then (unless baseline) one forward + backward."""
    import torch

    from stages.training import forward

    model, batch = build(length)
    if mode == "baseline":
        return {"seconds": 0.0}
    seen = []
    if mode == "materialised":
        # Any forward hook on the head sends micro_batch_loss down its unfused path; the hook
        # also proves the [1, R, V] logits were made.
        model.get_output_embeddings().register_forward_hook(lambda mod, args, out: seen.append(tuple(out.shape)))
    started = time.perf_counter()
    terms = forward.micro_batch_loss(model, batch, torch.ones(1), loss="fkl", mu=0.5, chunk_size=chunk_size,
                                     autocast=lambda: torch.autocast("cpu", enabled=False))
    terms["loss"].backward()
    seconds = time.perf_counter() - started
    if mode == "materialised" and seen != [(1, length, VOCAB)]:
        raise RuntimeError(f"the materialised step did not make [1, {length}, {VOCAB}] logits: {seen}")
    return {"seconds": seconds, "loss": float(terms["loss"])}


def measure(mode: str, length: int, chunk_size: int) -> tuple[int | None, float | None, str]:
    """(peak RSS bytes, step seconds, note); (None, None, "OOM") if the child ran out of memory."""
    try:
        r = common.in_child("bench.memory:child_step", mode=mode, length=length, chunk_size=chunk_size)
    except RuntimeError as e:
        text = str(e)
        # SIGKILL is the kernel's OOM killer; the others are torch's and Python's own refusals.
        if "exit -9" in text or any(s in text for s in ("not enough memory", "MemoryError", "Cannot allocate memory")):
            print(f"bench.memory: {mode} at {length} tokens ran out of memory:\n{text[-800:]}", file=sys.stderr)
            return None, None, "OOM"
        raise
    return r.max_rss, r.value["seconds"], ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192], help="response lengths in tokens")
    ap.add_argument("--chunk-size", type=int, default=1024,
                    help="positions per chunk in both ways (paced distill's --chunk-size default)")
    args = ap.parse_args(argv)
    if args.chunk_size < 1 or any(n < 1 for n in args.lengths):
        ap.error("--chunk-size and every --lengths value must be at least 1")
    # One thread: memory does not depend on it, and the shared 2-core machines stay usable.
    common.set_threads(1)
    mib = 2**20

    def cell(peak, base):
        return "OOM" if peak is None else f"{(peak - base) / mib:,.0f}"

    rows = []
    for length in args.lengths:
        print(f"bench.memory: {length} tokens ...", file=sys.stderr, flush=True)
        base, _, _ = measure("baseline", length, args.chunk_size)
        mat, mat_s, _ = measure("materialised", length, args.chunk_size)
        fus, fus_s, _ = measure("fused", length, args.chunk_size)
        ratio = "n/a" if mat is None else f"{(mat - base) / max(fus - base, 1):.1f}x"
        secs = f"{'OOM' if mat_s is None else f'{mat_s:.1f}'} / {fus_s:.1f}"
        logits_gb = length * VOCAB * 4 / 1e9
        rows.append(f"| {length:,} | {logits_gb:.2f} | {cell(mat, base)} | {cell(fus, base)} | {ratio} | {secs} | {base / mib:,.0f} |")
    print(
        "\n".join(
            [
                f"# peak memory of one distill step, vocabulary {VOCAB:,}, chunk {args.chunk_size}",
                "",
                f"- machine: {common.machine()}",
                f"- versions: {common.versions()}",
                f"- model: Qwen2 from a config, hidden 64, 2 layers, untied head; batch 1 sequence, "
                f"{PROMPT}-token prompt, top-{TOP_K} + tail teacher; forward + backward, float32 on CPU",
                "- MB: peak RSS of the step's own process minus that of a process that only builds the "
                "model and batch (MiB)",
                "",
                "| response tokens | one float32 [R, V] copy, GB | materialised MB | fused MB | "
                "ratio | step s (materialised / fused) | baseline MB |",
                "|---:|---:|---:|---:|---:|---:|---:|",
                *rows,
            ]
        )
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PACED_NO_PROGRESS", "1")
    sys.exit(main())
