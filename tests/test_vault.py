"""The key vault (infra/vault.py): keyed hashes, sealing, and erasure by destroying keys, across processes."""
from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import threading

import pytest

from infra import vault as vault_module
from infra.vault import KeyConflict, Vault


def test_tokens_are_keyed_and_the_same_in_every_process(tmp_path):
    path = tmp_path / "vault.sqlite"
    here = Vault(path)
    token = here.token("phone:+33612345678")
    other = subprocess.run([sys.executable, "-c", f"from infra.vault import KeyConflict, Vault; print(Vault({str(path)!r}).token('phone:+33612345678'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other == token
    assert token != hashlib.sha256(b"phone:+33612345678").hexdigest()[:32]   # not a dictionary-testable hash
    assert Vault(tmp_path / "another.sqlite").token("phone:+33612345678") != token  # another hub, another secret


@pytest.mark.parametrize("read_ahead", [False, True])
def test_sealed_values_open_until_their_key_is_destroyed_in_any_process(tmp_path, monkeypatch, read_ahead):
    monkeypatch.setattr(vault_module, "CACHE_CHECK_SECONDS", 0.0)
    worker, sink = Vault(tmp_path / "vault.sqlite"), Vault(tmp_path / "vault.sqlite")
    sink.read_ahead = read_ahead
    sealed = worker.seal("email:t1", "email:alice@x.com")
    assert sealed == worker.seal("email:t1", "email:alice@x.com")      # republished byte for byte
    assert b"alice" not in sealed and sink.open(sealed) == b"email:alice@x.com"   # the sink cached the key
    kept = worker.seal("email:t2", "email:bob@x.com")
    assert worker.destroy(["email:t1", "customer:none"]) == 1
    assert worker.open(sealed) is None and sink.open(sealed) is None    # the sink's cache followed
    assert sink.open(kept) == b"email:bob@x.com"
    again = worker.seal("email:t1", "email:alice@x.com")                # she comes back: a new key
    assert sink.open(again) == b"email:alice@x.com" and sink.open(sealed) is None
    with pytest.raises(ValueError):
        sink.open(b"plain text")


def test_an_identifier_opened_once_is_not_decrypted_again_until_a_key_is_destroyed(tmp_path, monkeypatch):
    monkeypatch.setattr(vault_module, "CACHE_CHECK_SECONDS", 0.0)
    worker, sink = Vault(tmp_path / "vault.sqlite"), Vault(tmp_path / "vault.sqlite")
    decrypted: list[bytes] = []
    opening = sink._open_sealed
    monkeypatch.setattr(sink, "_open_sealed", lambda sealed: decrypted.append(sealed) or opening(sealed))
    alice, bob = worker.seal("email:t1", "email:alice@x.com"), worker.seal("email:t2", "email:bob@x.com")
    assert [sink.open_text(alice) for _ in range(3)] == ["email:alice@x.com"] * 3
    assert sink.open_text(bob) == "email:bob@x.com" and decrypted == [alice, bob]
    envelope = worker.seal_for(["email:t1", "email:t2"], "her ticket")
    assert sink.open(envelope) == sink.open(envelope) == b"her ticket"   # an envelope's data key is not kept
    assert decrypted == [alice, bob] + [envelope[5:5 + int.from_bytes(envelope[3:5], "big")]] * 2
    worker.destroy(["email:t2"])   # another process forgets bob: what this one opened is dropped with its keys
    assert sink.open_text(alice) == "email:alice@x.com" and sink.open_text(bob) is None
    assert decrypted[-2:] == [alice, bob]


def test_the_values_kept_opened_are_bounded_and_still_open_after_the_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(vault_module, "OPENED_MAX", 3)
    worker, sink = Vault(tmp_path / "vault.sqlite"), Vault(tmp_path / "vault.sqlite")
    sealed = [worker.seal(f"email:t{i}", f"email:p{i}@x.com") for i in range(7)]
    for _ in range(2):
        assert [sink.open_text(value) for value in sealed] == [f"email:p{i}@x.com" for i in range(7)]
        assert 0 < len(sink._opened) <= 3


def test_what_was_opened_while_another_thread_dropped_the_caches_is_not_kept(tmp_path, monkeypatch):
    worker, sink = Vault(tmp_path / "vault.sqlite"), Vault(tmp_path / "vault.sqlite")
    sealed = worker.seal("email:t1", "email:alice@x.com")
    opening, decrypted = sink._open_sealed, []

    def opened_while_another_thread_sees_a_destruction(value: bytes) -> bytes | None:
        decrypted.append(value)
        plaintext = opening(value)
        if len(decrypted) == 1:
            sink._forget_cached_keys()   # what another thread of the process does when it sees a key destroyed
        return plaintext

    monkeypatch.setattr(sink, "_open_sealed", opened_while_another_thread_sees_a_destruction)
    assert sink.open(sealed) == sink.open(sealed) == sink.open(sealed) == b"email:alice@x.com"
    assert decrypted == [sealed, sealed]   # the first opening was not kept; the second was
    assert sink._keys == {"email:t1": worker._key("email:t1", False)}   # the key read after the drop is kept


def test_a_process_reading_ahead_reads_keys_in_bulk_and_still_opens_every_later_one(tmp_path, monkeypatch):
    monkeypatch.setattr(vault_module, "READ_AHEAD_ROWS", 100)
    monkeypatch.setattr(vault_module, "CACHE_CHECK_SECONDS", 3600.0)   # the sink has not noticed destructions yet
    connector, sink = Vault(tmp_path / "vault.sqlite"), Vault(tmp_path / "vault.sqlite")
    sink.read_ahead = True
    statements: list[str] = []
    sink._db().set_trace_callback(statements.append)
    with connector.batch(optimistic=True):
        sealed = [connector.seal(f"email:t{i}", f"person {i}") for i in range(250)]
    assert [sink.open(value) for value in sealed] == [f"person {i}".encode() for i in range(250)]
    reads = [statement for statement in statements if "FROM subject_keys" in statement]
    assert len(reads) == 3 and all("rowid >" in statement for statement in reads)   # 250 keys in 3 reads, not 250
    statements.clear()
    later = [connector.seal(f"email:u{i}", f"later {i}") for i in range(5)]   # stored after the sink's last read
    assert [sink.open(value) for value in later] == [f"later {i}".encode() for i in range(5)]
    assert len([statement for statement in statements if "FROM subject_keys" in statement]) == 1
    # A destroyed key had the highest rowid: SQLite gives it to the next key, below where the sink read up to.
    rowid = connector._db().execute("SELECT rowid FROM subject_keys WHERE subject = 'email:u4'").fetchone()[0]
    connector.destroy(["email:u4"])
    returning = connector.seal("email:v1", "came back")
    assert connector._db().execute("SELECT rowid FROM subject_keys WHERE subject = 'email:v1'").fetchone()[0] == rowid
    assert sink.open(returning) == b"came back"


def test_a_destroyed_key_leaves_no_copy_in_the_vault_file(tmp_path):
    path = tmp_path / "vault.sqlite"
    vault = Vault(path)
    with vault.batch():
        for i in range(200):
            vault.seal(f"email:t{i}", "x")
    key = vault._key("email:t7", create=False)
    assert key in path.read_bytes() or key in (tmp_path / "vault.sqlite-wal").read_bytes()
    vault.destroy(["email:t7"])
    files = [p for p in tmp_path.iterdir() if p.name.startswith("vault.sqlite")]
    assert not any(key in p.read_bytes() for p in files)


def test_keys_created_in_a_batch_that_fails_are_not_kept(tmp_path):
    vault = Vault(tmp_path / "vault.sqlite")
    with pytest.raises(RuntimeError):
        with vault.batch():
            sealed = vault.seal("email:t1", "x")
            raise RuntimeError("the batch failed")
    assert vault.open(sealed) is None


def test_a_value_sealed_for_several_subjects_opens_until_all_their_keys_are_destroyed(tmp_path):
    vault = Vault(tmp_path / "vault.sqlite")
    record = vault.seal_for(["email:t1", "phone:t2"], '{"text": "call me on 0612345678"}')
    assert record == vault.seal_for(["email:t1", "phone:t2"], '{"text": "call me on 0612345678"}')
    assert b"0612345678" not in record and vault.open(record) == b'{"text": "call me on 0612345678"}'
    vault.destroy(["email:t1"])
    assert vault.open(record) is not None          # still a key of someone it names
    vault.destroy(["phone:t2"])
    assert vault.open(record) is None


def seals_without_waiting(vault: Vault, subject: str, value: str) -> bool:
    """Whether another process (its own connection) seals, creating a key, within 10 s."""
    done = threading.Event()
    other = threading.Thread(target=lambda: (vault.seal(subject, value), done.set()))
    other.start()
    other.join(timeout=10)
    return done.is_set()


def test_an_optimistic_batch_holds_no_lock_and_is_sealed_again_when_another_process_created_a_key_first(tmp_path):
    """Connectors map their batches at the same time: new keys wait in memory and are stored when the batch
    ends. A key that another process stored first wins; the batch learns it (KeyConflict) and seals again."""
    connector, other = Vault(tmp_path / "vault.sqlite"), Vault(tmp_path / "vault.sqlite")
    with pytest.raises(KeyConflict) as conflict:
        with connector.batch(optimistic=True):
            mine = connector.seal("email:t1", "email:ann@x.com")
            assert connector.open(mine) == b"email:ann@x.com"
            # another process, meanwhile: not kept waiting by this batch
            assert seals_without_waiting(other, "email:t1", "email:ann@x.com"), "it waited for this batch's lock"
            kept = connector.seal("email:t2", "email:bob@x.com")
    assert conflict.value.subjects == ["email:t1"]
    assert other.open(mine) is None                      # sealed with the key that lost: it must not leave
    with connector.batch(optimistic=True):               # the batch again: the winner's key this time
        again = connector.seal("email:t1", "email:ann@x.com")
        kept_again = connector.seal("email:t2", "email:bob@x.com")
    assert other.open(again) == b"email:ann@x.com" and again == other.seal("email:t1", "email:ann@x.com")
    assert kept_again == kept and other.open(kept) == b"email:bob@x.com"  # its other new keys were stored


def test_a_batch_that_creates_no_key_takes_no_lock(tmp_path):
    """The worker's batches mostly open and reseal what connectors sealed: they must not stop connectors."""
    worker, connector = Vault(tmp_path / "vault.sqlite"), Vault(tmp_path / "vault.sqlite")
    known = worker.seal("email:t1", "email:ann@x.com")
    with worker.batch():
        assert worker.open(known) == b"email:ann@x.com"
        assert seals_without_waiting(connector, "email:t9", "x"), "a connector waited for a batch that created no key"
        created = worker.seal("customer:c1", "details")    # its first new key: from now on, one writer
    assert connector.open(created) == b"details"


def test_tokens_and_sealed_bytes_are_those_of_hmac_sha256_as_before(tmp_path):
    """The vault hashes with infra.vault.hmac_sha256 (it keeps the GIL); tokens and sealed values must stay the
    bytes hmac.digest gave, or every token already in topics and state would name somebody else."""
    vault = Vault(tmp_path / "vault.sqlite")
    assert vault.token("email:alice@x.com") == hmac.digest(vault.secret, b"email:alice@x.com", "sha256").hex()[:32]
    sealed = vault.seal("email:t1", "email:alice@x.com")
    key = vault._key("email:t1", create=False)
    assert sealed[3 + len("email:t1"):15 + len("email:t1")] == hmac.digest(key, b"email:alice@x.com", "sha256")[:12]
    envelope = vault.seal_for(["email:t1"], "details")
    data_key = hmac.digest(vault.secret, b"data-key|details", "sha256")
    assert vault.open(envelope[2 + 1 + 2:2 + 1 + 2 + int.from_bytes(envelope[3:5], "big")]) == data_key
