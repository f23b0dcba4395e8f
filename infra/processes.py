"""Child processes the hub owns (the broker, Faust workers)."""
from __future__ import annotations

import logging
import signal
import subprocess

log = logging.getLogger(__name__)


def stop_process(process: subprocess.Popen | None, grace: float, name: str) -> None:
    """SIGTERM for a clean shutdown; SIGKILL if it has not exited after `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0fs; killing it", name, grace)
        process.kill()
        process.wait()
