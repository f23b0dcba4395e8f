"""Identity resolution rules on hand-made events: merges, every guard, splits, redelivery."""
from __future__ import annotations

import pytest

from schemas.identifiers import normalize_email, normalize_phone, normalize_phone_noted
from streams.identity import ANONYMOUS, IdentityGraph, IdentityRules, customer_id_for, event_identifiers


def graph(**rules) -> IdentityGraph:
    return IdentityGraph(IdentityRules(**rules), {}, {}, {}, {}, {}, {})


def ids(*pairs: tuple[str, str]) -> list[dict]:
    return [{"kind": kind, "value": value, "platform": "facebook" if kind == "social_handle" else None}
            for kind, value in pairs]


def test_normalization_makes_one_person_s_identifiers_equal():
    assert normalize_email(" Alice.Martin@Example.COM ") == "alice.martin@example.com"
    assert normalize_email("a.l.i.c.e+promo@googlemail.com") == "alice@gmail.com"   # dots and tags only where safe
    assert normalize_email("a.lice+x@example.com") == "a.lice+x@example.com"
    forms = ["06 12 34 56 78", "0612345678", "+33 6 12 34 56 78", "+33612345678", "0033612345678"]
    assert {normalize_phone(f, "FR") for f in forms} == {"+33612345678"}
    for bad in ("0000000000", "0700000000", "12", "phone"):
        with pytest.raises(ValueError):
            normalize_phone(bad, "FR", OVERSEAS)


OVERSEAS = ("GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF")


def test_a_plausible_phone_that_fails_strict_validation_still_matches_with_a_warning():
    # French overseas mobiles typed at a till without their country code are invalid for FR
    assert normalize_phone_noted("0690 12 34 56", "FR", OVERSEAS) == (
        "+590690123456", "phone '0690 12 34 56' is not a valid FR number; matched as +590690123456")
    assert normalize_phone("+590 690 12 34 56", "FR", OVERSEAS) == "+590690123456"   # the same person, typed in full
    assert normalize_phone("0639 40 12 34", "FR", OVERSEAS) == "+262639401234"   # Mayotte (RE and YT share +262)
    kept, note = normalize_phone_noted("0890 12 34 5", "FR", OVERSEAS)          # possible, valid nowhere near
    assert kept.startswith("+33") and "fails strict validation but is a possible number" in note
    g = graph()
    first = g.resolve("e1", ids(("phone", "0690123456"), ("email", "lea@x.com")))
    assert first.warnings == [("", "phone '0690123456' is not a valid FR number; matched as +590690123456")]
    second = g.resolve("e2", ids(("phone", "+590690123456")))
    assert second.customer_id == first.customer_id
    assert not g.resolve("e3", ids(("phone", "0000000000"))).identifiers               # placeholders stay blocked


def test_a_shared_identifier_merges_and_the_older_id_survives():
    g = graph()
    first = g.resolve("e1", ids(("email", "Alice@x.com"))).customer_id
    assert first == customer_id_for("email:alice@x.com")
    second = g.resolve("e2", ids(("phone", "0612345678"))).customer_id
    linking = g.resolve("e3", ids(("email", " alice@X.com"), ("phone", "+33 6 12 34 56 78")))
    assert linking.customer_id == first
    [merge] = linking.merges
    assert (merge.surviving_id, merge.absorbed_id, merge.identifier, merge.event_id) == (first, second, "phone:+33612345678", "e3")
    assert g.current(second) == first            # every id ever issued still resolves
    assert g.resolve("e4", ids(("phone", "0612345678"))).customer_id == first


def test_placeholders_and_invalid_values_never_match():
    g = graph()
    a = g.resolve("e1", ids(("email", "none@none.com"), ("phone", "0000000000"), ("web_account", "A-1")))
    b = g.resolve("e2", ids(("email", "NONE@none.com"), ("phone", "0000000000"), ("web_account", "A-2")))
    assert a.customer_id != b.customer_id and not b.merges
    reasons = " | ".join(reason for _, reason in b.warnings)
    assert "blocked placeholder" in reasons and "not a valid phone number" in reasons


def test_store_terminals_are_context_not_identity():
    g = graph()
    customers = {g.resolve(f"e{i}", ids(("loyalty_id", f"LC-{i}"), ("store_terminal", "PAR-01:T3"))).customer_id
                 for i in range(20)}
    assert len(customers) == 20


def test_conflicting_loyalty_cards_refuse_the_merge_and_the_phone_becomes_shared():
    g = graph(shared_after=2)
    family = [g.resolve(f"e{i}", ids(("loyalty_id", f"LC-{i}"), ("phone", "0612345678"))) for i in range(4)]
    assert len({r.customer_id for r in family}) == 4                      # never fused
    assert any("conflicting loyalty_id" in reason for r in family for _, reason in r.warnings)
    assert any("treated as shared" in reason for r in family for _, reason in r.warnings)
    assert g.is_shared("phone:+33612345678")
    # a shared phone no longer pulls anyone in
    assert g.resolve("e9", ids(("phone", "0612345678"), ("email", "x@y.z"))).customer_id == customer_id_for("email:x@y.z")


