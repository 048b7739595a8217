"""stages.training.losses.fused_head_losses against the materialised path (logits, then token_losses).

The fused path must give the same per-token losses and the same gradients for the hidden
states, the output weight and its bias, while no tensor the size of [tokens, vocab] exists.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stages.training import forward, losses
from stages.training.losses import LOSSES, fused_head_losses, token_losses
from tests.loss_references import bucket_losses

N, H, V, K = 11, 8, 40, 6
ATOL = 1e-5


def teacher(n, vocab, k, seed):
    """Stored teacher top-k + tail of random teacher logits: ([n, k] ids, [n, k] logprobs, [n] tail)."""
    g = torch.Generator().manual_seed(seed)
    full = torch.log_softmax(torch.randn(n, vocab, generator=g, dtype=torch.float64) * 3, dim=-1)
    lp, ids = full.topk(k, dim=-1, sorted=True)
    tail = torch.logsumexp(full.scatter(-1, ids, float("-inf")), dim=-1)  # -inf when k == vocab
    return ids, lp.float(), tail.float()


def leaves(seed, with_bias, n=N, vocab=V):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, H, generator=g).requires_grad_()
    weight = (torch.randn(vocab, H, generator=g) * 0.7).requires_grad_()
    bias = (torch.randn(vocab, generator=g) * 0.3).requires_grad_() if with_bias else None
    return hidden, weight, bias


def materialised(hidden, weight, bias, ids, lp, tail, loss, chunk_size):
    """The reference: [1, N, V] logits, then token_losses; results [N]."""
    logits = F.linear(hidden, weight, bias)[None]
    mask = torch.ones(1, hidden.shape[0], dtype=torch.bool)
    out = token_losses(logits, ids[None], lp[None], tail[None], mask, loss=loss, chunk_size=chunk_size)
    return {name: v[0] for name, v in out.items()}


def objective(out, seed):
    """A random mix of the selected loss and both logged columns, so every column's gradient counts."""
    g = torch.Generator().manual_seed(seed)
    return sum((out[name] * torch.rand(out[name].shape, generator=g)).sum() for name in ("loss", "fkl", "rkl"))


def grads(out, tensors, seed=7):
    objective(out, seed).backward()
    found = [t.grad.clone() for t in tensors if t is not None]
    for t in tensors:
        if t is not None:
            t.grad = None
    return found


@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("chunk_size", [1, 4, N, N + 7])
@pytest.mark.parametrize("loss", LOSSES)
def test_fused_equals_materialised_losses_and_gradients(loss, chunk_size, with_bias):
    ids, lp, tail = teacher(N, V, K, seed=1)
    hidden, weight, bias = leaves(2, with_bias)
    ref = materialised(hidden, weight, bias, ids, lp, tail, loss, chunk_size)
    fused = fused_head_losses(hidden, weight, bias, ids, lp, tail, loss=loss, chunk_size=chunk_size)
    assert set(fused) == set(ref)
    for name in ref:
        assert fused[name].shape == (N,) and fused[name].dtype == torch.float32
        torch.testing.assert_close(fused[name], ref[name], atol=ATOL, rtol=0)
    for got, want in zip(grads(fused, (hidden, weight, bias)), grads(ref, (hidden, weight, bias))):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_fused_is_exact_at_k_equal_vocab():
    # k = V: the tail is -inf, the bucket empty; the fused path must stay finite like token_losses.
    ids, lp, tail = teacher(N, V, V, seed=3)
    hidden, weight, bias = leaves(4, True)
    ref = materialised(hidden, weight, bias, ids, lp, tail, "fkl", 4)
    fused = fused_head_losses(hidden, weight, bias, ids, lp, tail, loss="fkl", chunk_size=4)
    torch.testing.assert_close(fused["loss"], ref["loss"], atol=ATOL, rtol=0)
    for got, want in zip(grads(fused, (hidden, weight, bias)), grads(ref, (hidden, weight, bias))):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_tied_weight_gets_both_gradients():
    # The output weight is also the input embedding: its gradient is the sum of both uses.
    ids, lp, tail = teacher(N, V, K, seed=5)
    g = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, V, (N,), generator=g)
    embed = (torch.randn(V, H, generator=g) * 0.7).requires_grad_()
    mix = torch.randn(H, H, generator=g).requires_grad_()

    def run(fused: bool):
        hidden = torch.tanh(F.embedding(tokens, embed) @ mix)
        if fused:
            return fused_head_losses(hidden, embed, None, ids, lp, tail, loss="akl", chunk_size=3)
        return materialised(hidden, embed, None, ids, lp, tail, "akl", 3)

    for got, want in zip(grads(run(True), (embed, mix)), grads(run(False), (embed, mix))):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_frozen_weight_gets_no_gradient_buffer():
    # LoRA freezes the output layer: only hidden needs a gradient, and only hidden gets one.
    ids, lp, tail = teacher(N, V, K, seed=8)
    hidden, weight, _ = leaves(9, False)
    weight.requires_grad_(False)
    fused = fused_head_losses(hidden, weight, None, ids, lp, tail, chunk_size=4)
    (g_fused,) = grads(fused, (hidden,))
    (g_ref,) = grads(materialised(hidden, weight, None, ids, lp, tail, "fkl", 4), (hidden,))
    torch.testing.assert_close(g_fused, g_ref, atol=ATOL, rtol=0)
    assert weight.grad is None


