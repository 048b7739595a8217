"""Verifiers: is a generated completion's final answer right?

    paced score ... --verifier math            # math-verify equivalence (default)
    paced score ... --verifier exact           # normalised string match
    paced score ... --verifier 'regex:Answer: (\\d+)'
    paced score ... --verifier my_checks:is_right

`resolve` validates a `--verifier` spec in the parent process, before any work starts.
`check_one` runs one check in the current process with no time bound (tests, debugging).
`CheckPool` runs checks in worker processes, each check bounded by wall time: sympy can
hang on adversarial LaTeX and a C-level loop cannot be interrupted by a signal, so the only
hard bound is to kill the worker (SIGKILL) and start another. math-verify's own signal
alarms are passed too, as a cheaper first line: a check they stop leaves the worker alive.

Every check ends in a `Verdict`; a check that reached no verdict says why in `reason`.
User code (`module:function`) runs only when named, and only in the process that asked.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import multiprocessing as mp
import os
import re
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from schemas import InputError

__all__ = ["Verdict", "resolve", "check_one", "CheckPool", "extract_boxed"]


@dataclass(frozen=True)
class Verdict:
    correct: bool
    extracted: str | None
    reason: str | None
    """None when the verifier reached a verdict; `no_answer` when nothing could be extracted;
    `timeout` when the check ran past the time limit; `error: <ExcType>: <msg>` when it raised."""
    user_error: bool = False
    """True when a user's module:function raised or returned a non-bool (exit 2)."""


def _error(e: BaseException, user_error: bool = False) -> Verdict:
    return Verdict(False, None, f"error: {type(e).__name__}: {e}", user_error=user_error)


# ---------------------------------------------------------------------------------------
# Specs


_MODULE_SPEC = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def user_error(spec: str, problem_id: str, sample_index: int, verdict: Verdict) -> InputError:
    """The exit-2 error for a user's verifier that raised or returned a non-bool on one row."""
    return InputError(
        f"--verifier {spec}: raised on problem_id={problem_id!r}, sample_index={sample_index} "
        f"({(verdict.reason or '').removeprefix('error: ')}); fix the function (it must return a "
        f"bool for any completion) and rerun (a job this run began is removed; where --out held the job "
        f"before, a changed verifier file is a new job: pass --overwrite)"
    )


def resolve(spec: str, *, load: bool = True) -> str:
    """Validate a --verifier spec (import the user module, compile the regex); return it
    normalised. Raises InputError naming --verifier and the fix. A user's module is imported in
    a child process, within the time a check worker has to start (`_STARTUP_LIMIT_S`): importing
    it runs the user's code, which could loop for ever in this one. `load=False` leaves the
    import to the caller's own workers (CheckPool's, bounded the same way)."""
    s = _normalise_spec(spec)
    if not _is_module(s):
        _build(spec)
    elif load:
        _build_bounded(s)
    return s


def extracts_answers(spec: str) -> bool:
    """Whether the verifier of a resolved spec extracts an answer from each response (the
    built-ins and regex:; a user's module:function returns a verdict only)."""
    return not _is_module(spec)


def _is_module(spec: str) -> bool:
    """A user's module:function (`regex:x` has the same shape but is not). Only a user's function
    sees the whole problem row; the others extract an answer and need the gold answer alone."""
    return not spec.startswith("regex:") and _MODULE_SPEC.fullmatch(_normalise_spec(spec)) is not None


def _build_bounded(spec: str) -> None:
    """`_build(spec)` in a spawned process, bounded by `_STARTUP_LIMIT_S`; its InputError raised
    here."""
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_build_in_child, args=(there, spec, os.getpid()), name="paced-verifier-import", daemon=True)
    proc.start()
    there.close()  # so that the child's end reads as EOF here
    module = spec.split(":", 1)[0]
    try:
        if not here.poll(_STARTUP_LIMIT_S):
            raise InputError(
                f"--verifier {spec}: importing {module!r} did not finish within {_STARTUP_LIMIT_S:.0f} s (a loop or "
                f"a download at import time?); make the module quick to import, with the work inside the function"
            )
        try:
            kind, message = here.recv()
        except EOFError:  # it ended the process: os._exit, a crash in C
            proc.join(5)
            raise InputError(f"--verifier {spec}: importing {module!r} ended its process (exit code {proc.exitcode}); "
                             f"fix the module") from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        here.close()
    if kind != "ok":
        raise InputError(message)


