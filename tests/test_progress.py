"""Progress on long work as a person sees it: on a terminal (a pseudo-terminal here) a bar with what is done,
the rate and the time left; in a pipe or a log file, nothing of it."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest

from infra.hub import child_environment
from tests.fixtures import channel_config, write_web_orders


def run_on_terminal(args: list[str], env: dict | None = None, timeout: float = 240) -> str:
    """What a terminal shows of a command: its output through a pseudo-terminal, as the person sees it."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))   # a terminal has a size
    process = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:   # the command ended and closed its side
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout)
    os.close(leader)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


OMNIHUB = [sys.executable, "-m", "infra.cli"]


def test_generate_shows_events_rate_and_time_left_on_a_terminal_only(tmp_path):
    shown = run_on_terminal(OMNIHUB + ["generate", "--out", str(tmp_path / "a"), "--events", "60000", "--customers", "3000"])
    frames = shown.split("\r")
    final = [frame for frame in frames if "generating" in frame][-1]
    assert re.search(r"generating: 100%\|.*\| 60.0k/60.0k \[\d\d:\d\d<00:00, +[\d.]+k? events/s\]", final), final
    piped = subprocess.run(OMNIHUB + ["generate", "--out", str(tmp_path / "b"), "--events", "60000", "--customers", "3000"],
                           capture_output=True, text=True, check=True)
    assert "generating" not in piped.stderr and "\r" not in piped.stdout + piped.stderr
    assert (tmp_path / "a" / "web-orders.jsonl").read_bytes() == (tmp_path / "b" / "web-orders.jsonl").read_bytes()


@pytest.mark.integration
def test_a_connector_run_shows_its_file_records_and_rate_on_a_terminal_only(settings, tmp_path):
    env = child_environment(settings, settings.kafka.bootstrap_servers)
    config = channel_config(settings, tmp_path, "web-orders")
    orders = write_web_orders(tmp_path / "orders.jsonl", 20_000)
    shown = run_on_terminal(OMNIHUB + ["connectors", "run", str(config), "--source", str(orders)], env)
    final = [frame for frame in shown.split("\r") if "web-orders: " in frame and "%|" in frame][-1]
    assert re.search(r"web-orders: 100%\|.*\[\d\d:\d\d<00:00, .*B/s, 20,000 records: 20,000 accepted, 0 rejected\]", final), final
    assert "read 20,000 = accepted 20,000 + rejected 0" in shown or "20,000" in shown
    again = write_web_orders(tmp_path / "more.jsonl", 5_000, start=20_000)
    piped = subprocess.run(OMNIHUB + ["connectors", "run", str(config), "--source", str(again)], env=env,
                           capture_output=True, text=True, check=True)
    assert "%|" not in piped.stderr and "\r" not in piped.stderr + piped.stdout