def test_a_merge_that_would_exceed_the_cap_is_refused():
    g = graph(max_identifiers=3)
    a = g.resolve("e1", ids(("email", "a@x.com"), ("phone", "0611111111"))).customer_id
    b = g.resolve("e2", ids(("email", "b@x.com"), ("phone", "0622222222"))).customer_id
    result = g.resolve("e3", ids(("email", "a@x.com"), ("email", "b@x.com")))
    assert result.customer_id == a and not result.merges and g.current(b) == b
    assert any("cap 3" in reason for _, reason in result.warnings)


def test_an_order_mention_joins_the_buyer_but_never_merges_two_known_customers():
    g = graph()
    buyer = g.resolve("o1", event_identifiers({"channel": "web", "event_type": "order", "source_id": "W-1",
                                                "identifiers": ids(("email", "a@x.com"))})).customer_id
    ticket = g.resolve("t1", event_identifiers({"channel": "support", "event_type": "ticket_update", "source_id": "T-1",
                                                 "related_order_id": "W-1", "identifiers": ids(("phone", "0612345678"))}))
    assert ticket.customer_id == buyer and not ticket.merges   # a new phone on a ticket naming the order: the buyer's
    other = g.resolve("s2", ids(("social_handle", "bob"))).customer_id
    again = g.resolve("s3", event_identifiers({"channel": "social", "event_type": "social_post", "source_id": "fb:3",
                                                "related_order_id": "W-1", "identifiers": ids(("social_handle", "bob"))}))
    assert again.customer_id == other and not again.merges
    assert any("does not merge" in reason for _, reason in again.warnings)


def order_event(event_id: str, order_id: str, *pairs) -> list[dict]:
    return event_identifiers({"channel": "web", "event_type": "order", "source_id": order_id, "identifiers": ids(*pairs)})


def mention_event(handle: str, order_id: str) -> list[dict]:
    return event_identifiers({"channel": "social", "event_type": "social_post", "source_id": f"fb:{handle}",
                              "related_order_id": order_id, "identifiers": ids(("social_handle", handle))})


def test_a_mention_arriving_before_its_order_never_merges_two_known_customers():
    g = graph()
    buyer = g.resolve("o0", order_event("o0", "W-0", ("email", "a@x.com"))).customer_id
    bob = g.resolve("s1", mention_event("bob", "W-1"))      # names an order not seen yet: claims nothing
    assert not bob.merges and bob.customer_id != buyer and g.owner("order:W-1") is None
    order = g.resolve("o1", order_event("o1", "W-1", ("email", "a@x.com")))   # ...which is a's, known by email
    assert order.customer_id == buyer and not order.merges and g.owner("order:W-1") == buyer
    later = g.resolve("s2", mention_event("carol", "W-1"))  # a new handle naming it: maybe a relative, a vote only
    assert later.customer_id not in (buyer, bob.customer_id) and not later.merges
    assert any("1 of 2" in reason for _, reason in later.warnings)
    # a buyer nobody knew yet stays apart from whoever named the order first (a relative, perhaps)
    dave = g.resolve("s3", mention_event("dave", "W-2")).customer_id
    new_buyer = g.resolve("o2", order_event("o2", "W-2", ("email", "d@x.com")))
    assert new_buyer.customer_id != dave and not new_buyer.merges
    assert {g.current(c) for c in (bob.customer_id, dave)} == {bob.customer_id, dave}   # never merged into anyone
    # a mention that is the event's only identifier: an anonymous event until the order is known
    lone = g.resolve("t1", event_identifiers({"channel": "support", "event_type": "ticket_update", "source_id": "T-1",
                                              "related_order_id": "W-3", "identifiers": []}))
    assert lone.customer_id == ANONYMOUS and g.owner("order:W-3") is None


def test_a_handle_naming_one_buyers_orders_twice_joins_that_buyer():
    g = graph()
    buyer = g.resolve("o1", order_event("o1", "W-1", ("email", "a@x.com"))).customer_id
    g.resolve("o2", order_event("o2", "W-2", ("email", "a@x.com")))
    other = g.resolve("o3", order_event("o3", "W-3", ("email", "b@x.com"))).customer_id
    handle = g.resolve("s0", ids(("social_handle", "al"))).customer_id        # a post naming no order
    first = g.resolve("s1", mention_event("al", "W-1"))                         # one mention: maybe a relative's
    assert first.customer_id == handle and not first.merges
    assert any("1 of 2" in reason for _, reason in first.warnings)
    elsewhere = g.resolve("s2", mention_event("al", "W-3"))                     # another buyer's order: its own count
    assert elsewhere.customer_id == handle and not elsewhere.merges
    second = g.resolve("s3", mention_event("al", "W-2"))                        # a second of a's orders: a is al
    [merge] = second.merges
    assert {merge.surviving_id, merge.absorbed_id} == {buyer, handle} and merge.identifier == "order:W-2"
    assert g.current(handle) == g.current(buyer) == second.customer_id and g.current(other) == other
    assert "named" not in g.clusters[second.customer_id]


