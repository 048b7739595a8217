"""stages.training.losses against brute-force float64 references written out plainly here."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.training.losses import LOSSES, sequence_sums, token_losses
from tests.loss_references import bucket_losses, kl

B, T, V = 2, 5, 50


def make_case(seed, k, batch=B, seq=T, vocab=V, teacher_scale=3.0, student_scale=3.0):
    """Random teacher/student logits in float64, the teacher stored as top-k + tail."""
    g = torch.Generator().manual_seed(seed)
    teacher_logits = torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * teacher_scale
    student_logits = torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * student_scale
    mask = torch.rand(batch, seq, generator=g) < 0.7
    mask[0, 0] = True  # at least one position counts
    topk_lp, topk_ids, tail = store_teacher(teacher_logits, k)
    return dict(
        teacher_logits=teacher_logits,
        student_logits=student_logits,
        topk_ids=topk_ids,
        topk_logprobs=topk_lp,
        tail_logprob=tail,
        mask=mask,
    )


def store_teacher(teacher_logits, k):
    full = torch.log_softmax(teacher_logits, dim=-1)
    topk_lp, topk_ids = full.topk(k, dim=-1, sorted=True)
    rest = full.scatter(-1, topk_ids, -math.inf)
    tail = torch.logsumexp(rest, dim=-1)  # -inf when k == V
    return topk_lp, topk_ids, tail


def run(case, student_logits=None, loss="fkl", **kw):
    s = case["student_logits"].float() if student_logits is None else student_logits
    return token_losses(
        s,
        case["topk_ids"],
        case["topk_logprobs"].float(),
        case["tail_logprob"].float(),
        case["mask"],
        loss=loss,
        **kw,
    )


# ---------------------------------------------------------------- references (float64, plain)


def reference_full(teacher_logits, student_logits, mask, mu=0.5):
    """Full-vocabulary fkl, rkl, akl, [B, T] each, zero off mask."""
    out = bucket_losses(torch.log_softmax(teacher_logits, -1), torch.log_softmax(student_logits, -1), mu, tail_bucket=False)
    return {n: torch.where(mask, x, torch.zeros_like(x)) for n, x in out.items()}


def reference_buckets(case, student_logits, mu=0.5):
    """fkl, rkl, akl on the k+1 bucket distributions, built by brute force in float64."""
    ids, mask = case["topk_ids"], case["mask"]
    t = torch.cat([case["topk_logprobs"], case["tail_logprob"][..., None]], -1)
    s_full = torch.log_softmax(student_logits, -1)
    s_top = s_full.gather(-1, ids)
    s_tail = torch.logsumexp(s_full.scatter(-1, ids, -math.inf), -1)
    s = torch.cat([s_top, s_tail[..., None]], -1)
    out = bucket_losses(t, s, mu)
    return {n: torch.where(mask, x, torch.zeros_like(x)) for n, x in out.items()}


def close(a, b, atol=1e-5, rtol=1e-5):
    torch.testing.assert_close(a.double(), b.double(), atol=atol, rtol=rtol)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mu", [0.5, 0.2, 0.9])
def test_k_equals_vocab_matches_full_vocabulary(seed, mu):
    case = make_case(seed, k=V)
    assert torch.isneginf(case["tail_logprob"]).all()
    ref = reference_full(case["teacher_logits"], case["student_logits"], case["mask"], mu=mu)
    out = run(case, loss="akl", mu=mu)
    for name in ("fkl", "rkl", "akl"):
        assert out[name].dtype == torch.float32 and out[name].shape == (B, T)
        close(out[name], ref[name])
    close(out["loss"], ref["akl"])


@pytest.mark.parametrize("k", [1, 3, 10, V - 1])
@pytest.mark.parametrize("mu", [0.5, 0.05])
def test_k_below_vocab_matches_bucket_reference(k, mu):
    case = make_case(10 + k, k=k)
    ref = reference_buckets(case, case["student_logits"], mu=mu)
    out = run(case, loss="akl", mu=mu)
    for name in ("fkl", "rkl", "akl"):
        close(out[name], ref[name])


def test_flat_teacher_tail_bucket_never_in_head():
    # A flat teacher with k = 2: the top-2 hold ~4% of the mass, so the head is both ids and
    # the tail bucket (96%) stays in the tail; counting it as head would change the weights.
    case = make_case(3, k=2, teacher_scale=0.1)
    ref = reference_buckets(case, case["student_logits"])
    out = run(case, loss="akl")
    close(out["akl"], ref["akl"])
    assert not torch.allclose(out["akl"], out["fkl"])


# ---------------------------------------------------------------- AKL: the authors' reference code


def reference_get_ratio(teacher_logits, logits, mu):
    """``get_ratio`` of the AKL authors' reference code (Wu et al., COLING 2025), ported as is
    but in float64 and with a stable sort (theirs is unstable, so the order of tied tokens, and
    with it which of two tied tokens straddling mu is in the head, is unspecified there).

    [..., V] logits -> (FKL weight, RKL weight, teacher cumulative mass in sorted order [..., V]).
    """
    teacher_probs = torch.softmax(teacher_logits.double(), -1)
    student_probs = torch.softmax(logits.double(), -1).detach()
    re_teacher_probs, idx = teacher_probs.sort(dim=-1, descending=True, stable=True)
    re_student_probs = student_probs.gather(-1, idx)
    errors = (re_teacher_probs - re_student_probs).abs()
    cum_sum = re_teacher_probs.cumsum(-1)
    mask = cum_sum > mu  # the tail
    mask[..., 0] = False  # the top-1 token is always in the head
    s1 = errors.masked_fill(mask, 0.0).sum(-1)
    s2 = errors.masked_fill(~mask, 0.0).sum(-1)
    return s1 / (s1 + s2), s2 / (s1 + s2), cum_sum


def reference_akl(teacher_logits, logits, mu):
    """The reference's per-token AKL: h * KL(teacher || student) + l * KL(student || teacher)."""
    h, l, _ = reference_get_ratio(teacher_logits, logits, mu)
    t, s = torch.log_softmax(teacher_logits.double(), -1), torch.log_softmax(logits.double(), -1)
    return h * kl(t, s) + l * kl(s, t)


