"""Child processes the hub owns (the broker, its object store, Faust workers): started so that they
die with the hub, stopped with SIGTERM then SIGKILL, and described in words when they exit."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the kernel SIGKILLs the child when the process that started it dies, even by kill -9,
    so no broker or worker outlives its hub. Children are started from the main thread, because the
    signal follows the starting thread, not the process."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(command: list[str], log_file: Path, env: dict[str, str] | None = None,
          new_session: bool = False) -> subprocess.Popen:
    """Start a child that writes stdout and stderr to log_file (appended) and dies with this process.
    new_session keeps a terminal's Ctrl-C away from it: the hub stops it in order."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=new_session, preexec_fn=die_with_parent)


def describe_exit(returncode: int | None) -> str:
    """'exit status 3' or 'killed by SIGKILL': what a person needs to know of an exit."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def last_line(log_file: Path, limit: int = 300) -> str:
    """The last non-empty line of a child's log: usually the reason it stopped."""
    try:
        with log_file.open("rb") as handle:
            handle.seek(max(0, log_file.stat().st_size - 8192))
            lines = [line.strip() for line in handle.read().decode(errors="replace").splitlines()
                     if any(c.isalpha() for c in line)]  # not a table's border
    except OSError:
        return ""
    errors = [line for line in lines[-40:] if "Error" in line or "ERROR" in line or "Exception" in line]
    return (errors or lines or [""])[-1][:limit]


def proc_stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses): [0] the
    state, [1] the parent pid, [11] and [12] user and system CPU in clock ticks. Raises OSError once it exited."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive: it has exited and waits for its parent to reap it.
    try:
        return proc_stat(pid)[0] != "Z"
    except OSError:
        return True


def stop_process(process: subprocess.Popen | None, grace: float, name: str, kill_level: int = logging.WARNING) -> None:
    """SIGTERM for a clean shutdown; SIGKILL if it has not exited after `grace` seconds (logged at
    kill_level: for tansu, which waits for clients that never hang up, it is the usual way out)."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        log.log(kill_level, "%s did not stop within %.0fs; killing it", name, grace)
        process.kill()
        process.wait()


# The hub's processes allocate a dozen short-lived containers per event (mapping, resolving, rows for
# ClickHouse) while holding caches of millions of objects: with Python's default thresholds (700, 10, 10)
# the cycle collector took 15-20% of the resolution worker's time (cProfile of the resolver,
# tests/benchmarks/eval_identity.py). Their data holds no reference cycles worth collecting that often.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_collector(freeze: bool = False) -> None:
    """Collect cycles less often; with freeze, leave what this process holds now (a recovered state) out of
    every later collection."""
    import gc

    if freeze:
        gc.collect()
        gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
