"""A hub kept running in a thread with the generated promotion loaded (every bundled connector, the
campaigns announced): what the console, report and ClickHouse-interface tests look at."""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

from connectors.campaigns import read_announcements
from connectors.config import bundled_configs
from connectors.runtime import run_connector
from connectors.scenario import generate
from infra.hub import Hub, console_settings
from infra.settings import Settings
from schemas.serde import codec
from sinks.named_queries import stored_counts
from tests.fixtures import channel_config


@dataclass
class RunningHub:
    settings: Settings
    hub: Hub
    scenario: Path
    manifest: dict
    loop: asyncio.AbstractEventLoop
    accepted: int
    service_token: str = ""
    stop: threading.Event = field(default_factory=threading.Event)

    def call(self, coroutine, timeout: float = 120):
        """Run a coroutine on the hub's loop from the test's thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


async def announce(settings: Settings, bootstrap: str, path: Path) -> None:
    from aiokafka import AIOKafkaProducer

    encode = codec("campaign", settings.schemas.registry_url, settings.topics.campaigns).encode
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for campaign in read_announcements(path):
            await producer.send_and_wait(settings.topics.campaigns, encode(campaign.to_avro()), key=campaign.campaign_id.encode())
    finally:
        await producer.stop()


def start_loaded_hub(settings: Settings, directory: Path, customers: int = 200, events: int = 2000,
                     timeout: float = 240) -> RunningHub:
    scenario = directory / "scenario"
    manifest = generate(scenario, customers=customers, events=events, seed=14)
    # a capacity the generated load crosses, so that the load chart has minutes marked over it
    settings = settings.model_copy(update={"identity": settings.identity.model_copy(
        update={"best_customer_refresh_seconds": 2.0}), "console": settings.console.model_copy(
        update={"capacity_events_per_minute": 30})})
    ready: dict = {}
    started = threading.Event()

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def main() -> None:
            async with Hub(settings) as hub:
                ready["hub"], ready["loop"] = hub, loop
                try:
                    accepted = 0
                    for path in bundled_configs():
                        config = channel_config(settings, directory, path.stem)
                        report = await run_connector(settings, hub.bootstrap, config, scenario / manifest["channels"][path.stem]["file"])
                        accepted += report.accepted
                    await announce(settings, hub.bootstrap, scenario / "campaigns.json")
                    for _ in range(int(timeout * 2)):
                        if stored_counts(hub.client)[0] >= accepted and hub.client.query(
                                "SELECT count() FROM campaigns FINAL").result_rows[0][0] > 0:
                            break
                        await asyncio.sleep(0.5)
                    ready["accepted"] = accepted
                except BaseException as error:
                    ready["error"] = error
                started.set()
                await hub.stopping.wait()

        loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=serve, name="console-hub", daemon=True)
    thread.start()
    if not started.wait(timeout + 120):
        raise TimeoutError("the hub did not load the scenario in time")
    if "error" in ready:
        raise ready["error"]
    running = RunningHub(settings, ready["hub"], scenario, manifest, ready["loop"], ready["accepted"])
    running.service_token = console_settings(settings).console.tokens["service"]
    running.thread = thread
    return running


def stop_hub(running: RunningHub) -> None:
    running.loop.call_soon_threadsafe(running.hub.request_stop)
    running.thread.join(120)
