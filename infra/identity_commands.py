"""Commands to the identity worker (split, forget) on the identity-commands topic, from the CLI and the
console: identifiers travel as the token keys the worker's graph uses, never as values."""
from __future__ import annotations

import json

from infra.settings import Settings


def identifier_graph(settings: Settings):
    """An empty identity graph with the hub's rules and vault: it turns "kind:value" into the token key the
    worker's graph uses."""
    from infra.vault import open_vault
    from streams.identity import IdentityGraph
    from streams.resolver import identity_rules

    return IdentityGraph(identity_rules(settings), {}, {}, {}, {}, {}, {}, tokenize=open_vault(settings).token)


def publish_command(settings: Settings, bootstrap: str, command: dict) -> None:
    """One command, acknowledged by the broker (raises kafka-python's error when it is not)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_block_ms=10_000)
    try:
        key = command.get("customer_id") or command.get("request_id") or ""
        producer.send(settings.topics.identity_commands, json.dumps(command).encode(), key=key.encode()).get(timeout=30)
    finally:
        producer.close()


def split_command(settings: Settings, customer_id: str, identifiers: list[str], reason: str) -> dict:
    """The split command; raises ValueError naming an identifier that is not kind:value."""
    graph = identifier_graph(settings)
    keys = []
    for identifier in identifiers:
        try:
            keys.append(graph.identifier_key(identifier))
        except ValueError as error:
            raise ValueError(f"{identifier!r}: {error}") from None
    return {"command": "split", "customer_id": customer_id, "identifiers": keys, "reason": reason}
