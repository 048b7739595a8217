"""How many CPU threads torch gets, chosen from the cores that are free when a command starts.

Two things make a shared machine slow, and both are fixed here:

- **Spin-waiting.** torch's OpenMP threads (libgomp) spin up to 300,000 times while they wait
  for each other before they sleep. When another process holds one of the cores, a spinning
  thread waits for a partner that the scheduler has descheduled: on 2 cores beside one busy
  process, a training step of the quickstart teacher's size at 2 threads kept 0.28x of its
  quiet rate (bench section 9). Not spinning at all (OMP_WAIT_POLICY=PASSIVE) avoids that but
  costs every short parallel region a sleep and a wake-up: on the quiet machine it ran 0.66x
  as fast. So paced bounds the spin instead, `GOMP_SPINCOUNT=1000`: 0.96x of the default's
  quiet speed, and 0.47x of its quiet rate beside a busy process at 2 threads. OpenMP reads it
  once, when torch loads it, so `paced_cli` sets it before any import of torch unless the
  environment sets OMP_WAIT_POLICY or GOMP_SPINCOUNT itself; `bounded_wait()` is that step.
- **Oversubscription.** torch starts one thread per core whether or not the core is free.
  `choose()` counts the cores this process may use (its CPU affinity, and a cgroup CPU quota
  when the container has one), measures how many of them are idle over a short window (from
  /proc/stat), and takes that many threads, at least one; a process of a multi-process launch
  takes its share. `--threads N` (or OMP_NUM_THREADS) chooses instead.

The choice is logged by `configure()`, so a slow run says why.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

# Long enough to see a busy process (the kernel's tick is 1-10 ms), short next to any stage.
IDLE_WINDOW_S = 0.2
HELP = ("CPU threads for torch. Default: the idle cores of those this process may use (affinity, "
        "cgroup quota), measured when the command starts; OMP_NUM_THREADS also chooses.")


@dataclass(frozen=True)
class Choice:
    threads: int
    reason: str


SPIN_COUNT = "1000"


_set_here = False  # whether bounded_wait set GOMP_SPINCOUNT (not the user)


def bounded_wait() -> None:
    """Make OpenMP threads spin only briefly before they sleep: before torch is imported, and
    only where the user chose no waiting of their own."""
    global _set_here
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
        _set_here = True


def default_wait_for_children() -> None:
    """Let processes started from now on (vLLM's engine and workers, which bind their threads to
    cores of their own) wait as OpenMP does by default: bounded spinning slowed a vLLM engine's
    start-up by about 10 s here. This process keeps what it loaded with."""
    if _set_here:
        os.environ.pop("GOMP_SPINCOUNT", None)


def usable_cores() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def cgroup_quota() -> float | None:
    """CPUs a cgroup v2 (or v1) CPU quota allows, when one is set."""
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
        period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _cpu_times(cores: list[int]) -> dict[int, tuple[int, int]]:
    """(idle, total) jiffies of each core, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu" and int(name[3:]) in cores:
                values = [int(v) for v in fields[:8]]
                out[int(name[3:])] = (values[3] + values[4], sum(values))  # idle + iowait
    return out


def idle_cores(cores: list[int], window: float = IDLE_WINDOW_S) -> float | None:
    """How many of `cores` were idle over `window` seconds (None where /proc/stat is missing)."""
    try:
        before = _cpu_times(cores)
        time.sleep(window)
        after = _cpu_times(cores)
    except (OSError, ValueError):
        return None
    idle = 0.0
    for c, (i1, t1) in after.items():
        i0, t0 = before.get(c, (i1, t1))
        idle += (i1 - i0) / (t1 - t0) if t1 > t0 else 1.0
    return idle


def choose(given: int | None = None, env: dict[str, str] | None = None) -> Choice:
    """The number of torch threads and why: --threads, else OMP_NUM_THREADS, else the idle
    share of the usable cores (at least 1), divided among the processes of one launch."""
    env = os.environ if env is None else env
    if given is not None:
        cores = len(usable_cores())
        most = max(64, 4 * cores)
        if given > most:  # torch gains nothing past the cores; 100,000 crashed the process (no threads left to spawn)
            from schemas import InputError

            raise InputError(f"--threads {given}: at most {most} ({cores} usable cores here); "
                             f"leave it out to use the idle ones")
        return Choice(given, "--threads")
    if env.get("OMP_NUM_THREADS", "").strip().isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return Choice(int(env["OMP_NUM_THREADS"]), "OMP_NUM_THREADS")
    cores = usable_cores()
    limit = float(len(cores))
    quota = cgroup_quota()
    if quota is not None:
        limit = min(limit, quota)
    idle = idle_cores(cores)
    free = limit if idle is None else min(limit, idle)
    local = int(env.get("LOCAL_WORLD_SIZE", "1") or 1)
    threads = max(1, math.floor(free / local + 0.3))  # 0.7 of an idle core counts as one
    parts = [f"{len(cores)} usable cores"]
    if quota is not None:
        parts.append(f"a cgroup quota of {quota:g}")
    if idle is not None:
        parts.append(f"{idle:.1f} idle")
    if local > 1:
        parts.append(f"{local} processes")
    return Choice(threads, ", ".join(parts))


_measured: Choice | None = None  # one measurement per process (a process may run several commands)
_current: Choice | None = None  # what torch has now


def current() -> int | None:
    """The threads torch was given (`configure`), None before."""
    return None if _current is None else _current.threads


def resume_with(began: int | None) -> None:
    """A resumed job goes on with the threads it began with: torch splits its sums by thread,
    so another count changes the low bits of every float (teacher log-probs, a sampled token at
    a near tie) and the resumed artifact would differ from an uninterrupted run's. The user's
    own choice (--threads, OMP_NUM_THREADS) stands."""
    global _current
    if began is None or _current is None or _current.threads == began or _current.reason in ("--threads", "OMP_NUM_THREADS"):
        return
    import torch
    from stages.common import console

    torch.set_num_threads(int(began))
    console.print(f"threads: {began} (as the job began; {_current.threads} measured now)", style="dim", soft_wrap=True)
    _current = Choice(int(began), "as the job began")


def configure(given: int | None = None) -> Choice:
    """Choose the threads, give them to torch and log the choice."""
    global _measured, _current
    from stages.common import console

    if given is None and _measured is not None:
        choice = _measured
    else:
        choice = choose(given)
        if given is None:
            _measured = choice
    import torch

    torch.set_num_threads(choice.threads)
    _current = choice
    waiting = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ)
    console.print(f"threads: {choice.threads} ({choice.reason}; {waiting or 'OpenMP default waiting'})", style="dim", soft_wrap=True)
    return choice