def akl_teachers(seed, batch=4, seq=6, vocab=V):
    """Teacher logits [4, seq, vocab], one kind per row: continuous random; integer logits (many
    exact ties); a top-1 holding > 0.9 of the mass (it alone exceeds mu); two tied leaders of
    ~0.45 each, straddling mu = 0.5."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * 3
    t[1] = torch.randint(-3, 4, (seq, vocab), generator=g).double()
    t[2] = torch.randn(seq, vocab, generator=g, dtype=torch.float64)
    t[2, :, 7] += 10.0
    t[3] = torch.randn(seq, vocab, generator=g, dtype=torch.float64) * 0.3
    t[3, :, 3] = t[3, :, 11] = 6.0
    return t


def stored_full(teacher_logits):
    """k = V storage with the ids in a stable descending order (ties keep index order, as in
    the reference's stable sort); the tail is -inf."""
    full = torch.log_softmax(teacher_logits, -1)
    ids = full.sort(dim=-1, descending=True, stable=True).indices
    return ids, full.gather(-1, ids), torch.full(full.shape[:-1], -math.inf, dtype=full.dtype)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mu", [0.5, 0.3, 0.8])
def test_akl_matches_authors_reference_over_full_vocabulary(seed, mu):
    teacher_logits = akl_teachers(seed)
    g = torch.Generator().manual_seed(100 + seed)
    student_logits = torch.randn(teacher_logits.shape, generator=g, dtype=torch.float64) * 3
    mask = torch.rand(teacher_logits.shape[:2], generator=g) < 0.8
    mask[:, 0] = True  # every kind of teacher counts somewhere
    ids, lp, tail = stored_full(teacher_logits)

    h_ref, l_ref, cum = reference_get_ratio(teacher_logits, student_logits, mu)
    # The head sets must be the same in float32 and float64: no c_j within rounding of mu.
    assert (cum[mask] - mu).abs().min() > 1e-4
    # The cases exercise the rule that changed: a non-top-1 token whose mass crosses mu (tail
    # now, head before), a top-1 above mu alone, and exact ties among the teacher's tokens.
    top = torch.softmax(teacher_logits, -1).sort(-1, descending=True).values
    crossing = (cum - top < mu) & (cum > mu)
    assert crossing[..., 1:].any(-1)[mask].any()
    assert (top[2, :, 0] > mu).all() and (top[3, :, 0] == top[3, :, 1]).all()
    assert (teacher_logits[1].unsqueeze(-1) == teacher_logits[1].unsqueeze(-2)).sum() > V * teacher_logits.shape[1]

    # The mixing weights themselves, on the k+1 buckets (the tail bucket empty).
    from stages.training import losses

    teacher = losses._teacher_buckets(lp[mask].float(), tail[mask].float())
    raw, _ = losses._student_buckets(student_logits[mask].float(), ids[mask])
    w_head, w_tail = losses._akl_mix(teacher.exp(), raw.clamp_min(-1.0e4).exp(), mu)
    close(w_head, h_ref[mask], atol=1e-5, rtol=1e-5)
    close(w_tail, l_ref[mask], atol=1e-5, rtol=1e-5)

    # The loss and its gradient through token_losses, against autograd through the reference.
    s32 = student_logits.float().requires_grad_()
    out = token_losses(s32, ids, lp.float(), tail.float(), mask, loss="akl", mu=mu, chunk_size=5)
    s64 = student_logits.clone().requires_grad_()
    ref = torch.where(mask, reference_akl(teacher_logits, s64, mu), 0.0)
    close(out["akl"], ref)
    weights = torch.rand(mask.shape, generator=g, dtype=torch.float64)
    (g_out,) = torch.autograd.grad((out["loss"] * weights.float()).sum(), s32)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), s64)
    close(g_out, g_ref, atol=1e-6, rtol=1e-4)
    assert (g_out[~mask] == 0).all()


