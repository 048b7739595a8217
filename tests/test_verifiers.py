"""Verifiers: extraction, the four verifier kinds, and the time-bounded worker pool."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import sys
import textwrap
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import InputError
from stages.verifiers import CheckPool, Verdict, check_one, extract_boxed, resolve
from tests.conftest import ROOT


def problem(answer: str, **extra: object) -> dict:
    return {"problem_id": "p1", "prompt": "What?", "answer": answer, "reference": "", **extra}


# ---------------------------------------------------------------------------------------
# extract_boxed


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{5}.", "5"),
        (r"\boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed {x}", "x"),
        (r"\fbox{7}", "7"),
        (r"\boxed{a} \fbox{b}", "b"),
        (r"\boxed{\boxed{5}}", "5"),
        (r"\boxed{}", ""),
        (r"\boxed{a{b}c", None),  # never closed
        (r"\boxed{1} \boxed{a{b}", "1"),  # the last one is unbalanced: the one before it
        ("}{\\boxed{x}}{", "x"),
        ("no box here", None),
        ("", None),
        (r"\boxed 5", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def _boxed_reference(text: str) -> str | None:
    """Quadratic but obvious: every box start, matched forwards; the last balanced one."""
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth = 0
        for i in range(m.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                best = text[m.end() : i]
                break
    return best


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["{", "}", "\\boxed", "\\fbox", "a", " ", "\\"]), max_size=40))
def test_extract_boxed_matches_reference(parts):
    text = "".join(parts)
    assert extract_boxed(text) == _boxed_reference(text)


def test_extract_boxed_is_linear_on_adversarial_input():
    cases = [
        "\\boxed{" * 10_000 + "1" + "}" * 10_000,
        "\\boxed{" + "{" * 100_000 + "x",
        "\\boxed{" * 700_000,  # 5 MB, nothing closes
        "\\boxed{" + "{}" * 2_500_000,  # 5 MB of balanced braces, the box never closes
        "a" * 5_000_000 + "\\boxed{5}",
    ]
    expected = ["1", None, None, None, "5"]
    for text, want in zip(cases, expected):
        start = time.perf_counter()
        assert extract_boxed(text) == want
        assert time.perf_counter() - start < 3.0


# ---------------------------------------------------------------------------------------
# math


@pytest.mark.parametrize(
    "completion, answer, correct",
    [
        (r"So the answer is \boxed{0.5}.", r"\frac{1}{2}", True),
        (r"\boxed{\frac{2}{4}}", r"\frac{1}{2}", True),
        (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", True),
        (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", False),
        (r"\boxed{42}", "42", True),
        (r"\boxed{42}", "$42$", True),
        (r"\boxed{x^2}", "$x^2$", True),
        (r"\boxed{43}", "42", False),
        (r"First \boxed{3}, no wait, \boxed{5}", "5", True),
        (r"First \boxed{5}, no wait, \boxed{3}", "5", False),
        (r"\boxed{x = 3}", "3", True),  # math-verify reads an assignment's right side
        (r"\boxed{10^{5}}", "100000", True),
        (r"\boxed{(1,2)}", "(1,2)", True),
        (r"\boxed{\text{(B)}}", "B", True),
    ],
)
def test_math_boxed(completion, answer, correct):
    v = check_one("math", completion, problem(answer))
    assert v == Verdict(correct, v.extracted, None)
    assert v.extracted is not None


def test_math_last_box_is_the_extracted_answer():
    v = check_one("math", r"\boxed{1} and finally \boxed{\frac{2}{4}}", problem("0.5"))
    assert v == Verdict(True, r"\frac{2}{4}", None)


@pytest.mark.parametrize(
    "completion",
    ["The answer is 7", "The answer is 7.", "Adding up, x = 7", "Final answer: $7$"],
)
def test_math_without_box_uses_math_verify_extraction(completion):
    # Observed math-verify 0.9 behaviour: the last number/expression after an anchor, or the
    # last one at all, is the answer.
    v = check_one("math", completion, problem("7"))
    assert v == Verdict(True, "7", None)


@pytest.mark.parametrize("completion", ["", "   \n", "I do not know."])
def test_math_no_answer(completion):
    assert check_one("math", completion, problem("7")) == Verdict(False, None, "no_answer")


def test_math_empty_box_is_no_answer():
    assert check_one("math", r"\boxed{}", problem("7")) == Verdict(False, "", "no_answer")


def test_math_unparseable_gold_is_an_error_not_a_wrong_answer():
    v = check_one("math", r"\boxed{1}", problem(""))
    assert not v.correct and v.reason is not None and v.reason.startswith("error: ")
    assert "gold answer" in v.reason and not v.user_error


@pytest.mark.parametrize("s", ["0", "7", "-7", "42", "007", "123456789012345678901234567890"])
def test_integer_fast_path_agrees_with_math_verify(s):
    from math_verify import parse

    from stages.verifiers import _parse_bare_uncached

    assert list(_parse_bare_uncached(s, None)) == parse(f"${s}$")


# ---------------------------------------------------------------------------------------
# exact


@pytest.mark.parametrize(
    "completion, answer, extracted, correct",
    [
        (r"so \boxed{Paris}", "paris", "Paris", True),
        (r"so \boxed{ New   York }", "new york", "New   York", True),
        (r"\boxed{\text{a}{b}}", r"\text{a}{b}", r"\text{a}{b}", True),
        ("Reasoning...\nThe answer is $42$.", "42", "$42$.", True),
        ("Answer: 12\nThanks for asking", "12", "12", True),
        ("the answer is:\n\n  blue  \nmore", "Blue", "blue", True),
        ("line one\nline two: 9.\n\n", "line two: 9", "line two: 9.", True),
        (r"\boxed{0.5}", r"\frac{1}{2}", "0.5", False),  # strings, not values
    ],
)
def test_exact(completion, answer, extracted, correct):
    assert check_one("exact", completion, problem(answer)) == Verdict(correct, extracted, None)


@pytest.mark.parametrize("completion", ["", " \n\t "])
def test_exact_no_answer(completion):
    assert check_one("exact", completion, problem("x")) == Verdict(False, None, "no_answer")


# ---------------------------------------------------------------------------------------
# regex


def test_regex_takes_first_group_of_last_match():
    spec = r"regex:ANSWER=(\w+);"
    v = check_one(spec, "ANSWER=no; ... ANSWER=Yes ;ANSWER=yes;", problem("YES"))
    assert v == Verdict(True, "yes", None)


def test_regex_without_group_takes_whole_match():
    v = check_one(r"regex:\d+", "between 3 and 15", problem("15"))
    assert v == Verdict(True, "15", None)
    assert check_one(r"regex:\d+", "between 3 and 16", problem("15")) == Verdict(False, "16", None)


def test_regex_no_match_is_no_answer():
    assert check_one(r"regex:#### (\d+)", "nothing", problem("1")) == Verdict(
        False, None, "no_answer"
    )


def test_regex_invalid_pattern():
    with pytest.raises(InputError, match=r"--verifier regex:\(ab.*missing \)"):
        resolve("regex:(ab")
    with pytest.raises(InputError, match="--verifier"):
        check_one("regex:[", "x", problem("x"))


def test_regex_empty_pattern():
    with pytest.raises(InputError, match="empty"):
        resolve("regex:")


# ---------------------------------------------------------------------------------------
# module:function


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module into a fresh cwd; return a function that names it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # undo resolve's insertion of the cwd
    name = f"user_checks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import os, time
            import numpy as np

            def is_right(completion, problem):
                return completion.strip() == problem["answer"]

            def uses_extra(completion, problem):
                return problem["difficulty"] == "hard" and problem["problem_id"] == "p1"

            def numpy_bool(completion, problem):
                return np.bool_(True)

            def raises(completion, problem):
                raise ValueError("bad row")

            def returns_int(completion, problem):
                return 1

            def one_arg(completion):
                return True

            NOT_A_FUNCTION = 3

            def behave(completion, problem):
                if completion == "hang":
                    time.sleep(100)
                if completion == "die":
                    os._exit(3)
                return completion == problem["answer"]
            """
        )
    )
    yield lambda fn: f"{name}:{fn}"
    sys.modules.pop(name, None)


