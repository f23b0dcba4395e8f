"""The key vault: where personal data's keys live, in one place, so forgetting a person is destroying keys.

Kafka topics cannot be rewritten (and compacted topics keep older versions for a while), so personal
data is never written to them in clear: identifiers travel as keyed hashes (tokens: HMAC-SHA256 under
the hub secret, useless without it), and what must stay readable (an identifier's value, free text) is
sealed with AES-GCM-SIV under a key of its own subject (an identifier's token, a customer id). Destroying a
subject's key erases every sealed copy of it, on every topic, changelog and backup, at once.

One SQLite file (`vault.path`, by default <data_dir>/vault.sqlite): every process of a hub on this
machine (connectors, worker, sink, CLI) opens the same file, and SQLite serializes their writes.
`secure_delete` overwrites a destroyed key in the file, and the write-ahead log is truncated after
each destruction. An operator must keep this file safe and backed up: whoever reads it can read
everything sealed, and losing it makes all sealed data unreadable.
"""
from __future__ import annotations

import hmac
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

SEALED_MAGIC = b"\xa7\x01"   # a sealed value: magic, subject length (1 byte), subject, 12-byte nonce, ciphertext
ENVELOPE_MAGIC = b"\xa7\x02"  # sealed for several subjects: magic, n, n x (2-byte length, data key sealed for one), nonce, ciphertext
TOKEN_LENGTH = 32            # hex characters of the HMAC kept (128 bits)
FIXED_NONCE = bytes(12)
CACHE_CHECK_SECONDS = 0.5    # how stale a process's cached keys may be after another process destroys some
READ_AHEAD_ROWS = 50_000     # keys read at once by a process that reads ahead
READ_AHEAD_MAX_KEYS = 2_000_000   # cached keys beyond which it reads one key at a time again (about 180 bytes each)
OPENED_MAX = 300_000         # values sealed for one subject kept opened per process (an identifier: about 250 bytes)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 that keeps the GIL (for data under 2 KB, hashlib's threshold): hmac.digest() releases it at every
    call, and beside a thread that runs Python all the time each call then waited 1 to 4 ms to take it back
    (tests/benchmarks/bench_vault.py). The hub's process runs its webhook connectors beside the sink's threads; at
    2,000 sessions/s bench_latency.py measured no difference either way, so this is a guard, not a speed-up."""
    return hmac.new(key, data, "sha256").digest()


class KeyConflict(Exception):
    """Another process stored keys for subjects an optimistic batch created keys for: run the batch again."""

    def __init__(self, subjects: list[str]):
        super().__init__(f"{len(subjects)} keys were created meanwhile by another process")
        self.subjects = subjects


class Vault:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._keys: dict[str, bytes] = {}
        self._ciphers: dict[bytes, AESGCMSIV] = {}
        # A value sealed for one subject (an identifier) is sealed deterministically, so the same bytes come back
        # at every profile of its customer: the sink opened each identifier of a profile again whenever the
        # profile's identifiers changed (7% of the hub's process in bench_end_to_end). Dropped with the keys.
        self._opened: dict[bytes, bytes] = {}
        # Both caches are dropped when a key is destroyed (here, or seen from another process). A thread that read a
        # key or opened a value keeps it only if nothing was dropped since it began: else a value of someone just
        # forgotten could be cached after the drop, and stay readable until the next destruction.
        self._dropped = 0
        self._caching = threading.Lock()
        # A process that opens much of what is sealed (the sink, the worker) reads keys ahead, in bulk: the
        # keys stored since its last read, in rowid order, rather than one query per missing key (17 us of CPU,
        # up to 35 of wall time, beside the processes writing keys; docs/scaling.md). A destroyed key's rowid
        # can be given to the next key: a destruction starts the reading over, and a key the read did not
        # find is still asked for alone.
        self.read_ahead = False
        self._read_up_to = 0   # the subject_keys rowid up to which this process read keys ahead
        db = self._db()
        db.execute("CREATE TABLE IF NOT EXISTS secret (id INTEGER PRIMARY KEY CHECK (id = 1), value BLOB NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS subject_keys (subject TEXT PRIMARY KEY, key BLOB NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS destructions (id INTEGER PRIMARY KEY CHECK (id = 1), count INTEGER NOT NULL)")
        db.execute("INSERT OR IGNORE INTO secret (id, value) VALUES (1, ?)", (os.urandom(32),))
        db.execute("INSERT OR IGNORE INTO destructions (id, count) VALUES (1, 0)")
        self.secret = db.execute("SELECT value FROM secret").fetchone()[0]
        self._destructions, self._checked = self._destruction_count(), time.monotonic()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            # A commit reaches the log without waiting for the disk (50 us a new key instead of 400): a key
            # survives any process crash; a power cut may lose the last ones, and what was sealed with them.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA secure_delete = ON")
            self._local.db = db
        return db

    # --- tokens -----------------------------------------------------------------------------

    def token(self, text: str) -> str:
        """A keyed hash of an identifier's canonical text ("email:a@b.c"): equal for equal identifiers,
        and nobody without the hub secret can test a guess (a phone number's SHA-256 falls to a dictionary)."""
        return hmac_sha256(self.secret, text.encode()).hex()[:TOKEN_LENGTH]

    # --- sealing ----------------------------------------------------------------------------

    def _destruction_count(self) -> int:
        return self._db().execute("SELECT count FROM destructions").fetchone()[0]

    def _follow_destructions(self) -> None:
        if time.monotonic() - self._checked > CACHE_CHECK_SECONDS:
            # Another process (the worker forgetting someone) may have destroyed keys this one cached.
            self._checked = time.monotonic()
            count = self._destruction_count()
            if count != self._destructions:
                self._forget_cached_keys()
                self._destructions = count

    def _keep(self, since: int, cache: dict, key, value, limit: int | None = None) -> None:
        """cache[key] = value, unless the caches were dropped since `since` (self._dropped when the read began);
        a cache holding `limit` entries starts over first."""
        with self._caching:
            if self._dropped == since:
                if limit is not None and len(cache) >= limit:
                    cache.clear()
                cache[key] = value

    def _key(self, subject: str, create: bool) -> bytes | None:
        self._follow_destructions()
        since = self._dropped
        local = self._local   # a batch belongs to its thread, as the SQLite connection does
        pending = getattr(local, "pending", None)   # an optimistic batch's new keys, not stored yet
        if pending is not None and (key := pending.get(subject)) is not None:
            return key  # created in this optimistic batch (the cache may have been cleared meanwhile)
        key = self._keys.get(subject)
        if key is not None:
            return key
        if self.read_ahead and (key := self._read_keys_ahead(subject, since)) is not None:
            return key
        db = self._db()
        row = db.execute("SELECT key FROM subject_keys WHERE subject = ?", (subject,)).fetchone()
        if row is None:
            if not create:
                return None
            new = AESGCMSIV.generate_key(256)
            if pending is not None:  # an optimistic batch: stored with the others when it ends
                pending[subject] = self._keys[subject] = new
                return new
            if getattr(local, "locking", False) and not db.in_transaction:  # a batch's first new key: one writer from now on
                db.execute("BEGIN IMMEDIATE")
            if db.execute("INSERT OR IGNORE INTO subject_keys (subject, key) VALUES (?, ?)", (subject, new)).rowcount:
                row = (new,)
            else:  # another process created it meanwhile
                row = db.execute("SELECT key FROM subject_keys WHERE subject = ?", (subject,)).fetchone()
        self._keep(since, self._keys, subject, row[0])
        return row[0]

    def _read_keys_ahead(self, subject: str, since: int) -> bytes | None:
        """Cache the next READ_AHEAD_ROWS keys stored since the last read ahead; this subject's key if it was among
        them (None: the caller asks for it alone). One read at a time, about 50 ms: a process starting beside
        1,000,000 keys would otherwise wait 1.6 s at its first key; it reads them over its first misses instead."""
        if len(self._keys) >= READ_AHEAD_MAX_KEYS:
            return None
        rows = self._db().execute("SELECT rowid, subject, key FROM subject_keys WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                  (self._read_up_to, READ_AHEAD_ROWS)).fetchall()
        with self._caching:
            if rows and self._dropped == since:
                self._read_up_to = rows[-1][0]
                self._keys.update((row[1], row[2]) for row in rows)
        return self._keys.get(subject)

    def _forget_cached_keys(self) -> None:
        with self._caching:
            self._dropped += 1
            self._keys.clear()
            self._opened.clear()
            self._read_up_to = 0

    def _cipher(self, key: bytes) -> AESGCMSIV:
        cipher = self._ciphers.get(key)
        if cipher is None:
            if len(self._ciphers) >= 100_000:
                self._ciphers.clear()
            cipher = self._ciphers[key] = AESGCMSIV(key)
        return cipher

    def seal(self, subject: str, plaintext: str | bytes) -> bytes:
        """plaintext encrypted under the subject's key (created on first use); the subject is named in the
        result so any holder of the vault can open it, until the key is destroyed. Deterministic (a nonce
        derived from the plaintext, with the misuse-resistant AES-GCM-SIV): a redelivered event is
        republished byte for byte as first published, and equal values reveal only that they are equal."""
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        name = subject.encode()
        key = self._key(subject, True)
        nonce = hmac_sha256(key, data)[:12]
        return SEALED_MAGIC + bytes([len(name)]) + name + nonce + self._cipher(key).encrypt(nonce, data, name)

    def seal_for(self, subjects: list[str], plaintext: str | bytes) -> bytes:
        """plaintext readable with the key of any of these subjects (a record naming a person by email and
        by phone): a data key encrypts it, and that key is sealed for each subject. Once every one of those
        keys is destroyed, nothing opens it. Deterministic, like seal()."""
        if not subjects:
            raise ValueError("seal_for needs at least one subject")
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        data_key = hmac_sha256(self.secret, b"data-key|" + data)
        # One data key per plaintext, so a fixed nonce never meets two plaintexts under one key; SIV
        # makes wrapping the same data key again give the same bytes (and reveal nothing else).
        nonce = FIXED_NONCE
        wrapped = [self._wrap(subject, data_key) for subject in dict.fromkeys(subjects)]
        return b"".join([ENVELOPE_MAGIC, bytes([len(wrapped)]), *(len(w).to_bytes(2, "big") + w for w in wrapped),
                         nonce, AESGCMSIV(data_key).encrypt(nonce, data, None)])

    def _wrap(self, subject: str, data_key: bytes) -> bytes:
        """seal() of a data key, without deriving a nonce: SIV with a fixed one is deterministic and safe."""
        name = subject.encode()
        cipher = self._cipher(self._key(subject, True))
        return SEALED_MAGIC + bytes([len(name)]) + name + FIXED_NONCE + cipher.encrypt(FIXED_NONCE, data_key, name)

    def open(self, sealed: bytes) -> bytes | None:
        """The plaintext, or None when its subject's key was destroyed (the person was forgotten)."""
        if sealed.startswith(ENVELOPE_MAGIC):
            return self._open_envelope(sealed)
        self._follow_destructions()
        since = self._dropped
        opened = self._opened.get(sealed)
        if opened is None:
            opened = self._open_sealed(sealed)
            if opened is not None:
                self._keep(since, self._opened, sealed, opened, OPENED_MAX)
        return opened

    def _open_sealed(self, sealed: bytes) -> bytes | None:
        if not sealed.startswith(SEALED_MAGIC):
            raise ValueError("not a sealed value")
        length = sealed[2]
        name = sealed[3:3 + length]
        key = self._key(name.decode(), False)
        if key is None:
            return None
        nonce, body = sealed[3 + length:15 + length], sealed[15 + length:]
        try:
            return self._cipher(key).decrypt(nonce, body, name)
        except InvalidTag:  # the subject has a new key (the person came back after being forgotten): not this one
            return None

    def _open_envelope(self, sealed: bytes) -> bytes | None:
        position, data_key = 3, None
        for _ in range(sealed[2]):
            length = int.from_bytes(sealed[position:position + 2], "big")
            wrapped = sealed[position + 2:position + 2 + length]
            position += 2 + length
            if data_key is None:  # a data key is wrapped for one envelope only: not worth keeping opened
                data_key = self._open_sealed(wrapped)
        if data_key is None:
            return None
        nonce, body = sealed[position:position + 12], sealed[position + 12:]
        return AESGCMSIV(data_key).decrypt(nonce, body, None)

    def open_text(self, sealed: bytes | None) -> str | None:
        if sealed is None:
            return None
        opened = self.open(sealed)
        return None if opened is None else opened.decode()

    # --- forgetting -------------------------------------------------------------------------

    @contextmanager
    def batch(self, optimistic: bool = False):
        """One transaction for the keys created meanwhile (a batch of events), rather than one each; none
        if the batch creates no key. Every process of the hub shares the vault, and SQLite has one writer:
        a batch that held the write lock from its start held it for its whole mapping or resolution, and
        the connectors spent most of a load waiting for it (bench_end_to_end).
        - default: the lock is taken at the batch's first new key and held to its end;
        - optimistic (the connectors): new keys wait in memory and are stored together when the batch ends,
          in a short transaction. If another process stored a key for one of the same subjects meanwhile,
          its key is kept and KeyConflict is raised: what the batch sealed with the losing key must be
          sealed again (the caller runs the batch again; the winners' keys are cached by then).
        Nothing sealed may leave before its batch ended without error. One batch at a time per thread."""
        db = self._db()
        if optimistic:
            self._local.pending = {}
        else:
            self._local.locking = True
        try:
            yield self
            if optimistic:
                self._store_pending(db)
            elif db.in_transaction:
                db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._forget_cached_keys()  # keys created in it were never stored
            raise
        finally:
            self._local.pending, self._local.locking = None, False

    def _store_pending(self, db: sqlite3.Connection) -> None:
        pending = self._local.pending
        if not pending:
            return
        subjects = list(pending)
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT OR IGNORE INTO subject_keys (subject, key) VALUES (?, ?)", pending.items())
        stored = {}
        for start in range(0, len(subjects), 500):
            part = subjects[start:start + 500]
            stored.update(db.execute(f"SELECT subject, key FROM subject_keys WHERE subject IN ({','.join('?' * len(part))})",
                                     part).fetchall())
        db.execute("COMMIT")
        lost = [subject for subject in subjects if stored[subject] != pending[subject]]
        if lost:
            self._forget_cached_keys()
            raise KeyConflict(lost)

    def destroy(self, subjects: Iterable[str]) -> int:
        """Destroy these subjects' keys, for good; returns how many existed."""
        subjects = list(dict.fromkeys(subjects))
        if not subjects:
            return 0
        db = self._db()
        destroyed = 0
        for start in range(0, len(subjects), 500):
            part = subjects[start:start + 500]
            cursor = db.execute(f"DELETE FROM subject_keys WHERE subject IN ({','.join('?' * len(part))})", part)
            destroyed += cursor.rowcount
        db.execute("UPDATE destructions SET count = count + 1")
        self._forget_cached_keys()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the log must not keep a copy of the destroyed keys
        return destroyed


_open: dict[Path, Vault] = {}


def open_vault(settings) -> Vault:
    """This process's vault for these settings (one per file: keys are cached per instance)."""
    path = Path(settings.vault_path).resolve()
    if path not in _open:
        _open[path] = Vault(path)
    return _open[path]
