"""Per-token distillation losses on the teacher's stored top-k distribution.

The teacher is not kept as full logits: for every response token the teacher artifact holds
the top-k token ids (sorted by teacher log-probability, descending), their log-probabilities
under the teacher's FULL softmax, and the log of the remaining mass
``tail = log(1 - sum(exp(topk_logprobs)))``, stored explicitly (``-inf`` when k = V).

Every loss here compares two distributions over the same k+1 "buckets": the k stored ids, plus
one tail bucket that holds all other vocabulary mass. The student is coarsened the same way:
``log_softmax`` of its logits at the k ids, plus the log of its mass outside them. Because both
sides are proper distributions over the same buckets, each loss is a true divergence (>= 0,
zero iff the coarsened distributions agree), it lower-bounds the full-vocabulary divergence
(data processing inequality), and it is EXACT when k = V (the tail bucket is empty on both
sides and contributes 0). Dropping the tail instead, as truncated top-k KD does, gives a
quantity that is neither.

Losses (per token, over the k+1 buckets):

- ``fkl``: KL(teacher || student), mode covering (the paper's distillation track).
- ``rkl``: KL(student || teacher), mode seeking (the paper's self-distillation track).
- ``akl``: Adaptive KL, Wu et al., COLING 2025, "Rethinking Kullback-Leibler Divergence in
  Knowledge Distillation for Large Language Models": a per-token mix of fkl and rkl, weighted
  by how far the student is from the teacher on the teacher's head versus its tail. As in the
  authors' code, the head is the teacher-sorted tokens whose cumulative teacher mass, their
  own included, is <= mu, plus the top-1 token always; the tail bucket counts to the tail
  (``_akl_mix`` says what that approximates and bounds the error; exact at k = V).

Shapes and dtypes: ``student_logits [batch, seq, vocab]`` in any float dtype (bf16 on GPU),
upcast to float32 one chunk of positions at a time; ``topk_ids [batch, seq, k]`` integer;
``topk_logprobs [batch, seq, k]`` and ``tail_logprob [batch, seq]`` in any float dtype
(float16 on disk); ``mask [batch, seq]`` bool. Results are float32 ``[batch, seq]``. (Float64
logits are computed, and returned, in float64 instead: that is what lets the tests run
``torch.autograd.gradcheck`` on this very code; no stage feeds float64.)

Memory: only masked positions are computed, ``chunk_size`` at a time. The forward pass keeps
no float32 ``[positions, vocab]`` tensor alive between chunks, only ``k+2`` floats per position
(the student's bucket log-probs and the log-sum-exp outside the top-k); the backward pass reads
each chunk of logits again (as activation checkpointing would), turns it into its gradient in
closed form, in place (``_bucket_grads``, ``_logit_grads_``: no autograd graph, no second
softmax), and writes that straight into one buffer the size of ``student_logits``, so the
float32 working set is bounded by ``chunk_size x vocab`` however long the batch is.

``token_losses`` still needs ``student_logits`` itself, and its gradient, for every position:
with Qwen's 151,936-token vocabulary an 8k-token trace is 8192 x 151936 x 4 B = 5 GB per float32
copy. ``fused_head_losses`` takes the hidden states and the output layer instead, and computes
the logits one chunk of positions at a time, in forward and again in backward, so neither the
``[positions, vocab]`` logits nor their gradient exist beyond one chunk. Both functions run the
same per-chunk arithmetic (``_student_buckets``, ``_bucket_losses``, and in backward
``_bucket_grads``, ``_logit_grads_``) on the same teacher buckets (``_teacher_buckets``).
``_chunk_losses`` is that forward arithmetic as one differentiable function: autograd through it
is what the closed-form backward is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# Stand-in for log(0). -inf would turn 0 * (log p - log q) into NaN and give NaN gradients;
# exp(-1e4) is exactly 0 in float32, so a floored bucket still has probability 0 and adds
# exactly 0 (xlogy semantics), while differences of floored logs stay finite. Real
# log-probabilities are never this small (it needs a logit spread of 1e4).
_LOG_FLOOR = -1.0e4
# Fill for the top-k positions when summing the student's tail mass. Finite (not -inf) so that
# at k = V, where every position is filled, logsumexp and its gradient stay finite; far below
# any real logit so it adds nothing to the tail mass when k < V.
_FILL = -1.0e30


def token_losses(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logprob: torch.Tensor,
    mask: torch.Tensor,
    loss: str = "fkl",
    mu: float = 0.5,
    chunk_size: int = 1024,
) -> dict[str, torch.Tensor]:
    """Per-token divergences between the teacher's and the student's coarsened distributions.

    Args:
        student_logits: ``[batch, seq, vocab]``, any float dtype; gradients flow here only.
        topk_ids: ``[batch, seq, k]`` integer, the teacher's top-k ids, sorted by teacher
            log-probability descending (AKL ranks them in this order, ties included).
        topk_logprobs: ``[batch, seq, k]`` float, teacher log-probabilities of ``topk_ids``
            under its full softmax. Treated as data (detached).
        tail_logprob: ``[batch, seq]`` float, log of the teacher mass outside the top-k;
            ``-inf`` for an empty tail (k = V).
        mask: ``[batch, seq]`` bool, True on response tokens that count.
        loss: which loss is returned as ``"loss"``: one of ``LOSSES``.
        mu: AKL head threshold: a token is in the head when the teacher's cumulative
            probability through it (its own included) is <= mu; the top-1 token always is.
            Wu et al. use 0.5.
        chunk_size: at most this many positions are upcast to float32 ``[chunk, vocab]`` at once.

    Returns:
        ``{"loss", "fkl", "rkl"}`` and, for ``loss="akl"``, also ``"akl"``; each float32
        ``[batch, seq]``, exactly 0 where ``mask`` is False. All are differentiable with respect
        to ``student_logits``; masked-out positions get zero gradient whatever their logits.

    The teacher's bucket probabilities are renormalised to sum to 1 (a no-op up to rounding
    for exact inputs) so that float16 storage cannot make a divergence negative.
    """
    _check_inputs(student_logits, topk_ids, topk_logprobs, tail_logprob, mask, loss, mu, chunk_size)
    batch, seq, vocab = student_logits.shape
    k = topk_ids.shape[-1]
    positions = batch * seq

    flat_logits = student_logits.reshape(positions, vocab)
    # Only positions that count are ever upcast: padding costs nothing and its logits, however
    # garbage, never touch the arithmetic.
    rows = mask.reshape(positions).nonzero().squeeze(1)  # [M]
    ids = topk_ids.reshape(positions, k).index_select(0, rows).long()  # [M, k]
    teacher = _teacher_buckets(
        topk_logprobs.reshape(positions, k).index_select(0, rows),
        tail_logprob.reshape(positions).index_select(0, rows),
        _work_dtype(student_logits.dtype),
    )  # [M, k+1]

    per_row = _CoarsenedLosses.apply(flat_logits, rows, ids, teacher, mu, extra_of(loss), chunk_size)  # [M, C]
    per_pos = per_row.new_zeros(positions, per_row.shape[1]).index_copy(0, rows, per_row)
    return _named(per_pos.reshape(batch, seq, -1).unbind(-1), loss)


def fused_head_losses(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logprob: torch.Tensor,
    loss: str = "fkl",
    mu: float = 0.5,
    chunk_size: int = 1024,
) -> dict[str, torch.Tensor]:
    """``token_losses`` of the logits ``hidden @ weight.T + bias``, never holding them whole.

    Every position passed counts: give only the valid response positions (``N`` = tokens that
    count) and scatter the results back. Logits are computed ``chunk_size`` positions at a time
    under the ambient autocast (bf16 on GPU, as the output layer itself would run) and dropped
    after their chunk; backward recomputes each chunk's logits, returns the chunk's gradient for
    ``hidden`` and accumulates the gradients for ``weight`` and ``bias`` in one buffer of their
    own size. A ``weight`` shared with the input embedding (tied) gets both gradients summed by
    autograd, as with an ordinary ``nn.Linear``.

    Args:
        hidden: ``[N, H]`` float, the student's final hidden states at the positions that count.
        weight: ``[V, H]`` float, the output layer's weight.
        bias: ``[V]`` float or None.
        topk_ids: ``[N, k]`` integer, teacher top-k ids sorted by teacher log-probability.
        topk_logprobs: ``[N, k]`` float, teacher log-probabilities (treated as data).
        tail_logprob: ``[N]`` float, log of the teacher mass outside the top-k (``-inf`` if k = V).
        loss, mu, chunk_size: as for ``token_losses``.

    Returns:
        ``{"loss", "fkl", "rkl"}`` and, for ``loss="akl"``, also ``"akl"``; each float32 ``[N]``,
        equal to ``token_losses`` on the materialised logits, and differentiable with respect to
        ``hidden``, ``weight`` and ``bias`` like it.
    """
    _check_fused_inputs(hidden, weight, bias, topk_ids, topk_logprobs, tail_logprob, loss, mu, chunk_size)
    teacher = _teacher_buckets(topk_logprobs, tail_logprob, _work_dtype(hidden.dtype, weight.dtype))  # [N, k+1]
    per_row = _FusedHeadLosses.apply(hidden, weight, bias, topk_ids.long(), teacher, mu, extra_of(loss), chunk_size)  # [N, C]
    return _named(per_row.unbind(-1), loss)


def extra_of(loss: str) -> str | None:
    """The loss computed as a third column after fkl and rkl (which are always computed, for the
    train log): `loss` itself when it has an `extra` in `BUILT_IN` (akl), else None."""
    return loss if loss in BUILT_IN and BUILT_IN[loss].extra is not None else None


def _named(columns: tuple[torch.Tensor, ...], loss: str) -> dict[str, torch.Tensor]:
    """The loss columns (fkl, rkl, then the extra one when it is the loss: `_bucket_losses`'
    order) by name, with the one trained on as "loss" too."""
    names = ("fkl", "rkl") + ((loss,) if extra_of(loss) else ())
    assert len(names) == len(columns), (names, len(columns))
    out = dict(zip(names, columns))
    out["loss"] = out[loss]
    return out


def sequence_sums(per_token: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sum of a per-token loss and the number of tokens that count.

    Args:
        per_token: ``[batch, seq]`` float, e.g. ``token_losses(...)["loss"]``.
        mask: ``[batch, seq]`` bool.

    Returns:
        ``(sums [batch], counts [batch])``, both float32. Dividing is left to the caller, who
        decides what an empty sequence means.
    """
    sums = torch.where(mask, per_token.float(), 0.0).sum(-1)
    counts = mask.sum(-1, dtype=torch.float32)
    return sums, counts


