"""A worker upgraded over resolution state that holds identifiers in clear (before they were tokens) keeps
every customer's id, and the old changelog, whose records hold the values, is deleted."""
from __future__ import annotations

import asyncio

import pytest

from infra.kafka import ensure_topics, matching_topics, read_topic
from infra.vault import open_vault
from streams.app import legacy_state_changelog, migrate_state, state_changelog, write_snapshot
from streams.identity import IdentityGraph, IdentityRules
from streams.resolver import Outputs, Resolver
from streams.state_store import StateStore

pytestmark = pytest.mark.integration


def ids(*pairs):
    return [{"kind": kind, "value": value, "platform": None} for kind, value in pairs]


def test_state_with_identifiers_in_clear_is_migrated_keeping_every_customer_id(settings, tmp_path):
    bootstrap = settings.kafka.bootstrap_servers
    legacy = legacy_state_changelog(settings)
    ensure_topics(bootstrap, [legacy], 1, 1)
    # what a worker before tokens wrote: the graph keyed by kind:value, and its changelog
    old = StateStore(tmp_path / "old-state")
    v = old.views
    graph = IdentityGraph(IdentityRules(), v["owners"], v["clusters"], v["aliases"], v["sightings"], v["events"], v["meta"])
    alice = graph.resolve("e1", ids(("email", "alice@x.com"), ("phone", "0612345678"))).customer_id
    bob = graph.resolve("e2", ids(("loyalty_id", "LC-9"))).customer_id
    delta = old.take_delta()
    offset = asyncio.run(write_snapshot(settings, bootstrap, legacy, delta.changes))
    old.apply(delta, offset)
    old.close()

    fresh = StateStore(tmp_path / "state")   # a new machine: everything comes from the old changelog
    report = asyncio.run(migrate_state(settings, bootstrap, fresh))
    assert report["customers"] == 2 and report["old_changelog_deleted"]
    assert not matching_topics(bootstrap, f"^{legacy}$")
    assert asyncio.run(migrate_state(settings, bootstrap, fresh)) is None   # once

    records = asyncio.run(read_topic(settings, bootstrap, state_changelog(settings)))
    import lz4.frame
    text = b"".join(lz4.frame.decompress(r.value) for r in records)
    assert b"alice" not in text and b"612345678" not in text and b"LC-9" not in text

    resolver = Resolver(settings, fresh)
    out = Outputs()
    resolver.event({"event_id": "e3", "source_id": "W-3", "channel": "web", "event_type": "order",
                    "occurred_at": 1_700_000_000_000, "total_minor": 100, "currency": "EUR", "attributes": {},
                    "lines": [], "identifiers": ids(("email", " ALICE@x.com"))}, out)
    resolver.event({"event_id": "e4", "source_id": "R-4", "channel": "store", "event_type": "receipt",
                    "occurred_at": 1_700_000_000_000, "total_minor": 100, "currency": "EUR", "attributes": {},
                    "lines": [], "identifiers": ids(("loyalty_id", "lc-9"))}, out)
    assert [resolver.graph.events[e] for e in ("e3", "e4")] == [alice, bob]   # the same people, the same ids
    vault = open_vault(settings)
    sealed = [bytes.fromhex(s) for s in fresh.views["sealed"].pending.values()] + \
             [bytes.fromhex(s) for _, s in fresh.views["sealed"].items()]
    assert {vault.open(s) for s in sealed} >= {b"email:alice@x.com", b"phone:+33612345678", b"loyalty_id:LC-9"}
