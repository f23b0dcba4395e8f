"""The embedded broker's object store (infra/object_store.py) over HTTP, as tansu uses it: listings come
from an in-memory index, which must agree with what was written and deleted, and with what a restarted
store finds on disk."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from infra.broker import wait_for_line
from infra.processes import spawn, stop_process


def start(root: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = spawn([sys.executable, "-m", "infra.object_store", str(root), "--port", str(port)], log)
    wait_for_line(process, log, "object store listening", 30.0)
    return process, f"http://127.0.0.1:{port}/tansu"


def call(method: str, url: str, body: bytes | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method=method), timeout=10) as answer:
        return answer.read()


def listing(base: str, prefix: str, start_after: str = "", max_keys: int = 1000) -> list[str]:
    query = f"?list-type=2&prefix={prefix}&max-keys={max_keys}" + (f"&start-after={start_after}" if start_after else "")
    return re.findall(r"<Key>([^<]+)</Key>", call("GET", base + query).decode())


def test_listings_follow_writes_and_deletes_and_survive_a_restart(tmp_path):
    records = "topics/t/partitions/0000000000/records/"
    process, base = start(tmp_path / "store", tmp_path / "store.log")
    try:
        call("PUT", f"{base}/{records}00000000000000000000.batch", b"a")
        assert listing(base, records) == [records + "00000000000000000000.batch"]   # the index is built now
        for offset in (3, 1, 2):                                                   # then kept by each write
            call("PUT", f"{base}/{records}{offset:020d}.batch", b"x" * offset)
        call("PUT", f"{base}/topics/t/partitions/0000000001/records/00000000000000000000.batch", b"other")
        expected = [f"{records}{offset:020d}.batch" for offset in range(4)]
        assert listing(base, records) == expected
        assert listing(base, records, start_after=expected[1]) == expected[2:]
        assert listing(base, records, max_keys=2) == expected[:2]
        assert b"<Size>3</Size>" in call("GET", f"{base}?list-type=2&prefix={records}&start-after={expected[2]}")
        call("DELETE", f"{base}/{records}{2:020d}.batch")
        assert listing(base, records) == expected[:2] + expected[3:]
    finally:
        stop_process(process, 5, "object store")
    process, base = start(tmp_path / "store", tmp_path / "restarted.log")      # a new index, from the disk
    try:
        assert listing(base, records) == expected[:2] + expected[3:]
    finally:
        stop_process(process, 5, "object store")
