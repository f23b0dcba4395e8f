"""Supervision: the hub restarts a child that stopped (with backoff), says so once per exit in one line
that names the cause, and gives up (stopping the hub) on one that keeps failing.

A child is a process (broker, object store, Faust worker) or a task of the hub's own (the sink).
"""
from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from infra.processes import describe_exit, last_line

log = logging.getLogger("omnihub.supervisor")

class ChildKeepsFailing(RuntimeError):
    """A child failed more often than the policy allows: the hub stops, naming it and the cause."""


@dataclass
class RestartPolicy:
    max_restarts: int = 5           # within window_seconds; one more failure stops the hub
    window_seconds: float = 300.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0


@dataclass
class ChildState:
    """What `omnihub status` shows of a child."""
    name: str
    state: str = "starting"         # starting | running | restarting | failed | stopped
    pid: int | None = None
    restarts: int = 0
    last_exit: str = ""
    last_error: str = ""
    failures: list[float] = field(default_factory=list)  # monotonic times, within the policy window

    def as_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "pid": self.pid, "restarts": self.restarts,
                "last_exit": self.last_exit, "last_error": self.last_error}


def next_delay(child: ChildState, policy: RestartPolicy, cause: str) -> float:
    """Record a failure of child; the delay before its restart, or ChildKeepsFailing."""
    now = time.monotonic()
    child.failures = [t for t in child.failures if now - t < policy.window_seconds] + [now]
    child.restarts += 1
    child.last_error = cause
    if len(child.failures) > policy.max_restarts:
        child.state = "failed"
        raise ChildKeepsFailing(f"{child.name} keeps failing ({len(child.failures)} times in "
                                f"{policy.window_seconds:.0f} s); last: {cause}")
    child.state = "restarting"
    return min(policy.backoff_max, policy.backoff_initial * 2 ** (len(child.failures) - 1))


@dataclass
class ProcessChild:
    """A child process: start() launches it (from the main thread, so it dies with the hub), ready()
    waits until it serves again and repairs what a restart needs (topics of a memory broker)."""
    state: ChildState
    start: Callable[[], subprocess.Popen]
    log_file: Path
    ready: Callable[[], Awaitable[None]] | None = None
    process: subprocess.Popen | None = None

    def launch(self) -> None:
        self.process = self.start()
        self.state.pid = self.process.pid


class Supervisor:
    def __init__(self, policy: RestartPolicy | None = None):
        self.policy = policy or RestartPolicy()
        self.children: list[ProcessChild] = []

    def adopt(self, child: ProcessChild) -> None:
        """A child already started and ready."""
        child.state.state = "running"
        child.state.pid = child.process.pid if child.process else None
        self.children.append(child)

    async def watch(self, stop: asyncio.Event, poll_seconds: float = 0.5) -> None:
        """Until stop is set: restart children that exited. Raises ChildKeepsFailing."""
        while not stop.is_set():
            for child in self.children:
                if child.process is not None and child.process.poll() is not None and not stop.is_set():
                    await self._restart(child, stop)
            try:
                await asyncio.wait_for(stop.wait(), poll_seconds)
            except asyncio.TimeoutError:
                pass

    async def _restart(self, child: ProcessChild, stop: asyncio.Event) -> None:
        child.state.last_exit = describe_exit(child.process.returncode)
        tail = last_line(child.log_file)
        cause = f"{child.state.last_exit}" + (f"; its log ends: {tail}" if tail else "")
        delay = next_delay(child.state, self.policy, cause)
        log.error("%s (pid %d) stopped: %s; restarting in %.1f s (failure %d of %d allowed in %.0f s)",
                  child.state.name, child.process.pid, cause, delay, len(child.state.failures),
                  self.policy.max_restarts, self.policy.window_seconds)
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return  # the hub is stopping: no restart
        except asyncio.TimeoutError:
            pass
        child.launch()
        if child.ready is not None:
            try:
                await child.ready()
            except Exception as error:  # it died again while starting: the next poll sees its exit
                log.error("%s did not become ready after its restart: %s", child.state.name, error)
                return
        child.state.state = "running"
        log.info("%s restarted (pid %d)", child.state.name, child.process.pid)
