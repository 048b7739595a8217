"""The losses' brute-force references, in float64 and written out plainly (AKL's head one
position at a time, as the authors' code states it): tests/test_losses.py and
tests/test_fused_loss.py both check paced's losses, and their gradients, against
`bucket_losses`. A new loss adds its definition here, beside fkl, rkl and akl."""

from __future__ import annotations

import torch


def kl(p_log, q_log):
    """sum_j p_j (log p_j - log q_j) with 0 log 0 = 0, over the last axis."""
    p = p_log.exp()
    terms = torch.where(p > 0, p * (p_log - q_log), torch.zeros_like(p))
    return terms.sum(-1)


def akl_one(t_log, s_log, mu, tail_bucket):
    """AKL for a single token, by hand: t_log, s_log [n] float64 log-probs.

    The head rule of the authors' reference code: rank the tokens by teacher probability
    (stable: ties keep their index order); a token is in the head when the teacher's
    cumulative mass through it, its own included, is <= mu, and the top-1 always is. If
    tail_bucket, the last entry is the tail bucket, which is always in the tail.
    """
    p_t, p_s = t_log.exp(), s_log.exp().detach()
    ranked = list(range(len(p_t) - 1)) if tail_bucket else list(range(len(p_t)))
    ranked.sort(key=lambda j: -p_t[j].item())
    head, cum = set(), 0.0
    for rank, j in enumerate(ranked):
        cum += p_t[j].item()
        if rank == 0 or cum <= mu:
            head.add(j)
    g_head = sum((p_t[j] - p_s[j]).abs() for j in range(len(p_t)) if j in head)
    g_tail = sum((p_t[j] - p_s[j]).abs() for j in range(len(p_t)) if j not in head)
    g_head, g_tail = torch.as_tensor(g_head, dtype=torch.float64), torch.as_tensor(g_tail, dtype=torch.float64)
    fkl, rkl = kl(t_log, s_log), kl(s_log, t_log)
    if (g_head + g_tail) == 0:
        return fkl * 0
    return g_head / (g_head + g_tail) * fkl + g_tail / (g_head + g_tail) * rkl


def bucket_losses(t_log, s_log, mu, tail_bucket=True):
    """fkl, rkl and akl of teacher log-probs `t_log` against student log-probs `s_log` over the
    last axis (any leading shape): the k + 1 buckets when `tail_bucket` (the last one the tail),
    the whole vocabulary otherwise."""
    flat_t, flat_s = t_log.reshape(-1, t_log.shape[-1]), s_log.reshape(-1, s_log.shape[-1])
    fkl, rkl = kl(t_log, s_log), kl(s_log, t_log)
    akl = torch.stack([akl_one(a, b, mu, tail_bucket) for a, b in zip(flat_t, flat_s)]).reshape(fkl.shape)
    return {"fkl": fkl, "rkl": rkl, "akl": akl}