class _CoarsenedLosses(torch.autograd.Function):
    """Chunked losses with a closed-form, chunked backward.

    Plain autograd over a Python loop of chunks would keep every chunk's float32
    ``[chunk, vocab]`` activations alive until backward, i.e. the whole ``[M, vocab]`` float32
    tensor the chunking is meant to avoid. Here forward keeps, besides its inputs, only what
    the gradient needs per position: the student's k+1 bucket log-probs before the floor and
    the log-sum-exp of the logits outside the top-k (``[M, k+2]`` floats). Backward reads each
    chunk of logits again and turns it into its gradient in place (``_logit_grads_``), with no
    autograd graph and no second log-sum-exp.
    """

    @staticmethod
    def forward(ctx, flat_logits, rows, ids, teacher, mu, extra, chunk_size):
        # flat_logits [N, V]; rows [M]; ids [M, k]; teacher [M, k+1] float32 log-probs.
        parts, raws, rests = [], [], []
        for s in range(0, rows.numel(), chunk_size):
            # index_select copies, so the chunk is ours to overwrite.
            chunk = flat_logits.index_select(0, rows[s : s + chunk_size])
            raw, log_rest = _student_buckets(chunk, ids[s : s + chunk_size], scratch=True)
            del chunk
            parts.append(_bucket_losses(raw, teacher[s : s + chunk_size], mu, extra))
            raws.append(raw)
            rests.append(log_rest)
        raw, log_rest = _joined(raws, rests, teacher)
        ctx.save_for_backward(flat_logits, rows, ids, teacher, raw, log_rest)
        ctx.mu, ctx.extra, ctx.chunk_size = mu, extra, chunk_size
        if parts:
            return torch.cat(parts)
        return teacher.new_zeros(0, 2 if extra is None else 3)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        # grad_out [M, C]: one backward serves "loss" and any logged column a caller used.
        flat_logits, rows, ids, teacher, raw, log_rest = ctx.saved_tensors
        grad = torch.zeros_like(flat_logits)
        step = ctx.chunk_size
        for s in range(0, rows.numel(), step):
            e = s + step
            chunk_rows = rows[s:e]
            chunk = flat_logits.index_select(0, chunk_rows)
            buf = chunk if chunk.dtype == raw.dtype else chunk.to(raw.dtype)
            del chunk
            d = _bucket_grads(raw[s:e], teacher[s:e], grad_out[s:e], ctx.mu, ctx.extra)
            chunk_grad = _logit_grads_(buf, ids[s:e], raw[s:e], log_rest[s:e], d)
            grad.index_copy_(0, chunk_rows, chunk_grad.to(grad.dtype))
            del buf, chunk_grad
        return grad, None, None, None, None, None, None


