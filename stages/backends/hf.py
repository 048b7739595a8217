"""The transformers backend (`--backend hf`, the default): sampling with `model.generate`,
teacher scoring with one forward pass and the output layer in chunks.

transformers fills every generation option left unset (None) from the model's own generation
config (Qwen3 ships top-k 20, top-p 0.95, temperature 0.6) and then from its global defaults
(top-k 50), which would bias the pass rates Paced measures. So the model's generation config
is replaced by an empty one once it is loaded, and every call passes top-k explicitly (`--top-k`,
0 when off).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from stages import models
from stages.backends.sampling import Sample, SamplingOptions, prompt_samples

LABEL = "transformers"
OPTIONS: tuple[str, ...] = ()  # no engine options of its own
SCORE_ROOM = 0
SAMPLING = "per-sample generators, seed + k"  # see generate_hf; before it, one generator per part


def option_problems(config: Any) -> list[str]:
    return models.device_problems(config.device) + models.dtype_problems(config.dtype)


def prepare(config: Any) -> None:
    """--dtype checked before the job starts (the model loads later)."""
    models.resolve_dtype(config.dtype, models.resolve_device(config.device))


def context_limit(model: str, config: Any) -> int | None:
    return models.max_context(model)


def shutdown() -> None:
    """Nothing held between jobs: each job's model goes with it."""


@contextmanager
def open_generator(model_name: str, config: Any, tokenizer: Any) -> Iterator[Callable[..., list[list[Sample]]]]:
    """Load the model once for the whole job and yield `generate(prompts, seeds, on_batch, n,
    first)` (see `Backend.open_generator`)."""
    from transformers import GenerationConfig as HFGenerationConfig

    options = SamplingOptions.of(config)
    model = models.load_model(
        model_name, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code
    )
    eos = models.eos_token_ids(model, tokenizer)  # reads the model's generation config: before it goes
    model.generation_config = HFGenerationConfig()  # none of the model's sampling defaults (see above)

    def generate(prompts, seeds, on_batch=None, n=None, first=0):
        return generate_hf(model, tokenizer, prompts, options if n is None else replace(options, n=n), eos_ids=eos,
                           batch_size=config.batch_size, seeds=seeds, first=first, on_batch=on_batch)

    yield generate


def open_scorer(model_name: str, config: Any, tokenizer: Any) -> Callable[..., list[dict[str, Any]]]:
    """Load the teacher once for the whole job and return `score(prompt_ids, response_ids, on_batch)`."""
    model = models.load_model(model_name, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code)

    def score(prompt_ids, response_ids, on_batch, seeds=None):
        return score_sequences(model, prompt_ids, response_ids, top_k=config.top_k, real_vocab=len(tokenizer),
                               batch_size=config.batch_size, chunk_size=config.chunk_size, on_batch=on_batch,
                               samples=config.draws if config.logits != "topk" else 0,
                               temperature=config.sample_temperature, scheme=config.draw_scheme, seeds=seeds)

    return score


# ---------------------------------------------------------------------------------------
# Generation


def generate_hf(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    options: SamplingOptions,
    *,
    eos_ids: Sequence[int],
    batch_size: int,
    seeds: Sequence[int] | None = None,
    first: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[list[Sample]]:
    """K = options.n samples for each prompt, prompts batched `batch_size` at a time:
    samples `first` .. `first` + K - 1 of each.

    Sample k of prompt i is drawn with its own generator, seeded with `seeds[i]` + k (as vLLM
    seeds the samples of a request), so it depends on that seed and the logits alone: not on
    K, the batch or the other prompts. A `--min-samples K0` run's first K0 samples are then
    those of a plain `--samples K` run, and its further ones (`first` = K0) the plain run's
    samples K0 .. K - 1. Greedy decoding (temperature 0) needs no seeds. `on_batch(prompts_done,
    tokens)` reports progress.
    """
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    device = next(model.parameters()).device
    greedy = options.temperature == 0
    if not greedy and (seeds is None or len(seeds) != len(prompts)):
        raise ValueError("sampling needs one seed per prompt")
    per_prompt = 1 if greedy else options.n  # greedy decoding gives K identical samples: decode once and copy
    gen = GenerationConfig(
        do_sample=False,  # sampling is done by SeededSampler, the last logits processor
        max_new_tokens=options.max_new_tokens,
        eos_token_id=list(eos_ids),
        pad_token_id=tokenizer.pad_token_id,
    )
    results: list[list[Sample]] = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        # Left padding: every prompt ends where generation starts. Each prompt once per sample.
        rows = [p for p in batch for _ in range(per_prompt)]
        input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in rows], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows], device=device)
        processors = LogitsProcessorList()
        if not greedy:
            row_seeds = [seeds[start + i] + first + k for i in range(len(batch)) for k in range(per_prompt)]
            processors.append(SeededSampler(options, row_seeds, width, device))
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=gen,
                                 logits_processor=processors)
        new = out[:, width:].tolist()
        tokens = 0
        for i in range(len(batch)):
            samples = prompt_samples(new[i * per_prompt : (i + 1) * per_prompt], eos_ids, options)
            tokens += sum(len(s.token_ids) for s in samples)
            results.append(samples)
        if on_batch:
            on_batch(len(batch), tokens)
    return results


