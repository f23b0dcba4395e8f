"""Benchmark (not a test): events/s through identity resolution (Faust worker, embedded broker) and
the raw aiokafka consume rate of the same channel topics, measured in one run.

    python tests/benchmarks/bench_identity.py [--events 50000] [--customers 5000]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from connectors.scenario import generate  # noqa: E402
from tests.benchmarks.identity_pipeline import resolve_through_pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omnihub-bench-") as tmp:
        folder = Path(tmp) / "scenario"
        generate(folder, args.customers, args.events, seed=24)
        _, figures = asyncio.run(resolve_through_pipeline(folder, Path(tmp), args.events))
    print(f"identity resolution, one Faust worker on embedded tansu ({figures['events']:,} accepted events of "
          f"{args.customers:,} people):")
    print(f"  raw aiokafka consume of the channel topics  {figures['raw_per_second']:>10,.0f} records/s ({figures['raw_records']:,})")
    print(f"  resolved onto the timeline                  {figures['events_per_second']:>10,.0f} events/s "
          f"(from its first committed batch on; {figures['events_per_second_with_start']:,.0f}/s counting its start)")
    print(f"  resolution / raw consume                    {figures['events_per_second'] / figures['raw_per_second']:>10.3f}")
    print(f"  identity merges published                   {figures['merges']:>10,}")


if __name__ == "__main__":
    main()
