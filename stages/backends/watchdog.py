"""Ends a command's engine processes when the command dies without stopping them (`kill -9`).

vLLM runs its engine and workers in processes of their own. When `paced` ends normally, or on
Ctrl-C or SIGTERM, it stops them; a SIGKILL gives it no chance, and they live on, orphaned,
holding several GB of memory each. So before the engine starts, the vLLM backend starts this
watchdog as a separate process (`start()`), in a session of its own so a terminal's Ctrl-C
does not reach it. Every half second it records the processes descended from the command
(with their start times, so a reused process id is never touched); when the command is gone,
it kills the recorded processes still alive, and their descendants, then exits.

It runs as a plain script (`python watchdog.py PID`): it imports nothing of paced and nothing
heavy, and costs about 10 MB and a /proc scan every half second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5
_started: dict[int, subprocess.Popen] = {}


def start() -> None:
    """Watch this process (once per process)."""
    me = os.getpid()
    if me in _started or not os.path.isdir("/proc"):
        return
    _started[me] = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), str(me)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":  # a zombie: dead already
        return None
    return int(fields[1]), int(fields[19])


def _table() -> dict[int, tuple[int, int]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                out[int(name)] = st
    return out


def descendants(root: int, table: dict[int, tuple[int, int]]) -> dict[int, int]:
    """{pid: start time} of every process below `root`."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out[child] = table[child][1]
                todo.append(child)
    return out


def watch(parent: int) -> None:
    me = os.getpid()
    start_time = (_stat(parent) or (0, -1))[1]
    seen: dict[int, int] = {}
    while True:
        st = _stat(parent)
        if st is None or st[1] != start_time:
            break
        table = _table()
        seen.update({pid: t for pid, t in descendants(parent, table).items() if pid != me})
        time.sleep(POLL_S)
    # The command is gone: end what it left, and whatever those started since the last look.
    table = _table()
    doomed = {pid: t for pid, t in seen.items() if table.get(pid, (0, None))[1] == t}
    for pid in list(doomed):
        doomed.update(descendants(pid, table))
    for pid in doomed:
        if pid != me:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    watch(int(sys.argv[1]))
