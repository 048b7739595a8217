"""The teacher's distribution at each response position, kept sparse: what `paced teacher-logits`
stores, computed from the full output layer by any backend that sees it (hf; not vLLM, which
returns only each position's top log-probabilities).

`topk_from_hidden` turns hidden states into the teacher_logits columns: the top-k ids and their
exact log-probabilities, the tail's log-mass, the target's log-probability, the entropy, and
`samples` draws from the tail (`draw`: systematic or multinomial), kept as distinct ids with the
mass each stands for. Why the draws give an unbiased forward-KL gradient: stages/teacher_logits.py
and docs/artifacts.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas import InputError

SCHEMES = ("systematic", "multinomial")


@dataclass(frozen=True)
class ScoringOptions:
    """What a scorer keeps of the teacher's distribution at each position, as a backend receives
    it (teacher-logits builds it from its options): the `top_k` most likely ids, then `draws`
    ids drawn from the rest by `scheme` from the proposal at `temperature` (0 draws: none), and
    the hf engine's batching (`batch_size` sequences per forward pass, `chunk_size` positions per
    output-layer chunk)."""

    top_k: int
    draws: int = 0
    temperature: float = 1.0
    scheme: str = "systematic"
    batch_size: int = 8
    chunk_size: int = 1024

    @classmethod
    def of(cls, config: Any) -> "ScoringOptions":
        """The scoring options of a teacher-logits config."""
        return cls(config.top_k, config.draws if config.logits != "topk" else 0, config.sample_temperature,
                   config.draw_scheme, config.batch_size, config.chunk_size)


def topk_from_hidden(
    head, hidden, targets, *, top_k: int, real_vocab: int, chunk_size: int,
    samples: int = 0, temperature: float = 1.0, scheme: str = "systematic", generator=None,
) -> dict[str, Any]:
    """[n, H] hidden states -> the teacher_logits columns of n positions: top-k ids/log-probs,
    tail log-mass, target log-probs, entropy, and `samples` draws from the tail.

    log-softmax over the full output layer in float32; the top-k and the draws are taken among
    the `real_vocab` ids the tokenizer can produce (padded embedding rows stay in the tail).
    Draws: `samples` ids from the teacher's distribution outside the top-k raised to
    1 / `temperature` (the proposal), by `scheme` (see `draw`), `generator` seeding them; kept per position as
    the distinct ids drawn (most drawn first) and the tail mass each stands for,
    exp(tail) * c_v w_v / sum(c w) with c_v its count and w_v = p_v / proposal_v (1 at
    temperature 1, where the estimate exp(tail) c_v / S of p_v is unbiased).
    """
    import torch

    ids, lps, tails, tgts, ents = [], [], [], [], []
    sample_ids: list[list[int]] = []
    sample_mass: list[list[float]] = []
    for s in range(0, hidden.shape[0], chunk_size):
        logits = head(hidden[s : s + chunk_size]).float()  # [c, V]
        logp = torch.log_softmax(logits, dim=-1)
        top = logp[:, :real_vocab].topk(top_k, dim=-1)  # sorted, most likely first
        rest = logp.scatter(-1, top.indices, float("-inf"))
        tail = torch.logsumexp(rest, dim=-1)
        nan = torch.isnan(tail) | torch.isnan(top.values).any(-1)  # (topk ranks NaN first)
        if nan.any():
            raise InputError(
                f"--teacher: its log-probabilities are NaN at {int(nan.sum())} of {len(nan)} positions of a sequence "
                f"(its weights hold NaN or inf, or its activations overflow in this --dtype): check the model, or "
                f"try --dtype float32; an artifact of NaN would be refused by every command that reads it"
            )
        ids.append(top.indices)
        lps.append(top.values)
        tails.append(tail)
        tgts.append(logp.gather(-1, targets[s : s + chunk_size, None]).squeeze(-1))
        ents.append(-torch.where(logp > float("-inf"), logp.exp() * logp, 0.0).sum(-1))
        if samples:
            got_ids, got_mass = _draw_tail(rest[:, :real_vocab], tail, samples, temperature, scheme, generator)
            sample_ids += got_ids
            sample_mass += got_mass
    n = hidden.shape[0]
    return {
        "topk_ids": torch.cat(ids).int().tolist(),
        "topk_logprobs": torch.cat(lps).half().tolist(),
        "tail_logprob": torch.cat(tails).clamp(min=-1e4).tolist(),
        "target_logprobs": torch.cat(tgts).tolist(),
        "sample_ids": sample_ids if samples else [[] for _ in range(n)],
        "sample_logmass": sample_mass if samples else [[] for _ in range(n)],
        "entropy": torch.cat(ents).clamp(min=0).tolist(),
    }



def draw(proposal, samples: int, scheme: str, generator):
    """[c, S] ids drawn from each row of `proposal` ([c, V] log-probabilities).

    multinomial: S independent draws with replacement (Anshumann et al.'s random sampling):
    the count c_v of token v is Binomial(S, q_v), so var(c_v / S) = q_v (1 - q_v) / S.
    systematic: one uniform u per row and the S points (u + j) / S, j = 0 .. S - 1, read through
    the row's cumulative distribution (vocabulary order, float64). Each point is uniform on its
    own 1/S of [0, 1), so E[c_v] = S q_v exactly (the same unbiased estimate), but c_v is always
    floor(S q_v) or its ceiling: var(c_v / S) = f (1 - f) / S^2 with f the fractional part of
    S q_v, at most q_v (1 - S q_v) / S below 1/S and at most 1 / (4 S^2) above. A token of mass
    at least 1/S is always kept, with its mass almost exact; the rest is kept with probability
    S q_v, as many distinct ids as the budget allows (near the optimum of an estimate of q from
    n kept ids, inclusion probability in proportion to q_v). That is per token: for a weighted
    sum over tokens (a loss value) systematic draws are not always the lower-variance ones
    (Douc, Cappé and Moulines 2005); on the bench's teachers their gradient error is lower.
    """
    import torch

    if scheme == "multinomial":
        return torch.multinomial(proposal.exp(), samples, replacement=True, generator=generator)
    if scheme != "systematic":
        raise ValueError(f"draw scheme {scheme!r}: one of {SCHEMES}")
    u = torch.rand(proposal.shape[0], 1, generator=generator, device=proposal.device, dtype=torch.float64)
    points = (u + torch.arange(samples, device=proposal.device, dtype=torch.float64)) / samples  # [c, S], in [0, 1)
    out = []
    for lo in range(0, proposal.shape[0], 64):  # the float64 cumulative sums of 64 rows at a time
        cdf = proposal[lo : lo + 64].double().exp().cumsum(-1)
        cdf /= cdf[:, -1:].clone()
        # the first id whose cumulative mass exceeds the point: never one of zero mass
        out.append(torch.searchsorted(cdf, points[lo : lo + 64], right=True).clamp_(max=proposal.shape[1] - 1))
    return torch.cat(out)


def _draw_tail(rest, tail, samples: int, temperature: float, scheme: str, generator) -> tuple[list[list[int]], list[list[float]]]:
    """`samples` draws per row from the proposal softmax(rest / temperature) (`rest`: [c, V]
    teacher log-probs, -inf on the top-k) by `scheme`, as (distinct ids, log of the tail mass
    each stands for) per row, most drawn first (ties: smaller id first). A row whose rest holds
    no token (every real token in the top-k) gets no draws."""
    import torch

    finite = torch.isfinite(rest).any(-1)  # [c]
    proposal = torch.log_softmax(torch.where(finite[:, None], rest / temperature, 0.0), dim=-1)
    draws = draw(proposal, samples, scheme, generator)  # [c, S]
    # log w_v = log p_v - log proposal_v, for the drawn ids
    log_w = (rest.gather(-1, draws) - proposal.gather(-1, draws)).cpu().double().numpy()
    draws = draws.cpu().numpy()
    tail = tail.cpu().double().numpy()
    out_ids, out_mass = [], []
    for r in range(draws.shape[0]):
        if not finite[r]:
            out_ids.append([])
            out_mass.append([])
            continue
        uniq, first, counts = np.unique(draws[r], return_index=True, return_counts=True)
        weight = counts * np.exp(log_w[r][first] - log_w[r][first].max())  # c_v w_v, scaled
        order = np.lexsort((uniq, -counts))
        mass = tail[r] + np.log(weight[order]) - np.log(weight.sum())
        out_ids.append(uniq[order].astype(np.int64).tolist())
        out_mass.append(mass.astype(np.float32).tolist())
    return out_ids, out_mass
