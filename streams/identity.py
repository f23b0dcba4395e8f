"""Incremental identity resolution: which customer each event belongs to, as a union-find over
shared strong identifiers, kept in mappings (Faust tables in the worker, dicts in tests).

Mappings (values are plain JSON, replaced rather than mutated, because a Faust table writes its
changelog only on assignment):
- owners:    identifier key ("email:a@b.c")  -> customer id that owns it
- clusters:  customer id -> {"identifiers": [...], "seq": n, "version": n, "separated": [...]}
- aliases:   absorbed customer id -> the id that absorbed it (every id ever issued stays resolvable)
- sightings: identifier key -> customer ids it was seen with, and when (to spot shared identifiers)
- events:    event id -> customer id (a redelivered event changes nothing)
- meta:      "seq" -> next cluster sequence number
- mentions:  order key not seen yet -> {customer known only by social handles who named it: times}, counted
             as votes when the order arrives (a mention may come before its order, in any channel)

Wrong merges are worse than missed ones, so every merge passes guards: blocked placeholder values
never match, an identifier seen with more than `shared_after` distinct customers is demoted to
shared and stops matching, two different values of an exclusive kind (loyalty card, web account)
never end up in one customer, separated customers (after a split) stay apart, and a merge may not
make a customer larger than `max_identifiers`. Refusals and demotions become warnings.

Customer ids are UUIDv5 of the first identifier seen, and the surviving id of a merge is the older
customer, so replaying the same events in the same order gives the same ids.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Callable, MutableMapping

from schemas.identifiers import PERSONAL_KINDS, TOKEN_FORM, Identifier, normalize_all, withheld

CUSTOMER_NAMESPACE = uuid.UUID("2b7d3f4e-9c1a-5e8b-a0f2-6f6d6e696875")
_NAMESPACE_SHA1 = hashlib.sha1(CUSTOMER_NAMESPACE.bytes)
# Strongest first: the identifier that decides whose event it is when signals disagree.
PRIORITY = ("loyalty_id", "web_account", "email", "phone", "social_handle", "order")
# An order belongs to whoever placed it, but is not one of their identifiers (no cap, no split).
UNLISTED_KINDS = ("order",)
# A ticket or message naming an order number ("order_mention") joins the order's customer when
# nothing stronger says otherwise (a social handle seen for the first time does not: below); a mention
# of an order not seen yet claims nothing (it may name a relative's order), so a mention never merges
# two customers known by a contact identifier, whichever arrives first. A customer known only by social
# handles (a name on a platform, no contact detail) whose events name orders of one other customer
# `mention_votes` times is that customer: one mention may be a relative's order, several of the same
# buyer's orders are not. A handle seen for the first time is such a customer from its first message
# (eval_identity.py found it joining a relative when it joined at once).
MENTION_KIND = "order_mention"
# The customer id of an event that names nobody (an unsigned app session, a receipt without a card): no
# customer, no profile. Each one used to be a customer of its own, which counted every anonymous receipt as a
# buyer who never came back, and put it in the best-customer threshold's population.
ANONYMOUS = ""
HANDLE_KINDS = ("social_handle",)


def event_identifiers(event: dict) -> list[dict]:
    """The identifiers a channel event offers for matching: those its connector mapped, plus the
    order it is (a web order) or names (a ticket or message about an order)."""
    identifiers = list(event["identifiers"])
    if event["channel"] == "web" and event["event_type"] == "order":
        identifiers.append({"kind": "order", "value": event["source_id"], "platform": None})
    if event.get("related_order_id"):
        identifiers.append({"kind": "order_mention", "value": event["related_order_id"], "platform": None})
    return identifiers


@dataclass
class IdentityRules:
    default_region: str = "FR"
    phone_fallback_regions: tuple[str, ...] = ("GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF")
    blocked_values: tuple[str, ...] = ("none@none.com", "noemail@noemail.com", "test@test.com", "anonymous", "null",
                                       "none", "n/a", "0000000000", "+33000000000", "1234567890")
    matching_kinds: tuple[str, ...] = PRIORITY            # store terminals are context, never a match
    exclusive_kinds: tuple[str, ...] = ("loyalty_id", "web_account")
    shared_after: int = 3
    shared_window_days: int = 90
    max_identifiers: int = 50
    mention_votes: int = 2                 # 0: a mention never merges


@dataclass
class Merge:
    action: str            # merge | split
    surviving_id: str
    absorbed_id: str       # for a split: the new customer
    identifier: str        # what linked them (merge) or what was moved (split)
    event_id: str | None
    version: int


@dataclass
class Resolution:
    customer_id: str
    identifiers: list[Identifier]
    duplicate: bool = False
    clear: dict[str, str] = field(default_factory=dict)              # token key -> the kind:value it stands for
    merges: list[Merge] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)   # (identifier key or "", reason)
    changed: set[str] = field(default_factory=set)                   # customer ids whose cluster changed
    absorbed: set[str] = field(default_factory=set)


def sealed_at_edge(raw: dict) -> bool:
    """An identifier the connector already read and tokenized (connectors/privacy.py): its value withheld."""
    return bool(raw.get("token") or (raw.get("note") and not raw.get("value")))


def customer_id_for(key: str, salt: str = "") -> str:
    """str(uuid.uuid5(CUSTOMER_NAMESPACE, key + salt)), without building a UUID object: 3.7 -> 1.0 us, and
    a new id is made for every new customer."""
    digest = _NAMESPACE_SHA1.copy()
    digest.update((key + salt).encode())
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50   # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80   # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class IdentityGraph:
    def __init__(self, rules: IdentityRules, owners: MutableMapping, clusters: MutableMapping, aliases: MutableMapping,
                 sightings: MutableMapping, events: MutableMapping, meta: MutableMapping,
                 mentions: MutableMapping | None = None,
                 tokenize: Callable[[str], str] | None = None):
        """tokenize: "kind:value" -> its token; with it, the graph (and so its state and everything it
        publishes) holds personal identifiers only as kind:token."""
        self.rules = rules
        self.tokenize = tokenize
        self.owners, self.clusters, self.aliases = owners, clusters, aliases
        self.sightings, self.events, self.meta = sightings, events, meta
        self.mentions = {} if mentions is None else mentions
        self.blocked = {v.lower() for v in rules.blocked_values}
        self.rank = {kind: i for i, kind in enumerate(PRIORITY)}

    # --- lookups ----------------------------------------------------------------------------

    def current(self, customer_id: str) -> str:
        """The id a customer id resolves to now, through any merges."""
        seen = 0
        while customer_id in self.aliases:
            customer_id = self.aliases[customer_id]
            seen += 1
            if seen > 10_000:
                raise RuntimeError("alias cycle")
        return customer_id

    def owner(self, key: str) -> str | None:
        owner = self.owners.get(key)
        if owner is None:
            return None
        owner = self.current(owner)
        # A worker killed mid-batch can leave an owner entry whose customer never reached the clusters
        # changelog: the identifier is then unowned again, rather than a crash on every later event.
        return owner if self.clusters.get(owner) is not None else None

    def is_shared(self, key: str) -> bool:
        entry = self.sightings.get(key)
        return bool(entry and entry.get("shared"))

    # --- resolution -------------------------------------------------------------------------

    def resolve(self, event_id: str, raw_identifiers: list[dict], at: int | None = None) -> Resolution:
        """The customer of an event; at (epoch ms) is when it happened, for the shared-identifier window."""
        # Identifiers sealed at the connector arrive as tokens (with a note when they could not be read).
        edge = [raw for raw in raw_identifiers if sealed_at_edge(raw)]
        plain = [raw for raw in raw_identifiers if not sealed_at_edge(raw)] if edge else raw_identifiers
        identifiers, dropped = normalize_all(plain, self.rules.default_region, self.blocked,
                                            self.rules.phone_fallback_regions)
        identifiers, clear = self.tokenized(identifiers)
        for raw in edge:
            if raw.get("token"):
                identifiers.append(Identifier(raw["kind"], raw["token"]))
            if raw.get("note"):
                dropped.append(raw["note"])
        if dropped and self.tokenize is not None:  # warnings are read by roles that may not see personal data
            values = [raw["value"] for raw in raw_identifiers] + [text.partition(":")[2] for text in clear.values()]
            dropped = [withheld(note, values) for note in dropped]
        known = self.events.get(event_id)
        if known is not None:
            # A redelivered event keeps the customer id it was first published with, so every copy of it is the
            # same record (consumers and ClickHouse deduplicate on it); identity-merges say what that id means now.
            return Resolution(known, identifiers, duplicate=True, clear=clear)
        own_orders = {i.key for i in identifiers if i.kind == "order"}
        mentions = {f"order:{i.value}" for i in identifiers if i.kind == MENTION_KIND} - own_orders
        identifiers = [Identifier("order", i.value) if i.kind == MENTION_KIND else i for i in identifiers]
        identifiers = list(dict.fromkeys(identifiers))
        result = Resolution("", identifiers, clear=clear)
        result.warnings.extend(("", reason) for reason in dropped)
        # A mention of an order not seen yet claims nothing: it may be a relative's order, whose buyer's own
        # identifiers will say whose it is when it arrives.
        matching = sorted((i for i in identifiers if i.kind in self.rules.matching_kinds and not self.is_shared(i.key)
                           and not (i.key in mentions and self.owner(i.key) is None)),
                          key=lambda i: self.rank.get(i.kind, len(PRIORITY)))
        if not matching:  # anonymous: nothing to match on, so nobody's event (it was a customer of its own)
            self.events[event_id] = result.customer_id = ANONYMOUS
            return result
        # Whose event is it: the owner of its strongest identifier; if that one is new, the owner of a
        # weaker one it does not conflict with (a second email of a known phone); else a new customer.
        strongest = matching[0]
        target = self.owner(strongest.key)
        if target is None:
            for identifier in matching[1:]:
                if identifier.key in mentions and strongest.kind in HANDLE_KINDS:
                    # A new handle whose message names a known order is not thereby its buyer (people write about
                    # relatives' orders): a customer of its own, whose mentions count as votes, as below.
                    continue
                owner = self.owner(identifier.key)
                if owner is not None and self._attach_refusal(owner, strongest) is None:
                    target = owner
                    self._attach(target, strongest)
                    break
            else:
                target = self._new_cluster(strongest)
            result.changed.add(target)
        for identifier in matching:
            owner = self.owner(identifier.key)
            if owner == target:
                continue
            if identifier.key in mentions and owner is not None:
                votes = self._mention_votes(target, owner)
                if not votes or votes < self.rules.mention_votes:   # else merged below, through the same guards as any merge
                    result.warnings.append((identifier.key, f"names an order of {owner} but the event is {target}'s: "
                                                            "a mention does not merge customers" + (
                                                                f" ({votes} of {self.rules.mention_votes} for one known "
                                                                "only by a social handle)" if votes else "")))
                    continue
            if identifier.key in own_orders and owner is not None:
                # An order claimed by a mention before it arrived (state written before mentions stopped
                # claiming): the buyer's own identifiers say whose it is, and the claim merges nobody.
                self.owners[identifier.key] = target
                result.warnings.append((identifier.key, f"was claimed by a mention from {owner} before it arrived; "
                                                        f"it is {target}'s order: a mention does not merge customers"))
                continue
            if owner is None:
                reason = self._attach_refusal(target, identifier)
                if reason is None:
                    self._attach(target, identifier)
                    result.changed.add(target)
                else:
                    result.warnings.append((identifier.key, reason))
                continue
            reason = self._merge_refusal(target, owner)
            if reason is not None:
                result.warnings.append((identifier.key, f"merge of {target} and {owner} refused: {reason}"))
                continue
            survivor, absorbed = self._merge(target, owner)
            version = self.clusters[survivor]["version"]
            result.merges.append(Merge("merge", survivor, absorbed, identifier.key, event_id, version))
            result.changed.add(survivor)
            result.absorbed.add(absorbed)
            result.changed.discard(absorbed)
            target = survivor
        unseen = [key for key in mentions if self.owner(key) is None]
        target = self._count_mentions(target, own_orders, unseen, event_id, result)
        result.customer_id = target
        for identifier in matching:
            self._sight(identifier, target, at, result)
        self.events[event_id] = target
        return result

    def tokenized(self, identifiers: list[Identifier]) -> tuple[list[Identifier], dict[str, str]]:
        """(the identifiers with personal ones as tokens, token key -> kind:value)."""
        if self.tokenize is None:
            return identifiers, {}
        tokenized, clear = [], {}
        for identifier in identifiers:
            if identifier.kind in PERSONAL_KINDS:
                token = Identifier(identifier.kind, self.tokenize(identifier.key))
                clear[token.key] = identifier.key
                identifier = token
            tokenized.append(identifier)
        return tokenized, clear

    def identifier_key(self, text: str) -> str:
        """An operator's "kind:value" (as typed: "email:Alice@X.com ") as the graph keys it; a key already in
        token form (kind:32 hex digits, as the CLI sends it) is taken as is."""
        kind, sep, value = text.partition(":")
        if not sep or not value.strip():
            raise ValueError(f"expected kind:value, got {text!r}")
        if self.tokenize is not None and kind in PERSONAL_KINDS and TOKEN_FORM.fullmatch(value):
            return text
        identifiers, notes = normalize_all([{"kind": kind.strip(), "value": value, "platform": None}],
                                           self.rules.default_region, set(), self.rules.phone_fallback_regions)
        if kind.strip() == "social_handle" and ":" in value:  # platform:handle
            platform, _, handle = value.partition(":")
            identifiers, notes = normalize_all([{"kind": "social_handle", "value": handle, "platform": platform}],
                                               self.rules.default_region, set(), self.rules.phone_fallback_regions)
        if not identifiers:
            raise ValueError(f"{text!r} is not an identifier: {'; '.join(notes)}")
        return self.tokenized(identifiers)[0][0].key

    def _count_mentions(self, target: str, own_orders: set[str], unseen: list[str], event_id: str,
                        result: Resolution) -> str:
        """Mentions of orders not seen yet are kept for customers known only by social handles; when the order
        arrives they count as votes for its buyer, and enough votes merge them (the same guards as any merge).
        Returns the event's customer (the survivor if it merged)."""
        if not self.rules.mention_votes:
            return target
        if unseen and self._handles_only(target):
            for key in unseen:
                named = dict(self.mentions.get(key) or {})
                named[target] = named.get(target, 0) + 1
                self.mentions[key] = named
        for key in own_orders:
            named = self.mentions.get(key)
            if named is None:
                continue
            del self.mentions[key]
            for customer, times in named.items():
                customer = self.current(customer)
                if customer == target or self.clusters.get(customer) is None:
                    continue
                votes = self._mention_votes(customer, target, times)
                if votes < self.rules.mention_votes or self._merge_refusal(target, customer) is not None:
                    continue
                survivor, absorbed = self._merge(target, customer)
                result.merges.append(Merge("merge", survivor, absorbed, key, event_id, self.clusters[survivor]["version"]))
                result.changed.add(survivor)
                result.absorbed.add(absorbed)
                result.changed.discard(absorbed)
                target = survivor
        return target

    def _handles_only(self, customer_id: str) -> bool:
        cluster = self.clusters.get(customer_id)
        return bool(cluster and cluster["identifiers"]) and all(
            key.split(":", 1)[0] in HANDLE_KINDS for key in cluster["identifiers"])

    def _mention_votes(self, target: str, owner: str, times: int = 1) -> int:
        """How many of target's events named an order of owner, counting this one; 0 when target is known by
        anything but social handles (then a mention never merges it)."""
        if not self.rules.mention_votes or not self._handles_only(target):
            return 0
        cluster = self.clusters[target]
        named = {}
        for customer, count in (cluster.get("named") or {}).items():   # owners merged since count as one
            customer = self.current(customer)
            named[customer] = named.get(customer, 0) + count
        named[owner] = named.get(owner, 0) + times
        self.clusters[target] = {**cluster, "named": named}
        return named[owner]

    def _new_cluster(self, first: Identifier) -> str:
        customer_id = customer_id_for(first.key)
        salt = 0
        while customer_id in self.clusters or customer_id in self.aliases:  # the identifier was split off or demoted before
            salt += 1
            customer_id = customer_id_for(first.key, f"#{salt}")
        seq = self.meta.get("seq", 0)
        self.meta["seq"] = seq + 1
        self.clusters[customer_id] = {"identifiers": [], "seq": seq, "version": 1, "separated": []}
        self._attach(customer_id, first)
        return customer_id

    def _attach(self, customer_id: str, identifier: Identifier) -> None:
        if identifier.kind in UNLISTED_KINDS:
            self.owners[identifier.key] = customer_id
            return
        cluster = dict(self.clusters[customer_id])
        cluster["identifiers"] = cluster["identifiers"] + [identifier.key]
        self.clusters[customer_id] = cluster
        self.owners[identifier.key] = customer_id

    def _exclusive_values(self, cluster: dict) -> dict[str, str]:
        values = {}
        for key in cluster["identifiers"]:
            kind = key.split(":", 1)[0]
            if kind in self.rules.exclusive_kinds:
                values[kind] = key
        return values

    def _attach_refusal(self, customer_id: str, identifier: Identifier) -> str | None:
        cluster = self.clusters[customer_id]
        if identifier.kind in self.rules.exclusive_kinds:
            existing = self._exclusive_values(cluster).get(identifier.kind)
            if existing is not None and existing != identifier.key:
                return f"customer {customer_id} already has {existing}; a customer has one {identifier.kind}"
        if identifier.kind not in UNLISTED_KINDS and len(cluster["identifiers"]) + 1 > self.rules.max_identifiers:
            return f"customer {customer_id} would exceed {self.rules.max_identifiers} identifiers"
        return None

    def _merge_refusal(self, a: str, b: str) -> str | None:
        ca, cb = self.clusters[a], self.clusters[b]
        if b in ca.get("separated", []) or a in cb.get("separated", []):
            return "they were split apart by an operator"
        va, vb = self._exclusive_values(ca), self._exclusive_values(cb)
        for kind in set(va) & set(vb):
            if va[kind] != vb[kind]:
                return f"conflicting {kind} ({va[kind]} vs {vb[kind]})"
        size = len(ca["identifiers"]) + len(cb["identifiers"])
        if size > self.rules.max_identifiers:
            return f"the merged customer would have {size} identifiers (cap {self.rules.max_identifiers})"
        return None

    def _merge(self, a: str, b: str) -> tuple[str, str]:
        ca, cb = self.clusters[a], self.clusters[b]
        survivor, absorbed = (a, b) if ca["seq"] <= cb["seq"] else (b, a)
        kept, gone = self.clusters[survivor], self.clusters[absorbed]
        for key in gone["identifiers"]:
            self.owners[key] = survivor
        self.clusters[survivor] = {"identifiers": kept["identifiers"] + gone["identifiers"], "seq": kept["seq"],
                                   "version": kept["version"] + 1,
                                   "separated": sorted(set(kept.get("separated", [])) | set(gone.get("separated", [])))}
        del self.clusters[absorbed]
        self.aliases[absorbed] = survivor
        return survivor, absorbed

    def _sight(self, identifier: Identifier, customer_id: str, at: int | None, result: Resolution) -> None:
        """Count the distinct customers an identifier was seen with in the last shared_window_days;
        past shared_after it is shared for good (a store terminal, a family phone)."""
        entry = self.sightings.get(identifier.key) or {"seen": {}, "shared": False}
        if entry["shared"]:
            return
        at = at or 0
        window = self.rules.shared_window_days * 86_400_000
        seen: dict[str, int] = {}
        for customer, when in entry["seen"].items():
            current = self.current(customer)
            if abs(at - when) <= window:
                seen[current] = max(when, seen.get(current, when))
        if customer_id in seen and at - seen[customer_id] < window // 2:
            return  # known and recent enough: no write (each write is a changelog record)
        seen[customer_id] = max(at, seen.get(customer_id, at))
        shared = len(seen) > self.rules.shared_after
        self.sightings[identifier.key] = {"seen": seen, "shared": shared}
        if shared:
            result.warnings.append((identifier.key, f"seen with {len(seen)} different customers within "
                                                    f"{self.rules.shared_window_days} days (more than "
                                                    f"{self.rules.shared_after}): treated as shared, no longer matches"))

    # --- operator commands --------------------------------------------------------------------

    def split(self, customer_id: str, identifier_keys: list[str], reason: str) -> Resolution:
        """Move identifiers out of a customer into a new one that will not be merged back."""
        customer_id = self.current(customer_id)
        cluster = self.clusters.get(customer_id)
        if cluster is None:
            raise ValueError(f"no customer {customer_id}")
        moving = [key for key in identifier_keys if key in cluster["identifiers"]]
        missing = sorted(set(identifier_keys) - set(moving))
        if missing or not moving:
            raise ValueError(f"customer {customer_id} does not have {', '.join(missing) or 'those identifiers'}")
        if len(moving) == len(cluster["identifiers"]):
            raise ValueError("a split must leave at least one identifier with the customer")
        kind, _, value = moving[0].partition(":")
        new_id = self._new_cluster(Identifier(kind, value))
        for key in moving[1:]:
            self._attach(new_id, Identifier(*key.split(":", 1)))
        remaining = [key for key in cluster["identifiers"] if key not in moving]
        self.clusters[customer_id] = {**cluster, "identifiers": remaining, "version": cluster["version"] + 1,
                                      "separated": sorted(set(cluster.get("separated", [])) | {new_id})}
        self.clusters[new_id] = {**self.clusters[new_id], "separated": [customer_id]}
        result = Resolution(customer_id, [], merges=[Merge("split", customer_id, new_id, ",".join(moving), None,
                                                           cluster["version"] + 1)])
        result.warnings.append((moving[0], f"split from {customer_id} into {new_id}: {reason}"))
        result.changed.update({customer_id, new_id})
        return result

    def forget(self, customer_id: str) -> tuple[str, list[str]]:
        """Erase a customer's identifiers from the graph (a right-to-be-forgotten request): they match
        nobody any more and a returning person starts afresh. Returns (current id, identifiers removed)."""
        customer_id = self.current(customer_id)
        cluster = self.clusters.get(customer_id)
        if cluster is None:
            raise ValueError(f"no customer {customer_id}")
        for key in cluster["identifiers"]:
            if self.owners.get(key) is not None:
                del self.owners[key]
            if self.sightings.get(key) is not None:
                del self.sightings[key]
        self.clusters[customer_id] = {**cluster, "identifiers": [], "version": cluster["version"] + 1, "forgotten": True}
        return customer_id, list(cluster["identifiers"])