class _FusedHeadLosses(torch.autograd.Function):
    """Output layer + chunked losses with a closed-form, chunked backward.

    Like ``_CoarsenedLosses`` one level earlier: forward saves its inputs (``hidden`` is
    ``[N, H]``, tiny next to ``[N, V]``) and the per-position ``[N, k+2]`` bucket statistics;
    backward recomputes one chunk of logits at a time (the one matmul it cannot avoid without
    keeping ``[N, V]``), overwrites them with their gradient in closed form, and multiplies
    that into the gradients of ``hidden``, ``weight`` and ``bias``. The largest tensors alive
    are one ``[chunk, V]`` buffer (two under autocast) and the ``[V, H]`` weight gradient.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, teacher, mu, extra, chunk_size):
        # hidden [N, H]; weight [V, H]; bias [V] | None; ids [N, k]; teacher [N, k+1] float32.
        parts, raws, rests = [], [], []
        dtype = hidden.dtype
        scratch = _scratch(hidden, weight, bias, chunk_size, autocast=True)
        for s in range(0, hidden.shape[0], chunk_size):
            # Under autocast this is the bf16 matmul the output layer would have done.
            logits = _linear(hidden[s : s + chunk_size], weight, bias, scratch)  # [c, V]
            dtype = logits.dtype
            raw, log_rest = _student_buckets(logits, ids[s : s + chunk_size], scratch=True)
            del logits
            parts.append(_bucket_losses(raw, teacher[s : s + chunk_size], mu, extra))
            raws.append(raw)
            rests.append(log_rest)
        raw, log_rest = _joined(raws, rests, teacher)
        ctx.save_for_backward(hidden, weight, bias, ids, teacher, raw, log_rest)
        ctx.mu, ctx.extra, ctx.chunk_size, ctx.dtype = mu, extra, chunk_size, dtype
        if parts:
            return torch.cat(parts)
        return teacher.new_zeros(0, 2 if extra is None else 3)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        # grad_out [N, C]: one backward serves "loss" and any logged column a caller used.
        hidden, weight, bias, ids, teacher, raw, log_rest = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        dtype, step = ctx.dtype, ctx.chunk_size
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight) if need_weight else None  # master dtype, float32
        grad_bias = torch.zeros_like(bias) if need_bias else None
        # Autocast is switched off and its casts written out, so that the recomputed logits are
        # bit for bit the forward's (the saved log-sum-exp belongs to them) and the accumulating
        # addmm_ stays in the weight's dtype.
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)  # a no-op without autocast; one bf16 copy of the weight with it
            b = None if bias is None else bias.to(dtype)
            scratch = _scratch(hidden, w, b, step, autocast=False)  # None under autocast (w is bf16)
            for s in range(0, hidden.shape[0], step):
                e = s + step
                h = hidden[s:e].to(dtype)
                logits = _linear(h, w, b, scratch)  # [c, V]
                buf = logits if logits.dtype == raw.dtype else logits.to(raw.dtype)
                del logits
                d = _bucket_grads(raw[s:e], teacher[s:e], grad_out[s:e], ctx.mu, ctx.extra)
                grad_logits = _logit_grads_(buf, ids[s:e], raw[s:e], log_rest[s:e], d)  # float32, in buf
                if grad_logits.dtype != dtype:  # autograd's gradient for bf16 logits is bf16
                    grad_logits = grad_logits.to(dtype)
                del buf
                if grad_hidden is not None:
                    grad_hidden[s:e] = grad_logits @ w
                if grad_weight is not None:
                    if grad_weight.dtype == dtype:
                        grad_weight.addmm_(grad_logits.T, h)
                    else:  # bf16 product (as the unfused backward makes), summed in float32
                        grad_weight += grad_logits.T @ h
                if grad_bias is not None:
                    grad_bias += grad_logits.sum(0)
                del grad_logits
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def _scratch(hidden, weight, bias, chunk_size: int, autocast: bool) -> torch.Tensor | None:
    """One ``[chunk, V]`` buffer for every chunk's logits of one pass, or None.

    Allocating a fresh ``[chunk, V]`` tensor per chunk costs, on CPU, about as much as the
    exp over it: large blocks come straight from the OS and are faulted in page by page each
    time. Only for a plain matmul in the work dtype (not under an enabled autocast, whose
    casts ``_linear`` would skip); elsewhere ``F.linear`` allocates as usual.
    """
    dtype = hidden.dtype
    if hidden.shape[0] <= chunk_size:
        return None  # one chunk: nothing to reuse
    if dtype != _work_dtype(dtype) or weight.dtype != dtype or (bias is not None and bias.dtype != dtype):
        return None  # F.linear would promote or cast
    if autocast and torch.is_autocast_enabled(hidden.device.type):
        return None
    return hidden.new_empty(chunk_size, weight.shape[0])


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scratch: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(h, weight, bias)``, written into ``scratch[:len(h)]`` when there is one.

    The same ATen kernels F.linear dispatches to for 2-D inputs (addmm with a bias, mm
    without), so the values are the same bit for bit.
    """
    if scratch is None:
        return torch.nn.functional.linear(h, weight, bias)
    out = scratch[: h.shape[0]]
    if bias is None:
        return torch.mm(h, weight.t(), out=out)
    return torch.addmm(bias, h, weight.t(), out=out)


