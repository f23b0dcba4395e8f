"""The key vault (infra/vault.py): keyed hashes, sealing, and erasure by destroying keys, across processes."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from infra import vault as vault_module
from infra.vault import Vault


def test_tokens_are_keyed_and_the_same_in_every_process(tmp_path):
    path = tmp_path / "vault.sqlite"
    here = Vault(path)
    token = here.token("phone:+33612345678")
    other = subprocess.run([sys.executable, "-c", f"from infra.vault import Vault; print(Vault({str(path)!r}).token('phone:+33612345678'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert other == token
    assert token != hashlib.sha256(b"phone:+33612345678").hexdigest()[:32]   # not a dictionary-testable hash
    assert Vault(tmp_path / "another.sqlite").token("phone:+33612345678") != token  # another hub, another secret


def test_sealed_values_open_until_their_key_is_destroyed_in_any_process(tmp_path, monkeypatch):
    monkeypatch.setattr(vault_module, "CACHE_CHECK_SECONDS", 0.0)
    worker, sink = Vault(tmp_path / "vault.sqlite"), Vault(tmp_path / "vault.sqlite")
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