class SeededSampler:
    """A transformers logits processor that samples each row's next token with the row's own
    generator, and leaves greedy decoding nothing else to choose.

    transformers samples a batch with one draw from the global generator, so a row's sample
    depends on every other row. Here row r's draws are `max_new_tokens` uniforms (float64) from
    a generator seeded with `seeds[r]`, made before decoding; at step t the token is drawn by
    inverting the cumulative distribution (float64) at uniform t, after temperature, top-k and
    top-p as transformers applies them when it samples (its own warpers, in its order). The
    scores returned are 0 for that token and -inf elsewhere, so the argmax is the draw.
    """

    def __init__(self, options: SamplingOptions, seeds: Sequence[int], width: int, device: Any = "cpu"):
        import torch
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.width = width
        self.warpers = [
            *([TemperatureLogitsWarper(options.temperature)] if options.temperature != 1.0 else []),
            *([TopKLogitsWarper(top_k=options.top_k)] if options.top_k else []),
            *([TopPLogitsWarper(top_p=options.top_p)] if options.top_p < 1.0 else []),
        ]
        self.uniforms = torch.stack([
            torch.rand(options.max_new_tokens, generator=torch.Generator().manual_seed(s % 2**64), dtype=torch.float64)
            for s in seeds
        ]).to(device)  # [rows, max_new_tokens], drawn on the CPU: the same draws on every device

    def __call__(self, input_ids, scores):
        import torch

        step = input_ids.shape[1] - self.width
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores.double(), dim=-1)
        cdf = probs.cumsum(-1)
        u = self.uniforms[:, step] * cdf[:, -1]
        token = torch.searchsorted(cdf, u[:, None], right=True)
        # u rounded up to the total mass would pick past the last token with mass: take that one
        last = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(-1, keepdim=True)
        token = torch.minimum(token, last)
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)


# ---------------------------------------------------------------------------------------
# Teacher scoring


def score_sequences(
    model: Any,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    *,
    top_k: int,
    real_vocab: int,
    batch_size: int,
    chunk_size: int,
    on_batch=None,
    samples: int = 0,
    temperature: float = 1.0,
    scheme: str = "systematic",
    seeds: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Teacher-force prompt + response and keep the top-k (and `samples` draws from the rest,
    sequence i's seeded by `seeds[i]`) at every response position.

    Batches are formed from sequences of similar length (less padding) and results are
    returned in input order. Right padding: positions of real tokens are unchanged. A
    sequence's draws depend on its seed alone, never on its batch.
    """
    import torch

    device = next(model.parameters()).device
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]) + len(response_ids[i]))
    out: list[dict[str, Any] | None] = [None] * len(order)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        seqs = [prompt_ids[i] + response_ids[i] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(idx), width), dtype=torch.long, device=device)
        mask = torch.zeros((len(idx), width), dtype=torch.long, device=device)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        with torch.inference_mode():
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, L, H]
            for r, i in enumerate(idx):
                p, n = len(prompt_ids[i]), len(response_ids[i])
                # Hidden state at position t predicts token t + 1: the response's n tokens are
                # predicted from positions p-1 .. p+n-2.
                h = hidden[r, p - 1 : p + n - 1]
                targets = torch.tensor(response_ids[i], device=device)
                generator = None
                if samples:
                    generator = torch.Generator(device=device)
                    generator.manual_seed(seeds[i])
                out[i] = topk_from_hidden(head, h, targets, top_k=top_k, real_vocab=real_vocab, chunk_size=chunk_size,
                                          samples=samples, temperature=temperature, scheme=scheme, generator=generator)
        if on_batch:
            on_batch(sum(len(response_ids[i]) for i in idx))
    return out  # type: ignore[return-value]


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


SCHEMES = ("systematic", "multinomial")


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
