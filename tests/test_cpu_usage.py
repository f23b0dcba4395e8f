"""The CPU accounting bench_end_to_end prints: a child's CPU seconds are counted under its role, even after
it exited, and what ran before the start is not."""
from __future__ import annotations

import subprocess
import sys
import time

from tests.benchmarks.cpu_usage import CpuUsage

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def burn(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BURN.format(seconds=seconds)])


def test_children_are_counted_by_role_and_after_they_exit():
    already = burn(3.0)   # running, and busy, before the count starts: only what it uses afterwards counts
    time.sleep(1.0)
    with CpuUsage("this process") as usage:
        child = burn(1.5)
        child.wait()      # exits (and is reaped) well before the count stops
        already.wait()
        time.sleep(1.0)
    other = usage.by_role()["other"]
    # 1.5 s of the new child (less at most one sampling interval lost at its exit) and what the first one
    # used after the start (its remaining ~2 s, of which 1 s was surely counted before it exited)
    assert 1.5 + 1.0 - 0.5 <= other <= 1.5 + 3.0
    assert f"other {other:.1f}" in usage.summary() and usage.wall_seconds >= 1.0
