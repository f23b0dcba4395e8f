"""Evaluation (not a test): identity resolution against the scenario generator's ground truth.

    python tests/benchmarks/eval_identity.py [--events 50000] [--customers 5000] [--offline]

Generates a scenario, then resolves it either through the real pipeline (connectors -> Kafka ->
Faust worker -> customer-timeline, read back) or, with --offline, by feeding the mapped events
straight into the same IdentityGraph (seconds instead of minutes; the worker runs that code).
Through the pipeline it also prints, from the same run, the raw consume rate of the channel topics, the
identity graph alone offline, and the worker's whole per-batch code without Kafka (bench_resolver.py) on the
same events. Prints pairwise precision and recall over events whose person is known, and every predicted
customer that mixes several people with the identifiers that joined them. Exit status 1 if
precision < 0.995 or recall < 0.98.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import tempfile
import time
from collections import Counter, defaultdict
from math import comb
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from connectors.config import bundled_configs  # noqa: E402
from connectors.runtime import Connector, sample_records  # noqa: E402
from connectors.scenario import generate  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from tests.benchmarks.bench_summary import record  # noqa: E402


def pairwise(assignments: dict[str, str], truth: dict[str, str]) -> tuple[float, float, list]:
    """(precision, recall, impure clusters) over events with a known person; keys are event ids."""
    cells: Counter = Counter()
    for event_id, person in truth.items():
        if person and event_id in assignments:
            # an event resolved to nobody (customer id '') is alone: a known person's events missed, not joined
            cells[assignments[event_id] or f"event:{event_id}", person] += 1
    predicted, actual = Counter(), Counter()
    for (customer, person), n in cells.items():
        predicted[customer] += n
        actual[person] += n
    together = sum(comb(n, 2) for n in cells.values())
    predicted_pairs = sum(comb(n, 2) for n in predicted.values())
    actual_pairs = sum(comb(n, 2) for n in actual.values())
    people_per_customer = defaultdict(list)
    for (customer, person), n in cells.items():
        people_per_customer[customer].append((person, n))
    impure = [(customer, people) for customer, people in people_per_customer.items() if len(people) > 1]
    precision = together / predicted_pairs if predicted_pairs else 1.0
    recall = together / actual_pairs if actual_pairs else 1.0
    return precision, recall, impure


def shared_identifiers(events: list[dict], assignments: dict, truth: dict, customers: list[str]) -> list[tuple[str, set]]:
    """For each given customer: the identifiers that more than one of its people used."""
    from schemas.identifiers import normalize

    wanted = set(customers)
    users = defaultdict(lambda: defaultdict(set))
    for event in events:
        customer = assignments.get(event["event_id"])
        person = truth.get(event["event_id"])
        if customer in wanted and person:
            for identifier in event["identifiers"]:
                try:  # compare as resolution does: normalized
                    value = normalize(identifier["kind"], identifier["value"], identifier.get("platform"), "FR")
                except ValueError:
                    value = identifier["value"].strip().lower()
                users[customer][f"{identifier['kind']}:{value.lower()}"].add(person)
    return [(customer, {key for key, people in users[customer].items() if len(people) > 1}) for customer in customers]


def trap_merges(events: list[dict], assignments: dict, truth: dict) -> list[str]:
    """Customers whose people are joined only by a store terminal or a placeholder value: the traps."""
    from streams.identity import IdentityRules

    _, _, impure = pairwise(assignments, truth)
    placeholders = {v.lower() for v in IdentityRules().blocked_values}
    traps = []
    for customer, linking in shared_identifiers(events, assignments, truth, [c for c, _ in impure]):
        real = {key for key in linking if not key.startswith("store_terminal:") and key.split(":", 1)[1] not in placeholders}
        if not real:
            traps.append(customer)
    return traps


def mapped_events(folder: Path, manifest: dict) -> list[dict]:
    settings = load_settings()
    events = []
    for config in bundled_configs():
        connector = Connector(settings, "", config)
        path = folder / manifest["channels"][connector.config.name]["file"]
        events.extend(event for _, event, reason in connector.preview(sample_records(connector, path)[1]) if reason is None)
    return events


def resolve_offline(events: list[dict]) -> tuple[dict[str, str], dict]:
    import gc

    from infra.processes import GC_THRESHOLDS
    from streams.identity import IdentityGraph, IdentityRules, event_identifiers

    gc.set_threshold(*GC_THRESHOLDS)   # as the worker runs it: the comparison is of the same code, same collector
    graph = IdentityGraph(IdentityRules(), {}, {}, {}, {}, {}, {})
    assignments, warnings = {}, Counter()
    for event in sorted(events, key=lambda e: e["occurred_at"]):
        result = graph.resolve(event["event_id"], event_identifiers(event), int(event["occurred_at"].timestamp() * 1000))
        assignments[event["event_id"]] = result.customer_id
        for _, reason in result.warnings:
            warnings[reason.split(":")[0][:60]] += 1
    return {e: graph.current(c) for e, c in assignments.items()}, {"warnings": warnings}


def worker_code_offline(folder: Path, manifest: dict, workdir: Path) -> float:
    """Events/s of what the worker runs per batch on the same scenario's encoded records, without Kafka or Faust
    (tests/benchmarks/bench_resolver.py): what the Kafka path costs beyond the worker's own code."""
    from infra.processes import tune_collector
    from tests.benchmarks.bench_resolver import encoded_records, run_worker_code

    settings = load_settings(None, data_dir=workdir)
    records = encoded_records(settings, folder, manifest)
    tune_collector(freeze=True)   # as the worker runs
    resolving, persisting, _ = run_worker_code(settings, workdir / "state", records)
    return len(records) / (resolving + persisting)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--offline", action="store_true", help="resolve in this process, without Kafka and Faust")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omnihub-eval-") as tmp:
        folder = Path(tmp) / "scenario"
        manifest = generate(folder, args.customers, args.events, args.seed)
        truth_by_source = {}
        with (folder / "ground_truth.csv").open() as file:
            for row in csv.DictReader(file):
                truth_by_source[row["channel"], row["source_id"]] = row["person_id"]
        events = mapped_events(folder, manifest)
        truth = {e["event_id"]: truth_by_source[e["channel"], e["source_id"]] for e in events}
        started = time.perf_counter()
        if args.offline:
            assignments, details = resolve_offline(events)
            how = "offline (IdentityGraph in this process)"
        else:
            from tests.benchmarks.identity_pipeline import resolve_through_pipeline

            assignments, figures = asyncio.run(resolve_through_pipeline(folder, Path(tmp), len(events)))
            details = {}
            seconds = time.perf_counter() - started
            offline_started = time.perf_counter()
            resolve_offline(events)
            offline_rate = len(events) / (time.perf_counter() - offline_started)
            worker_code_rate = worker_code_offline(folder, manifest, Path(tmp) / "offline-worker")
            how = (f"through Kafka and the Faust worker ({figures['events_per_second']:,.0f} events/s; in the same run "
                   f"raw consume {figures['raw_per_second']:,.0f} records/s, ratio "
                   f"{figures['events_per_second'] / figures['raw_per_second']:.3f}; the same identity code offline "
                   f"on the same events {offline_rate:,.0f} events/s, ratio {figures['events_per_second'] / offline_rate:.2f}; "
                   f"the worker's whole code without Kafka (decode, resolve, profiles, encode, state; bench_resolver.py) "
                   f"{worker_code_rate:,.0f} events/s, ratio {figures['events_per_second'] / worker_code_rate:.2f}; "
                   f"worker peak memory {figures['worker_peak_mb']:,.0f} MB)")
        if args.offline:
            seconds = time.perf_counter() - started
    precision, recall, impure = pairwise(assignments, truth)
    traps = trap_merges(events, assignments, truth)
    known = sum(1 for e in truth.values() if e)
    print(f"identity resolution {how}: {len(events):,} events ({known:,} with a known person) of "
          f"{args.customers:,} people in {seconds:.1f} s; {len(set(assignments.values()) - {''}):,} customer ids")
    print(f"  pairwise precision {precision:.4f}   recall {recall:.4f}")
    print(f"  customers mixing several people: {len(impure)}; joined through a shared store terminal or a "
          f"placeholder value: {len(traps)}")
    for customer, linking in shared_identifiers(events, assignments, truth, [c for c, _ in impure])[:10]:
        print(f"    {customer[:8]}: people share {sorted(linking)[:4]}")
    for reason, n in details.get("warnings", Counter()).most_common(8):
        print(f"  warning x{n}: {reason}")
    ok = precision >= 0.995 and recall >= 0.98 and not traps
    if not args.offline:
        record("eval_identity", events=len(events), events_per_second=figures["events_per_second"],
               raw_per_second=figures["raw_per_second"], graph_offline_per_second=offline_rate,
               worker_code_per_second=worker_code_rate, precision=precision, recall=recall,
               worker_peak_mb=figures["worker_peak_mb"])
    print("targets met (precision >= 0.995, recall >= 0.98, no merge through a trap)" if ok else "TARGETS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
