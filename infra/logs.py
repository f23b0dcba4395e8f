"""Logging for people: a lost broker is said once, not 78 times a second.

Kafka clients (aiokafka, kafka-python, Faust's consumer) log every failed connection attempt, fetch
and metadata refresh while a broker is away. This filter lets the first of them through, marked as
the one line about it, and mutes the same kind for a while; it counts what it muted and says so with
the next line it lets through.
"""
from __future__ import annotations

import logging
import re
import time

CLIENT_LOGGERS = ("aiokafka", "kafka", "faust", "mode")
CONNECTION_TROUBLE = re.compile(r"connect|NodeNotReady|not ready|metadata|Coordinator|Connection|timed? ?out|"
                                r"KafkaError|UnknownError|retrying", re.IGNORECASE)


class OncePerCause(logging.Filter):
    def __init__(self, mute_seconds: float = 60.0):
        super().__init__()
        self.mute_seconds = mute_seconds
        self.last_shown: dict[str, float] = {}
        self.muted: dict[str, int] = {}

    def _cause(self, record: logging.LogRecord) -> str | None:
        if not record.name.startswith(CLIENT_LOGGERS) or record.levelno < logging.WARNING:
            return None
        message = record.getMessage()
        return "broker connection" if CONNECTION_TROUBLE.search(message) else f"{record.name}:{record.msg}"

    def filter(self, record: logging.LogRecord) -> bool:
        # A filter runs inside the caller's log call: an exception here would kill the client's own task
        # (aiokafka's metadata synchronizer, say). Whatever happens, the record goes through unchanged.
        try:
            return self._filter(record)
        except Exception:
            return True

    def _filter(self, record: logging.LogRecord) -> bool:
        cause = self._cause(record)
        if cause is None:
            return True
        now = time.monotonic()
        if now - self.last_shown.get(cause, -1e9) < self.mute_seconds:
            self.muted[cause] = self.muted.get(cause, 0) + 1
            return False
        self.last_shown[cause] = now
        muted = self.muted.pop(cause, 0)
        note = f" ({muted} similar lines muted before this one)" if muted else ""
        if cause == "broker connection":
            message = record.getMessage()
            record.msg = "Kafka broker unreachable or failing: %s; similar client errors are muted for %.0f s%s"
            record.args = (message, self.mute_seconds, note)
        elif note:
            record.msg, record.args = "%s%s", (record.getMessage(), note)
        return True


def install(level: int = logging.INFO) -> None:
    """Root logging for every omnihub command, with client noise collapsed."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka", "clickhouse_connect"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    once = OncePerCause()
    for handler in logging.getLogger().handlers:
        handler.addFilter(once)
