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

from stages import models
from stages.backends.sampling import Sample, SamplingOptions, prompt_samples
from stages.backends.sparse import ScoringOptions, topk_from_hidden

LABEL = "transformers"
OPTIONS: tuple[str, ...] = ()  # no engine options of its own
SCORE_ROOM = 0
DRAWS = True  # sees the full output layer: draws from it (stages/backends/sparse.py)
NO_DRAWS = ""  # (it draws)
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


def open_scorer(model_name: str, config: Any, tokenizer: Any, options: ScoringOptions) -> Callable[..., list[dict[str, Any]]]:
    """Load the teacher once for the whole job and return `score(prompt_ids, response_ids, on_batch, seeds=None)`."""
    model = models.load_model(model_name, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code)

    def score(prompt_ids, response_ids, on_batch, seeds=None):
        return score_sequences(model, prompt_ids, response_ids, top_k=options.top_k, real_vocab=len(tokenizer),
                               batch_size=options.batch_size, chunk_size=options.chunk_size, on_batch=on_batch,
                               samples=options.draws, temperature=options.temperature, scheme=options.scheme, seeds=seeds)

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
    scores returned are 0 for that token and -inf elsewhere, so the argmax is the draw. It must
    be the last processor: transformers runs those its GenerationConfig asks for (a minimum
    length, say) before the ones passed to generate, so a new sampling option given to
    `GenerationConfig` above shapes the distribution this draws from.
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