def test_module_function_true_and_false(user_module):
    spec = user_module("is_right")
    assert resolve(spec) == spec
    assert check_one(spec, " 4 ", problem("4")) == Verdict(True, None, None)
    assert check_one(spec, "5", problem("4")) == Verdict(False, None, None)


def test_module_function_sees_the_whole_row(user_module):
    spec = user_module("uses_extra")
    assert check_one(spec, "", problem("4", difficulty="hard")) == Verdict(True, None, None)


def test_module_function_numpy_bool_is_accepted(user_module):
    assert check_one(user_module("numpy_bool"), "", problem("4")) == Verdict(True, None, None)


def test_module_function_raising_is_a_user_error(user_module):
    v = check_one(user_module("raises"), "x", problem("4"))
    assert v == Verdict(False, None, "error: ValueError: bad row", user_error=True)


def test_module_function_returning_non_bool_is_a_user_error(user_module):
    v = check_one(user_module("returns_int"), "x", problem("4"))
    assert not v.correct and v.user_error
    assert v.reason is not None and "returned int" in v.reason and "expected bool" in v.reason


@pytest.mark.parametrize(
    "fn, message",
    [
        ("missing", "has no attribute 'missing'"),
        ("NOT_A_FUNCTION", "is a int, not a function"),
        ("one_arg", "cannot be called with"),
    ],
)
def test_module_function_bad_attribute(user_module, fn, message):
    spec = user_module(fn)
    with pytest.raises(InputError, match=re.escape(f"--verifier {spec}: ")) as e:
        resolve(spec)
    assert message in str(e.value) and "(completion: str, problem: dict) -> bool" in str(e.value)