def test_akl_worked_example_crossing_token_is_tail():
    # Teacher [0.35, 0.30, 0.25 | tail 0.10], student [0.10, 0.60, 0.20 | 0.10], mu = 0.5:
    # c = 0.35, 0.65, 0.90, so the head is token 0 alone (token 1 crosses mu and goes to the
    # tail); g_head = 0.25, g_tail = 0.30 + 0.05 + 0 = 0.35. The old rule (head while the
    # mass before a token is < mu) took token 1 too: w_head = 0.55 / 0.60 = 0.917.
    from stages.training import losses

    p_t = torch.tensor([[0.35, 0.30, 0.25, 0.10]], dtype=torch.float64)
    p_s = torch.tensor([[0.10, 0.60, 0.20, 0.10]], dtype=torch.float64)
    w_head, w_tail = losses._akl_mix(p_t, p_s, 0.5)
    close(w_head, torch.tensor([0.25 / 0.60], dtype=torch.float64), atol=1e-12, rtol=1e-12)
    close(w_tail, torch.tensor([0.35 / 0.60], dtype=torch.float64), atol=1e-12, rtol=1e-12)
    # The stored order does not matter (the ids are ranked by teacher mass, as the reference sorts).
    perm = torch.tensor([2, 0, 1, 3])
    close(losses._akl_mix(p_t[:, perm], p_s[:, perm], 0.5)[0], w_head, atol=1e-12, rtol=1e-12)

    # End to end: V = 5, k = 3, the two unstored tokens 0.05 each on both sides (so the bucket's
    # |0.10 - 0.10| = 0 is also the per-token sum), against the reference over the full vocabulary.
    teacher_logits = torch.tensor([0.35, 0.30, 0.25, 0.05, 0.05], dtype=torch.float64).log()
    student_logits = torch.tensor([0.10, 0.60, 0.20, 0.05, 0.05], dtype=torch.float64).log()
    h_ref, l_ref, _ = reference_get_ratio(teacher_logits, student_logits, 0.5)
    close(h_ref, torch.tensor(0.25 / 0.60, dtype=torch.float64), atol=1e-12, rtol=1e-12)
    lp_top, ids = torch.log_softmax(teacher_logits, -1).topk(3)
    out = token_losses(
        student_logits.float().view(1, 1, 5), ids.view(1, 1, 3), lp_top.float().view(1, 1, 3),
        torch.tensor([[math.log(0.10)]]), torch.ones(1, 1, dtype=torch.bool), loss="akl", mu=0.5,
    )
    close(out["akl"], 0.25 / 0.60 * out["fkl"] + 0.35 / 0.60 * out["rkl"], atol=1e-7, rtol=1e-6)
    close(out["akl"], reference_akl(teacher_logits, student_logits, 0.5).view(1, 1))


