"""Benchmark (not a test): the worker's own per-event cost, without Kafka, Faust or other processes.

    python tests/benchmarks/bench_resolver.py [--events 200000] [--customers 20000] [--batch 10000]

Maps a generated scenario with the bundled connectors (as `omnihub connectors run` encodes and seals it),
interleaves the channels as connectors running side by side do, then runs it through what the worker does
per batch (streams/app.py): Resolver.channel_record for each record and Resolver.finish, then the batch's
delta taken, encoded as changelog records and applied to RocksDB. Prints the cost per event every 100,000
events (resolution and state delta apart), the average stored size of a profile the window changed, and the
entries each state view holds in memory, so how the cost grows with the state is seen: end to end, the worker
spends more per event at 1,000,000 events than at 50,000. Then what RocksDB holds, by view.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from connectors.config import bundled_configs  # noqa: E402
from connectors.runtime import Connector, sample_records  # noqa: E402
from connectors.scenario import generate  # noqa: E402
from infra.processes import tune_collector  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from streams.resolver import Outputs, Resolver  # noqa: E402
from streams.state_store import StateStore  # noqa: E402

REPORT_EVERY = 100_000
INTERLEAVE = 500   # records of each channel in turn


def channel_records(settings, folder: Path, customers: int, events: int) -> list[tuple[str, bytes]]:
    """(topic, encoded record) as the connectors publish them, the channels interleaved."""
    return encoded_records(settings, folder, generate(folder, customers, events, seed=24))


def encoded_records(settings, folder: Path, manifest: dict) -> list[tuple[str, bytes]]:
    """(topic, encoded record) of a generated scenario as the connectors publish them, the channels interleaved."""
    per_channel = []
    for config in bundled_configs():
        connector = Connector(settings, "", config)
        path = folder / manifest["channels"][connector.config.name]["file"]
        records = []
        for record in sample_records(connector, path)[1]:
            try:
                _, value, _ = connector.convert(record)
            except Exception:  # a malformed record: the connector dead-letters it, the worker never sees it
                continue
            records.append((connector.topic, value))
        per_channel.append(records)
    mixed: list[tuple[str, bytes]] = []
    for start in range(0, max(map(len, per_channel)), INTERLEAVE):
        for records in per_channel:
            mixed.extend(records[start:start + INTERLEAVE])
    return mixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10_000, help="events per batch (the worker's BATCH_MAX_EVENTS)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omnihub-bench-resolver-") as tmp:
        settings = load_settings(None, data_dir=Path(tmp) / "hub")
        records = channel_records(settings, Path(tmp) / "scenario", args.customers, args.events)
        print(f"worker's per-event cost without Kafka: {len(records):,} channel records of {args.customers:,} people, "
              f"batches of {args.batch:,}", flush=True)
        tune_collector(freeze=True)   # as the worker runs
        resolving, persisting, sends = run_worker_code(settings, Path(tmp) / "state", records, args.batch, report=True)
        events = len(records)
        print(f"resolution {resolving / events * 1e6:.1f} us an event (Resolver.channel_record and finish), state delta "
              f"{persisting / events * 1e6:.1f} us (changelog records and RocksDB write): {events / (resolving + persisting):,.0f} "
              f"events/s on one core; {sends:,} records to publish")


def run_worker_code(settings, state: Path, records: list[tuple[str, bytes]], batch_events: int = 10_000,
                    report: bool = False, published: list | None = None) -> tuple[float, float, int]:
    """What the worker does per batch (streams/app.py), without Kafka: (seconds resolving, seconds making the
    state durable, records to publish); the records themselves are added to `published` when given."""
    store = StateStore(state)
    resolver = Resolver(settings, store)
    resolving = persisting = 0.0
    window: Counter = Counter()   # what the lines printed every REPORT_EVERY events sum
    sends = 0
    for start in range(0, len(records), batch_events):
        batch = records[start:start + batch_events]
        began = time.perf_counter()
        out = Outputs()
        with resolver.vault.batch():
            for offset, (topic, value) in enumerate(batch, start):
                resolver.channel_record(value, topic, 0, offset, out)
            resolver.finish(out)
        resolved = time.perf_counter()
        delta = store.take_delta()
        delta.records(f"bench-{start}")
        store.apply(delta, start)
        persisted = time.perf_counter()
        resolving += resolved - began
        persisting += persisted - resolved
        sends += len(out.sends)
        if published is not None:
            published.extend(out.sends)
        if report:
            window.update(events=len(batch), resolving=resolved - began, persisting=persisted - resolved)
            for name, _, value in delta.encoded:
                if name == "profiles" and value is not None:
                    window.update(profiles=1, profile_bytes=len(value))
            if window["events"] >= REPORT_EVERY or start + batch_events >= len(records):
                print_window(store, start + len(batch), window)
                window.clear()
    if report:
        print_state_by_view(store, len(records))
    store.close()
    return resolving, persisting, sends


def print_window(store: StateStore, events_so_far: int, window: Counter) -> None:
    """One line for the events since the last: resolution and state delta per event, and the average stored size
    of a profile they changed (a customer with a long history makes a large one, serialized whole at each batch
    that changes it)."""
    held = " ".join(f"{name} {len(view.cache):,}" for name, view in store.views.items() if view.cache)
    events = window["events"]
    print(f"  to {events_so_far:>9,}: {(window['resolving'] + window['persisting']) / events * 1e6:6.1f} us an event "
          f"(resolution {window['resolving'] / events * 1e6:.1f}, state delta {window['persisting'] / events * 1e6:.1f}; "
          f"a changed profile {window['profile_bytes'] / max(window['profiles'], 1):,.0f} bytes; cached entries: {held})",
          flush=True)


def print_state_by_view(store: StateStore, events: int) -> None:
    """What RocksDB holds at the end, by view (keys and stored bytes, uncompressed): which part grows with the people
    the hub knows and which with every event (docs/scaling.md)."""
    keys: Counter = Counter()
    stored: Counter = Counter()
    for key, value in store.db.items():
        view = key.partition(b"\x00")[0].decode() or "(the store's own)"
        keys[view] += 1
        stored[view] += len(key) + len(value)
    total = sum(stored.values())
    print(f"state at the end: {total / 1e6:,.1f} MB in RocksDB (keys and values, before compression) for {events:,} events")
    for view, size in stored.most_common():
        print(f"  {view:18s} {keys[view]:>10,} keys {size / 1e6:8.1f} MB {size / total:6.1%}")


if __name__ == "__main__":
    main()