def test_module_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(InputError) as e:
        resolve("no_such_checks_module:is_right")
    msg = str(e.value)
    assert msg.startswith("--verifier no_such_checks_module:is_right: ")
    assert "no module named 'no_such_checks_module'" in msg
    assert "no_such_checks_module.py in the current directory" in msg


def test_module_failing_import_is_reported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import not_installed_dependency_xyz\n")
    with pytest.raises(InputError, match="importing .* failed: ModuleNotFoundError"):
        resolve(f"{name}:f")


@pytest.mark.parametrize("body, message", [
    ("while True:\n    pass\n", "did not finish within 3 s (a loop or a download at import time?)"),
    ("import os\nos._exit(3)\n", "ended its process (exit code 3)"),
    ("raise SystemExit('no')\n", "importing it failed: SystemExit: no"),
])
def test_a_module_whose_import_hangs_or_exits_is_refused_in_bounded_time(tmp_path, monkeypatch, body, message):
    """Importing a user's module runs its code: a loop at import time hung `paced score` with no
    output (it was imported in paced's own process, with no bound). It is imported in a child,
    within the time a check worker has to start."""
    import stages.verifiers as verifiers

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(verifiers, "_STARTUP_LIMIT_S", 3.0)
    name = f"import_time_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(body + "def f(completion, problem):\n    return True\n")
    with pytest.raises(InputError, match=re.escape(f"--verifier {name}:f: ")) as e:
        resolve(f"{name}:f")
    assert message in str(e.value)
    assert name not in sys.modules  # never imported here


def test_a_regex_spec_is_not_a_users_function():
    from stages.verifiers import extracts_answers

    # (a pattern shaped like a function name was taken for one: regex:answer is module `regex`)
    assert extracts_answers("regex:answer") and extracts_answers("regex:(\\d+)") and extracts_answers(" Math ")
    assert not extracts_answers("checks:is_right") and not extracts_answers(" checks:is_right ")


# ---------------------------------------------------------------------------------------
# specs


@pytest.mark.parametrize("spec", ["", "sympy", "regex", "math:", ":f", "a b:c", "http://x"])
def test_unknown_spec(spec):
    with pytest.raises(InputError) as e:
        resolve(spec)
    assert str(e.value) == (
        f"--verifier {spec}: unknown verifier; use math, exact, regex:PATTERN or module:function"
    )


