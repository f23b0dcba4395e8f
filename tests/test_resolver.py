"""The resolver without I/O (streams/resolver.py): what one batch or one timer run publishes."""
from __future__ import annotations

from infra.settings import load_settings
from schemas.serde import codec
from streams.resolver import Outputs, Resolver
from streams.state_store import StateStore

DAY_MS = 86_400_000


def order(customer: int, amount_minor: int, day: int = 0) -> dict:
    return {"event_id": f"e-{customer}-{day}", "source_id": f"W-{customer}-{day}", "channel": "web",
            "event_type": "order", "occurred_at": 1_700_000_000_000 + day * DAY_MS, "total_minor": amount_minor,
            "currency": "EUR", "identifiers": [{"kind": "email", "value": f"p{customer}@x.com", "platform": None}],
            "attributes": {}, "lines": []}


def published_profiles(resolver: Resolver, out: Outputs) -> dict[str, dict]:
    decode = codec("customer_profile").decode
    return {send.key.decode(): decode(send.value) for send in resolver.finish(out).sends
            if send.topic == resolver.topics.customer_profiles and send.value is not None}


def test_a_threshold_move_republishes_every_customer_it_flips_and_only_them(tmp_path):
    settings = load_settings(None, data_dir=tmp_path, identity={"best_customer_share": 0.2})
    store = StateStore(tmp_path / "state")
    resolver = Resolver(settings, store)
    out = Outputs()
    for customer in range(10):          # revenues 100, 200, ... 1,000.00: the top 20% is 900.00 and up
        resolver.event(order(customer, (customer + 1) * 10_000), out)
    first = published_profiles(resolver, out)
    assert len(first) == 10 and not any(p["best_customer"] for p in first.values())  # no threshold yet
    store.apply(store.take_delta(), 1)

    out = Outputs()
    resolver.update_best_threshold(out)   # no new event: the segment must still fill
    flipped = published_profiles(resolver, out)
    assert resolver.best_threshold == 90_000
    assert sorted(p["online_revenue_minor"] for p in flipped.values()) == [90_000, 100_000]
    assert all(p["best_customer"] for p in flipped.values())
    store.apply(store.take_delta(), 2)

    out = Outputs()
    resolver.update_best_threshold(out)   # the same threshold flips nobody: nothing to republish
    assert published_profiles(resolver, out) == {}

    out = Outputs()                       # two big buyers, published in under the old threshold...
    resolver.event(order(20, 500_000), out)
    resolver.event(order(21, 400_000), out)
    assert all(p["best_customer"] for p in published_profiles(resolver, out).values())
    store.apply(store.take_delta(), 3)
    out = Outputs()                       # ...raise it (top 20% of 12 is 2): the two earlier members drop out
    resolver.update_best_threshold(out)
    flipped = published_profiles(resolver, out)
    assert resolver.best_threshold == 400_000
    assert {p["online_revenue_minor"]: p["best_customer"] for p in flipped.values()} == {
        90_000: False, 100_000: False}


def test_forgetting_someone_unknown_answers_with_nobody_rather_than_an_error(tmp_path):
    settings = load_settings(None, data_dir=tmp_path)
    resolver = Resolver(settings, StateStore(tmp_path / "state"))
    out = Outputs()
    resolver.event(order(1, 1_000), out)
    decode = codec("customer_erasure").decode
    for command in ({"customer_id": "no-such-customer"}, {"identifier": resolver.graph.identifier_key("email:nobody@x.com")}):
        out = Outputs()
        resolver.command({"command": "forget", "request_id": "r1", **command}, out)
        [(topic, _, value, _)] = out.sends
        answer = decode(value)
        assert topic == settings.topics.customer_erasures and answer["customer_ids"] == [] and answer["request_id"] == "r1"
    out = Outputs()
    resolver.command({"command": "forget", "request_id": "r2", "identifier": resolver.graph.identifier_key("email:p1@x.com")}, out)
    answer = decode([send.value for send in out.sends if send.topic == settings.topics.customer_erasures][0])
    assert answer["customer_ids"] == [resolver.graph.events["e-1-0"]] and answer["identifiers_removed"] == 1


