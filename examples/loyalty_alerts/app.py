"""Loyalty alerts (see README.md): a best customer with an open ticket, from Omnihub's unified topics,
with identity merges applied and customer erasures honoured."""
from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone

import faust

from schemas.decoder import OmnihubDecoder

log = logging.getLogger("loyalty-alerts")


def topic_name(name: str, default: str) -> str:
    return os.environ.get(f"OMNIHUB_TOPIC_{name.upper()}", default)


decoder = OmnihubDecoder()
app = faust.App(
    os.environ.get("LOYALTY_APP_ID", "loyalty-alerts"),
    broker=[f"kafka://{server}" for server in os.environ.get("LOYALTY_BOOTSTRAP", "127.0.0.1:9092").split(",")],
    store="memory://",                    # tables recover from their changelog topics on restart
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=6.0,           # the embedded broker (tansu) needs 6 s or less to rebalance quickly
    topic_partitions=int(os.environ.get("LOYALTY_PARTITIONS", "4")),
    datadir=os.environ.get("LOYALTY_DATA_DIR", "loyalty-data"),
    web_enabled=False,
)
profiles = app.topic(topic_name("customer_profiles", "customer-profiles"), key_serializer="raw", value_serializer="raw")
timeline = app.topic(topic_name("customer_timeline", "customer-timeline"), key_serializer="raw", value_serializer="raw")
merges = app.topic(topic_name("identity_merges", "identity-merges"), key_serializer="raw", value_serializer="raw")
erasures = app.topic(topic_name("customer_erasures", "customer-erasures"), key_serializer="raw", value_serializer="raw")
alerts = app.topic(os.environ.get("LOYALTY_ALERTS_TOPIC", "loyalty-alerts"), key_serializer="raw", value_serializer="raw")

# Global tables: every agent reads and writes any customer, whichever partition its record came from.
best = app.GlobalTable("best-customers", default=bool)            # customer id -> in the segment
aliases = app.GlobalTable("merged-into", default=str)             # absorbed id -> surviving id
open_tickets = app.GlobalTable("open-tickets", default=list)      # customer id -> ticket ids
alerted = app.GlobalTable("alerted", default=list)                # customer id -> ticket ids alerted


def remove(table, key: str):
    """The value held for key, removed; None if none (a table with a default would make pop() raise)."""
    if key not in table:
        return None
    value = table[key]
    del table[key]
    return value


def current(customer_id: str) -> str:
    """The id a customer has now: merges may chain (A into B, B into C)."""
    seen = set()
    while aliases.get(customer_id) and customer_id not in seen:
        seen.add(customer_id)
        customer_id = aliases[customer_id]
    return customer_id


async def alert_open_tickets(customer_id: str) -> None:
    if not best.get(customer_id):
        return
    done = list(alerted.get(customer_id) or [])
    new = [ticket for ticket in open_tickets.get(customer_id) or [] if ticket not in done]
    if not new:
        return
    # Marked as alerted before the first await: the four agents share one event loop, and another agent
    # (a profile and a merge for the same customer) must not alert the same ticket while a send is waiting.
    alerted[customer_id] = done + new
    for ticket in new:
        alert = {"customer_id": customer_id, "ticket_id": ticket, "alerted_at": datetime.now(timezone.utc).isoformat()}
        await alerts.send(key=customer_id.encode(), value=json.dumps(alert).encode())
        log.info("alert: best customer %s has ticket %s open", customer_id, ticket)


@app.agent(profiles)
async def on_profiles(stream):
    async for message in stream.events():
        customer_id = message.key.decode()
        _, profile = decoder.decode(message.value)
        if profile is None:       # a tombstone: merged away or forgotten (the merge or erasure says which)
            remove(best, customer_id)
            continue
        best[customer_id] = bool(profile["best_customer"])
        await alert_open_tickets(customer_id)


@app.agent(timeline)
async def on_timeline(stream):
    async for message in stream.events():
        _, event = decoder.decode(message.value)
        if event is None or event["channel"] != "support" or event["event_type"] != "ticket_update":
            continue
        customer_id = current(event["customer_id"])
        ticket = event["source_id"].split(":", 1)[0]
        status = json.loads(event["payload_json"] or "{}").get("status")
        tickets = [t for t in open_tickets.get(customer_id) or [] if t != ticket]
        if status in ("open", "pending"):
            tickets.append(ticket)
        open_tickets[customer_id] = tickets
        await alert_open_tickets(customer_id)


@app.agent(merges)
async def on_merges(stream):
    async for message in stream.events():
        _, merge = decoder.decode(message.value)
        if merge is None or merge["action"] != "merge":
            continue
        gone, kept = merge["absorbed_id"], current(merge["surviving_id"])
        aliases[gone] = kept
        open_tickets[kept] = sorted(set(open_tickets.get(kept) or []) | set(remove(open_tickets, gone) or []))
        alerted[kept] = sorted(set(alerted.get(kept) or []) | set(remove(alerted, gone) or []))
        best[kept] = bool(best.get(kept)) or bool(remove(best, gone))
        await alert_open_tickets(kept)


@app.agent(erasures)
async def on_erasures(stream):
    async for message in stream.events():
        _, erasure = decoder.decode(message.value)
        if erasure is None:
            continue
        ids = set(erasure["customer_ids"]) | {erasure["customer_id"]}
        for customer_id in ids:
            for table in (best, open_tickets, aliases):
                remove(table, customer_id)
            if remove(alerted, customer_id):
                await alerts.send(key=customer_id.encode(), value=None)   # downstream of us forgets them too
        for absorbed in [a for a, kept in aliases.items() if kept in ids]:
            remove(aliases, absorbed)
        log.info("erased %d customer id(s) on request %s", len(ids), erasure.get("request_id") or "")


if __name__ == "__main__":
    app.main()
