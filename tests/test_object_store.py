"""The embedded broker's object store (infra/object_store.py) over HTTP, as tansu uses it: listings come
from an in-memory index, which must agree with what was written and deleted, and with what a restarted
store finds on disk."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path

import localbucket

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


def test_listings_are_byte_for_byte_what_localbucket_answers(tmp_path):
    """The listing tansu asks for is written from cached entries; it must read exactly as localbucket's own
    (ElementTree) answer over the same folder: paging, start-after, continuation tokens, url encoding."""
    records = "topics/t/partitions/0000000000/records/"
    process, base = start(tmp_path / "store", tmp_path / "store.log")

    class Plain(localbucket.S3Handler):
        data_root = (tmp_path / "store").resolve()

    plain = ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    plain_base = f"http://127.0.0.1:{plain.server_address[1]}/tansu"
    try:
        for offset in (5, 0, 3, 1, 4, 2):
            call("PUT", f"{base}/{records}{offset:020d}.batch", b"x" * (offset + 1))
        call("PUT", f"{base}/{records}odd%20name%26more.batch", b"odd")
        call("PUT", f"{base}/topics/t/partitions/0000000001/records/00000000000000000000.batch", b"other")
        call("PUT", f"{base}/topics/t/partitions/0000000000/recordsX", b"near the prefix")
        first_page = call("GET", f"{base}?list-type=2&prefix={records}&max-keys=3").decode()
        token = re.search(r"<NextContinuationToken>([^<]+)</NextContinuationToken>", first_page).group(1)
        queries = [f"prefix={records}", f"prefix={records}&max-keys=3", f"prefix={records}&max-keys=0",
                   f"prefix={records}&start-after={records}{2:020d}.batch", f"prefix={records}&continuation-token={token}",
                   f"prefix={records}&encoding-type=url", "prefix=topics/t/", "prefix=nothing/"]
        for query in queries:
            ours = call("GET", f"{base}?list-type=2&{query}")
            theirs = call("GET", f"{plain_base}?list-type=2&{query}")
            assert ours == theirs, (query, ours, theirs)
        assert first_page.count("<Key>") == 3
    finally:
        plain.shutdown()
        stop_process(process, 5, "object store")


def test_delete_objects_removes_every_key_named_as_tansu_deletes_a_topic(tmp_path):
    records = "topics/gone/partitions/0000000000/records/"
    process, base = start(tmp_path / "store", tmp_path / "store.log")
    try:
        for offset in range(3):
            call("PUT", f"{base}/{records}{offset:020d}.batch", b"x")
        call("PUT", f"{base}/topics/kept/partitions/0000000000/records/00000000000000000000.batch", b"y")
        assert len(listing(base, "topics/")) == 4
        keys = "".join(f"<Object><Key>{records}{offset:020d}.batch</Key></Object>" for offset in range(2))
        answer = call("POST", f"{base}?delete", f'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{keys}'
                                                 "</Delete>".encode()).decode()
        assert re.findall(r"<Deleted><Key>([^<]+)</Key></Deleted>", answer) == [f"{records}{o:020d}.batch" for o in range(2)]
        quiet = call("POST", f"{base}?delete", f"<Delete><Quiet>true</Quiet><Object><Key>{records}{2:020d}.batch</Key>"
                                                 "</Object></Delete>".encode()).decode()
        assert "<Deleted>" not in quiet and "DeleteResult" in quiet
        assert listing(base, "topics/") == ["topics/kept/partitions/0000000000/records/00000000000000000000.batch"]
        assert not (tmp_path / "store" / "tansu" / "topics" / "gone").exists()   # no empty folder left
    finally:
        stop_process(process, 5.0, "object store")
