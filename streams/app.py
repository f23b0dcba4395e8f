"""Faust app factory: validate channel events and publish them on the customer timeline.

At-least-once: Faust commits a source offset only after the agent has processed the event, so a
crashed worker re-processes from the last commit; timeline events keep their ids, and sinks drop
the duplicates. exactly_once is not an option on tansu (no idempotent producer).
"""
from __future__ import annotations

import logging
import faust

from infra.kafka import matching_topics
from infra.settings import Settings
from schemas.models import dead_letter
from schemas.serde import codec
from streams.timeline import channel_event_to_timeline

log = logging.getLogger(__name__)

BATCH_MAX_EVENTS = 1000
BATCH_MAX_SECONDS = 0.05


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    app = faust.App(
        settings.streams.app_id,
        broker=[f"kafka://{server}" for server in bootstrap.split(",")],
        store="memory://",
        processing_guarantee="at_least_once",
        broker_session_timeout=settings.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_ms / 1000,
        broker_request_timeout=settings.kafka.consumer_request_timeout_ms / 1000,
        producer_acks=-1,
        producer_linger_ms=settings.kafka.producer_linger_ms,
        producer_max_batch_size=settings.kafka.producer_max_batch_bytes,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        datadir=str(settings.data_dir / "faust"),
        web_enabled=False,
    )
    registry = settings.schemas.registry_url
    topics = settings.topics
    # Channel topics are found by name pattern, so a channel added with one connector config needs no
    # settings change. Found at start only: Faust cannot subscribe by pattern (its aiokafka driver:
    # "XXX pattern does not work"), so a new channel's topic is read from the worker's next start.
    names = matching_topics(bootstrap, topics.channel_pattern)
    if not names:
        raise RuntimeError(f"no topic matches topics.channel_pattern {topics.channel_pattern!r}: "
                           "run a connector (it creates its topic) or `omnihub topics create`")
    log.info("reading channel topics %s", names)
    channel_topics = app.topic(*names, key_serializer="raw", value_serializer="raw")
    timeline_topic = app.topic(topics.customer_timeline, key_serializer="raw", value_serializer="raw")
    dead_letters_topic = app.topic(topics.dead_letters, key_serializer="raw", value_serializer="raw")
    channel_codec = codec("channel_event", registry)
    timeline_codec = codec("timeline_event", registry, topics.customer_timeline)
    dead_letter_codec = codec("dead_letter", registry, topics.dead_letters)

    @app.agent(channel_topics, name="channel-events-to-timeline")
    async def channel_events_to_timeline(stream):
        # Batches: Faust's per-event overhead dominates otherwise; events are acked after their batch.
        async for events in stream.take_events(BATCH_MAX_EVENTS, within=BATCH_MAX_SECONDS):
            for event in events:
                try:
                    timeline = channel_event_to_timeline(channel_codec.decode(event.value))
                    value = timeline_codec.encode(timeline)
                except Exception as error:  # a bad record must not stop the agent: dead-letter it
                    message = event.message
                    await dead_letters_topic.send(value=dead_letter_codec.encode(dead_letter(
                        "streams:channel-events-to-timeline", message.topic,
                        f"partition {message.partition} offset {message.offset}", error, event.value)))
                    continue
                await timeline_topic.send(key=timeline["customer_id"].encode(), value=value)

    return app


def run_worker(settings: Settings, bootstrap: str, loglevel: str = "info") -> None:
    """Run one Faust worker in the foreground until SIGTERM/SIGINT."""
    app = create_app(settings, bootstrap)
    worker = faust.Worker(app, loglevel=loglevel, override_logging=False)
    worker.execute_from_commandline()
