"""What every backend's samples are made of: the sampling options, a sample, seeds.

Sampling follows the options exactly: temperature, top-p, top-k, and nothing else (no model
defaults; each backend says how it keeps them out).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

from schemas.rollouts import FINISH_REASONS

# sample_index is an int32 column.
MAX_SAMPLES = 2**31 - 1


@dataclass(frozen=True)
class SamplingOptions:
    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    top_k: int = 0  # 0: off

    @classmethod
    def of(cls, config: Any) -> "SamplingOptions":
        """The sampling options of a rollout or eval config."""
        return cls(config.samples, config.temperature, config.top_p, config.max_new_tokens, config.top_k)


@dataclass(frozen=True)
class Sample:
    """One response as a backend returns it: its tokens and why it ended, `stop` (an
    end-of-sequence token, kept) or `length` (--max-new-tokens); `split_response` makes both."""

    token_ids: list[int]
    finish_reason: str

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:  # the rollouts artifact holds these only
            raise ValueError(f"Sample.finish_reason {self.finish_reason!r}: a backend must return one of {FINISH_REASONS}")


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed for one unit of work, so a rerun of that unit draws the same numbers."""
    body = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(body.encode()).digest()[:8], "little") >> 1


def split_response(new_tokens: Sequence[int], eos_ids: Sequence[int], max_new_tokens: int) -> Sample:
    """Cut a generated row at its first end-of-sequence token (kept: the student must learn to stop)."""
    eos = set(eos_ids)
    for i, t in enumerate(new_tokens):
        if t in eos:
            return Sample(list(new_tokens[: i + 1]), "stop")
    return Sample(list(new_tokens[:max_new_tokens]), "length")


def prompt_samples(rows: Sequence[Sequence[int]], eos_ids: Sequence[int], options: SamplingOptions) -> list[Sample]:
    """One prompt's K samples from the rows a backend generated for it: each cut at its first
    end-of-sequence token; greedy decoding generates one row, which stands for all K."""
    samples = [split_response(r, eos_ids, options.max_new_tokens) for r in rows]
    return samples * options.n if options.temperature == 0 else samples
