"""Benchmark (not a test): the vault's calls on the hot paths (infra/vault.py), each alone and beside a thread that
wants the GIL all the time, as the hub's sink is beside its webhook connector and a worker's event loop beside its
resolution. A call that releases the GIL must then wait to take it back: about half a 5 ms switch interval.

    python tests/benchmarks/bench_vault.py [--calls 20000]

- HMAC-SHA256 (tokens, a sealed value's nonce, an envelope's data key): hmac.digest(), which releases the GIL at
  every call, against infra.vault.hmac_sha256, the same bytes holding it;
- Vault.token, Vault.seal, Vault.seal_for (a connector's), Vault.open of one sealed value (the first time, and
  again: it is kept opened) and of an envelope (the sink's, and the worker's for a profile);
- a key read from SQLite (the first open of a subject in a process): sqlite3 releases the GIL around each statement.
"""
from __future__ import annotations

import argparse
import contextlib
import hmac
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.vault import Vault, hmac_sha256  # noqa: E402
from tests.benchmarks.bench_partitioner import BusyThread  # noqa: E402

BESIDE_CALLS = 300   # a call that waits for the GIL takes milliseconds: fewer of them beside the busy thread


def timed(call, arguments: list) -> tuple[float, float]:
    """(wall us a call, this thread's CPU us a call)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    for argument in arguments:
        call(argument)
    return (time.perf_counter() - wall) / len(arguments) * 1e6, (time.thread_time() - cpu) / len(arguments) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omnihub-bench-vault-") as folder:
        vault = Vault(Path(folder) / "vault.sqlite")
        key = os.urandom(32)
        personal = [os.urandom(300) for _ in range(args.calls)]   # about a record's sealed details
        subjects = [f"email:{os.urandom(16).hex()}" for _ in range(args.calls)]
        with vault.batch():
            for subject in subjects:
                vault.seal(subject, subject)
        singles = [vault.seal(subject, subject) for subject in subjects]
        envelopes = [vault.seal_for([subject, subjects[index - 1]], data)
                     for index, (subject, data) in enumerate(zip(subjects, personal))]
        assert all(hmac.digest(key, data, "sha256") == hmac_sha256(key, data) for data in personal[:100])
        db = vault._db()
        calls = {
            "hmac.digest (releases the GIL)": (lambda data: hmac.digest(key, data, "sha256"), personal),
            "hmac_sha256 (keeps it)": (lambda data: hmac_sha256(key, data), personal),
            "Vault.token": (vault.token, subjects),
            "Vault.seal (key cached)": (lambda subject: vault.seal(subject, subject), subjects),
            "Vault.seal_for (two subjects)": (lambda data: vault.seal_for(subjects[:2], data), personal),
            # A value sealed for one subject is kept opened (infra/vault.py): dropped first, to time its decryption.
            "Vault.open (one subject, first time)": (lambda sealed: (vault._opened.pop(sealed, None), vault.open(sealed)),
                                                     singles),
            "Vault.open (one subject, again)": (vault.open, singles),
            "Vault.open (an envelope)": (vault.open, envelopes),
            "a key read from SQLite": (lambda subject: db.execute("SELECT key FROM subject_keys WHERE subject = ?",
                                                                  (subject,)).fetchone(), subjects),
        }
        print(f"the vault's calls, {args.calls:,} alone, {BESIDE_CALLS} beside a busy thread:")
        for setting in ("alone", "beside a busy thread"):
            print(f"  {setting}:")
            for name, (call, arguments) in calls.items():
                with BusyThread() if setting != "alone" else contextlib.nullcontext():
                    wall, cpu = timed(call, arguments if setting == "alone" else arguments[:BESIDE_CALLS])
                print(f"    {name:38s} {wall:9.2f} us a call of wall time, {cpu:6.2f} us of this thread's CPU")


if __name__ == "__main__":
    main()
