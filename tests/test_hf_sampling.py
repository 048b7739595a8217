"""The transformers backend's sampler: each sample from its own generator (seed + k), drawn
from exactly the distribution the options define, whatever the batch, K or first index."""

from __future__ import annotations

import math

import pytest
import torch

from stages.backends.hf import SeededSampler, generate_hf
from stages.backends.sampling import SamplingOptions


def warped(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The sampling distribution by hand, in transformers' order: softmax at the temperature;
    the k most likely, renormalised; then the smallest set of the most likely tokens whose mass
    among those reaches top_p, renormalised."""
    p = torch.softmax(logits.double() / temperature, -1)
    order = p.argsort(descending=True).tolist()
    if top_k:
        p[order[top_k:]] = 0.0
        p /= p.sum()
    keep = torch.zeros_like(p, dtype=torch.bool)
    mass = 0.0
    for v in order:
        if mass >= top_p or p[v] == 0:
            break
        keep[v] = True
        mass += p[v].item()
    q = torch.where(keep, p, 0.0)
    return q / q.sum()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 5, 1.0), (1.0, 0, 0.8), (0.8, 6, 0.9)])
def test_draws_follow_the_warped_distribution(temperature, top_k, top_p):
    """20,000 rows, each its own seed, drawing from the same logits: every token's frequency is
    within 4.5 standard errors of its probability, and no token outside the support is drawn."""
    vocab, rows = 12, 20_000
    logits = torch.linspace(-2.0, 2.5, vocab)[torch.randperm(vocab, generator=torch.Generator().manual_seed(3))]
    options = SamplingOptions(n=1, temperature=temperature, top_p=top_p, max_new_tokens=1, top_k=top_k)
    sampler = SeededSampler(options, seeds=list(range(1_000, 1_000 + rows)), width=4)
    out = sampler(torch.zeros((rows, 4), dtype=torch.long), logits.float().repeat(rows, 1))
    assert torch.isin(out, torch.tensor([0.0, float("-inf")])).all() and ((out == 0).sum(-1) == 1).all()
    counts = torch.bincount(out.argmax(-1), minlength=vocab).double()
    q = warped(logits, temperature, top_k, top_p)
    assert (counts[q == 0] == 0).all()
    se = (q * (1 - q) / rows).sqrt()
    z = ((counts / rows - q).abs() / se.clamp(min=1e-12))[q > 0]
    assert z.max() < 4.5, (counts / rows, q)


def test_a_rows_draws_depend_on_its_seed_and_step_alone():
    options = SamplingOptions(n=1, temperature=1.0, top_p=1.0, max_new_tokens=3)
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    a = SeededSampler(options, seeds=[7, 8, 9], width=2)(torch.zeros((3, 3), dtype=torch.long), logits)
    b = SeededSampler(options, seeds=[9, 7], width=5)(torch.zeros((2, 6), dtype=torch.long), logits[[2, 0]])
    assert torch.equal(a[[2, 0]], b)  # same seed, step 1 and logits: same draw, whatever the batch


def test_sample_k_is_the_same_in_any_batch_any_k_and_from_any_first_index(student_dir, tokenizer):
    """Sample k of a prompt is the same whether it is drawn with K = 4 or alone as `first` = k,
    and at batch size 1 or 3 (the prompts differ in length, so the padding differs too)."""
    from transformers import AutoModelForCausalLM

    from stages import models
    from stages.prompts import encode_prompts

    model = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).eval()
    rows = [{"prompt": p, "reference": ""} for p in ("What is 2 + 2?", "Name a prime number larger than ten.", "Hi")]
    prompts = encode_prompts(tokenizer, rows)
    eos = models.eos_token_ids(model, tokenizer)
    options = SamplingOptions(n=4, temperature=1.0, top_p=1.0, max_new_tokens=6)
    seeds = [11, 2**62 + 5, 123]
    together = generate_hf(model, tokenizer, prompts, options, eos_ids=eos, batch_size=3, seeds=seeds)
    alone = generate_hf(model, tokenizer, prompts, options, eos_ids=eos, batch_size=1, seeds=seeds)
    assert together == alone
    assert all(len({tuple(s.token_ids) for s in per_prompt}) > 1 for per_prompt in together)  # not copies
    for k in range(4):
        one = generate_hf(model, tokenizer, prompts, SamplingOptions(n=1, temperature=1.0, top_p=1.0, max_new_tokens=6),
                          eos_ids=eos, batch_size=2, seeds=seeds, first=k)
        assert [s[0] for s in one] == [per_prompt[k] for per_prompt in together]
    shifted = generate_hf(model, tokenizer, prompts, options, eos_ids=eos, batch_size=3, seeds=[s + 1 for s in seeds])
    assert [p[:3] for p in shifted] == [p[1:] for p in together]  # seed + k: the seed names sample 0
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate_hf(model, tokenizer, prompts, options, eos_ids=eos, batch_size=3)


def test_the_uniform_draws_leave_every_token_reachable():
    """float64 uniforms and a float64 cumulative sum: a token of mass 1e-9 is drawn at its rate
    (here forced: the uniform lands in the middle of its interval), and u at the top picks the last token
    with mass, never one with none."""
    options = SamplingOptions(n=1, temperature=1.0, top_p=1.0, max_new_tokens=1)
    sampler = SeededSampler(options, seeds=[0, 1], width=1)
    logits = torch.tensor([[0.0, math.log(1e-9), 0.0, float("-inf")]] * 2)
    p = torch.softmax(logits.double(), -1)
    sampler.uniforms = torch.tensor([[p[0, 0].item() + p[0, 1].item() / 2], [1 - 2**-53]], dtype=torch.float64)
    out = sampler(torch.zeros((2, 1), dtype=torch.long), logits)
    assert out.argmax(-1).tolist() == [1, 2]