def test_no_positions_gives_empty_losses_and_zero_gradients():
    ids, lp, tail = teacher(0, V, K, seed=10)
    hidden, weight, bias = leaves(11, True, n=0)
    out = fused_head_losses(hidden, weight, bias, ids, lp, tail, chunk_size=4)
    assert out["loss"].shape == (0,)
    out["loss"].sum().backward()
    assert not weight.grad.any() and not bias.grad.any()


def test_bad_arguments_are_reported_together():
    ids, lp, tail = teacher(N, V, K, seed=12)
    hidden, weight, _ = leaves(13, False)
    with pytest.raises(ValueError) as e:
        fused_head_losses(hidden, weight[:, :3], None, ids, lp, tail, loss="no-such-loss", chunk_size=0)
    msg = str(e.value)
    assert "loss='no-such-loss'" in msg and "chunk_size=0" in msg and "weight must be a float [V, H=8]" in msg


# ------------------------------------------------------------------ no [tokens, vocab] tensor


def largest_tensor(fn) -> int:
    """The most elements of any tensor an aten op produced while fn ran (forward and backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Largest(TorchDispatchMode):
        most = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    Largest.most = max(Largest.most, t.numel())
            return out

    with Largest():
        fn()
    return Largest.most


def test_no_tensor_of_tokens_by_vocab_exists():
    # Counting elements, not bytes from an allocator: exact and independent of the machine.
    n, vocab, chunk = 64, 200, 4
    ids, lp, tail = teacher(n, vocab, K, seed=14)
    hidden, weight, bias = leaves(15, True, n=n, vocab=vocab)

    def fused_step():
        fused_head_losses(hidden, weight, bias, ids, lp, tail, chunk_size=chunk)["loss"].sum().backward()

    # The check sees backward too: the materialised path's backward makes the [N, V] gradient.
    out = materialised(hidden, weight, bias, ids, lp, tail, "fkl", chunk)
    assert largest_tensor(lambda: out["loss"].sum().backward()) >= n * vocab
    # The largest the fused step may make: the [V, H] weight gradient, or one chunk's [chunk, V].
    assert largest_tensor(fused_step) <= max(vocab * H, chunk * vocab) < n * vocab


# ------------------------------------------------------------------ through micro_batch_loss


def tiny_qwen2(tied: bool, vocab: int = 96):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=tied,
    )
    return Qwen2ForCausalLM(config).float()


def micro_batch(vocab: int, k: int = 5):
    """Three right-padded sequences with responses of 7, 3 and 5 tokens after 4-token prompts."""
    lengths, prompt, g = [7, 3, 5], 4, torch.Generator().manual_seed(16)
    B, R, L = len(lengths), max(lengths), prompt + max(lengths)
    batch = dict(
        input_ids=torch.randint(0, vocab, (B, L), generator=g),
        attention=torch.zeros(B, L, dtype=torch.long),
        gather=torch.zeros(B, R, dtype=torch.long),
        mask=torch.zeros(B, R, dtype=torch.bool),
        topk_ids=torch.zeros(B, R, k, dtype=torch.long),
        topk_lp=torch.full((B, R, k), -1e4),
        tail=torch.full((B, R), -1e4),
    )
    for b, n in enumerate(lengths):
        batch["attention"][b, : prompt + n] = 1
        batch["gather"][b, :n] = torch.arange(prompt - 1, prompt + n - 1)
        batch["mask"][b, :n] = True
        ids, lp, tail = teacher(n, vocab, k, seed=17 + b)
        batch["topk_ids"][b, :n], batch["topk_lp"][b, :n], batch["tail"][b, :n] = ids, lp, tail
    return batch


def old_micro_batch_loss(model, batch, coef, *, loss, mu, chunk_size):
    """micro_batch_loss as it was before fusing: [B, R, V] logits, then token_losses."""
    hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention"]).last_hidden_state
    idx = batch["gather"].unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    logits = model.get_output_embeddings()(torch.gather(hidden, 1, idx))
    terms = token_losses(logits, batch["topk_ids"], batch["topk_lp"], batch["tail"], batch["mask"], loss=loss, mu=mu, chunk_size=chunk_size)
    return {name: (losses.sequence_sums(terms[name], batch["mask"])[0] * coef).sum() for name in ("loss", "fkl", "rkl")}


def compare_with_old(model, loss):
    batch, coef = micro_batch(model.config.vocab_size), torch.tensor([0.5, 2.0, 0.0])
    results = []
    for fn in (old_micro_batch_loss, forward.micro_batch_loss):
        model.zero_grad(set_to_none=True)
        kw = {"autocast": lambda: torch.autocast("cpu", enabled=False)} if fn is forward.micro_batch_loss else {}
        out = fn(model, batch, coef, loss=loss, mu=0.5, chunk_size=4, **kw)
        out["loss"].backward()
        named = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append(({k: v.detach() for k, v in out.items()}, named))
    (old, old_grads), (new, new_grads) = results
    for name in ("loss", "fkl", "rkl"):
        torch.testing.assert_close(new[name], old[name], atol=ATOL, rtol=1e-6)
    assert set(new_grads) == set(old_grads) and new_grads
    for name in old_grads:
        torch.testing.assert_close(new_grads[name], old_grads[name], atol=ATOL, rtol=1e-5, msg=name)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("loss", ["fkl", "akl"])
def test_micro_batch_loss_matches_the_materialised_step(tied, loss):
    model = tiny_qwen2(tied)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    compare_with_old(model, loss)


def test_lora_wrapped_head_falls_back_to_materialised_logits():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_qwen2(False), peft.LoraConfig(r=2, target_modules=["lm_head", "q_proj"]))
    assert type(model.get_output_embeddings()) is not torch.nn.Linear
    compare_with_old(model, "rkl")


# ------------------------------------------------------------------ the closed-form backward
#
# Backward does not run autograd: it writes d(loss)/d(logits) in closed form (losses._bucket_grads,
# losses._logit_grads_). Three references check it: autograd through the same forward arithmetic
# (losses._chunk_losses on materialised logits, which is what backward used to run chunk by
# chunk), a plain full-vocabulary float64 computation written out here, and
# torch.autograd.gradcheck's finite differences on the real code in float64.


def autograd_reference(hidden, weight, bias, ids, lp, tail, loss, mu=0.5):
    """Autograd through losses._chunk_losses on [N, V] logits: the previous backward's arithmetic."""
    logits = F.linear(hidden, weight, bias)
    teacher = losses._teacher_buckets(lp, tail, torch.float64 if logits.dtype == torch.float64 else torch.float32)
    values = losses._chunk_losses(logits, ids.long(), teacher, mu, losses.extra_of(loss))
    out = {"fkl": values[:, 0], "rkl": values[:, 1]}
    if loss == "akl":
        out["akl"] = values[:, 2]
    out["loss"] = out[loss]
    return out