def test_resolve_normalises():
    assert resolve(" Math ") == "math"
    assert resolve("EXACT") == "exact"
    assert resolve("regex: (a) ") == "regex: (a) "


# ---------------------------------------------------------------------------------------
# CheckPool


def test_pool_preserves_order_and_agrees_with_check_one():
    items = []
    for i in range(200):
        answer = rf"\frac{{{i}}}{{7}}" if i % 3 else str(i)
        guess = rf"\frac{{{2 * i}}}{{14}}" if i % 2 else str(i + 1)
        items.append((rf"Work... \boxed{{{guess}}}", problem(answer)))
    with CheckPool("math", workers=2, timeout=5.0) as pool:
        got = list(pool.map(items))
    assert got == [check_one("math", c, p) for c, p in items]
    assert any(v.correct for v in got) and not all(v.correct for v in got)
    assert mp.active_children() == []


def test_pool_kills_a_hung_check_and_goes_on(user_module):
    items = [("a", problem("a")), ("hang", problem("a")), ("b", problem("a"))]
    items += [(str(i % 3), problem("1")) for i in range(30)]
    items += [("hang", problem("a")), ("a", problem("a"))]
    timeout = 1.0
    start = time.perf_counter()
    with CheckPool(user_module("behave"), workers=2, timeout=timeout) as pool:
        got = list(pool.map(items))
        assert mp.active_children()  # replaced, not shrunk
    elapsed = time.perf_counter() - start
    assert got[1] == got[-2] == Verdict(False, None, "timeout")
    assert got[0] == got[-1] == Verdict(True, None, None)
    assert got[2] == Verdict(False, None, None)
    assert [v.correct for v in got[3:-2]] == [i % 3 == 1 for i in range(30)]
    # Two hangs, each bounded by the timeout, plus starting replacements.
    assert elapsed < 2 * timeout + 6.0
    assert mp.active_children() == []


def test_pool_reports_a_dead_worker_and_goes_on(user_module):
    items = [("a", problem("a")), ("die", problem("a")), ("a", problem("a"))]
    with CheckPool(user_module("behave"), workers=1, timeout=5.0) as pool:
        got = list(pool.map(items))
    assert got[0] == got[2] == Verdict(True, None, None)
    assert not got[1].correct and got[1].user_error
    assert got[1].reason == "error: WorkerDied: the verifier process exited with code 3"
    assert mp.active_children() == []


