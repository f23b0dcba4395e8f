"""Connector runtime: source records -> mapped, Avro-encoded channel events on Kafka, or dead letters.

Every record read ends up on the channel topic or in dead letters with its reason and position;
a run reports read = accepted + rejected. A record counts only once the broker acknowledged it
(acks=all), and a file position is committed only after everything before it was acknowledged.

Resuming without duplicates: while a run is in progress its position file says so ("clean": false)
and records, per partition, where the records of the uncommitted batch may start. A run that finds
an unclean position (the last one was killed) reads those partition tails and skips the records
already there, recognised by their id header. Kafka transactions would do this more simply, but
the embedded broker has no idempotent producer (README, Known limitations).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Container, Iterable, Iterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from connectors.config import ConnectorConfig, FileSource, WebhookSource, load_connector_config, resolve, revenue_warnings
from connectors.mapping import MappingError, RecordMapper
from connectors.privacy import EdgeSealer
from connectors.sources import (HEAD_BYTES, Position, PositionStore, SourceRecord, file_format, head_digest, read_csv,
                                read_json_document, read_jsonl)
from infra.progress import progress_bar
from infra.kafka import broker_id, consumer_config, ensure_topics, producer_config, topic_key_partitions
from infra.settings import Settings
from infra.vault import KeyConflict
from schemas.models import dead_letter
from schemas.serde import codec

log = logging.getLogger(__name__)


def printable(text: str) -> str:
    """Text that encodes as UTF-8 whatever it quotes (a lone surrogate from a record becomes U+FFFD)."""
    return text.encode("utf-8", "replace").decode("utf-8")

COMMIT_EVERY = 5000        # records per acknowledged batch and position commit
SEND_CHUNK = 500           # records mapped (their keys stored in one transaction) between two chances to send
KEY_CONFLICT_ATTEMPTS = 5  # a batch sealed again because another connector created some of its keys first
ID_HEADER = "omnihub-id"   # event id (channel records) or dead-letter id: what a resumed run deduplicates on
DEAD_LETTER_NAMESPACE = uuid.UUID("0d1e4c8a-7f3b-5a2e-9c61-6f6d6e696875")
RECORD_OVERHEAD_BYTES = 16 * 1024  # headers, key and batch framing around one record's value
DEAD_LETTER_HEAD_BYTES = 64 * 1024  # of a record too large for the broker, the dead letter keeps this much


@dataclass
class RunReport:
    connector: str
    source: str
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    already_on_kafka: int = 0  # of the accepted and rejected: found on Kafka from an interrupted run
    resumed_at: str | None = None
    restarted_because: str | None = None  # why committed positions were not used
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        return self.read == self.accepted + self.rejected

    def summary(self) -> str:
        resumed = f", resumed after {self.resumed_at}" if self.resumed_at else ""
        if self.restarted_because:
            resumed = f", read from the start: {self.restarted_because}"
        again = f", {self.already_on_kafka} already on Kafka" if self.already_on_kafka else ""
        return (f"{self.connector}: read {self.read} = accepted {self.accepted} + rejected {self.rejected}"
                f" ({'reconciled' if self.reconciles else 'DOES NOT RECONCILE'}{again}) from {self.source}{resumed}")

    def describe(self) -> str:
        """The summary, then one line per distinct rejection reason."""
        return "\n".join([self.summary()] + [f"  rejected x{n}: {reason}" for reason, n in self.reasons.items()])

    def count_rejection(self, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


@dataclass
class Outcome:
    """What became of one source record: accepted, or rejected with the reason."""
    record: SourceRecord
    reason: str | None
    future: asyncio.Future | None = None  # the broker's acknowledgement
    record_id: str = ""                   # event id, or dead-letter id
    skip_key: str = ""                    # what a resend is recognised by


class Connector:
    def __init__(self, settings: Settings, bootstrap: str, config_path: str | Path):
        self.settings = settings
        self.bootstrap = bootstrap
        self.config_path = Path(config_path)
        self.config: ConnectorConfig = load_connector_config(config_path)
        self.mapper = RecordMapper(self.config)
        self.sealer = EdgeSealer(settings)
        registry = settings.schemas.registry_url
        self.topic = self.config.topic
        self.dead_letter_topic = settings.topics.dead_letters
        self.codec = codec(self.config.schema_name, registry, self.topic)
        self.dead_letter_codec = codec("dead_letter", registry, self.dead_letter_topic)
        self.producer: AIOKafkaProducer | None = None
        # What one record may weigh on the wire, headers and batch overhead aside.
        self.max_record_bytes = settings.kafka.producer_max_batch_bytes - RECORD_OVERHEAD_BYTES

    # --- mapping, no I/O --------------------------------------------------------------------

    def convert(self, record: SourceRecord, seal: bool = True) -> tuple[bytes, bytes, str]:
        """(key, encoded value, event id) of an accepted record, its personal data sealed (connectors/privacy.py;
        not for a dry run, which must not create keys); raises MappingError with the reason.
        No record can stop a source: whatever goes wrong with one (an Infinity where an integer belongs,
        nesting deeper than Python recurses, a lone surrogate) is that record's rejection."""
        if record.error:
            raise MappingError(record.error)
        try:
            event = self.mapper.map(record.value)
        except MappingError:
            raise
        except (RecursionError, ArithmeticError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            raise MappingError(f"cannot be mapped: {type(error).__name__}: {error}") from None
        try:
            value = self.codec.encode(self.sealer.seal_event(event) if seal else event)
            key = str(event[self.config.key]).encode()
        except (ValueError, TypeError, ArithmeticError, RecursionError) as error:  # the schema refused a mapped value
            raise MappingError(f"does not fit schema {self.config.schema_name}: {error}") from None
        if len(value) > self.max_record_bytes:
            raise MappingError(f"the event is {len(value):,} bytes, more than the broker takes in one record "
                               f"({self.max_record_bytes:,}); its head is kept in this dead letter")
        return key, value, event["event_id"]

    def preview(self, records: Iterable[SourceRecord]) -> Iterator[tuple[SourceRecord, dict | None, str | None]]:
        """(record, mapped event, None) or (record, None, reason) for each record: the dry run of `check`."""
        for record in records:
            try:
                self.convert(record, seal=False)
                yield record, self.mapper.map(record.value), None
            except MappingError as error:
                yield record, None, str(error)

    def dead_letter_id(self, source: str, position: str, raw: bytes = b"") -> str:
        """Stable for the same record at the same place (a resumed run, a resent request finds it), and
        different for a different record at the same place (a reused request id never hides one)."""
        digest = hashlib.sha256(raw).hexdigest()[:16]
        return str(uuid.uuid5(DEAD_LETTER_NAMESPACE, f"{self.config.name}|{source}|{position}|{digest}"))

    # --- Kafka ------------------------------------------------------------------------------

    async def start(self) -> None:
        # Explicit creation: tansu would auto-create them with its own partition count.
        ensure_topics(self.bootstrap, [self.topic, self.dead_letter_topic], self.settings.topics.partitions,
                      self.settings.topics.replication_factor)
        self.producer = AIOKafkaProducer(**producer_config(self.settings, self.bootstrap))
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def send_many(self, records: list[SourceRecord], source: str, skip_ids: Container[str] = frozenset(),
                        by_content: bool = False) -> list[Outcome]:
        """Map and send records (or their dead letters); await each outcome.future for its acknowledgement.
        A record whose id is in skip_ids was sent before and is not sent again; by_content (the webhook)
        keys that on the id and the record's bytes, so a different record under a reused id is sent.
        The keys their sealing creates are stored in one vault transaction (50 us a key alone, 14 in a
        batch), before any of them leaves."""
        for attempt in range(KEY_CONFLICT_ATTEMPTS):
            try:
                with self.sealer.vault.batch(optimistic=True):  # other connectors map meanwhile (infra/vault.py)
                    prepared = [self._prepare(record, source, by_content) for record in records]
                break
            except KeyConflict as conflict:  # another process created some of the same keys first: seal again with theirs
                self.sealer.forget_sealed(conflict.subjects)
                if attempt == KEY_CONFLICT_ATTEMPTS - 1:
                    raise
        for record in records:
            # The outcome waits for its acknowledgement with thousands of others: it keeps where the record
            # came from, not its bytes (a batch of large records would otherwise stay in memory whole).
            record.raw, record.value = b"", None
        outcomes = []
        partitions = await self._key_partitions(prepared)
        for (outcome, topic, key, value, headers), partition in zip(prepared, partitions):
            if outcome.skip_key in skip_ids:  # already on Kafka: sent before (interrupted run, client retry)
                outcomes.append(outcome)
                continue
            outcome.future = await self.producer.send(topic, value, key=key, partition=partition,
                                                      headers=headers + [(ID_HEADER, outcome.record_id.encode())])
            outcomes.append(outcome)
        return outcomes

    async def _key_partitions(self, prepared: list[tuple]) -> list[int | None]:
        """Each keyed record's partition, as the producer's partitioner would choose it, hashed for all the keys
        of a topic at once (infra.kafka.topic_key_partitions); None (the partitioner's choice) for a keyless one.
        The partitioner's hash releases the GIL at every key; beside a busy thread each key then waits to take it
        back (bench_partitioner.py), as a connector inside the hub's process (the webhook, `omnihub run --connector`)
        could beside the sink's threads. That wait was not measured in the hub: bench_latency.py saw no difference
        from the like change to the vault's HMAC."""
        topics = {topic for _, topic, key, _, _ in prepared if key is not None}
        partitions = {topic: sorted(await self.producer.partitions_for(topic)) for topic in topics}
        return topic_key_partitions([(topic, key) for _, topic, key, _, _ in prepared], partitions)

    def _prepare(self, record: SourceRecord, source: str, by_content: bool) -> tuple:
        """(outcome without its future, topic, key, value, headers) of one record."""
        try:
            key, value, record_id = self.convert(record)
            reason = None
            topic, headers = self.topic, [("connector", self.config.name.encode()),
                                          ("position", record.position.encode())]
        except MappingError as error:
            reason = printable(str(error))
            record_id = self.dead_letter_id(source, record.position, record.raw)
            key, topic = None, self.dead_letter_topic
            raw = record.raw if len(record.raw) <= DEAD_LETTER_HEAD_BYTES else record.raw[:DEAD_LETTER_HEAD_BYTES]
            named = self.mapper.identifiers_of(record.value, lenient=True) if isinstance(record.value, dict) else []
            raw, tokens = self.sealer.seal_raw(raw, named)
            value = self.dead_letter_codec.encode(
                dead_letter(f"connector:{self.config.name}", source, record.position, reason, raw, tokens))
            headers = [("connector", self.config.name.encode()), ("source", printable(source).encode()),
                       ("position", record.position.encode()), ("error", reason[:500].encode())]
        skip_key = f"{record_id}:{hashlib.sha256(record.raw).hexdigest()[:16]}" if by_content else record_id
        return Outcome(record, reason, None, record_id, skip_key), topic, key, value, headers

    async def settle(self, outcomes: list[Outcome], report: RunReport | None, high_water: dict[str, dict[str, int]]) -> None:
        """Wait for every acknowledgement (a failed send raises: the run stops and its position is not
        advanced), count, and note where the next records will land per partition."""
        for outcome in outcomes:
            if outcome.future is not None:
                metadata = await outcome.future
                partitions = high_water.setdefault(metadata.topic, {})
                partitions[str(metadata.partition)] = max(partitions.get(str(metadata.partition), 0), metadata.offset + 1)
            elif report is not None:
                report.already_on_kafka += 1
            if report is not None:
                if outcome.reason is None:
                    report.accepted += 1
                else:
                    report.count_rejection(outcome.reason)

    async def _partition_starts(self) -> dict[str, dict[str, int]]:
        """Per partition, an offset at or before where our next record will land. tansu may report
        a lower end offset than the true one (infra/quirks), which only makes a later tail read longer."""
        consumer = AIOKafkaConsumer(**consumer_config(self.settings, self.bootstrap, group_id=None))
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for topic in (self.topic, self.dead_letter_topic)
                          for p in sorted(await self.producer.partitions_for(topic))]
            ends = await consumer.end_offsets(partitions)
            starts: dict[str, dict[str, int]] = {}
            for tp, end in ends.items():
                starts.setdefault(tp.topic, {})[str(tp.partition)] = end
            return starts
        finally:
            await consumer.stop()

    async def _ids_since(self, starts: dict[str, dict[str, int]], idle_seconds: float = 1.5) -> set[str]:
        """The id headers of every record from the given partition offsets on (reads until idle,
        because tansu's end offsets cannot be trusted)."""
        consumer = AIOKafkaConsumer(**consumer_config(self.settings, self.bootstrap, group_id=None))
        await consumer.start()
        ids: set[str] = set()
        try:
            partitions = {TopicPartition(topic, int(p)): offset for topic, ps in starts.items() for p, offset in ps.items()}
            consumer.assign(list(partitions))
            for tp, offset in partitions.items():
                consumer.seek(tp, offset)
            while batch := await consumer.getmany(timeout_ms=int(idle_seconds * 1000)):
                for messages in batch.values():
                    for message in messages:
                        ids.update(v.decode() for k, v in message.headers if k == ID_HEADER)
        finally:
            await consumer.stop()
        return ids

    # --- file runs --------------------------------------------------------------------------

    def _records(self, path: Path, fmt: str, start: Position, follow: bool) -> Iterator[SourceRecord | None]:
        source = self.config.source if isinstance(self.config.source, FileSource) else None
        if fmt == "csv":
            return read_csv(path, start.offset, start.line, encoding=source.encoding if source else "utf-8",
                            delimiter=source.delimiter if source else ",",
                            group_rows_by=source.group_rows_by if source else None)
        if fmt == "json":
            return read_json_document(path, source.records_at if source else None, start.line)
        return read_jsonl(path, start.offset, start.line, follow=follow)

    def file_format(self, path: Path) -> str:
        source = self.config.source
        if isinstance(source, FileSource):
            return file_format(path, source.format, source.records_at)
        return file_format(path)

    async def run_file(self, path: Path | None = None, follow: bool | None = None, from_start: bool = False,
                       stop: asyncio.Event | None = None, bar_position: int | None = None) -> RunReport:
        """Read a file from its committed position to its end (or, following, until stop is set)."""
        source = self.config.source
        if path is None:
            if not isinstance(source, FileSource):
                raise ValueError(f"connector {self.config.name} reads a webhook; give a file to replay through it")
            path = resolve(self.config_path, source.path)
        path = Path(path).resolve()
        if not path.is_file():
            raise ValueError(f"connector {self.config.name}: no such file {path}")
        fmt = self.file_format(path)
        follow = bool(follow if follow is not None else isinstance(source, FileSource) and source.follow)
        store = PositionStore(Path(self.settings.data_dir) / "connectors", self.config.name)
        position = None if from_start else store.load(path)
        report = RunReport(self.config.name, str(path))
        for warning in revenue_warnings(self.config):
            log.warning("%s: %s", self.config.name, warning)
        this_broker = await asyncio.to_thread(broker_id, self.bootstrap)
        if position is not None and position.broker and position.broker != this_broker:
            # The records before the committed position went to a broker that is not this one (or that lost
            # its data): resuming would skip them for good. Read the file again; event ids make it idempotent.
            report.restarted_because = (f"its positions were committed on broker {position.broker}, this broker is "
                                        f"{this_broker} and does not hold those records")
            log.warning("%s: %s", self.config.name, report.restarted_because)
            position = None
        skip_ids: set[str] = set()
        if position is None:
            position = Position()
        else:
            report.resumed_at = f"{'item' if fmt == 'json' else 'line'} {position.line}"
            if not position.clean and position.produced_from:
                skip_ids = await self._ids_since(position.produced_from)
                log.info("%s: the previous run was interrupted; %d of its records are on Kafka past the committed position",
                         self.config.name, len(skip_ids))
        bar = None
        await self.start()
        try:
            high_water = await self._partition_starts()
            for topic, partitions in position.produced_from.items():
                for partition, offset in partitions.items():  # keep the older bound until this run commits
                    high_water.setdefault(topic, {})[partition] = min(offset, high_water.get(topic, {}).get(partition, offset))
            digested = min(position.offset, HEAD_BYTES)  # how many head bytes position.head_sha256 covers

            def commit(record: SourceRecord | None, clean: bool) -> None:
                nonlocal digested
                if record is not None:
                    position.offset, position.line = record.end_offset, record.end_line
                if digested != min(position.offset, HEAD_BYTES) or not position.head_sha256:
                    digested = min(position.offset, HEAD_BYTES)
                    position.head_sha256 = head_digest(path, digested)
                position.clean = clean
                position.broker = this_broker
                position.produced_from = {t: dict(ps) for t, ps in high_water.items()}
                store.save(path, position)

            commit(None, clean=False)
            # On a terminal: bytes of the file read (for the time left), records read and their rate.
            bar = progress_bar(None if follow else path.stat().st_size, self.config.name, bytes_=True, position=bar_position)
            bar.update(position.offset)
            started = time.monotonic()
            outcomes: list[Outcome] = []
            pending: list[SourceRecord] = []
            last: SourceRecord | None = None
            for record in self._records(path, fmt, position, follow):
                if record is None:  # following, at the end of the file for now
                    if pending:
                        outcomes.extend(await self.send_many(pending, str(path), skip_ids))
                        pending.clear()
                    if outcomes:
                        await self.settle(outcomes, report, high_water)
                        commit(last, clean=False)
                        outcomes.clear()
                    if stop is not None and stop.is_set():
                        break
                    await asyncio.sleep(source.poll_seconds if isinstance(source, FileSource) else 1.0)
                    continue
                report.read += 1
                pending.append(record)
                last = record
                if len(pending) < SEND_CHUNK:
                    continue
                outcomes.extend(await self.send_many(pending, str(path), skip_ids))
                pending.clear()
                if not bar.disable:
                    bar.update(record.end_offset - bar.n)
                    bar.set_postfix_str(f"{report.read:,} records, {report.read / max(time.monotonic() - started, 1e-3):,.0f}/s",
                                        refresh=False)
                await asyncio.sleep(0)  # sending rarely yields: let the producer ship what is queued meanwhile
                if len(outcomes) >= COMMIT_EVERY:
                    await self.settle(outcomes, report, high_water)
                    commit(last, clean=False)
                    outcomes.clear()
                    if stop is not None and stop.is_set():
                        break
            outcomes.extend(await self.send_many(pending, str(path), skip_ids))
            await self.settle(outcomes, report, high_water)
            commit(last, clean=True)
            if not bar.disable and last is not None:
                bar.update(last.end_offset - bar.n)
                bar.set_postfix_str(f"{report.read:,} records: {report.accepted:,} accepted, {report.rejected:,} rejected")
        finally:
            if bar is not None:
                bar.close()
            await self.stop()
        log.info(report.summary())
        return report


