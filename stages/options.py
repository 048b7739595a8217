"""Every command option, declared once: a field of the stage's config dataclass.

A field made with `option` carries its help (the `--help` text), its command-line names and
its role; the typer command is derived from the dataclass (`paced_cli.build`), and a job's
key is read from the roles (`key_options`), so nothing about an option is written twice:

    @dataclass
    class WeightConfig:
        scores: Path = option("Scores artifact ...", role=INPUT)
        out: Path = option("Output weights Parquet file ...", role=RUNTIME)
        alpha: float = option("alpha in w(p) = p^alpha (1-p)^beta; must be >= 0.", 1.0)

Roles:
- IDENTITY (the default): the option changes the output, so it is part of the job's key;
  rerunning with another value is refused (or replaces the output, with --overwrite).
- INPUT: a path to an input; its content (fingerprint) is in the key instead of its spelling,
  so the same file named from another directory resumes the job.
- RUNTIME: where or how the job runs, not what it makes (--out, --overwrite, --device, batch
  sizes that do not change results): it may differ on resume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, asdict, fields
from typing import Any

IDENTITY, INPUT, RUNTIME = "identity", "input", "runtime"

# Help of the options several commands share, worded once.
TRUST_REMOTE_CODE = "Allow the model repository's own Python code to run. Off unless you trust it."
DEVICE = "auto, cpu, cuda or cuda:N (hf; vllm takes auto only: pick its GPUs with CUDA_VISIBLE_DEVICES)."
ALLOW_STALE = "Accept inputs made from another problems file than the others (normally refused as stale)."
CHECK_TIMEOUT = "Seconds one check may take; past it the check is killed and scores false with reason 'timeout'."
CHECK_WORKERS = "Checker processes."
TOP_K = "Sample only from the k most likely tokens at each step; 0 is off (the paper samples rollouts without it)."
CHAT_TEMPLATE_KWARGS = 'Variables for the chat template, as a JSON object, e.g. \'{"enable_thinking": false}\' for Qwen3 (whose template thinks by default).'
MU = "AKL: teacher cumulative mass that defines the head."
SHARD_NAME = "shard-IIIII-of-NNNNN (zero-padded: shard-00000-of-00002)"
SHARD_DIR = f"--out/{SHARD_NAME}"
SHARD = f"Run one shard I/N of the job (problems split by a stable hash of problem_id) into {SHARD_DIR}; downstream stages read --out as one artifact once every shard is done."
ROLES = (IDENTITY, INPUT, RUNTIME)


ENGINE = "Engine"  # the --help panel of the options of how a model runs (stages.backends.generation.EngineOptions)


def option(help: str, default: Any = MISSING, *, role: str = IDENTITY, flags: tuple[str, ...] = (),
           default_factory: Any = MISSING, keyed_when_set: bool = False, argument: bool = False,
           panel: str | None = None) -> Any:
    """A config field that is a command option. No default: the option is required.
    `flags`: the command-line names when not just --field-name (e.g. ("--samples", "-k")).
    `argument`: a positional argument instead (`paced inspect PATH`).
    `keyed_when_set`: an IDENTITY option added after jobs were made without it is in the job's
    key only when it differs from its default, so those jobs keep their key and resume.
    `panel`: the group --help shows it in (e.g. "Engine"), after the command's own options."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {ROLES}")
    metadata = {"help": help, "role": role, "flags": tuple(flags), "keyed_when_set": keyed_when_set, "argument": argument,
                "panel": panel}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# The options several commands share, each declared once here (one field per call; `prefix`
# words the help for a command where the option applies in one mode only).
def trust_remote_code_option(**kw: Any) -> Any:
    return option(TRUST_REMOTE_CODE, False, role=RUNTIME, **kw)


def allow_stale_option() -> Any:
    return option(ALLOW_STALE, False, role=RUNTIME)


def verifier_option(prefix: str = "", **kw: Any) -> Any:
    """--verifier, its help built from the registry of built-in verifiers (imported here: only the
    commands that check answers load it)."""
    from stages import verifiers

    return option(prefix + verifiers.HELP, "math", **kw)


def check_timeout_option(prefix: str = "", **kw: Any) -> Any:
    return option(prefix + CHECK_TIMEOUT, 5.0, **kw)


def check_workers_option() -> Any:
    return option(CHECK_WORKERS, 2, role=RUNTIME)


def mu_option() -> Any:
    return option(MU, 0.5)


def shard_option() -> Any:
    return option(SHARD, None)


def redefault(cls, name: str, default: Any, help: str | None = None) -> Any:
    """Option `name` of config class `cls` with another default (and help): a command that
    shares it (eval's generation options, rollout's) keeps its flags, role and key rule."""
    base = next(f for f in declared(cls) if f.name == name)
    return option(help if help is not None else base.metadata["help"], default, role=base.metadata["role"],
                  flags=base.metadata["flags"], keyed_when_set=base.metadata["keyed_when_set"],
                  argument=base.metadata["argument"], panel=base.metadata["panel"])


def declared(cls_or_config) -> list[dataclasses.Field]:
    """The option fields of a config class (or instance), in declaration order."""
    return [f for f in fields(cls_or_config) if "role" in f.metadata]


def names(cls_or_config, role: str) -> tuple[str, ...]:
    return tuple(f.name for f in declared(cls_or_config) if f.metadata["role"] == role)


def key_options(config) -> dict[str, Any]:
    """The options that make a job what it is: every IDENTITY option with its value (the
    inputs' fingerprints are added by the stage)."""
    identity = set(names(config, IDENTITY))
    unset = {f.name for f in declared(config) if f.metadata.get("keyed_when_set") and getattr(config, f.name) == f.default}
    return {k: v for k, v in asdict(config).items() if k in identity and k not in unset}


def changed(config, *names: str) -> list[str]:
    """The flags of the fields `names` of `config` whose value is not their declared default
    (an option given where it does not apply), in the order named."""
    defaults = {f.name: f.default for f in fields(config)}
    return [f"--{n.replace('_', '-')}" for n in names if getattr(config, n) != defaults[n]]


MAX_SEED = 2**32 - 1  # the widest seed numpy and vLLM take (torch's is a little wider)


def seed_problems(seed: int) -> list[str]:
    """--seed's problem with its fix: every stage's seed is one numpy and vLLM take."""
    return [] if 0 <= seed <= MAX_SEED else [f"--seed {seed}: must be from 0 to {MAX_SEED} (the seeds numpy and vLLM take)"]


def check_problems_options(timeout: float, workers: int) -> list[str]:
    """The answer-check options' problems (score, eval, rollout --min-samples), each with its fix."""
    import math

    problems = []
    if not (math.isfinite(timeout) and timeout > 0):
        problems.append(f"--timeout {timeout}: must be a finite number of seconds > 0 (5 is the default)")
    if workers < 1:
        problems.append(f"--workers {workers}: must be at least 1")
    return problems
