"""Hostile input run (not a test): at least 10,000 generated bad records through a file connector and
through the webhook (20 concurrent clients), then every record accounted for.

    python tests/faults/hostile_inputs.py [--records 10000] [--clients 20]

Bad records: non-finite numbers, lone surrogates, invalid UTF-8, nesting deeper than any parser
follows, records larger than the broker takes, wrong types, truncated JSON, and random junk in every
field of an otherwise valid web order; some valid orders are mixed in. The embedded broker and the hub's
sink (no worker) run in this process; the file connector and the webhook too. Checks: read = accepted +
rejected for each, the webhook answered every request without a 500, the dead letters on Kafka and in
ClickHouse are the rejected records, and the process's peak memory is printed.
Exit status 1 if a record is unaccounted for or a request got a 500.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import string
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import yaml  # noqa: E402

from connectors.config import bundled_configs_dir  # noqa: E402
from connectors.runtime import Connector  # noqa: E402
from connectors.webhook import Webhook  # noqa: E402
from infra.hub import Hub  # noqa: E402
from infra.kafka import read_topic  # noqa: E402
from infra.settings import load_settings  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def junk(rng: random.Random) -> object:
    """A value of any shape, including the ones parsers and mappers choke on."""
    choice = rng.randrange(12)
    if choice == 0:
        return float(rng.choice(["inf", "-inf", "nan"]))
    if choice == 1:
        return "\ud800" + "".join(rng.choices(string.ascii_letters, k=5))
    if choice == 2:
        return rng.randint(-2**70, 2**70)
    if choice == 3:
        return [junk(rng) for _ in range(rng.randrange(3))]
    if choice == 4:
        return {"nested": junk(rng)}
    if choice == 5:
        return None
    if choice == 6:
        return "".join(rng.choices(string.printable, k=rng.randrange(40)))
    if choice == 7:
        return rng.random() * 10 ** rng.randrange(-5, 300)
    if choice == 8:
        return rng.choice([True, False])
    if choice == 9:
        return "9" * rng.randrange(1, 400)
    if choice == 10:
        return "2026-13-45T25:61:61+99:00"
    return ""


def order(i: int) -> dict:
    return {"order_id": f"H-{i:08d}", "created_at": "2026-11-20T10:00:00+01:00", "currency": "EUR", "total": "19.90",
            "shipping_cost": "4.90", "customer": {"account_id": f"A-{i % 500}", "email": f"h{i % 500}@example.com"},
            "lines": [{"sku": "SKU-1", "qty": 1, "unit_price": "15.00"}]}


def hostile_line(i: int, rng: random.Random) -> bytes:
    """One line of the file: mostly bad, about one in ten valid."""
    kind = rng.randrange(10)
    if kind == 3 and rng.random() > 0.1:
        kind = 4  # records larger than the broker takes: one in a hundred (each is over a megabyte)
    if kind == 0:
        return json.dumps(order(i)).encode()
    if kind == 1:
        return ("[" * 50_000 + "]" * 50_000).encode()
    if kind == 2:
        return b'{"order_id": "H-' + bytes([rng.randrange(0x80, 0x100)]) + b'"}'
    if kind == 3:
        return json.dumps(order(i) | {"order_id": "H-" + "x" * 1_100_000}).encode()
    if kind == 4:
        return json.dumps(order(i))[: rng.randrange(1, 60)].encode()
    if kind == 5:
        return rng.choice([b"NaN", b"[]", b"42", b'"text"', b"null"])
    record = order(i)
    field = rng.choice(list(record))
    record[field] = junk(rng)
    if rng.random() < 0.5:
        record["lines"] = [{"sku": junk(rng), "qty": junk(rng), "unit_price": junk(rng)}]
    return json.dumps(record, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


async def run(args) -> int:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="omnihub-hostile-"))
    settings = load_settings(None, data_dir=workdir / "data").model_copy()
    settings = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"embedded_storage": "memory://tansu/"}),
        "clickhouse": settings.clickhouse.model_copy(update={"embedded_path": workdir / "chdb", "query_port": 0})})
    problems: list[str] = []
    source = workdir / "hostile.jsonl"
    with source.open("wb") as out:
        for i in range(args.records):
            out.write(hostile_line(i, rng) + b"\n")
    bundled = bundled_configs_dir()
    file_config = yaml.safe_load((bundled / "web-orders.yaml").read_text())
    file_config["source"] = {"type": "file", "path": str(source)}
    (workdir / "web-orders.yaml").write_text(yaml.safe_dump(file_config))
    hook_config = dict(file_config, name="web-orders-hook")
    hook_config["source"] = {"type": "webhook", "port": 0, "path": "/orders", "max_body_bytes": 4 * 1024 * 1024}
    (workdir / "web-orders-hook.yaml").write_text(yaml.safe_dump(hook_config))

    async with Hub(settings, start_worker=False) as hub:
        print(f"memory after the hub started (chDB engine in this process): {peak_mb():,.0f} MB peak", flush=True)
        started = time.monotonic()
        file_report = await Connector(settings, hub.bootstrap, workdir / "web-orders.yaml").run_file(source)
        file_seconds = time.monotonic() - started
        print(f"file: {file_report.summary()} in {file_seconds:.1f} s; {peak_mb():,.0f} MB peak so far", flush=True)

        webhook = await Webhook(Connector(settings, hub.bootstrap, workdir / "web-orders-hook.yaml")).start()
        statuses: dict[int, int] = {}
        sent_records = 0
        lines = source.read_bytes().splitlines()
        queue: asyncio.Queue = asyncio.Queue()
        for start in range(0, len(lines), 25):
            queue.put_nowait(lines[start:start + 25])
        content_types = ["application/x-ndjson", "application/json", "text/plain", "application/xml"]

        async def client(number: int) -> None:
            nonlocal sent_records
            local = random.Random(number)
            async with aiohttp.ClientSession() as http:
                while not queue.empty():
                    chunk = queue.get_nowait()
                    content_type = local.choice(content_types)
                    if content_type == "application/json":
                        body = b"[" + b",".join(chunk) + b"]"
                    else:
                        body = b"\n".join(chunk)
                    # Unique request ids: a reused one with the same record is a resend, tested on its own.
                    headers = {"Content-Type": content_type, "X-Request-Id": f"c{number}-{local.getrandbits(64):x}"}
                    async with http.post(webhook.address, data=body, headers=headers) as response:
                        statuses[response.status] = statuses.get(response.status, 0) + 1
                        if response.status in (200, 400, 422):
                            answer = await response.json()
                            sent_records += answer["accepted"] + len(answer["rejected"])
                        elif response.status in (413, 415):
                            pass  # refused whole (too large, not JSON): nothing in it was read
                        else:
                            problems.append(f"webhook answered {response.status}: {await response.text()}")

        started = time.monotonic()
        await asyncio.gather(*(client(n) for n in range(args.clients)))
        hook_seconds = time.monotonic() - started
        await webhook.stop()
        report = webhook.report
        print(f"webhook: {args.clients} clients, answers {dict(sorted(statuses.items()))}; read {report.read:,} = accepted "
              f"{report.accepted:,} + rejected {report.rejected:,} in {hook_seconds:.1f} s", flush=True)
        for name, r in (("file", file_report), ("webhook", report)):
            if not r.reconciles:
                problems.append(f"{name}: {r.summary()}")
        if file_report.read != args.records:
            problems.append(f"file: read {file_report.read} of {args.records} lines")
        if sent_records != report.read:
            problems.append(f"webhook: answers account for {sent_records} records, the connector counted {report.read}")
        if statuses.get(500):
            problems.append(f"{statuses[500]} answers were 500")

        rejected = file_report.rejected + report.rejected
        letters = await read_topic(settings, hub.bootstrap, settings.topics.dead_letters)
        if len(letters) != rejected:
            problems.append(f"{len(letters)} dead letters on Kafka for {rejected} rejected records")
        deadline = time.monotonic() + 120
        while (stored := hub.client.query("SELECT count() FROM dead_letters").result_rows[0][0]) < rejected:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        if stored != rejected:
            problems.append(f"{stored} dead letters in ClickHouse for {rejected} rejected records")
        print(f"dead letters: {len(letters):,} on Kafka, {stored:,} in ClickHouse, for {rejected:,} rejected records; "
              f"sink {hub.sink.stats}")
    print(f"peak memory of this process (hub's sink, connectors, 20 clients): {peak_mb():,.0f} MB")
    print("every record accounted for, no 500" if not problems else "PROBLEMS:\n  " + "\n  ".join(problems))
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