def _build_in_child(conn: Connection, spec: str, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent decides, and kills us
    _die_with_parent(parent)
    try:
        _build(spec)
    except InputError as e:
        conn.send(("refused", str(e)))
    except BaseException as e:  # (SystemExit from the module, say)
        conn.send(("refused", f"--verifier {spec}: importing it failed: {type(e).__name__}: {e}; fix the module"))
    else:
        conn.send(("ok", None))


def _normalise_spec(spec: str) -> str:
    if spec.startswith("regex:"):
        return spec  # whitespace in a pattern is significant
    s = spec.strip()
    return s.lower() if s.lower() in BUILT_IN else s


def fingerprint(spec: str) -> str:
    """A resolved spec as a job's key holds it: a user's module:function with the sha256 of its
    module's file, so that editing the check is a new job, never verdicts of two versions mixed."""
    if spec in BUILT_IN or spec.startswith("regex:"):
        return spec
    module = spec.split(":", 1)[0]
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    found = importlib.util.find_spec(module)
    origin = getattr(found, "origin", None)
    if origin and os.path.isfile(origin):
        return spec + "@sha256:" + hashlib.sha256(Path(origin).read_bytes()).hexdigest()
    return spec


# A check: (completion, problem, math-verify timeout in whole seconds or None) -> Verdict.
Check = Callable[[str, dict, "int | None"], Verdict]


def _build(spec: str) -> Check:
    s = _normalise_spec(spec)
    if s in BUILT_IN:
        return BUILT_IN[s].check
    if s.startswith("regex:"):
        return _regex_check(spec, s[len("regex:") :])
    if _MODULE_SPEC.fullmatch(s):
        return _module_check(s)
    raise InputError(f"--verifier {spec}: unknown verifier; {USAGE}")


# ---------------------------------------------------------------------------------------
# Final-answer extraction


# Scanned on the reversed text: a "{" that follows `\boxed` or `\fbox` (spaces allowed).
_BRACE_TOKENS = re.compile(r"(?P<box>\{)(?=\s*(?:dexob|xobf)\\)|(?P<open>\{)|(?P<close>\})")


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` or `\\fbox{...}` whose braces balance.

    "Last" is the one that opens last, so `\\boxed{\\boxed{5}}` gives `5`. One pass from the
    end with a stack of unmatched `}`, stopping at the first balanced box: linear time, no
    recursion, so 100k nested braces or a 5 MB string cost one scan at most.
    """
    starts = [p for p in (text.find("\\boxed"), text.find("\\fbox")) if p >= 0]
    if not starts:
        return None
    n = len(text)
    rev = text[::-1]
    closers: list[int] = []
    for m in _BRACE_TOKENS.finditer(rev, 0, n - min(starts)):
        kind = m.lastgroup
        if kind == "close":
            closers.append(m.start())
        elif closers:
            j = closers.pop()
            if kind == "box":
                return text[n - m.start() : n - 1 - j]
    return None


_ANSWER_MARKER = re.compile(r"answer(?:\s+is\b\s*:?|\s*:)", re.IGNORECASE)


def _final_answer(text: str) -> str | None:
    """The last \\boxed{}, else the text after the last "answer is"/"Answer:", else the last
    non-empty line."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed.strip()
    last = None
    for last in _ANSWER_MARKER.finditer(text):
        pass
    if last is not None:
        for line in text[last.end() :].splitlines():
            if line.strip():
                return line.strip()
    tail = text.rstrip()
    if not tail:
        return None
    return tail.rpartition("\n")[2].strip() or None


def _normalise(s: str) -> str:
    """Strip whitespace, surrounding `$` and a trailing period; collapse spaces; case-fold."""
    s = s.strip().removesuffix(".").strip().strip("$").strip().removesuffix(".")
    return " ".join(s.split()).casefold()


# ---------------------------------------------------------------------------------------
# Built-in verifiers


def _check_exact(completion: str, problem: dict, mv_timeout: int | None) -> Verdict:
    found = _final_answer(completion)
    if found is None:
        return Verdict(False, None, "no_answer")
    return Verdict(_same_normalised(found, problem["answer"]), found, None)


def _regex_check(spec: str, pattern: str) -> Check:
    if not pattern:
        raise InputError(f"--verifier {spec}: the pattern is empty; write regex:PATTERN")
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise InputError(
            f"--verifier {spec}: invalid regular expression {pattern!r}: {e}; "
            f"fix the pattern (Python `re` syntax)"
        ) from None

    def check(completion: str, problem: dict, mv_timeout: int | None) -> Verdict:
        last = None
        for last in compiled.finditer(completion):
            pass
        if last is None:
            return Verdict(False, None, "no_answer")
        found = last.group(1) if compiled.groups else last.group(0)
        if found is None:  # the group did not take part in the last match
            return Verdict(False, None, "no_answer")
        return Verdict(_same_normalised(found, problem["answer"]), found, None)

    return check


@lru_cache(maxsize=1)
def _math_verify() -> Any:
    # Imported on first use: sympy takes half a second, and exact/regex never need it.
    import math_verify

    return math_verify


@lru_cache(maxsize=1)
def _pred_config() -> list:
    mv = _math_verify()
    # Boxed first: it is the answer format the prompts ask for.
    return [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]


def _parse_bare(latex: str, mv_timeout: int | None) -> tuple:
    """math-verify's reading of a bare answer (a gold answer, or a box's content)."""
    if len(latex) > _CACHED_MAX_CHARS:
        return _parse_bare_uncached(latex, mv_timeout)
    return _parse_bare_cached(latex, mv_timeout)


# Samples of one problem mostly agree, and each gold answer is met once per sample: a cache
# of parsed answers saves the LaTeX parser most of its work. Long strings are not kept.
_CACHED_MAX_CHARS = 1000
_PLAIN_INTEGER = re.compile(r"-?\d{1,100}")


@lru_cache(maxsize=8192)
def _parse_bare_cached(latex: str, mv_timeout: int | None) -> tuple:
    return _parse_bare_uncached(latex, mv_timeout)


def _parse_bare_uncached(latex: str, mv_timeout: int | None) -> tuple:
    if _PLAIN_INTEGER.fullmatch(latex):
        # The commonest answer. math-verify reads it as exactly this pair (a test checks),
        # but its LaTeX parser takes ~0.6 ms to get there.
        from sympy import Integer

        return (Integer(int(latex)), latex)
    # A bare answer (`\frac{1}{2}`, `x=3`, `10^{5}`) is read as one LaTeX expression only
    # when delimited: parse("x=3") finds 3 and parse("10^{5}") finds 10, while "$x=3$" and
    # "$10^{5}$" parse whole. An answer already in `$...$` survives the extra pair.
    return tuple(
        _math_verify().parse(f"${latex}$", parsing_timeout=mv_timeout, raise_on_error=True)
    )


def _check_math(completion: str, problem: dict, mv_timeout: int | None) -> Verdict:
    mv = _math_verify()
    from math_verify.errors import TimeoutException

    extracted: str | None = None
    try:
        answer = problem["answer"]
        gold = _parse_bare(answer, mv_timeout)
        if not gold:
            return Verdict(
                False,
                None,
                f"error: ValueError: math-verify cannot parse the gold answer {answer!r}",
            )
        boxed = extract_boxed(completion)
        if boxed is not None:
            # The model committed to its last box: no fallback to other text.
            extracted = boxed
            pred = _parse_bare(boxed, mv_timeout)
        else:
            pred = mv.parse(
                completion, _pred_config(), parsing_timeout=mv_timeout, raise_on_error=True
            )
            # parse() appends the matched text as a string; str() of a sympy object could
            # itself hang, so it is not used.
            extracted = next((p for p in pred if isinstance(p, str)), None)
        if not pred:
            return Verdict(False, extracted, "no_answer")
    except TimeoutException:
        return Verdict(False, extracted, "timeout")
    except Exception as e:
        return Verdict(False, extracted, f"error: {type(e).__name__}: {e}")

    # Pair by pair, not verify(gold, pred), so that one comparison that raises (sympy does)
    # cannot hide a later pair that matches, and so an error is reported, not read as False.
    failure: str | None = None
    for g in gold:
        for p in pred:
            try:
                if mv.verify(g, p, timeout_seconds=mv_timeout, raise_on_error=True):
                    return Verdict(True, extracted, None)
            except TimeoutException:
                failure = "timeout"
            except Exception as e:
                failure = failure or f"error: {type(e).__name__}: {e}"
    return Verdict(False, extracted, failure)


# ---------------------------------------------------------------------------------------
# The registry of built-ins (regex:PATTERN and module:function are forms, not names)


def _same_normalised(a: str, b: str) -> bool:
    return _normalise(a) == _normalise(b)


def _same_math(a: str, b: str) -> bool | None:
    """Plain integers by value, an answer that cannot travel in a box is another answer; None:
    ask math-verify (SameAnswer does, in a CheckPool)."""
    if _PLAIN_INTEGER.fullmatch(a) and _PLAIN_INTEGER.fullmatch(b):
        return int(a) == int(b)
    if extract_boxed(f"\\boxed{{{b}}}") != b:  # unbalanced braces
        return False
    return None


@dataclass(frozen=True)
class BuiltIn:
    """A built-in verifier: its check, its words in --verifier's help, and maj@k's equality of two
    answers it extracted (SameAnswer): True or False, or None where the check itself must say."""
    check: Check
    help: str
    same: Callable[[str, str], "bool | None"]


BUILT_IN = {
    "math": BuiltIn(_check_math, "math-verify equivalence", _same_math),
    "exact": BuiltIn(_check_exact, "normalised string", _same_normalised),
}
USAGE = f"use {', '.join(BUILT_IN)}, regex:PATTERN or module:function"
HELP = (", ".join(f"{name} ({b.help})" for name, b in BUILT_IN.items())
        + ", regex:PATTERN (first group), or module:function (your fn(completion, problem_row) -> bool).")


# ---------------------------------------------------------------------------------------
# User verifiers


def _module_check(spec: str) -> Check:
    module_name, _, fn_name = spec.partition(":")
    fix = f"it must define `def {fn_name}(completion: str, problem: dict) -> bool`"
    cwd = os.getcwd()
    if cwd not in sys.path:
        # A checks file next to the data is the common case: make the cwd importable.
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise InputError(
                f"--verifier {spec}: no module named {module_name!r}; put "
                f"{module_name.replace('.', '/')}.py in the current directory ({cwd}) or "
                f"install it, and {fix}"
            ) from None
        raise InputError(
            f"--verifier {spec}: importing {module_name!r} failed: {type(e).__name__}: {e}; "
            f"install what it needs or fix the module"
        ) from None
    except Exception as e:
        raise InputError(
            f"--verifier {spec}: importing {module_name!r} failed: {type(e).__name__}: {e}; "
            f"fix the module"
        ) from None
    where = getattr(module, "__file__", None) or module_name
    if not hasattr(module, fn_name):
        raise InputError(f"--verifier {spec}: {where} has no attribute {fn_name!r}; {fix}")
    fn = getattr(module, fn_name)
    if not callable(fn):
        raise InputError(
            f"--verifier {spec}: {module_name}.{fn_name} is a {type(fn).__name__}, "
            f"not a function; {fix}"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None  # some builtins have none; a bad call then fails per check
    if signature is not None:
        try:
            signature.bind("", {})
        except TypeError:
            raise InputError(
                f"--verifier {spec}: {module_name}.{fn_name}{signature} cannot be called "
                f"with (completion, problem); {fix}"
            ) from None

    def check(completion: str, problem: dict, mv_timeout: int | None) -> Verdict:
        try:
            result = fn(completion, problem)
        except (Exception, SystemExit) as e:
            return _error(e, user_error=True)
        if isinstance(result, bool) or _is_numpy_bool(result):
            return Verdict(bool(result), None, None)
        return Verdict(
            False,
            None,
            f"error: TypeError: {spec} returned {type(result).__name__} "
            f"({_short_repr(result)}), expected bool",
            user_error=True,
        )

    return check


def _is_numpy_bool(x: object) -> bool:
    t = type(x)
    return t.__module__ == "numpy" and t.__name__ in ("bool_", "bool")


def _short_repr(x: object, limit: int = 80) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def check_one(spec: str, completion: str, problem: dict) -> Verdict:
    """Run one check in the current process, with no time bound.

    Never raises for built-in verifiers: an exception becomes reason `error: ...`. For
    module:function an exception gives Verdict(False, None, 'error: ...', user_error=True).
    Raises InputError for a bad spec.
    """
    check = _build(spec)
    try:
        # No math-verify timeout: its signal alarm only works in a main thread.
        return check(completion, problem, None)
    except Exception as e:
        return _error(e, user_error=_is_module(spec))


# ---------------------------------------------------------------------------------------
# The same answer: majority voting's equality


class SameAnswer:
    """Whether pairs of extracted answers are the same answer, by the verifier's own equality:
    `math`, math-verify's (`\\frac{1}{2}`, `0.5` and `1/2` are one answer; checked in a
    CheckPool, each comparison bounded by `timeout`, one that times out or raises is "not the
    same"); `exact` and `regex:`, equal once normalised as their checks compare (case, spaces,
    `$`, a final period); a `module:function` verifier, equal strings. Plain integers compare
    by value without math-verify.

        with SameAnswer("math", workers=2, timeout=5.0) as same:
            same([("\\frac{1}{2}", "0.5"), ("3", "4")])  # [True, False]
    """

    def __init__(self, spec: str, workers: int = 2, timeout: float = 5.0):
        self.spec = resolve(spec, load=False)  # (a user's function is never called here: equal strings only)
        self._workers, self._timeout = workers, timeout
        self._pool: CheckPool | None = None  # started on the first pair that needs math-verify

    def __enter__(self) -> "SameAnswer":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        out: list[bool | None] = [self._settled(a, b) for a, b in pairs]
        ask = [i for i, v in enumerate(out) if v is None]
        if ask:
            if self._pool is None:
                self._pool = CheckPool(self.spec, workers=self._workers, timeout=self._timeout).__enter__()
            # b checked against a as if a were the gold answer: verify(parse(a), parse(b)).
            verdicts = self._pool.map((f"\\boxed{{{pairs[i][1]}}}", {"answer": pairs[i][0]}) for i in ask)
            for i, v in zip(ask, verdicts):
                out[i] = v.correct
        return [bool(v) for v in out]

    def _settled(self, a: str, b: str) -> bool | None:
        """The answer without math-verify, or None where it must be asked."""
        if a == b:
            return True
        if self.spec.startswith("regex:"):
            return _same_normalised(a, b)
        if _is_module(self.spec):
            return False
        return BUILT_IN[self.spec].same(a, b)


# ---------------------------------------------------------------------------------------
# Worker processes

# Items per message to a worker: amortises the pipe round trip over cheap checks, while a
# hung check holds back at most this many others (they are resent to a fresh worker).
_BATCH_ITEMS = 16
# ...and a cap on characters per message, so that a few huge completions travel alone.
_BATCH_CHARS = 1 << 20
# A worker imports sympy and the parent's __main__ module; a stuck start is a bug, not a
# slow check.
_STARTUP_LIMIT_S = 120.0
# After a polite stop, how long to wait before SIGKILL.
_STOP_GRACE_S = 1.0


def _die_with_parent(parent: int) -> None:
    """End this worker when the process that started it ends, however it ends (`kill -9` of
    paced included: a check that hangs would otherwise spin forever, orphaned). On Linux the
    kernel sends SIGKILL (PR_SET_PDEATHSIG: it stops even a check stuck in C, a regex holding the
    GIL); everywhere, a thread sees the parent change within a second. Pools are made by the main
    thread, whose end is the process's, so the signal comes only when paced (pid `parent`) is gone."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    import threading

    threading.Thread(target=watch, name="paced-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # gone before the signal was asked for
        os._exit(1)


def _worker_main(conn: Connection, spec: str, mv_timeout: int | None, parent: int) -> None:
    # Ctrl-C reaches the whole process group; the parent decides, and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)
    try:
        check = _build(spec)
        if _normalise_spec(spec) == "math":
            # Warm up (sympy import, parser construction) before the first deadline runs.
            check("\\boxed{1}", {"answer": "1"}, mv_timeout)
    except BaseException as e:  # reported to the parent, which raises
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            batch = conn.recv()
        except EOFError:  # the parent is gone
            return
        if batch is None:
            return
        for idx, completion, problem in batch:
            try:
                verdict = check(completion, problem, mv_timeout)
            except Exception as e:  # the built-ins catch their own; this is a last guard
                verdict = _error(e, user_error=_is_module(spec))
            conn.send(("done", idx, verdict))


@dataclass
class _Worker:
    proc: Any  # a SpawnProcess
    conn: Connection
    ready: bool = False
    started: float = field(default_factory=time.monotonic)
    inflight: deque = field(default_factory=deque)  # (idx, completion, problem), in order
    deadline: float = 0.0  # for inflight[0]

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()


class CheckPool:
    """Runs checks in `workers` worker processes, each check bounded by `timeout` seconds of
    wall time. A worker past its deadline is killed (SIGKILL) and replaced; that check scores
    Verdict(False, None, 'timeout'). Results come back in input order.

        with CheckPool("math", workers=2, timeout=5.0) as pool:
            for verdict in pool.map((completion, problem) for ...):
                ...
    """

    def __init__(self, spec: str, workers: int = 2, timeout: float = 5.0):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.spec = resolve(spec, load=False)  # (a user's module: each worker imports it, within the startup limit)
        self.workers = workers
        self.timeout = float(timeout)
        self._whole_problem = _is_module(self.spec)
        # math-verify's alarms take whole seconds; at half the budget they usually fire
        # before the kill, and a check they stop costs no worker restart.
        self._mv_timeout = max(1, int(self.timeout / 2))
        # 'spawn': the parent may hold polars/torch threads, which fork would copy mid-lock.
        self._ctx = mp.get_context("spawn")
        self._pool: list[_Worker] = []
        self._open = False

    def __enter__(self) -> "CheckPool":
        self._open = True
        self._pool = [self._spawn() for _ in range(self.workers)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop all workers; never leaves a live child."""
        for w in self._pool:
            if w.ready and not w.inflight:
                try:
                    w.conn.send(None)
                except OSError:
                    pass  # already dead: joined below
        end = time.monotonic() + _STOP_GRACE_S
        for w in self._pool:
            if w.ready and not w.inflight:
                w.proc.join(max(0.0, end - time.monotonic()))
            w.kill()
        self._pool = []
        self._open = False

    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, self.spec, self._mv_timeout, os.getpid()),
            name="paced-verifier",
            daemon=True,
        )
        proc.start()
        child.close()  # so that the worker's death reads as EOF here
        return _Worker(proc, parent)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._pool[self._pool.index(w)] = self._spawn()

    def check(self, completions: Iterable[str], problems: Iterable[dict], problem_ids: Sequence[str],
              sample_indices: Sequence[int]) -> Iterator[Verdict]:
        """`map` over (completion, problem) pairs for the stages: stops at the first response a
        user's verifier raised on (or answered with a non-bool), as the exit-2 `user_error`
        naming its problem_id and sample_index."""
        for i, v in enumerate(self.map(zip(completions, problems))):
            if v.user_error:
                raise user_error(self.spec, problem_ids[i], sample_indices[i], v)
            yield v

    def map(self, items: Iterable[tuple[str, dict]]) -> Iterator[Verdict]:
        """Check (completion, problem) pairs; stream verdicts in input order."""
        if not self._open:
            raise RuntimeError("CheckPool.map needs the pool open: use `with CheckPool(...)`")
        while len(self._pool) < self.workers:  # an abandoned map dropped busy workers
            self._pool.append(self._spawn())
        source = iter(items)
        resend: deque = deque()  # items a killed worker held, sent again first
        results: dict[int, Verdict] = {}
        taken = 0  # items read from `source`
        emitted = 0
        exhausted = False

        def next_batch() -> list:
            nonlocal taken, exhausted
            batch: list = []
            chars = 0
            while len(batch) < _BATCH_ITEMS and chars < _BATCH_CHARS:
                if resend:
                    item = resend.popleft()
                elif not exhausted:
                    try:
                        completion, problem = next(source)
                    except StopIteration:
                        exhausted = True
                        continue
                    if not self._whole_problem:
                        problem = {"answer": problem["answer"]}
                    item = (taken, completion, problem)
                    taken += 1
                else:
                    break
                batch.append(item)
                chars += len(item[1]) if isinstance(item[1], str) else 0
            return batch

        def lost(w: _Worker, verdict: Verdict) -> None:
            # The first in-flight item is the one the worker was on; the rest never ran.
            if w.inflight:
                results[w.inflight.popleft()[0]] = verdict
                resend.extendleft(reversed(w.inflight))
                w.inflight.clear()
            self._replace(w)

        finished = False
        try:
            while True:
                for w in self._pool:
                    if w.ready and not w.inflight:
                        batch = next_batch()
                        if not batch:
                            break
                        w.inflight.extend(batch)
                        w.deadline = time.monotonic() + self.timeout
                        try:
                            w.conn.send(batch)
                        except OSError:
                            pass  # it died: its EOF is read below
                while emitted in results:
                    yield results.pop(emitted)
                    emitted += 1
                if exhausted and not resend and emitted == taken:
                    finished = True
                    return
                self._wait(results, lost)
        finally:
            if not finished:
                # Abandoned mid-stream (a break, Ctrl-C): busy workers would answer into
                # the next map. Stop them now; a next map starts replacements.
                for w in [w for w in self._pool if w.inflight]:
                    w.kill()
                    self._pool.remove(w)

    def _wait(self, results: dict[int, Verdict], lost: Callable[[_Worker, Verdict], None]) -> None:
        """Block until a worker answers, dies or passes its deadline; handle that."""
        now = time.monotonic()
        deadlines = [
            w.deadline if w.ready else w.started + _STARTUP_LIMIT_S
            for w in self._pool
            if w.inflight or not w.ready
        ]
        if not deadlines:
            return
        by_conn = {w.conn: w for w in self._pool}
        wait(list(by_conn), timeout=max(0.0, min(deadlines) - now))
        for w in list(self._pool):
            try:
                while w.conn.poll():
                    self._receive(w, w.conn.recv(), results)
            except (EOFError, OSError):
                w.proc.join(0.5)
                code = w.proc.exitcode
                if not w.ready:
                    w.kill()
                    raise RuntimeError(
                        f"a verifier worker for --verifier {self.spec} exited while starting "
                        f"(exit code {code}); its own error, if any, is printed above"
                    ) from None
                lost(
                    w,
                    Verdict(
                        False,
                        None,
                        f"error: WorkerDied: the verifier process exited with code {code}",
                        user_error=self._whole_problem,
                    ),
                )
                continue
            now = time.monotonic()
            if not w.ready and now > w.started + _STARTUP_LIMIT_S:
                w.kill()
                raise RuntimeError(
                    f"a verifier worker for --verifier {self.spec} did not start within "
                    f"{_STARTUP_LIMIT_S:.0f} s"
                )
            if w.ready and w.inflight and now > w.deadline:
                lost(w, Verdict(False, None, "timeout"))

    def _receive(self, w: _Worker, msg: tuple, results: dict[int, Verdict]) -> None:
        kind = msg[0]
        if kind == "ready":
            w.ready = True
        elif kind == "done":
            idx, verdict = msg[1], msg[2]
            head = w.inflight.popleft()
            assert head[0] == idx, (head[0], idx)
            results[idx] = verdict
            # The next item started when this one ended (at the latest: now).
            w.deadline = time.monotonic() + self.timeout
        elif kind == "failed":
            w.kill()
            raise InputError(
                f"--verifier {self.spec}: a worker process could not load it: {msg[1]}"
            )
        else:
            raise AssertionError(f"unknown worker message {kind!r}")