def test_the_best_customer_segment_kept_in_memory_matches_every_profile_after_merges_and_forgetting(tmp_path):
    """The threshold reads each customer's revenue from memory, kept as profiles change; after merges and
    an erasure it must equal what reading every profile again gives."""
    settings = load_settings(None, data_dir=tmp_path, identity={"best_customer_share": 0.2})
    store = StateStore(tmp_path / "state")
    resolver = Resolver(settings, store)
    out = Outputs()
    for customer in range(6):
        resolver.event(order(customer, (customer + 1) * 10_000), out)
    resolver.update_best_threshold(out)          # the segment is built here, then kept
    resolver.finish(out)
    store.apply(store.take_delta(), 1)
    out = Outputs()
    joined = order(1, 70_000, day=1)             # one person: customer 1's email and customer 4's phone...
    joined["identifiers"] = [{"kind": "email", "value": "p1@x.com", "platform": None},
                             {"kind": "loyalty_id", "value": "LC-4", "platform": None}]
    resolver.event(joined, out)
    with_card = order(4, 5_000, day=2)
    with_card["identifiers"].append({"kind": "loyalty_id", "value": "LC-4", "platform": None})
    resolver.event(with_card, out)               # ...customer 4's card: 1 and 4 are one customer now
    resolver.forget({"command": "forget", "customer_id": resolver.graph.owner(resolver.graph.identifier_key("email:p5@x.com")),
                     "reason": "test"}, out)
    resolver.update_best_threshold(out)
    resolver.finish(out)
    store.apply(store.take_delta(), 2)
    kept = resolver.profiles.segment()
    reread = Resolver(settings, store).profiles.segment()
    assert kept == reread
    assert len(kept) == 4                         # six customers, two merged into one, one forgotten


def anonymous_receipt(number: int, amount_minor: int) -> dict:
    """A till receipt without a card: its only identifier is the shared store terminal, which never matches."""
    return {"event_id": f"r-{number}", "source_id": f"R-{number}", "channel": "store", "event_type": "receipt",
            "occurred_at": 1_700_000_000_000, "total_minor": amount_minor, "currency": "EUR",
            "identifiers": [{"kind": "store_terminal", "value": "PARIS-01", "platform": None}], "attributes": {}, "lines": []}


def test_an_event_naming_nobody_is_nobodys_no_profile_and_no_place_in_the_best_customer_threshold(tmp_path):
    settings = load_settings(None, data_dir=tmp_path, identity={"best_customer_share": 0.5})
    store = StateStore(tmp_path / "state")
    resolver = Resolver(settings, store)
    timeline = codec("timeline_event").decode
    out = Outputs()
    for customer in range(2):                       # two known buyers: 100.00 and 200.00
        resolver.event(order(customer, (customer + 1) * 10_000), out)
    for number in range(6):                         # six anonymous receipts, each larger than both
        resolver.event(anonymous_receipt(number, 50_000), out)
    first = [send for send in out.sends if send.topic == resolver.topics.customer_timeline]
    assert len(published_profiles(resolver, out)) == 2     # the buyers' profiles, none for the receipts
    anonymous = {send.key: timeline(send.value)["customer_id"] for send in first[2:]}
    assert anonymous == {f"r-{n}".encode(): "" for n in range(6)}   # keyed by the event: spread over partitions
    store.apply(store.take_delta(), 1)

    out = Outputs()
    resolver.update_best_threshold(out)             # the top half of the two buyers, not of eight "customers"
    assert resolver.best_threshold == 20_000
    assert [p["online_revenue_minor"] for p in published_profiles(resolver, out).values()] == [20_000]

    out = Outputs()                                 # a redelivery: the same record again, still no profile
    resolver.event(anonymous_receipt(3, 50_000), out)
    again = resolver.finish(out).sends
    assert [(s.topic, s.key, s.value) for s in again] == [(s.topic, s.key, s.value) for s in first[5:6]]


def test_a_threshold_move_that_flips_many_republishes_them_a_few_at_a_time(tmp_path):
    """The worker holds the state while it republishes flipped customers: a move across a tie can flip most of
    them, so it takes at most `limit` at once and the rest at the next turns, until none is left."""
    settings = load_settings(None, data_dir=tmp_path, identity={"best_customer_share": 0.5})
    store = StateStore(tmp_path / "state")
    resolver = Resolver(settings, store)
    out = Outputs()
    for customer in range(10):          # revenues 100.00 to 1,000.00: the top half is 600.00 and up
        resolver.event(order(customer, (customer + 1) * 10_000), out)
    published_profiles(resolver, out)
    store.apply(store.take_delta(), 1)
    batches, left = [], None
    while left != 0:
        out = Outputs()
        left = resolver.update_best_threshold(out, limit=2)
        batches.append(published_profiles(resolver, out))
        store.apply(store.take_delta(), 1 + len(batches))
    assert [len(batch) for batch in batches] == [2, 2, 1]
    flipped = {p["online_revenue_minor"]: p["best_customer"] for batch in batches for p in batch.values()}
    assert flipped == {revenue: True for revenue in (60_000, 70_000, 80_000, 90_000, 100_000)}
    out = Outputs()
    assert resolver.update_best_threshold(out, limit=2) == 0 and published_profiles(resolver, out) == {}
