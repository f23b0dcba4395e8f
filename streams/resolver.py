"""Resolution without I/O: channel events and operator commands in, the records to publish out.

A Resolver works on the state store's views (streams/state_store.py); what it decides is written by a
Checkpoint (streams/checkpoint.py). One Outputs collects a batch's records, and the customers whose
profile changed, so each profile is published once per batch.
"""
from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import NamedTuple

import orjson

from infra.settings import Settings
from infra.vault import open_vault
from schemas.identifiers import PERSONAL_KINDS
from schemas.models import dead_letter
from schemas.serde import codec
from streams import profiles as profile_state
from streams.identity import ANONYMOUS, IdentityGraph, IdentityRules, Resolution, event_identifiers
from streams.state_store import StateStore

log = logging.getLogger(__name__)

TIMELINE_KINDS_EXCLUDED = ("order", "order_mention")  # derived for matching, not identifiers of the person
PAYLOAD_FIELDS = ("lines", "shipping_cost_minor", "discount_minor", "campaign", "related_order_id", "status")
# What people wrote and the channel's details may name or locate the person: sealed under the customer's key.
SEALED_FIELDS = ("text", "attributes")


def identity_rules(settings: Settings) -> IdentityRules:
    s = settings.identity
    return IdentityRules(default_region=s.default_region, phone_fallback_regions=tuple(s.phone_fallback_regions),
                         blocked_values=tuple(s.blocked_values),
                         exclusive_kinds=tuple(s.exclusive_kinds), shared_after=s.shared_after,
                         shared_window_days=s.shared_window_days,
                         max_identifiers=s.max_identifiers, mention_votes=s.mention_votes)


class Send(NamedTuple):
    """One record to publish. timestamp_ms None: the producer's clock. A timeline record carries its channel
    record's timestamp (when the connector accepted the event), as Kafka Streams passes an input's timestamp
    on: the sink tells a backlog from it (sinks/clickhouse_sink.py)."""
    topic: str
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


@dataclass
class Outputs:
    """What one batch publishes, in order, and the customers whose profile changed."""
    sends: list[Send] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    absorbed: set[str] = field(default_factory=set)


class ProfilesView(MutableMapping):
    """The profiles view, and each customer's 12-month revenue and published best-customer flag kept beside it
    once first asked for: the best-customer threshold then sorts an in-memory list (8 ms for 100,000
    customers) instead of reading every profile from RocksDB (1.7 s, holding resolution, every 30 s;
    tests/benchmarks/bench_state_reads.py). The
    revenue depends only on the profile (its orders up to its own last activity), so it stays exact. A write
    only marks the customer (summing the revenue at every write cost 9% of the worker at 1,000,000 events,
    where heavy buyers keep 200 orders); publishing the profile, which sums it once anyway, then hands the
    segment that revenue (published()), and the threshold sums again only what changed unpublished."""

    def __init__(self, view):
        self.view = view
        self.get = view.get   # reads are the hot path (several an event): the view's own, without a frame of ours
        self._segment: dict[str, tuple[int, bool]] | None = None
        self._changed: set[str] = set()

    def segment(self) -> dict[str, tuple[int, bool]]:
        """customer id -> (12-month revenue, published as a best customer)."""
        if self._segment is None:
            self._segment = {customer_id: (profile_state.revenue_12_months(p), p.get("best", False))
                             for customer_id, p in self.view.items() if p}
            self._changed = self.view.unwritten_keys()  # not in RocksDB yet: items() did not list them
        for customer_id in self._changed:
            if p := self.view.get(customer_id):
                self._segment[customer_id] = (profile_state.revenue_12_months(p), p.get("best", False))
            else:
                self._segment.pop(customer_id, None)
        self._changed = set()
        return self._segment

    def published(self, customer_id: str, revenue: int, best: bool) -> None:
        """The 12-month revenue and best-customer flag just published for a customer's current profile:
        the segment takes them as they are, rather than summing the revenue again at the next threshold
        (3% of the worker in a 200,000-event load, for every customer a batch changed)."""
        if self._segment is not None:
            self._segment[customer_id] = (revenue, best)
            self._changed.discard(customer_id)

    def __getitem__(self, key):
        return self.view[key]

    def __contains__(self, key) -> bool:
        return key in self.view

    def __setitem__(self, key, profile) -> None:
        self.view[key] = profile
        if self._segment is not None:
            self._changed.add(key)

    def __delitem__(self, key) -> None:
        del self.view[key]
        if self._segment is not None:
            self._changed.add(key)

    def __iter__(self):
        return iter(self.view)

    def __len__(self) -> int:
        return len(self.view)

    def items(self):  # type: ignore[override]
        return self.view.items()