def full_vocab_reference(hidden, weight, bias, ids, lp, tail, loss, mu=0.5):
    """The losses from scratch in float64 over the whole vocabulary, as the module defines them:
    teacher top-k + tail renormalised, student log-softmax coarsened to the same k+1 buckets,
    buckets floored at -1e4, AKL's mixing weights detached. AKL's head as in the authors' code:
    the ids (stored sorted) whose cumulative teacher mass, their own included, is <= mu, and the
    top-1 always; the tail bucket is in the tail."""
    floor = -1.0e4
    logp = torch.log_softmax(F.linear(hidden.double(), weight.double(), None if bias is None else bias.double()), -1)
    s_top = logp.gather(-1, ids.long())
    s_tail = torch.logsumexp(logp.scatter(-1, ids.long(), float("-inf")), -1)
    s = torch.cat([s_top, s_tail[:, None]], -1).clamp_min(floor)
    t = torch.cat([lp.double(), tail.double()[:, None]], -1).clamp_min(floor)
    t = torch.log_softmax(t, -1).clamp_min(floor)
    out = bucket_losses(t, s, mu)  # (the buckets as the module floors them: then the shared definitions)
    if loss != "akl":
        del out["akl"]
    out["loss"] = out[loss]
    return out


def all_grads(out, tensors, seed=7):
    """Gradients of a random mix of every column (the logged ones count too)."""
    g = torch.Generator().manual_seed(seed)
    mix = {name: torch.rand(out[name].shape, generator=g, dtype=torch.float64) for name in sorted(out)}
    total = sum((out[name] * mix[name].to(out[name].dtype)).sum() for name in out)
    found = torch.autograd.grad(total, [t for t in tensors if t is not None])
    return list(found)