def test_mentions_count_whichever_arrives_first_the_mention_or_the_order():
    g = graph()
    al = g.resolve("s1", mention_event("al", "W-1")).customer_id               # names orders not placed yet
    g.resolve("s2", mention_event("al", "W-2"))
    bo = g.resolve("s3", mention_event("bo", "W-2")).customer_id               # once only
    buyer = g.resolve("o1", order_event("o1", "W-1", ("email", "a@x.com")))
    assert not buyer.merges and g.current(al) == al                            # one vote so far
    second = g.resolve("o2", order_event("o2", "W-2", ("email", "a@x.com")))
    [merge] = second.merges
    assert {merge.surviving_id, merge.absorbed_id} == {buyer.customer_id, al} and merge.identifier == "order:W-2"
    assert g.current(al) == g.current(buyer.customer_id) == second.customer_id
    assert g.current(bo) == bo and g.mentions == {}
    # one mention before its order and one after it add up too
    cy = g.resolve("s4", mention_event("cy", "W-5")).customer_id
    g.resolve("o5", order_event("o5", "W-5", ("email", "c@x.com")))
    g.resolve("o6", order_event("o6", "W-6", ("email", "c@x.com")))
    after = g.resolve("s5", mention_event("cy", "W-6"))
    assert len(after.merges) == 1 and g.current(cy) == after.customer_id == g.owner("email:c@x.com")


def test_a_customer_known_by_a_contact_identifier_is_never_merged_by_mentions():
    g = graph()
    buyer = g.resolve("o1", order_event("o1", "W-1", ("email", "a@x.com"))).customer_id
    g.resolve("o2", order_event("o2", "W-2", ("email", "a@x.com")))
    bob = g.resolve("s0", ids(("social_handle", "bob"), ("email", "bob@x.com"))).customer_id
    for n, order in enumerate(["W-1", "W-2", "W-1"]):
        again = g.resolve(f"s{n + 1}", mention_event("bob", order))
        assert again.customer_id == bob and not again.merges
    assert g.current(bob) == bob != g.current(buyer)
    off = graph(mention_votes=0)                                                 # the rule switched off
    off.resolve("o1", order_event("o1", "W-1", ("email", "a@x.com")))
    al = off.resolve("s0", ids(("social_handle", "al"))).customer_id
    assert all(not off.resolve(f"s{n}", mention_event("al", "W-1")).merges for n in range(1, 4))
    assert off.current(al) == al


def test_an_order_claimed_by_a_mention_in_older_state_goes_back_to_its_buyer():
    g = graph()
    buyer = g.resolve("o0", order_event("o0", "W-0", ("email", "a@x.com"))).customer_id
    bob = g.resolve("s1", ids(("social_handle", "bob"))).customer_id
    g.owners["order:W-1"] = bob                              # what a mention claimed before this change
    order = g.resolve("o1", order_event("o1", "W-1", ("email", "a@x.com")))
    assert order.customer_id == buyer and not order.merges and g.owner("order:W-1") == buyer
    assert any("claimed by a mention" in reason for _, reason in order.warnings)


def test_split_separates_for_good_and_redelivery_changes_nothing():
    g = graph()
    a = g.resolve("e1", ids(("email", "a@x.com"), ("phone", "0612345678"))).customer_id
    g.resolve("e2", ids(("email", "b@x.com"), ("phone", "0612345678")))   # a family phone fused two people
    assert set(g.clusters[a]["identifiers"]) == {"email:a@x.com", "phone:+33612345678", "email:b@x.com"}
    split = g.split(a, ["email:b@x.com"], "wrong merge: a family phone")
    [event] = split.merges
    new = event.absorbed_id
    assert (event.action, event.surviving_id) == ("split", a) and g.owner("email:b@x.com") == new
    again = g.resolve("e3", ids(("email", "b@x.com"), ("phone", "0612345678")))
    assert again.customer_id == new and not again.merges                 # kept apart
    assert any("split apart by an operator" in reason for _, reason in again.warnings)
    before = {name: dict(table) for name, table in (("owners", g.owners), ("clusters", g.clusters), ("sightings", g.sightings))}
    repeat = g.resolve("e3", ids(("email", "b@x.com"), ("phone", "0612345678")))
    assert repeat.duplicate and repeat.customer_id == new and not repeat.merges and not repeat.warnings
    assert before == {name: dict(table) for name, table in (("owners", g.owners), ("clusters", g.clusters), ("sightings", g.sightings))}
    with pytest.raises(ValueError, match="does not have"):
        g.split(a, ["email:nobody@x.com"], "typo")