@pytest.mark.parametrize("spec", ["spin", r"regex:^((a+)+)$"])
def test_pool_workers_end_with_a_killed_parent(tmp_path, spec):
    """`kill -9` of paced mid-check left the busy worker orphaned, spinning for ever (a hung
    user check; a regex stuck in C, where only a signal gets through). It ends with its parent."""
    import signal
    import subprocess

    (tmp_path / "spinning.py").write_text("def spin(completion, problem):\n    while True:\n        pass\n")
    spec = "spinning:spin" if spec == "spin" else spec
    driver = (
        "import sys\n"
        f"sys.path[:0] = [{str(ROOT)!r}, {str(tmp_path)!r}]\n"
        "from stages.verifiers import CheckPool\n"
        f"with CheckPool({spec!r}, workers=1, timeout=600) as pool:\n"
        "    print(pool._pool[0].proc.pid, flush=True)\n"
        "    list(pool.map([('a' * 40 + 'b', {'answer': 'x'})]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    worker = int(proc.stdout.readline())
    time.sleep(1.5)  # the check has begun
    os.kill(worker, 0)  # alive, checking
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        try:  # reaped by init, or a zombie of ours: gone either way
            if open(f"/proc/{worker}/stat").read().split(")")[-1].split()[0] == "Z":
                break
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail(f"the worker {worker} outlived its killed parent")


def test_pool_bounds_a_regex_stuck_in_c():
    # Catastrophic backtracking runs inside `re`, where no signal gets through: only the
    # kill stops it.
    items = [("a" * 40 + "b", problem("x")), ("aaa", problem("aaa"))]
    start = time.perf_counter()
    with CheckPool(r"regex:^((a+)+)$", workers=1, timeout=1.0) as pool:
        got = list(pool.map(items))
    assert got == [Verdict(False, None, "timeout"), Verdict(True, "aaa", None)]
    assert time.perf_counter() - start < 1.0 + 5.0
    assert mp.active_children() == []


ADVERSARIAL = {
    "empty": "",
    "5 MB of words": "word " * 1_000_000,
    "5 MB answer at the end": "a" * 5_000_000 + r" \boxed{7}",
    "10k nested boxes": "\\boxed{" * 10_000 + "7" + "}" * 10_000,
    "100k open braces": "\\boxed{" + "{" * 100_000,
    "unbalanced": r"\boxed{\frac{1}{2" + "}" * 3 + "{" * 50,
    "junk": "\udcff\x00\ufffd\x1b[31m" + bytes(range(256)).decode("latin-1") + "\\boxed{\x00}",
    "sympy power tower": r"\boxed{9^{9^{9^{9^{9}}}}}",
    "sympy factorial": r"\boxed{(10^{10})!}",
    "sympy simplify": r"\boxed{\sin(x)^{300}+\cos(x)^{300}}",
    "deep fraction": "The answer is $" + "\\frac{1}{" * 3000 + "$",
}


def test_pool_survives_adversarial_completions():
    timeout = 2.0
    items = [(c, problem("7")) for c in ADVERSARIAL.values()] + [(r"\boxed{7}", problem("7"))]
    start = time.perf_counter()
    with CheckPool("math", workers=2, timeout=timeout) as pool:
        got = dict(zip([*ADVERSARIAL, "after"], pool.map(items)))
    elapsed = time.perf_counter() - start
    for name, v in got.items():
        assert isinstance(v, Verdict), name
        assert v.correct or v.reason is not None or v.extracted is not None, name
        assert not v.user_error, name
    assert got["empty"] == Verdict(False, None, "no_answer")
    assert got["5 MB answer at the end"] == Verdict(True, "7", None)
    assert got["10k nested boxes"] == Verdict(True, "7", None)
    assert got["sympy power tower"].reason == "timeout"
    assert got["after"] == Verdict(True, "7", None)
    # Each check is bounded by the timeout; with two workers half of them run in parallel.
    assert elapsed < len(items) * timeout / 2 + 8.0
    assert mp.active_children() == []


def test_pool_abandoned_midway_leaves_no_children_and_stays_usable():
    items = [(rf"\boxed{{{i}}}", problem(str(i))) for i in range(100)]
    with CheckPool("math", workers=2, timeout=5.0) as pool:
        for i, v in enumerate(pool.map(items)):
            if i == 5:
                break
        again = list(pool.map(items[:20]))
    assert all(v.correct for v in again) and len(again) == 20
    assert mp.active_children() == []


def test_pool_on_empty_input():
    with CheckPool("exact", workers=2, timeout=1.0) as pool:
        assert list(pool.map([])) == []
    assert mp.active_children() == []


def test_pool_needs_a_with_block():
    with pytest.raises(RuntimeError, match="with CheckPool"):
        list(CheckPool("exact").map([("a", problem("a"))]))


def test_pool_validates_its_spec_in_the_parent():
    with pytest.raises(InputError, match="unknown verifier"):
        CheckPool("nope")


def test_every_built_in_verifier_is_named_wherever_the_verifiers_are_listed():
    """A built-in is one entry of the registry BUILT_IN (its check, help and maj@k equality), from
    which USAGE, the --verifier help and the dispatch are built; score's docstring and the README's
    table are written by hand: a built-in missing from them fails here, not in a user's run."""
    import dataclasses

    from stages import score, verifiers

    readme = (ROOT / "README.md").read_text()
    help_ = next(f.metadata["help"] for f in dataclasses.fields(score.ScoreConfig) if f.name == "verifier")
    for name in verifiers.BUILT_IN:
        assert f"{name}," in verifiers.USAGE or f"{name} " in verifiers.USAGE, name
        assert help_.count(name) >= 1 and f"`{name}`" in score.__doc__, name
        assert f"| `{name}`" in readme, name
        with verifiers.SameAnswer(name) as same:
            assert same([("7", "7.")]) in ([True], [False])  # answered, not an AssertionError