async def run_connector(settings: Settings, bootstrap: str, config_path: str | Path, source: Path | None = None,
                        from_start: bool = False, follow: bool | None = None, stop: asyncio.Event | None = None,
                        bar_position: int | None = None) -> RunReport:
    """Run a file connector once (or a webhook connector's mapping over a file, when source is given); on a
    terminal with a progress bar (bar_position: its line among several connectors run at once)."""
    connector = Connector(settings, bootstrap, config_path)
    if isinstance(connector.config.source, WebhookSource) and source is None:
        from connectors.webhook import serve

        return await serve(connector, stop)
    return await connector.run_file(source, follow=follow, from_start=from_start, stop=stop, bar_position=bar_position)


def sample_path(connector: Connector) -> Path:
    """The file `check` and the demo read: a file source's own file, or a webhook config's sample."""
    source = connector.config.source
    relative = source.path if isinstance(source, FileSource) else source.sample
    if relative is None:
        raise ValueError(f"connector {connector.config.name} names no sample file; give one")
    return resolve(connector.config_path, relative)


def sample_records(connector: Connector, path: Path | None = None) -> tuple[Path, Iterator[SourceRecord]]:
    """Every record of a sample file from its start, without positions or Kafka."""
    path = Path(path).resolve() if path else sample_path(connector)
    if not path.is_file():
        raise ValueError(f"connector {connector.config.name}: no such file {path}")
    fmt = connector.file_format(path)
    return path, (r for r in connector._records(path, fmt, Position(), follow=False) if r is not None)
