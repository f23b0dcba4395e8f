"""Benchmark (not a test): end to end, a generated scenario from its files to queryable ClickHouse, and a
same-shape no-op pipeline measured in the same run.

    python tests/benchmarks/bench_end_to_end.py [--events 1000000] [--customers 100000]

- Omnihub: the hub on embedded defaults (disk broker, Faust resolution worker, ClickHouse sink) with the
  bundled connectors loading their files at once, one process each (`omnihub connectors run NAME`); done when ClickHouse counts every accepted event
  in timeline_events.
- No-op: the same connectors and broker; a pass-through process copying the channel records to one topic
  (tests/benchmarks/passthrough.py) and a sink that counts and discards them.
Each on a fresh data folder, the no-op before and after Omnihub; prints events/s from the connectors' start, and
the ratio to the two no-op runs' mean, and to each (target 0.6).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiokafka import AIOKafkaConsumer  # noqa: E402

from connectors.config import bundled_configs  # noqa: E402
from connectors.scenario import generate  # noqa: E402
from infra.broker import EmbeddedBroker  # noqa: E402
from infra.hub import Hub, channel_topics, child_environment  # noqa: E402
from infra.kafka import consumer_config, ensure_topics  # noqa: E402
from infra.processes import spawn, stop_process  # noqa: E402
from infra.progress import progress_bar  # noqa: E402
from infra.settings import load_settings  # noqa: E402
from tests.benchmarks.bench_summary import record  # noqa: E402
from tests.benchmarks.cpu_usage import CpuUsage  # noqa: E402
from tests.benchmarks.scratch import scratch_directory  # noqa: E402

PASSTHROUGH_TOPIC = "noop-timeline"
# CPU is counted apart until then and after: after it, what is left is the stages behind the connectors catching up
CONNECTORS_DONE = "the connectors were done"


async def load(settings, bootstrap: str, folder: Path, logs: Path) -> tuple[int, float]:
    """(accepted events, seconds): the bundled connectors reading their files at once, each in its own process
    (`omnihub connectors run NAME`, as an integration engineer deploys them), so neither the hub's sink nor the
    no-op's discarding consumer shares a Python process with them."""
    started = time.perf_counter()
    env = child_environment(settings, bootstrap)
    runs = {config.stem: spawn([sys.executable, "-m", "infra.cli", "connectors", "run", str(config), "--source-dir",
                                str(folder)], logs / f"connector-{config.stem}.log", env=env)
            for config in bundled_configs()}
    while any(run.poll() is None for run in runs.values()):
        await asyncio.sleep(0.2)
    seconds = time.perf_counter() - started
    accepted = 0
    for name, run in runs.items():
        output = (logs / f"connector-{name}.log").read_text()
        counted = re.findall(r"= accepted (\d+) \+ rejected", output)
        if run.returncode != 0 or not counted:
            raise RuntimeError(f"connector {name} failed ({run.returncode}): {output[-2000:]}")
        accepted += int(counted[-1])
    return accepted, seconds


async def omnihub(settings, folder: Path, expected: int, timeout: float) -> dict:
    async with Hub(settings, serve_queries=False) as hub:
        started = time.perf_counter()
        loader = asyncio.ensure_future(load(settings, hub.bootstrap, folder, Path(settings.data_dir) / "logs"))
        bar = progress_bar(expected, "queryable in ClickHouse", unit="events")
        with CpuUsage("this process (hub: sink, ClickHouse)") as usage:
            while True:
                await asyncio.sleep(1.0)
                if loader.done() and usage.mark_label is None:
                    usage.mark(CONNECTORS_DONE)
                # count() is read from the parts' metadata; uniqExact reads every event id (150 ms of CPU at 1M
                # rows, every second, in the hub's process): asked only once the rows may all be there. A
                # redelivered event is a second row until ClickHouse merges it, so only the exact count says the
                # load is done.
                stored = (await asyncio.to_thread(hub.client.query, "SELECT count() FROM timeline_events")).result_rows[0][0]
                if stored >= expected:
                    stored = (await asyncio.to_thread(hub.client.query,
                                                      "SELECT uniqExact(event_id) FROM timeline_events")).result_rows[0][0]
                bar.update(min(stored, expected) - bar.n)
                if stored >= expected and loader.done():
                    break
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"{stored:,} of {expected:,} events in ClickHouse after {timeout} s")
        bar.close()
        accepted, load_seconds = loader.result()
        return {"events": accepted, "seconds": time.perf_counter() - started, "load_seconds": load_seconds,
                "cpu": usage.summary(), "sink_batches": hub.sink.stats.batches, "sink_records": hub.sink.stats.records_read}