def test_replaying_the_same_events_gives_the_same_ids():
    events = [("e1", ids(("email", "a@x.com"))), ("e2", ids(("phone", "0612345678"))),
              ("e3", ids(("email", "a@x.com"), ("phone", "0612345678"))), ("e4", ids(("web_account", "A-1"), ("email", "a@x.com")))]
    runs = []
    for _ in range(2):
        g = graph()
        runs.append([g.resolve(e, i).customer_id for e, i in events])
    assert runs[0] == runs[1] and len(set(runs[0][2:])) == 1


def test_sightings_outside_the_window_do_not_make_an_identifier_shared():
    day = 86_400_000
    g = graph(shared_after=1, shared_window_days=30)
    g.resolve("e1", ids(("loyalty_id", "LC-1"), ("phone", "0612345678")), at=0)
    g.resolve("e2", ids(("loyalty_id", "LC-2"), ("phone", "0612345678")), at=60 * day)   # a new owner of the number
    assert not g.is_shared("phone:+33612345678")
    g.resolve("e3", ids(("loyalty_id", "LC-3"), ("phone", "0612345678")), at=61 * day)
    assert g.is_shared("phone:+33612345678")


def test_a_redelivered_event_keeps_the_customer_id_it_was_first_published_with():
    g = graph()
    alice = g.resolve("w1", ids(("email", "alice@x.com"))).customer_id
    card = g.resolve("r1", ids(("loyalty_id", "LC-1"), ("phone", "0612345678"))).customer_id
    g.resolve("w2", ids(("email", "alice@x.com"), ("phone", "0612345678")))   # the card's customer merged into alice's (older)
    assert g.current(card) == alice != card
    again = g.resolve("r1", ids(("loyalty_id", "LC-1"), ("phone", "0612345678")))
    # the same record as the first time (its sort key in ClickHouse too); the merge re-keys it at query time
    assert again.duplicate and again.customer_id == card and not again.merges


def test_with_a_tokenizer_the_graph_keeps_and_tells_no_identifier_value():
    import hashlib

    def tokenize(text: str) -> str:
        return hashlib.sha256(b"secret" + text.encode()).hexdigest()[:32]

    g = IdentityGraph(IdentityRules(), {}, {}, {}, {}, {}, {}, tokenize=tokenize)
    first = g.resolve("e1", ids(("email", "Alice@X.com"), ("phone", "0690 12 34 56"), ("phone", "12")))
    second = g.resolve("e2", ids(("email", "alice@x.com"), ("loyalty_id", "LC-1")))
    assert second.customer_id == first.customer_id == customer_id_for(f"email:{tokenize('email:alice@x.com')}")
    state = repr([dict(g.owners), dict(g.clusters), dict(g.sightings), first.warnings, second.warnings])
    for value in ("alice", "690", "LC-1", "12'"):
        assert value not in state, value
    assert "(withheld)" in repr(first.warnings) and first.clear[f"email:{tokenize('email:alice@x.com')}"] == "email:alice@x.com"
    assert g.identifier_key("email: ALICE@x.com") == f"email:{tokenize('email:alice@x.com')}"


def test_customer_ids_are_the_uuid5_of_their_key_as_before():
    """Ids are kept for ever (state, topics, ClickHouse): the fast path must give uuid5's exact text."""
    import uuid

    from streams.identity import CUSTOMER_NAMESPACE

    for key, salt in [("email:a@b.c", ""), ("event:0f9e-é-ü", ""), ("loyalty_id:" + "x" * 300, "#3"), ("", "")]:
        assert customer_id_for(key, salt) == str(uuid.uuid5(CUSTOMER_NAMESPACE, key + salt))


def test_a_new_handle_naming_a_relative_s_order_stays_apart_until_it_names_two():
    """Found by eval_identity.py: a handle whose first message named a relative's order joined the relative."""
    g = graph()
    relative = g.resolve("o1", order_event("o1", "W-1", ("email", "mum@x.com"))).customer_id
    g.resolve("o2", order_event("o2", "W-2", ("email", "mum@x.com")))
    first = g.resolve("s1", mention_event("kid", "W-1"))
    assert first.customer_id != relative and not first.merges
    handle = next(i.key for i in first.identifiers if i.kind == "social_handle")
    assert g.owner(handle) == first.customer_id
    second = g.resolve("s2", mention_event("kid", "W-2"))   # two of the same buyer's orders: that buyer
    assert [m.absorbed_id for m in second.merges] == [first.customer_id] and g.current(first.customer_id) == relative