def leaves64(seed, with_bias, n, vocab, h=H):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64).requires_grad_()
    weight = (torch.randn(vocab, h, generator=g, dtype=torch.float64) * 0.7).requires_grad_()
    bias = (torch.randn(vocab, generator=g, dtype=torch.float64) * 0.3).requires_grad_() if with_bias else None
    return hidden, weight, bias


@pytest.mark.parametrize("k", [1, K, V - 1, V])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("loss", LOSSES)
def test_closed_form_backward_equals_autograd_through_the_forward(loss, with_bias, k):
    ids, lp, tail = teacher(N, V, k, seed=30 + k)
    hidden, weight, bias = leaves(31, with_bias)
    tensors = (hidden, weight, bias)
    for chunk_size in (3, N + 1):  # several chunks (one reused scratch buffer) and one
        fused = fused_head_losses(hidden, weight, bias, ids, lp, tail, loss=loss, chunk_size=chunk_size)
        ref = autograd_reference(hidden, weight, bias, ids, lp, tail, loss)
        for name in ref:
            torch.testing.assert_close(fused[name], ref[name], atol=1e-6, rtol=1e-6)
        for got, want in zip(all_grads(fused, tensors), all_grads(ref, tensors)):
            torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("k", [3, 9])
@pytest.mark.parametrize("loss", ["fkl", "rkl"])
def test_gradcheck_in_float64(loss, k):
    # Finite differences against the closed form, on the real code (float64 inputs are computed
    # in float64). AKL is left out on purpose: its mixing weights are detached by definition, so
    # finite differences, which see them move, measure a different derivative (see below).
    n, vocab = 5, 9
    ids, lp, tail = teacher(n, vocab, k, seed=40 + k)
    hidden, weight, bias = leaves64(41, True, n, vocab, h=3)

    def fn(h, w, b):
        out = fused_head_losses(h, w, b, ids, lp, tail, loss=loss, chunk_size=2)
        return torch.stack([out["fkl"], out["rkl"]])

    assert torch.autograd.gradcheck(fn, (hidden, weight, bias), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("k", [3, 9])
@pytest.mark.parametrize("loss", LOSSES)
def test_float64_gradients_equal_the_full_vocabulary_reference(loss, k):
    n, vocab = 7, 9
    ids, lp, tail = teacher(n, vocab, k, seed=50 + k)
    hidden, weight, bias = leaves64(51, True, n, vocab, h=4)
    tensors = (hidden, weight, bias)
    fused = fused_head_losses(hidden, weight, bias, ids, lp, tail, loss=loss, chunk_size=3)
    ref = full_vocab_reference(hidden, weight, bias, ids, lp, tail, loss)
    assert fused["loss"].dtype == torch.float64
    for name in ref:
        torch.testing.assert_close(fused[name], ref[name], atol=1e-12, rtol=1e-10)
    for got, want in zip(all_grads(fused, tensors), all_grads(ref, tensors)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("loss", LOSSES)
def test_realistic_shape_against_float64_and_autograd(loss):
    # A real vocabulary and top-k, several chunks with a short last one, a bias, float32 as
    # trained: the closed form against autograd through the forward (same float32 arithmetic)
    # and against the full-vocabulary float64 reference (float32 rounding only).
    n, h, vocab, k = 80, 32, 32_000, 32
    ids, lp, tail = teacher(n, vocab, k, seed=60)
    g = torch.Generator().manual_seed(61)
    hidden = torch.randn(n, h, generator=g).requires_grad_()
    weight = (torch.randn(vocab, h, generator=g) * 0.4).requires_grad_()
    bias = (torch.randn(vocab, generator=g) * 0.1).requires_grad_()
    tensors = (hidden, weight, bias)
    fused = fused_head_losses(hidden, weight, bias, ids, lp, tail, loss=loss, chunk_size=32)
    got = all_grads(fused, tensors)
    auto = all_grads(autograd_reference(hidden, weight, bias, ids, lp, tail, loss), tensors)
    ref = full_vocab_reference(hidden, weight, bias, ids, lp, tail, loss)
    exact = all_grads(ref, tensors)
    for name in ref:
        torch.testing.assert_close(fused[name].double(), ref[name], atol=2e-5, rtol=1e-5)
    for a, b, c in zip(got, auto, exact):
        scale = c.abs().max().item()
        torch.testing.assert_close(a, b, atol=1e-6 * scale, rtol=1e-5)
        torch.testing.assert_close(a, c, atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("loss", LOSSES)
def test_bf16_autocast_gradients_match_autograd(loss):
    # On GPUs the output layer runs under bf16 autocast: the closed form works in float32 on the
    # bf16 logits and hands bf16 gradients to the matmuls, as autograd through the forward does
    # (which rounds its two partial gradients to bf16 separately, hence the tolerance).
    ids, lp, tail = teacher(N, V, K, seed=70)
    hidden, weight, bias = leaves(71, True)
    tensors = (hidden, weight, bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = fused_head_losses(hidden, weight, bias, ids, lp, tail, loss=loss, chunk_size=4)
        ref = autograd_reference(hidden, weight, bias, ids, lp, tail, loss)
    for name in ref:
        assert fused[name].dtype == torch.float32
        torch.testing.assert_close(fused[name], ref[name], atol=1e-6, rtol=1e-6)
    for got, want in zip(all_grads(fused, tensors), all_grads(ref, tensors)):
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=2e-2 * want.abs().max().item(), rtol=2e-2)


def test_floored_student_bucket_gets_zero_gradient_like_autograd():
    # A student logit 3e4 below the rest puts its bucket under the -1e4 floor: the floor's
    # clamp passes no gradient there, and the closed form must agree (fkl alone would push it).
    ids, lp, tail = teacher(N, V, K, seed=80)
    hidden, weight, bias = leaves(81, True)
    with torch.no_grad():
        bias[ids[:, 1]] = -3.0e4  # the second-ranked teacher id, in every row
    tensors = (hidden, weight, bias)
    fused = fused_head_losses(hidden, weight, bias, ids, lp, tail, loss="akl", chunk_size=4)
    ref = autograd_reference(hidden, weight, bias, ids, lp, tail, "akl")
    got, want = all_grads(fused, tensors), all_grads(ref, tensors)
    for a, b in zip(got, want):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (got[2][ids[:, 1]] == 0).all()  # the floored logit's bias: no gradient

