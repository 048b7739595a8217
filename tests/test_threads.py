"""stages.threads: OpenMP threads sleep while they wait, and torch takes the idle cores."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stages import threads
from tests.conftest import ROOT, paced

linux = pytest.mark.skipif(not os.path.exists("/proc/stat") or not hasattr(os, "sched_setaffinity"),
                           reason="needs Linux's /proc/stat and CPU affinity")


def test_bounded_spinning_is_set_before_torch_loads():
    code = ("import os, sys\nfrom stages import threads\nassert 'torch' not in sys.modules\n"
            "import paced_cli\nprint(os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == threads.SPIN_COUNT
    # Waiting the user chose is theirs.
    for mine in ({"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "5"}):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env | mine, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == mine.get("GOMP_SPINCOUNT", "None")


def test_the_choice_order_given_then_environment_then_idle_cores():
    assert threads.choose(3, {"OMP_NUM_THREADS": "2"}) == threads.Choice(3, "--threads")
    assert threads.choose(None, {"OMP_NUM_THREADS": "2"}) == threads.Choice(2, "OMP_NUM_THREADS")
    measured = threads.choose(None, {})
    assert 1 <= measured.threads <= len(threads.usable_cores()) and "usable cores" in measured.reason
    shared = threads.choose(None, {"LOCAL_WORLD_SIZE": str(4 * len(threads.usable_cores()))})
    assert shared.threads == 1 and "processes" in shared.reason  # never below one


@linux
def test_a_busy_core_is_not_counted_idle():
    core = threads.usable_cores()[0]
    busy = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"])
    try:
        import time

        time.sleep(0.3)  # let it start spinning
        assert threads.idle_cores([core], window=0.5) < 0.5
    finally:
        busy.kill()
        busy.wait()


def test_commands_log_their_threads_and_refuse_zero(tmp_path, problems_file, student_dir):
    args = ["rollout", "--problems", problems_file, "--model", student_dir, "--samples", "1", "--max-new-tokens", "2"]
    r = paced(*args, "--out", tmp_path / "a", "--threads", "1")
    assert r.exit_code == 0, r.stderr
    assert "threads: 1 (--threads; " in r.stderr
    r = paced(*args, "--out", tmp_path / "b", "--threads", "0")
    assert r.exit_code == 2 and "--threads" in r.stderr
    # Stages without torch have no such option.
    r = paced("weight", "--help")
    assert "--threads" not in r.stdout