async def noop(settings, folder: Path, workdir: Path, expected: int, timeout: float) -> dict:
    with EmbeddedBroker(workdir / "logs", settings.kafka.embedded_storage, disk_dir=workdir / "broker") as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, channel_topics(settings) + [settings.topics.dead_letters, PASSTHROUGH_TOPIC],
                      settings.topics.partitions, 1)
        stage = spawn([sys.executable, "-m", "tests.benchmarks.passthrough", bootstrap, settings.topics.channel_pattern,
                       PASSTHROUGH_TOPIC, "bench-passthrough"], workdir / "logs" / "passthrough.log",
                      env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                      new_session=True)   # in its own scheduling group, as the hub starts the worker
        consumer = AIOKafkaConsumer(PASSTHROUGH_TOPIC, **consumer_config(settings, bootstrap, "bench-discard"))
        await consumer.start()
        try:
            started = time.perf_counter()
            loader = asyncio.ensure_future(load(settings, bootstrap, folder, workdir / "logs"))
            discarded = 0
            bar = progress_bar(expected, "through the no-op pipeline", unit="events")
            with CpuUsage("this process (discarding sink)") as usage:
                while discarded < expected or not loader.done():
                    if loader.done() and usage.mark_label is None:
                        usage.mark(CONNECTORS_DONE)
                    if stage.poll() is not None:
                        raise RuntimeError(f"the pass-through stage exited; see {workdir / 'logs' / 'passthrough.log'}")
                    if time.perf_counter() - started > timeout:
                        raise RuntimeError(f"{discarded:,} of {expected:,} records through the no-op pipeline after {timeout} s")
                    batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
                    discarded += sum(len(messages) for messages in batch.values())
                    bar.update(min(discarded, expected) - bar.n)
                    if batch:
                        await consumer.commit()
                if usage.mark_label is None:   # the connectors ended during the last poll, with nothing left behind
                    usage.mark(CONNECTORS_DONE)
            bar.close()
            accepted, load_seconds = loader.result()
            return {"events": accepted, "seconds": time.perf_counter() - started, "load_seconds": load_seconds,
                    "cpu": usage.summary()}
        finally:
            await consumer.stop()
            stop_process(stage, 10, "pass-through stage")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    with scratch_directory(prefix="omnihub-e2e-") as tmp:
        folder = Path(tmp) / "scenario"
        manifest = generate(folder, args.customers, args.events, seed=24)
        expected = sum(channel["valid"] for channel in manifest["channels"].values())
        print(f"end to end: {args.events:,} generated events ({expected:,} valid) of {args.customers:,} people, "
              f"embedded broker on disk, this machine", flush=True)
        # The no-op pipeline before and after Omnihub (each on a fresh data folder), never beside it: this machine's
        # speed drifts within minutes (the same connectors once used 195.4 CPU seconds for the files, then 124.6
        # six minutes later), so one no-op run before would make the ratio lean with the drift; two bracket it.
        rates = []
        for run, label in ((0, "no-op"), (1, "omnihub"), (2, "no-op")):
            if label == "no-op":
                result = asyncio.run(noop(load_settings(None, data_dir=Path(tmp) / f"noop-{run}"), folder,
                                          Path(tmp) / f"noop-{run}", expected, args.timeout))
                print(f"  no-op     files -> connectors -> pass-through -> discard:    {result['events'] / result['seconds']:>8,.0f} "
                      f"events/s ({result['events']:,} in {result['seconds']:.1f} s; connectors done after "
                      f"{result['load_seconds']:.1f} s)", flush=True)
            else:
                real_settings = load_settings(None, data_dir=Path(tmp) / "omnihub",
                                              clickhouse={"embedded_path": Path(tmp) / "omnihub" / "chdb"})
                result = asyncio.run(omnihub(real_settings, folder, expected, args.timeout))
                print(f"  omnihub   files -> connectors -> Faust worker -> ClickHouse: {result['events'] / result['seconds']:>8,.0f} "
                      f"events/s ({result['events']:,} in {result['seconds']:.1f} s; connectors done after "
                      f"{result['load_seconds']:.1f} s)", flush=True)
            print(f"    CPU seconds: {result['cpu']}", flush=True)
            if label == "omnihub":
                print(f"    sink: {result['sink_batches']:,} inserted batches, "
                      f"{result['sink_records'] / max(result['sink_batches'], 1):,.0f} records a batch on average", flush=True)
            rates.append(result["events"] / result["seconds"])
        before, real_rate, after = rates
        print(f"  omnihub / no-op: {real_rate / ((before + after) / 2):.2f} against the two no-op runs' mean "
              f"({real_rate / before:.2f} against the one before, {real_rate / after:.2f} after; target 0.6); "
              f"omnihub {real_rate:,.0f} events/s (target 4,000)")
        record("bench_end_to_end", events=expected, events_per_second=real_rate, noop_before_per_second=before,
               noop_after_per_second=after)


if __name__ == "__main__":
    main()