def test_akl_head_boundaries():
    from stages.training import losses

    # c_j == mu exactly is head (<=), the next token tail: head {0, 1}, gaps 0, .25 | .25, 0.
    p_t = torch.tensor([[0.25, 0.25, 0.25, 0.25, 0.0]])
    p_s = torch.tensor([[0.25, 0.50, 0.00, 0.25, 0.0]])
    assert losses._akl_mix(p_t, p_s, 0.5)[0].item() == 0.5
    # A top-1 above mu is the whole head: gaps .2 | .1, .1.
    p_t = torch.tensor([[0.7, 0.2, 0.1, 0.0]])
    p_s = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    close(losses._akl_mix(p_t, p_s, 0.5)[0], torch.tensor([0.5]))
    # mu = 0: the top-1 alone; mu = 1: every stored id (the tail bucket never).
    p_t = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    p_s = torch.tensor([[0.3, 0.3, 0.3, 0.1]])
    close(losses._akl_mix(p_t, p_s, 0.0)[0], torch.tensor([0.1 / 0.2]))
    p_s = torch.tensor([[0.3, 0.3, 0.2, 0.2]])
    close(losses._akl_mix(p_t, p_s, 1.0)[0], torch.tensor([0.1 / 0.2]))
    # Identical distributions: both weights 0 (the reference would give 0/0).
    assert losses._akl_mix(p_t, p_t, 0.5) == (torch.zeros(1), torch.zeros(1))


@pytest.mark.parametrize("loss", LOSSES)
def test_selected_loss_is_returned_as_loss(loss):
    out = run(make_case(4, k=7), loss=loss)
    assert torch.equal(out["loss"], out[loss])
    assert ("akl" in out) == (loss == "akl")


@pytest.mark.parametrize("k", [V, 6])
def test_identical_distributions_give_zero(k):
    case = make_case(5, k=k)
    # A per-position shift changes nothing in the softmax.
    same = (case["teacher_logits"] + 7.0).float()
    out = run(case, student_logits=same, loss="akl")
    for name in ("fkl", "rkl", "akl"):
        close(out[name], torch.zeros(B, T), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("k", [V, 4])
def test_gradients_match_autograd_through_reference(loss, k):
    case = make_case(20 + k, k=k)
    weights = torch.rand(B, T, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    s64 = case["student_logits"].clone().requires_grad_()
    ref = reference_buckets(case, s64)[loss]
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), s64)

    s32 = case["student_logits"].float().requires_grad_()
    out = run(case, student_logits=s32, loss=loss, chunk_size=3)["loss"]
    (g_out,) = torch.autograd.grad((out * weights.float()).sum(), s32)

    assert g_out.dtype == torch.float32
    close(g_out, g_ref, atol=1e-6, rtol=1e-4)
    assert (g_out[~case["mask"]] == 0).all()


def test_gradient_flows_through_logged_columns_too():
    case = make_case(6, k=5)
    s = case["student_logits"].float().requires_grad_()
    out = run(case, student_logits=s, loss="fkl")
    (g_rkl,) = torch.autograd.grad(out["rkl"].sum(), s)
    s64 = case["student_logits"].clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(reference_buckets(case, s64)["rkl"].sum(), s64)
    close(g_rkl, g_ref, atol=1e-6, rtol=1e-4)


def test_teacher_inputs_get_no_gradient():
    case = make_case(7, k=5)
    s = case["student_logits"].float().requires_grad_()
    t = case["topk_logprobs"].float().requires_grad_()
    tail = case["tail_logprob"].float().requires_grad_()
    out = token_losses(s, case["topk_ids"], t, tail, case["mask"], loss="akl")
    out["loss"].sum().backward()
    assert t.grad is None and tail.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize("loss", LOSSES)