def _joined(raws: list[torch.Tensor], rests: list[torch.Tensor], teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-chunk bucket statistics as one ``[M, k+1]`` and one ``[M]`` tensor."""
    if raws:
        return torch.cat(raws), torch.cat(rests)
    return teacher.new_zeros(teacher.shape), teacher.new_zeros(teacher.shape[0])


def _work_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float32, or float64 when the inputs are float64: never below float32."""
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _teacher_buckets(
    topk_logprobs: torch.Tensor, tail_logprob: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Teacher log-probs over the k+1 buckets: ``[M, k]`` and ``[M]`` -> ``[M, k+1]`` in ``dtype``
    (float32; float64 only for a float64 student).

    Renormalised (float16 storage must not make a divergence negative) and floored at
    ``_LOG_FLOOR`` (an empty tail, ``-inf``, becomes a bucket of probability exactly 0).
    """
    teacher = torch.cat([topk_logprobs.detach().to(dtype), tail_logprob.detach().to(dtype)[:, None]], dim=-1)
    return torch.log_softmax(teacher.clamp_min(_LOG_FLOOR), dim=-1).clamp_min(_LOG_FLOOR)


def _chunk_losses(
    logits: torch.Tensor, ids: torch.Tensor, teacher: torch.Tensor, mu: float, extra: str | None
) -> torch.Tensor:
    """Losses for one chunk of logits (left untouched), as the two autograd Functions compute them.

    Args:
        logits: ``[c, V]`` student logits, any float dtype.
        ids: ``[c, k]`` int64 teacher top-k ids.
        teacher: ``[c, k+1]`` float32 teacher bucket log-probs (normalised, floored).

    Returns:
        ``[c, 2]`` float32 (fkl, rkl), or ``[c, 3]`` with the `extra` loss last. Differentiable:
        autograd through it is the reference the closed-form backward is tested against.
    """
    raw, _ = _student_buckets(logits, ids)
    return _bucket_losses(raw, teacher, mu, extra)


def _bucket_losses(raw: torch.Tensor, teacher: torch.Tensor, mu: float, extra: str | None) -> torch.Tensor:
    """The losses from the student's unfloored bucket log-probs ``raw`` ``[c, k+1]``.

    Returns ``[c, 2]`` float32 (fkl, rkl), or ``[c, 3]`` with the `extra` loss (`BUILT_IN`) last.
    """
    student = raw.clamp_min(_LOG_FLOOR)
    p_t = teacher.exp()
    p_s = student.exp()
    # Both logs are floored, so a zero-probability bucket has p exactly 0 and a finite log
    # difference: it adds exactly 0 to the sum and 0 to the gradient.
    fkl = (p_t * (teacher - student)).sum(-1)
    rkl = (p_s * (student - teacher)).sum(-1)
    if extra is None:
        return torch.stack([fkl, rkl], dim=-1)
    value, _ = BUILT_IN[extra].extra
    return torch.stack([fkl, rkl, value(p_t, p_s, teacher, student, fkl, rkl, mu)], dim=-1)


def _akl_mix(p_t: torch.Tensor, p_s: torch.Tensor, mu: float) -> tuple[torch.Tensor, torch.Tensor]:
    """AKL's per-token mixing weights ``(w_head, w_tail)``, ``[c]`` each, constants for autograd.

    ``p_t``, ``p_s``: ``[c, k+1]`` teacher and student bucket probabilities (k stored ids, then
    the tail bucket). A port of ``get_ratio`` in the authors' reference code (Wu et al.,
    COLING 2025, github.com/wutaiqiang/LLM_KD_AKL, ``AKL.py``), which over the full vocabulary:

    1. sorts the teacher's probabilities descending and takes the cumulative sums
       ``c_j = sum_{i <= j} p_T(i)`` (token j's own mass included);
    2. puts token j in the tail when ``c_j > mu`` and in the head otherwise, except that the
       top-1 token is always in the head (so a top-1 with ``p_T > mu`` is the whole head). The
       token whose mass crosses mu therefore goes to the tail unless it is the top-1; a
       ``c_j`` exactly equal to mu is in the head;
    3. sums the per-token gaps ``|p_T - p_S|`` (student detached) over each side: ``g_head``,
       ``g_tail``; returns ``g_head / (g_head + g_tail)`` (the FKL weight) and
       ``g_tail / (g_head + g_tail)`` (the RKL weight).

    Here the k stored ids are ranked as the reference ranks them, and their ``c_j`` are exact:
    every token outside the top-k comes after them in the teacher's order. The sort is stable,
    so tied tokens keep the stored order (the reference's sort is not stable: which of two tied
    tokens straddling mu lands in the head is unspecified there); the stored top-k are sorted
    already, so for a well-formed artifact the ``[c, k]`` sort changes nothing. Differences:

    - The tail bucket (teacher mass ``P`` outside the top-k, student mass ``Q``) is one
      unranked lump. Its gap is taken as ``|P - Q|`` and it always counts to the tail. The
      reference sums ``sum_{v not in top-k} |p_T(v) - p_S(v)|`` over those tokens instead,
      which lies in ``[|P - Q|, P + Q]`` (triangle inequality). When the stored top-k hold
      more than mu of the teacher's mass, every one of those tokens is in the reference's
      tail, so ``g_tail`` here is a lower bound on the reference's (low by at most
      ``2 min(P, Q)``) and ``w_head`` an upper bound: it exceeds the reference's by at most
      ``2 min(P, Q) / (g_head + g_tail)`` (the g's as computed here). When the top-k hold
      less than mu, the reference's head also takes unstored tokens up to mass mu (at most
      ``mu - sum(top-k)`` of teacher mass; at least ``1 - mu`` stays in the tail); their gaps
      cannot be told apart here and count to the tail, and then
      ``|w_head - w_head_ref| <= (P + Q) / (g_head + g_tail)``. At k = V the bucket is empty
      (``P = Q = 0``) and the weights are the reference's exactly.
    - ``g_head + g_tail == 0`` (the distributions agree) gives 0/0 = NaN in the reference;
      here both weights are 0, and the loss is 0 as fkl = rkl = 0 there.
    """
    top = p_t[:, :-1]  # [c, k]
    order = torch.sort(top, dim=-1, descending=True, stable=True).indices
    cum = top.gather(-1, order).cumsum(-1)  # [c, k], c_j in the teacher's order
    ranked_head = cum <= mu
    ranked_head[:, 0] = True  # the top-1 token is always in the head
    head_top = torch.zeros_like(ranked_head).scatter_(-1, order, ranked_head)
    head = torch.cat([head_top, torch.zeros_like(head_top[:, :1])], dim=-1)  # bucket: tail
    # Wu et al. detach the student in the gaps: they only set the mixing weights.
    gap = (p_t - p_s.detach()).abs()
    g_head = torch.where(head, gap, 0.0).sum(-1)
    g_tail = torch.where(head, 0.0, gap).sum(-1)
    total = g_head + g_tail
    # total == 0 means the distributions agree, so fkl = rkl = 0 and the loss is 0 too.
    w_head = torch.where(total > 0, g_head / total, 0.0)
    w_tail = torch.where(total > 0, g_tail / total, 0.0)
    return w_head, w_tail


def _akl_value(p_t, p_s, teacher, student, fkl, rkl, mu):
    """akl = w_head fkl + w_tail rkl, ``[c]``."""
    w_head, w_tail = _akl_mix(p_t, p_s, mu)
    return w_head * fkl + w_tail * rkl


def _akl_grad(p_t, p_s, teacher, student, g, mu):
    """d(g * akl)/d(student bucket log-probs), ``[c, k+1]``: the weights are constants (Wu et al.
    detach the student in them), so it is w_head fkl's and w_tail rkl's (`_bucket_grads`)."""
    w_head, w_tail = _akl_mix(p_t, p_s, mu)
    return (g * w_tail)[:, None] * p_s * (student - teacher + 1) - (g * w_head)[:, None] * p_t


@dataclass(frozen=True)
class Loss:
    """A loss as distill and snr know it: its words in `--loss`'s help; why teacher tokens drawn
    (teacher-logits --logits sampled|hybrid) do not estimate it ("" where they do, without
    bias); and, for a loss computed only when trained on (a third column after fkl and rkl, which
    are always computed, for the train log), its value and closed-form gradient from the k+1
    buckets (teacher and student log-probs and probs, its column's incoming gradient g)."""

    help: str
    not_drawn: str = ""  # a predicate after the loss's name: "rkl needs ..."
    extra: tuple[Callable, Callable] | None = None


_NEEDS_EVERY_TOKEN = ("needs the teacher's probability of every token the student puts mass on, and draws give it only "
                      "for the tokens drawn")
# The losses: a new one is an entry here (`extra`: its value and gradient, as akl's) and its
# definition in tests/loss_references.py, which both the loss and its gradient are checked against.
BUILT_IN = {
    "fkl": Loss("KL(teacher||student)"),
    "rkl": Loss("KL(student||teacher), on-policy on student rollouts", not_drawn=_NEEDS_EVERY_TOKEN),
    "akl": Loss("adaptive mix (Wu et al. 2025)", not_drawn=f"mixes in the reverse KL, which {_NEEDS_EVERY_TOKEN}",
                extra=(_akl_value, _akl_grad)),
}
LOSSES = tuple(BUILT_IN)
HELP = "; ".join(f"{name}: {loss.help}" for name, loss in BUILT_IN.items()) + "."
assert {name for name, loss in BUILT_IN.items() if loss.extra is None} == {"fkl", "rkl"}, \
    "fkl and rkl are always computed; any other loss is a third column, with its value and gradient"


def _student_buckets(logits: torch.Tensor, ids: torch.Tensor, scratch: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Student log-probs over the k+1 buckets before the floor, and the log-sum-exp outside the top-k.

    ``[c, V]`` any dtype -> ``([c, k+1] float32, [c] float32)`` (float64 for float64 logits).
    The buckets are ``logits[ids] - log_all`` and ``log_rest - log_all``, with ``log_rest``
    the logsumexp of the logits outside ``ids`` and
    ``log_all = logaddexp(log_rest, logsumexp(logits[ids]))`` (= ``logsumexp(logits)``);
    ``_bucket_losses`` floors them at ``_LOG_FLOOR``.

    The tail is a logsumexp over the logits outside the top-k, not ``log(1 - sum)``: when the
    top-k hold nearly all the mass, ``1 - sum`` in float32 cancels to noise or 0 and its log
    (and gradient) blows up.

    ``scratch=True`` says the caller owns ``logits`` and no longer needs them: a float32 chunk
    is then overwritten instead of copied (one ``[c, V]`` allocation and pass fewer). The
    values are the same bit for bit either way.
    """
    work = _work_dtype(logits.dtype)
    top = logits.gather(-1, ids).to(work)  # [c, k]; exact upcast of the gathered values
    if scratch and logits.dtype == work and not logits.requires_grad:
        rest = logits
    else:
        rest = logits.to(work, copy=True)  # the one float32 [c, V] copy
    rest.scatter_(-1, ids, _FILL)
    # rest is ours either way; under autograd (the reference path) it must stay unmodified.
    log_rest = torch.logsumexp(rest, dim=-1) if rest.requires_grad else _logsumexp_(rest)
    log_all = torch.logaddexp(log_rest, torch.logsumexp(top, dim=-1))  # [c], = logsumexp(logits)
    raw = torch.cat([top - log_all[:, None], (log_rest - log_all)[:, None]], dim=-1)
    return raw, log_rest


def _logsumexp_(x: torch.Tensor) -> torch.Tensor:
    """``torch.logsumexp(x, -1)`` for a 2-D float ``x`` it may overwrite, bit for bit.

    The same steps as ATen's (max, infinite maxima replaced by 0, exp of the shifted values,
    sum, log, add the max back), but the shift and the exp happen in ``x`` itself instead of
    in a new ``[c, V]`` temporary, whose allocation costs as much as the arithmetic on CPU.
    """
    maxes = x.amax(-1)
    maxes.masked_fill_(maxes.abs() == float("inf"), 0)
    return x.sub_(maxes[:, None]).exp_().sum(-1).log_().add_(maxes)


def _bucket_grads(
    raw: torch.Tensor, teacher: torch.Tensor, grad_out: torch.Tensor, mu: float, extra: str | None
) -> torch.Tensor:
    """d(sum grad_out * losses)/d(student bucket log-probs), closed form: ``[c, k+1]`` float32.

    With teacher bucket probs ``p = exp(t)`` and student ones ``q = exp(s)``, ``s`` floored:

    - fkl = sum_j p_j (t_j - s_j): d/ds_j = -p_j
    - rkl = sum_j q_j (s_j - t_j): d/ds_j = q_j (s_j - t_j + 1)
    - akl = w_head fkl + w_tail rkl, the weights constants (Wu et al. detach the student in
      them): d/ds_j = w_head (-p_j) + w_tail q_j (s_j - t_j + 1)

    A bucket below the floor has derivative 0 (``clamp_min`` passes gradient only where the
    value is >= the floor), exactly as autograd through ``_bucket_losses`` gives.
    """
    student = raw.clamp_min(_LOG_FLOOR)
    p_t = teacher.exp()
    p_s = student.exp()
    g = grad_out.to(raw.dtype)
    d = g[:, 1, None] * p_s * (student - teacher + 1) - g[:, 0, None] * p_t
    if extra is not None:
        _, grad = BUILT_IN[extra].extra
        d = d + grad(p_t, p_s, teacher, student, g[:, 2], mu)
    return torch.where(raw >= _LOG_FLOOR, d, 0.0)


def _logit_grads_(
    buf: torch.Tensor, ids: torch.Tensor, raw: torch.Tensor, log_rest: torch.Tensor, d: torch.Tensor
) -> torch.Tensor:
    """Turn a chunk of float32 logits ``buf`` ``[c, V]`` into their gradient, in place.

    ``d`` ``[c, k+1]`` is the gradient with respect to the student's bucket log-probs
    (``_bucket_grads``). The buckets are ``u_j = z_{i_j} - L`` for the top-k ids ``i_j`` and
    ``u_tail = R - L`` with ``R = logsumexp(z outside the ids)`` and ``L = logsumexp(z)``.
    With ``D = sum_j d_j`` (all k+1 buckets), ``dL/dz_v = softmax(z)_v`` and
    ``dR/dz_v = exp(z_v - R)`` outside the ids (0 on them):

        dz_v     = (d_tail - D exp(u_tail)) * exp(z_v - R)    v not among the ids
        dz_{i_j} = d_j - D exp(u_j)                            (summed over repeats of an id)

    ``exp(u_j)`` and ``exp(u_tail)`` are the student's unfloored bucket probabilities, so the
    tail term is ``softmax(z)_v (d_tail / Q_tail - D)`` with ``Q_tail`` the student's tail
    mass: for fkl alone (``d_j = -p_j``, ``D = -1``) it is ``q_j - p_j`` on the ids and
    ``softmax(z)_v (1 - P_tail / Q_tail)`` outside, P being the teacher. ``exp(z_v - R)`` is
    computed directly (not as ``softmax / Q_tail``), so a tail of tiny mass neither
    underflows nor divides 0 by 0; at k = V (empty tail, ``R`` = a huge negative number) the
    ids cover every column and the overwritten values never count.
    """
    total = d.sum(-1)
    on_ids = d[:, :-1] - total[:, None] * raw[:, :-1].exp()  # [c, k]
    outside = d[:, -1] - total * raw[:, -1].exp()  # [c]
    buf.sub_(log_rest[:, None]).exp_().mul_(outside[:, None])
    buf.scatter_(-1, ids, 0.0)  # the ids' columns (possibly inf * 0 above) are set, not added to
    return buf.scatter_add_(-1, ids, on_ids)


def _check_inputs(student_logits, topk_ids, topk_logprobs, tail_logprob, mask, loss, mu, chunk_size):
    """Collect every problem with the arguments and raise once."""
    problems = _option_problems(loss, mu, chunk_size)
    if student_logits.dim() != 3 or not student_logits.is_floating_point():
        problems.append(
            f"student_logits must be a float [batch, seq, vocab] tensor, got "
            f"{student_logits.dtype} {tuple(student_logits.shape)}"
        )
    else:
        batch, seq, vocab = student_logits.shape
        if topk_ids.dim() != 3 or tuple(topk_ids.shape[:2]) != (batch, seq):
            problems.append(f"topk_ids must be [{batch}, {seq}, k], got {tuple(topk_ids.shape)}")
        elif not 1 <= topk_ids.shape[-1] <= vocab:
            problems.append(f"topk_ids has k={topk_ids.shape[-1]}, which must be in [1, vocab={vocab}]")
        if topk_ids.is_floating_point() or topk_ids.is_complex() or topk_ids.dtype == torch.bool:
            problems.append(f"topk_ids must be an integer tensor, got {topk_ids.dtype}")
        if tuple(topk_logprobs.shape) != tuple(topk_ids.shape):
            problems.append(
                f"topk_logprobs shape {tuple(topk_logprobs.shape)} must equal topk_ids shape "
                f"{tuple(topk_ids.shape)}"
            )
        if not topk_logprobs.is_floating_point():
            problems.append(f"topk_logprobs must be a float tensor, got {topk_logprobs.dtype}")
        if tuple(tail_logprob.shape) != (batch, seq) or not tail_logprob.is_floating_point():
            problems.append(
                f"tail_logprob must be a float [{batch}, {seq}] tensor, got "
                f"{tail_logprob.dtype} {tuple(tail_logprob.shape)}"
            )
        if tuple(mask.shape) != (batch, seq) or mask.dtype != torch.bool:
            problems.append(f"mask must be a bool [{batch}, {seq}] tensor, got {mask.dtype} {tuple(mask.shape)}")
    if problems:
        raise ValueError("token_losses: " + "; ".join(problems))


def option_problems(loss: str, mu: float) -> list[str]:
    """--loss and --mu as the commands take them (distill, snr), each named with its fix.

    The functions here accept mu over its whole domain [0, 1] (`_option_problems`); the
    commands take the open interval, where the head is neither the top-1 token alone whatever
    the teacher (mu = 0) nor every stored token (mu = 1), i.e. where AKL adapts.
    """
    problems = []
    if loss not in LOSSES:
        problems.append(f"--loss {loss}: use one of {', '.join(LOSSES)}")
    if not 0 < mu < 1:  # NaN included
        problems.append(f"--mu {mu}: the AKL head mass must be in (0, 1)")
    return problems


def _option_problems(loss, mu, chunk_size) -> list[str]:
    problems = []
    if loss not in LOSSES:
        problems.append(f"loss={loss!r} is not one of {LOSSES}")
    if not 0.0 <= mu <= 1.0:
        problems.append(f"mu={mu} must be in [0, 1] (it is a cumulative teacher probability)")
    if chunk_size < 1:
        problems.append(f"chunk_size={chunk_size} must be >= 1")
    return problems


def _check_fused_inputs(hidden, weight, bias, topk_ids, topk_logprobs, tail_logprob, loss, mu, chunk_size):
    """Collect every problem with the arguments of ``fused_head_losses`` and raise once."""
    problems = _option_problems(loss, mu, chunk_size)
    if hidden.dim() != 2 or not hidden.is_floating_point():
        problems.append(f"hidden must be a float [N, H] tensor, got {hidden.dtype} {tuple(hidden.shape)}")
    elif weight.dim() != 2 or not weight.is_floating_point() or weight.shape[1] != hidden.shape[1]:
        problems.append(
            f"weight must be a float [V, H={hidden.shape[1]}] tensor, got {weight.dtype} {tuple(weight.shape)}"
        )
    else:
        n, vocab = hidden.shape[0], weight.shape[0]
        if bias is not None and (tuple(bias.shape) != (vocab,) or not bias.is_floating_point()):
            problems.append(f"bias must be None or a float [{vocab}] tensor, got {bias.dtype} {tuple(bias.shape)}")
        if topk_ids.dim() != 2 or topk_ids.shape[0] != n:
            problems.append(f"topk_ids must be [{n}, k], got {tuple(topk_ids.shape)}")
        elif not 1 <= topk_ids.shape[-1] <= vocab:
            problems.append(f"topk_ids has k={topk_ids.shape[-1]}, which must be in [1, vocab={vocab}]")
        if topk_ids.is_floating_point() or topk_ids.is_complex() or topk_ids.dtype == torch.bool:
            problems.append(f"topk_ids must be an integer tensor, got {topk_ids.dtype}")
        if tuple(topk_logprobs.shape) != tuple(topk_ids.shape) or not topk_logprobs.is_floating_point():
            problems.append(
                f"topk_logprobs must be a float tensor shaped like topk_ids {tuple(topk_ids.shape)}, got "
                f"{topk_logprobs.dtype} {tuple(topk_logprobs.shape)}"
            )
        if tuple(tail_logprob.shape) != (n,) or not tail_logprob.is_floating_point():
            problems.append(f"tail_logprob must be a float [{n}] tensor, got {tail_logprob.dtype} {tuple(tail_logprob.shape)}")
    if problems:
        raise ValueError("fused_head_losses: " + "; ".join(problems))
