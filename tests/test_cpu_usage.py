"""The CPU accounting bench_end_to_end prints: a child's CPU seconds are counted under its role, even after
it exited, and what it used before the start is not."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from infra.processes import proc_stat
from tests.benchmarks.cpu_usage import CLOCK_TICKS, SAMPLE_SECONDS, CpuUsage

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def burn(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BURN.format(seconds=seconds)])


def cpu_seconds(pid: int) -> float:
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def reap(process: subprocess.Popen) -> float:
    """Wait for the child; its whole CPU time, exactly (the kernel's account, not a sample)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def test_children_are_counted_by_role_after_they_exit_and_not_before_the_start():
    already = burn(3.0)
    while cpu_seconds(already.pid) < 1.0:   # busy for a second before the count starts: that second must not count
        time.sleep(0.05)
    before = cpu_seconds(already.pid)
    with CpuUsage("this process") as usage:
        child = burn(1.5)
        used_by_child = reap(child)         # gone from /proc well before the count stops
        used_after_start = reap(already) - before
        time.sleep(SAMPLE_SECONDS * 2)
    counted = usage.by_role()["other"]
    expected = used_by_child + used_after_start
    # each exited child's last SAMPLE_SECONDS may be missed; counting the time before the start adds >= 1 s
    assert expected - 2 * SAMPLE_SECONDS - 0.05 <= counted <= expected + 0.05
    assert f"other {counted:.1f}" in usage.summary() and usage.wall_seconds >= 1.0


def test_a_child_is_counted_under_the_role_of_what_it_executes():
    """Before its exec a child still carries its parent's command line: it must not stay "other"."""
    env = {**os.environ, "PY": sys.executable, "CODE": BURN.format(seconds=1.5), "ROLE": "tansu"}
    with CpuUsage("this process") as usage:
        child = subprocess.Popen(["sh", "-c", f'sleep {SAMPLE_SECONDS * 3}; exec "$PY" -c "$CODE" "$ROLE"'], env=env)
        used = reap(child)
    roles = usage.by_role()
    assert used - SAMPLE_SECONDS - 0.05 <= roles.get("broker", 0.0) <= used + 0.05
    assert roles.get("other", 0.0) < 0.2   # the shell's own moment


def test_a_mark_splits_the_count_into_before_and_after():
    """bench_end_to_end splits its count when the connectors are done: what a child used before the mark is
    counted before it, and what it used after, after it."""
    with CpuUsage("this process") as usage:
        first = burn(1.0)
        used_before = reap(first)
        usage.mark("the first child was done")
        second = subprocess.Popen(["sh", "-c", 'exec "$PY" -c "$CODE" "tansu"'],
                                  env={**os.environ, "PY": sys.executable, "CODE": BURN.format(seconds=1.0)})
        used_after = reap(second)
    summary = usage.summary()
    assert "until the first child was done" in summary
    until, after = summary.splitlines()[1:]
    assert "broker" not in until and "broker" in after
    counted_before = float(until.split("other ")[1].split(",")[0].split(";")[0])
    assert used_before - SAMPLE_SECONDS - 0.05 <= counted_before <= used_before + 0.05
    counted_after = float(after.split("broker ")[1].split(",")[0].split(";")[0])
    assert used_after - SAMPLE_SECONDS - 0.05 <= counted_after <= used_after + 0.05