class Resolver:
    def __init__(self, settings: Settings, store: StateStore):
        self.settings = settings
        self.topics = topics = settings.topics
        views = store.views
        self.profiles = ProfilesView(views["profiles"])
        self.sealed = views["sealed"]          # identifier token key -> its kind:value sealed under its own key
        self.vault = open_vault(settings)
        self.vault.read_ahead = True   # it opens what people wrote to the support desk and on social media: keys in bulk
        self.graph = IdentityGraph(identity_rules(settings), views["owners"], views["clusters"], views["aliases"],
                                   views["sightings"], views["events"], views["meta"], views["mentions"],
                                   tokenize=lru_cache(maxsize=500_000)(self.vault.token))
        registry = settings.schemas.registry_url
        self.codecs = {name: codec(name, registry, topic) for name, topic in (
            ("timeline_event", topics.customer_timeline),
            ("identity_merge", topics.identity_merges), ("identity_warning", topics.identity_warnings),
            ("customer_profile", topics.customer_profiles), ("customer_erasure", topics.customer_erasures),
            ("dead_letter", topics.dead_letters))}
        self.codecs["channel_event"] = codec("channel_event", registry, timestamps_as_millis=True)
        self.best_threshold: int | None = None

    @staticmethod
    def now() -> datetime:
        return datetime.now(timezone.utc)

    # --- per record ---------------------------------------------------------------------------

    def channel_record(self, value: bytes, topic: str, partition: int, offset: int, out: Outputs,
                       timestamp_ms: int | None = None) -> None:
        """One channel topic record (timestamp_ms: its Kafka timestamp); a record that cannot be resolved goes
        to dead letters with the reason."""
        try:
            self.event(self.codecs["channel_event"].decode(value), out, timestamp_ms)
        except Exception as error:  # a bad record must not stop resolution
            self.dead_letter(error, value, topic, partition, offset, out)

    def dead_letter(self, error: Exception, value: bytes, topic: str, partition: int, offset: int, out: Outputs) -> None:
        log.warning("dead-lettering %s partition %d offset %d: %s", topic, partition, offset, error)
        out.sends.append(Send(self.topics.dead_letters, None, self.codecs["dead_letter"].encode(dead_letter(
            "streams:resolve-customers", topic, f"partition {partition} offset {offset}", error, value))))

    def event(self, event: dict, out: Outputs, accepted_ms: int | None = None) -> None:
        result = self.graph.resolve(event["event_id"], event_identifiers(event), profile_state.millis(event["occurred_at"]))
        customer_id = result.customer_id
        if result.duplicate:  # a redelivered event changes no state; its profile is published again: the worker
            if customer_id != ANONYMOUS:  # may have stopped after the state, before the outputs
                out.changed.add(self.graph.current(customer_id))
        else:
            self._changes(result, out)
            if customer_id != ANONYMOUS:  # nobody's event folds into no profile
                self.profiles[customer_id] = profile_state.fold(self.profiles.get(customer_id)
                                                                or profile_state.empty(customer_id), self.readable(event))
                out.changed.add(customer_id)
        payload = {name: event[name] for name in PAYLOAD_FIELDS if event.get(name) not in (None, [], {})}
        given = {f"{raw['kind']}:{raw['token']}": raw["sealed"] for raw in event["identifiers"]  # sealed at the connector
                 if raw.get("token") and raw.get("sealed")}
        details = {name: event[name] for name in SEALED_FIELDS if event.get(name) not in (None, [], {})}
        sealed_details = event.get("sealed_personal")  # sealed at the connector: passed on as it came
        if sealed_details is None and details:
            if any(i.kind in PERSONAL_KINDS for i in result.identifiers):  # a record from before the connectors sealed
                owner = f"customer:{customer_id}" if customer_id != ANONYMOUS else f"event:{event['event_id']}"
                sealed_details = self.vault.seal(owner, orjson.dumps(details))
            else:  # it names nobody (an anonymous app session): no one to forget, as readable as its source
                payload.update(details)
        timeline = {
            "event_id": event["event_id"], "event_time": event["occurred_at"], "channel": event["channel"],
            "event_type": event["event_type"], "customer_id": customer_id, "source_id": event["source_id"],
            "identifiers": [{"kind": i.kind, "value": i.value, "sealed": self.sealed_identifier(i.key, result.clear, given)}
                            for i in result.identifiers if i.kind not in TIMELINE_KINDS_EXCLUDED],
            "amount_minor": event["total_minor"], "currency": event["currency"],
            # orjson: the same compact UTF-8 JSON as json.dumps(separators=(",", ":"), ensure_ascii=False), 5x faster
            "payload_json": orjson.dumps(payload).decode(),
            "sealed_details": sealed_details,
        }
        # Keyed by customer, so a customer's events stay in order; nobody's event by its own id, so redeliveries
        # share a partition and anonymous events spread over all of them.
        key = customer_id if customer_id != ANONYMOUS else event["event_id"]
        out.sends.append(Send(self.topics.customer_timeline, key.encode(), self.codecs["timeline_event"].encode(timeline),
                              accepted_ms))

    def readable(self, event: dict) -> dict:
        """The event with what the person wrote opened, where the profile reads it (sentiment, contact channel):
        sealed as it came, on the timeline too, the keys of the identifiers it names open it until the person is
        forgotten. Opened only for a profile (not for a redelivery, nor for nobody's event): an envelope costs about
        10 us to open."""
        if not (event.get("sealed_personal") and event["channel"] in profile_state.READS_PERSONAL):
            return event
        opened = self.vault.open(event["sealed_personal"])
        personal = orjson.loads(opened) if opened is not None else {}
        return {**event, "text": personal.get("text"), "attributes": personal.get("attributes") or {}}

    def sealed_identifier(self, key: str, clear: dict[str, str], given: dict[str, bytes]) -> bytes | None:
        """An identifier's kind:value sealed under its own key: as the connector sealed it (given), else sealed
        here from its clear value (a record from before the connectors sealed). Kept in the state once, so
        profiles can be published again without the value; None for what is not personal (store terminals)."""
        sealed = given.get(key)
        if sealed is not None:
            if key not in self.sealed:
                self.sealed[key] = sealed.hex()
            return sealed
        sealed = self.sealed.get(key)
        if sealed is None:
            value = clear.get(key)
            if value is None:
                return None
            sealed = self.vault.seal(key, value)
            self.sealed[key] = sealed.hex()
            return sealed
        return bytes.fromhex(sealed)

    def command(self, command: dict, out: Outputs) -> None:
        """An operator's split or forget (from identity-commands); raises ValueError for a wrong one."""
        if command.get("command") == "forget":
            self.forget(command, out)
            return
        if command.get("command") != "split":
            raise ValueError(f"unknown command {command.get('command')!r} (known: split, forget)")
        keys = [self.graph.identifier_key(text) for text in command["identifiers"]]
        result = self.graph.split(command["customer_id"], keys, command.get("reason") or "operator")
        for merge in result.merges:
            self.profiles[merge.absorbed_id] = profile_state.empty(merge.absorbed_id)
        self._changes(result, out)

    def forget(self, command: dict, out: Outputs) -> None:
        """Erase a person: their identifiers leave the graph, and the keys of their identifiers and of every
        customer id they had are destroyed, so every sealed copy (timeline, profiles, changelog, anyone's
        backup) is unreadable; the erasure says what downstream must delete. A request names a customer id
        or an identifier's token key (the CLI tokenizes it: the command topic never carries the value)."""
        identifier = command.get("identifier")
        named = self.graph.owner(identifier) if identifier else command["customer_id"]
        known = named is not None and self.graph.clusters.get(self.graph.current(named)) is not None
        if not known:  # nobody by that name: an identifier's key goes anyway, in case anything was sealed under it
            if identifier:
                self.vault.destroy([identifier])
            self._erasure(command, "", [], [identifier] if identifier else [], 0, out)
            return
        customer_id, removed = self.graph.forget(named)
        profile = self.profiles.get(customer_id) or profile_state.empty(customer_id)
        if customer_id in self.profiles:
            del self.profiles[customer_id]
        for key in removed:
            if key in self.sealed:
                del self.sealed[key]
        ids = sorted({customer_id, named, *profile["merged_ids"]})
        self.vault.destroy([*removed, *(f"customer:{i}" for i in ids)])
        self._erasure(command, customer_id, ids, removed, len(removed), out)
        out.absorbed.add(customer_id)  # a tombstone on customer-profiles
        out.changed.discard(customer_id)

    def _erasure(self, command: dict, customer_id: str, ids: list[str], tokens: list[str], removed: int,
                 out: Outputs) -> None:
        """The answer on customer-erasures: what downstream must delete, and which request it answers."""
        out.sends.append(Send(self.topics.customer_erasures, customer_id.encode() or None, self.codecs["customer_erasure"].encode(
            {"customer_id": customer_id, "customer_ids": ids, "identifiers_removed": removed, "identifier_tokens": tokens,
             "reason": command.get("reason") or "erasure request", "at": self.now(),
             "request_id": command.get("request_id")})))

    def _changes(self, result: Resolution, out: Outputs) -> None:
        for merge in result.merges:
            if merge.action == "merge":
                kept = self.profiles.get(merge.surviving_id) or profile_state.empty(merge.surviving_id)
                gone = self.profiles.get(merge.absorbed_id) or profile_state.empty(merge.absorbed_id)
                self.profiles[merge.surviving_id] = profile_state.merge(kept, gone)
                if merge.absorbed_id in self.profiles:
                    del self.profiles[merge.absorbed_id]
            out.sends.append(Send(self.topics.identity_merges, merge.surviving_id.encode(),
                                  self.codecs["identity_merge"].encode({**merge.__dict__, "at": self.now()})))
        for identifier, reason in result.warnings:
            out.sends.append(Send(self.topics.identity_warnings, identifier.encode() or None,
                                  self.codecs["identity_warning"].encode(
                                      {"identifier": identifier, "customer_id": result.customer_id or None, "event_id": None,
                                       "reason": reason, "at": self.now()})))
        out.changed |= result.changed
        out.absorbed |= result.absorbed

    # --- per batch ----------------------------------------------------------------------------

    def finish(self, out: Outputs) -> Outputs:
        """Add each changed customer's profile once, and a tombstone for each id merged away or forgotten."""
        for customer_id in sorted(out.changed - out.absorbed):
            record = self.profile_record(customer_id)
            if record is not None:
                out.sends.append(Send(self.topics.customer_profiles, customer_id.encode(), record))
        for customer_id in sorted(out.absorbed):
            out.sends.append(Send(self.topics.customer_profiles, customer_id.encode(), None))
        return out

    def profile_record(self, customer_id: str) -> bytes | None:
        cluster = self.graph.clusters.get(customer_id)
        profile = self.profiles.get(customer_id)
        if profile is None:
            return None
        identifiers = cluster["identifiers"] if cluster else []
        yearly = profile_state.revenue_12_months(profile)
        record = profile_state.to_avro(profile, identifiers, cluster["version"] if cluster else 1,
                                       self.settings.identity.repurchase_days, self.best_threshold, yearly)
        record["sealed_identifiers"] = [bytes.fromhex(sealed) for key in identifiers
                                        if (sealed := self.sealed.get(key)) is not None]
        if record["best_customer"] != profile.get("best", False):
            # What was published is kept, so a threshold move republishes exactly the customers it flips
            self.profiles[customer_id] = {**profile, "best": record["best_customer"]}
        self.profiles.published(customer_id, yearly, record["best_customer"])
        return self.codecs["customer_profile"].encode(record)

    def update_best_threshold(self, out: Outputs, limit: int | None = None) -> int:
        """The 12-month revenue that puts a customer in the best-customer segment, from all profiles; each
        customer whose published membership the new threshold flips is marked changed in out (republished), at
        most `limit` of them. Returns how many flipped customers were left for a later call."""
        segment = self.profiles.segment()
        revenues = sorted((revenue for revenue, _ in segment.values() if revenue > 0), reverse=True)
        if not revenues:
            return 0
        index = max(0, int(len(revenues) * self.settings.identity.best_customer_share) - 1)
        self.best_threshold = threshold = revenues[index]
        flipped = [customer_id for customer_id, (revenue, best) in segment.items()
                   if (revenue > 0 and revenue >= threshold) != best]
        out.changed.update(flipped[:limit])
        return 0 if limit is None else max(0, len(flipped) - limit)
