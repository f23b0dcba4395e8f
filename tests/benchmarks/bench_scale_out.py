"""Benchmark (not a test): the stage that already runs on N processes, with 1 and with 2.

    python tests/benchmarks/bench_scale_out.py [--events 200000] [--customers 20000]

Connectors: the scenario's five files loaded into a fresh embedded broker (on disk) by one process (the
connectors one after another, as `omnihub connectors run` does) and then, on another fresh broker, by two
processes each taking some of the files. Prints records/s for each and the ratio. The sink is not measured
with 2 processes: embedded chDB is one process per data folder, so a second sink needs a ClickHouse server.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from connectors.config import bundled_configs  # noqa: E402
from connectors.scenario import generate  # noqa: E402
from infra.broker import EmbeddedBroker  # noqa: E402
from infra.hub import channel_topics  # noqa: E402
from infra.kafka import ensure_topics  # noqa: E402
from infra.settings import load_settings  # noqa: E402


def load_files(bootstrap: str, data_dir: str, configs: list[str], folder: str) -> None:
    from connectors.runtime import Connector

    settings = load_settings(None, data_dir=Path(data_dir))

    async def run() -> None:
        for config in configs:
            connector = Connector(settings, bootstrap, config)
            report = await connector.run_file(next(Path(folder).glob(f"{connector.config.name}.*")))
            if not report.reconciles:
                raise SystemExit(report.summary())

    asyncio.run(run())


def timed_load(workdir: Path, folder: Path, groups: list[list[str]]) -> float:
    settings = load_settings(None, data_dir=workdir)
    with EmbeddedBroker(workdir / "logs", settings.kafka.embedded_storage, disk_dir=workdir / "broker") as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, channel_topics(settings) + [settings.topics.dead_letters], settings.topics.partitions, 1)
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=load_files, args=(bootstrap, str(workdir), group, str(folder))) for group in groups]
        started = time.perf_counter()
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        seconds = time.perf_counter() - started
        failed = [p.exitcode for p in processes if p.exitcode]
        if failed:
            raise SystemExit(f"a connector process failed (exit {failed})")
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omnihub-scale-") as tmp:
        folder = Path(tmp) / "scenario"
        manifest = generate(folder, args.customers, args.events, seed=24)
        records = sum(channel["records"] for channel in manifest["channels"].values())
        configs = [str(path) for path in bundled_configs()]
        one = timed_load(Path(tmp) / "one", folder, [configs])
        # two processes with about the same number of records each
        sizes = {str(path): next(c["records"] for name, c in manifest["channels"].items() if Path(path).stem == name)
                 for path in configs}
        groups: list[list[str]] = [[], []]
        for path in sorted(configs, key=lambda p: -sizes[p]):
            smaller = min(groups, key=lambda g: sum(sizes[p] for p in g))
            smaller.append(path)
        two = timed_load(Path(tmp) / "two", folder, groups)
    print(f"connectors, {records:,} records of five files into the embedded broker (disk), this machine:")
    print(f"  1 process   {records / one:>8,.0f} records/s ({one:.1f} s)")
    print(f"  2 processes {records / two:>8,.0f} records/s ({two:.1f} s)   2 / 1: {one / two:.2f}")


if __name__ == "__main__":
    main()