def test_masked_positions_zero_loss_and_gradient_with_garbage_logits(loss):
    case = make_case(8, k=6)
    mask = case["mask"]
    assert (~mask).any()
    clean = case["student_logits"].float()
    dirty = clean.clone()
    garbage = torch.tensor([math.nan, math.inf, -math.inf, 3e38, -3e38])
    dirty[~mask] = garbage.repeat(V // len(garbage))
    dirty = dirty.requires_grad_()
    out = run(case, student_logits=dirty, loss=loss)
    for name, value in out.items():
        assert torch.isfinite(value).all(), name
        assert (value[~mask] == 0).all(), name
    close(out["loss"], run(case, student_logits=clean, loss=loss)["loss"], atol=0, rtol=0)
    out["loss"].sum().backward()
    assert torch.isfinite(dirty.grad).all()
    assert (dirty.grad[~mask] == 0).all()


@pytest.mark.parametrize("loss", LOSSES)
def test_all_masked_batch_is_zero_and_backward_works(loss):
    case = make_case(9, k=V)
    case["mask"] = torch.zeros(B, T, dtype=torch.bool)
    s = torch.full((B, T, V), math.nan).requires_grad_()
    out = run(case, student_logits=s, loss=loss)
    for value in out.values():
        assert torch.equal(value, torch.zeros(B, T))
    out["loss"].sum().backward()
    assert torch.equal(s.grad, torch.zeros(B, T, V))


# ---------------------------------------------------------------- chunking and dtypes


@pytest.mark.parametrize("k", [V, 5])
def test_chunk_size_does_not_change_results(k):
    case = make_case(11, k=k, batch=3, seq=7)
    results = []
    for chunk_size in (1, 3, 100_000):
        s = case["student_logits"].float().requires_grad_()
        out = run(case, student_logits=s, loss="akl", chunk_size=chunk_size)
        (g,) = torch.autograd.grad(out["loss"].sum(), s)
        results.append((out, g))
    base_out, base_g = results[0]
    for out, g in results[1:]:
        for name in base_out:
            close(out[name], base_out[name], atol=1e-7, rtol=1e-6)
        close(g, base_g, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("loss", LOSSES)
def test_half_precision_inputs(loss):
    case = make_case(12, k=8)
    s_bf16 = case["student_logits"].bfloat16().requires_grad_()
    out = token_losses(
        s_bf16,
        case["topk_ids"],
        case["topk_logprobs"].half(),
        case["tail_logprob"].half(),
        case["mask"],
        loss=loss,
    )
    out["loss"].sum().backward()
    assert s_bf16.grad.dtype == torch.bfloat16 and torch.isfinite(s_bf16.grad.float()).all()
    for value in out.values():
        assert value.dtype == torch.float32 and torch.isfinite(value).all()
    # Same bf16-rounded logits in float32 (the upcast is exact): only the float16 teacher differs.
    same_logits = run(case, student_logits=s_bf16.detach().float(), loss=loss)
    close(out["loss"], same_logits["loss"], atol=1e-2, rtol=1e-2)
    # Against full precision throughout: bf16 rounding of logits is the main error.
    full = run(case, loss=loss)
    close(out["loss"], full["loss"], atol=5e-2, rtol=5e-2)


def test_float16_teacher_still_gives_a_divergence():
    # Rounding log-probs to float16 leaves bucket masses that no longer sum to 1; without
    # renormalising, KL(p || p) can come out negative.
    case = make_case(15, k=6, batch=8, seq=16, teacher_scale=4.0)
    case["mask"][:] = True
    same = case["teacher_logits"].float()
    out = token_losses(
        same, case["topk_ids"], case["topk_logprobs"].half(), case["tail_logprob"].half(),
        case["mask"], loss="akl",
    )
    for name in ("fkl", "rkl", "akl"):
        assert (out[name] >= -1e-6).all(), name
        assert out[name].abs().max() < 1e-3, name


def test_student_tail_is_stable_when_top_k_hold_nearly_all_student_mass():
    # The student puts ~e^-30 outside the top-k, below float32's resolution of 1 - sum(top-k),
    # while the teacher's tail is large: fkl's tail term needs the true log of that tiny mass.
    case = make_case(16, k=4, teacher_scale=1.0)
    student = case["teacher_logits"].scatter_add(
        -1, case["topk_ids"], torch.full(case["topk_ids"].shape, 30.0, dtype=torch.float64)
    )
    s32 = student.float().requires_grad_()
    out = run(case, student_logits=s32, loss="fkl")
    s64 = student.clone().requires_grad_()
    ref = reference_buckets(case, s64)
    close(out["fkl"], ref["fkl"], atol=1e-4, rtol=1e-5)
    close(out["rkl"], ref["rkl"])
    (g_out,) = torch.autograd.grad(out["loss"].sum(), s32)
    (g_ref,) = torch.autograd.grad(ref["fkl"].sum(), s64)
    close(g_out, g_ref, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    k=st.integers(1, 12),
    scale=st.floats(0.1, 20.0),
    mu=st.floats(0.0, 1.0),
)
def test_divergences_are_non_negative(seed, k, scale, mu):
    case = make_case(seed, k=k, vocab=12, teacher_scale=scale, student_scale=scale)
    out = run(case, loss="akl", mu=mu)
    for name in ("fkl", "rkl", "akl"):
        assert torch.isfinite(out[name]).all()
        assert (out[name] >= -1e-6).all(), name


def test_extreme_confidence_stays_finite():
    # Teacher certain of one token (tail and the other ids ~ e^-200), student nearly certain of
    # a different one: huge but finite losses and gradients.
    case = make_case(13, k=V, teacher_scale=60.0, student_scale=60.0)
    s = case["student_logits"].float().requires_grad_()
    out = run(case, student_logits=s, loss="akl")
    out["loss"].sum().backward()
    for value in out.values():
        assert torch.isfinite(value).all()
    assert torch.isfinite(s.grad).all()
    ref = reference_full(case["teacher_logits"], case["student_logits"], case["mask"])
    close(out["fkl"], ref["fkl"], atol=1e-3, rtol=1e-5)
    close(out["rkl"], ref["rkl"], atol=1e-3, rtol=1e-5)


# ---------------------------------------------------------------- helpers and validation


def test_sequence_sums():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    sums, counts = sequence_sums(per_token, mask)
    assert torch.equal(sums, torch.tensor([3.0, 0.0]))
    assert torch.equal(counts, torch.tensor([2.0, 0.0]))
    assert sums.dtype == counts.dtype == torch.float32


def test_bad_arguments_are_reported_together():
    case = make_case(14, k=4)
    with pytest.raises(ValueError) as err:
        token_losses(
            case["student_logits"].float(),
            case["topk_ids"],
            case["topk_logprobs"][..., :3].float(),
            case["tail_logprob"].float(),
            case["mask"].float(),
            loss="no-such-loss",
            mu=1.5,
            chunk_size=0,
        )
    message = str(err.value)
    for fragment in ("loss='no-such-loss'", "mu=1.5", "chunk_size=0", "topk_logprobs shape", "mask must be"):
        assert fragment in message


@pytest.mark.parametrize("scale", [1.0, 3.0, 6.0])
def test_float16_storage_of_teacher_logprobs_changes_the_loss_negligibly(scale):
    """teacher_logits stores top-k log-probs as float16: measure what that costs the loss.

    Measured here (B=4, T=64, V=4096, k=32): relative error ~1e-5 for fkl, rkl and akl at
    teacher logit scales 1 to 6 (losses 0.01 to 2.4 nats/token).
    """
    torch.manual_seed(0)
    B, T, V, k = 4, 64, 4096, 32
    teacher = torch.randn(B, T, V) * scale
    student = teacher + torch.randn(B, T, V) * scale * 0.5
    lp = torch.log_softmax(teacher.double(), -1)
    top = lp.topk(k, -1)
    tail = torch.log1p(-top.values.exp().sum(-1).clamp(max=1 - 1e-12)).float()
    mask = torch.ones(B, T, dtype=torch.bool)
    for loss in ("fkl", "rkl", "akl"):
        exact = token_losses(student, top.indices, top.values.float(), tail, mask, loss=loss)["loss"].sum()
        stored = token_losses(student, top.indices, top.values.half(), tail, mask, loss=loss)["loss"].sum()
        assert abs(exact - stored) / exact < 1e-3, loss


# ---------------------------------------------------------------- the closed-form backward


@pytest.mark.parametrize("k", [3, 12])
@pytest.mark.parametrize("loss", ["fkl", "rkl"])
def test_gradcheck_in_float64(loss, k):
    # Finite differences on the real code: float64 logits are computed in float64. Padded
    # positions are in the batch. (AKL's mixing weights are detached by definition, which finite
    # differences cannot see; its closed form is checked against autograd below.)
    case = make_case(30 + k, k=k, batch=2, seq=3, vocab=12)
    s = case["student_logits"].clone().requires_grad_()

    def fn(x):
        out = token_losses(x, case["topk_ids"], case["topk_logprobs"], case["tail_logprob"], case["mask"],
                           loss=loss, chunk_size=2)
        return torch.stack([out["fkl"], out["rkl"]])

    assert torch.autograd.gradcheck(fn, (s,), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("k", [1, 6, V])
@pytest.mark.parametrize("loss", LOSSES)
def test_closed_form_backward_equals_autograd_through_the_forward(loss, k):
    # The previous backward: autograd through the same forward arithmetic, position by position.
    from stages.training import losses

    case = make_case(40 + k, k=k)
    mask = case["mask"]
    s = case["student_logits"].float().requires_grad_()
    out = run(case, student_logits=s, loss=loss, chunk_size=3)
    g = torch.Generator().manual_seed(2)
    mix = {name: torch.rand(B, T, generator=g) for name in ("loss", "fkl", "rkl")}
    (got,) = torch.autograd.grad(sum((out[n] * mix[n]).sum() for n in mix), s)

    s2 = case["student_logits"].float().requires_grad_()
    teacher = losses._teacher_buckets(case["topk_logprobs"][mask].float(), case["tail_logprob"][mask].float())
    values = losses._chunk_losses(s2[mask], case["topk_ids"][mask], teacher, 0.5, losses.extra_of(loss))
    col = {"fkl": values[:, 0], "rkl": values[:, 1], "loss": values[:, LOSSES.index(loss)]}
    (want,) = torch.autograd.grad(sum((col[n] * mix[n][mask]).sum() for n in mix), s2)
    close(got, want, atol=1e-6, rtol=1e-5)
    assert (got[~mask] == 0).all()


def test_every_loss_is_named_wherever_the_losses_are_listed():
    """A loss is one entry of the registry BUILT_IN (its help words, whether drawn teacher tokens
    estimate it, its value and gradient when it is a third column), from which LOSSES, distill's
    and snr's --loss help and the drawn-token refusal are built; the README's table and the brute-
    force references are written by hand: a loss missing from them fails here."""
    import dataclasses
    from pathlib import Path

    from schemas import InputError
    from stages import distill, snr
    from stages.training import data, losses
    from tests.loss_references import bucket_losses

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    helps = [next(f.metadata["help"] for f in dataclasses.fields(config) if f.name == "loss")
             for config in (distill.DistillConfig, snr.SnrConfig)]
    teacher, student = torch.log(torch.tensor([[0.6, 0.3, 0.1]])), torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    references = bucket_losses(teacher, student, 0.5)
    for name, loss in losses.BUILT_IN.items():
        assert all(f"{name}: {loss.help}" in h for h in helps), name
        assert f"| `{name}` |" in readme and name in references, name
        data.check_loss("topk", name)  # every loss on top-k
        if loss.not_drawn:
            with pytest.raises(InputError, match=f"--loss {name}: .* a sampled representation .*: {name} {loss.not_drawn[:20]}"):
                data.check_loss("sampled", name)
        else:
            data.check_loss("hybrid", name)
    assert [n for n, loss in losses.BUILT_IN.items() if not loss.not_drawn] == ["fkl"]  # the README says so
