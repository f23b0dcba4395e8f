"""Benchmark (not a test): the floor Faust itself sets on this machine and broker, in one run.

    python tests/benchmarks/bench_faust_overhead.py [--events 20000]

Pre-produces web orders, then times Faust agents over them in separate worker processes:
  noop  - the agent only iterates events (Faust's consume path)
  send  - the agent forwards each event to another topic (consume + produce per event)
and, for comparison, the raw aiokafka consume rate measured as in bench_skeleton.py.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

AGENT = """
import os, sys, time, faust
bootstrap, topic, out, mode, n, datadir = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
app = faust.App("bench-" + mode + str(os.getpid()), broker="kafka://" + bootstrap, store="memory://", datadir=datadir,
                broker_session_timeout=6, broker_heartbeat_interval=1, web_enabled=False,
                producer_acks=-1, producer_linger_ms=5)
source = app.topic(topic, key_serializer="raw", value_serializer="raw")
sink = app.topic(out, key_serializer="raw", value_serializer="raw")
state = {"n": 0, "t0": None}
@app.agent(source)
async def agent(stream):
    async for event in stream.events():
        state["t0"] = state["t0"] or time.perf_counter()
        state["n"] += 1
        if mode == "send":
            await sink.send(key=event.key, value=event.value)
        if state["n"] == n:
            print(f"RATE {n / (time.perf_counter() - state['t0'])}", flush=True)
            os._exit(0)
faust.Worker(app, loglevel="warning").execute_from_commandline()
"""


def faust_rate(bootstrap: str, topic: str, out: str, mode: str, events: int, folder: Path) -> float:
    """Events/s of one agent in its own worker process; Faust's data folder in `folder` (by default Faust makes
    one in the working directory, which left folders in the repository)."""
    result = subprocess.run([sys.executable, "-c", AGENT, bootstrap, topic, out, mode, str(events),
                             str(folder / f"faust-{mode}")],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    # Faust redirects print() to its logger, so the figure may be on either stream.
    match = re.search(r"RATE ([0-9.]+)", result.stdout + result.stderr)
    if match:
        return float(match.group(1))
    raise RuntimeError(f"faust {mode} run failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def main() -> None:
    from connectors.config import find_config, load_connector_config
    from connectors.runtime import run_connector
    from infra.broker import EmbeddedBroker
    from infra.kafka import ensure_topics
    from infra.settings import load_settings
    from tests.benchmarks.bench_skeleton import raw_rates
    from tests.fixtures import write_web_orders

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(Path(tmp)) as broker:
        bootstrap = broker.bootstrap_servers
        settings = load_settings(None, data_dir=Path(tmp), kafka={"bootstrap_servers": bootstrap})
        ensure_topics(bootstrap, settings.topics.all_names() + ["bench-noop-out", "bench-send-out"],
                      settings.topics.partitions, 1)
        source = write_web_orders(Path(tmp) / "orders.jsonl", args.events)
        config = find_config("web-orders")
        asyncio.run(run_connector(settings, bootstrap, config, source))
        orders_topic = load_connector_config(config).topic
        _, raw, _ = asyncio.run(raw_rates(settings, bootstrap, args.events))
        noop = faust_rate(bootstrap, orders_topic, "bench-noop-out", "noop", args.events, Path(tmp))
        send = faust_rate(bootstrap, orders_topic, "bench-send-out", "send", args.events, Path(tmp))
    print(f"Faust overhead on embedded tansu ({args.events:,} web orders, {settings.topics.partitions} partitions)")
    print(f"  raw aiokafka consume          {raw:>10,.0f} msg/s")
    print(f"  Faust agent, iterate only     {noop:>10,.0f} msg/s   ({noop / raw:.3f} of raw)")
    print(f"  Faust agent, send per event   {send:>10,.0f} msg/s   ({send / raw:.3f} of raw)")


if __name__ == "__main__":
    main()
