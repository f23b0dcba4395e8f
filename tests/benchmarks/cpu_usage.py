"""CPU seconds of a benchmark's own process and of every process it started, by what each one is: on a
machine whose cores are all busy, where a run's time goes (Linux: read from /proc)."""
from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path

from infra.processes import proc_stat

SAMPLE_SECONDS = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# (name, text of its command line), the first that matches names a process
ROLES = (("worker", "infra.cli worker"), ("connectors", "connectors run"), ("broker", "tansu"),
         ("object store", "infra.object_store"), ("pass-through", "tests.benchmarks.passthrough"),
         ("snapshot writer", "streams.snapshot_writer"))


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far: user plus system) of every process."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = proc_stat(entry.name)
        except OSError:   # exited meanwhile
            continue
        found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return found


def descendants(processes: dict[int, tuple[int, float]]) -> list[int]:
    """The pids of this process's children, theirs, and so on, among `processes` (as _processes() gives them)."""
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (parent, _) in processes.items():
        children[parent].append(pid)
    found, pending = [], list(children[os.getpid()])
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children[pid])
    return found


def cpu_by_role(own_name: str) -> dict[str, float]:
    """CPU seconds used so far by this process (as own_name) and by its descendants, by role: a reading to
    subtract from a later one."""
    processes, totals = _processes(), {own_name: time.process_time()}
    for pid in descendants(processes):
        role = _role(pid)
        totals[role] = totals.get(role, 0.0) + processes[pid][1]
    return totals


def _role(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    return next((name for name, text in ROLES if text in command), "other")


class CpuUsage:
    """Samples the CPU time of every descendant every SAMPLE_SECONDS in a thread (a child's time is gone
    from /proc once it exits: up to one interval of each is missed), and this process's own (every
    thread: the hub's sink and the ClickHouse engine when they run here) at the start and the end."""

    def __init__(self, own_name: str):
        self.own_name = own_name
        self.seconds: dict[int, float] = {}   # pid -> CPU seconds since the start
        self.roles: dict[int, str] = {}
        self._before: dict[int, float] = {}   # what processes already running had used at the start
        self._stop = threading.Event()
        self._lock = threading.Lock()   # the sampling thread adds pids while mark() reads them
        self._mark: tuple[str, dict[str, float], float] | None = None
        self._thread = threading.Thread(target=self._run, name="cpu-usage", daemon=True)

    def start(self) -> "CpuUsage":
        self._before = {pid: cpu for pid, (_, cpu) in _processes().items()}
        self._own_started = time.process_time()
        self._wall_started = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.own_seconds = time.process_time() - self._own_started
        self.wall_seconds = time.monotonic() - self._wall_started

    def __enter__(self) -> "CpuUsage":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def mark(self, label: str) -> None:
        """Split the count here (once): summary() then also says how many cores were busy before and after, e.g.
        while the connectors ran, and after, when what is left is the stages behind them catching up."""
        self._sample()
        self._mark = (label, self._totals(time.process_time() - self._own_started), time.monotonic() - self._wall_started)

    @property
    def mark_label(self) -> str | None:
        return self._mark[0] if self._mark else None

    def _sample(self) -> None:
        processes = _processes()
        with self._lock:
            for pid in descendants(processes):
                if self.roles.get(pid, "other") == "other":
                    # Read again until known: between its fork and its exec a child still shows its parent's
                    # command line (a connector once counted 71.6 CPU seconds as "other")
                    self.roles[pid] = _role(pid)
                self.seconds[pid] = processes[pid][1] - self._before.get(pid, 0.0)

    def _totals(self, own_seconds: float) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        totals[self.own_name] = own_seconds
        with self._lock:
            for pid, seconds in self.seconds.items():
                totals[self.roles[pid]] += seconds
        return totals

    def by_role(self) -> dict[str, float]:
        return dict(sorted(self._totals(self.own_seconds).items(), key=lambda item: -item[1]))

    def summary(self) -> str:
        """CPU seconds by role, their sum, and how many cores that kept busy; after a mark(), two more lines: the
        same before it and after it."""
        totals = self.by_role()
        line = _describe(totals, self.wall_seconds)
        if self._mark is None:
            return line
        label, at_mark, mark_wall = self._mark
        after = {name: seconds - at_mark.get(name, 0.0) for name, seconds in totals.items()}
        return (line + f"\n      until {label} ({mark_wall:.1f} s): {_describe(at_mark, mark_wall)}"
                f"\n      after it ({self.wall_seconds - mark_wall:.1f} s): {_describe(after, self.wall_seconds - mark_wall)}")


def _describe(totals: dict[str, float], wall_seconds: float) -> str:
    everything = sum(totals.values())
    ordered = sorted(totals.items(), key=lambda item: -item[1])
    return (", ".join(f"{name} {seconds:.1f}" for name, seconds in ordered if seconds >= 0.05)
            + f"; {everything:.1f} in all over {wall_seconds:.1f} s: {everything / max(wall_seconds, 1e-9):.2f} "
              f"of {os.cpu_count()} cores busy")
