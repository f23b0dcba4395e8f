"""A lost broker is said once: the Kafka clients' repeated connection errors are collapsed."""
from __future__ import annotations

import io
import logging

from infra.logs import OncePerCause


def test_repeated_client_errors_are_said_once_and_what_was_muted_is_counted():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    once = OncePerCause(mute_seconds=60)
    handler.addFilter(once)
    logger = logging.getLogger("aiokafka.test-once")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for _ in range(78):
            logger.error("Unable connect to node with id %s: %s", 111, OSError(111, "Connect call failed"))
            logger.error("Unable to update metadata from [%s]", 111)
        logging.getLogger("omnihub.test-once").addHandler(handler)
        logging.getLogger("omnihub.test-once").error("the sink stopped")  # our own lines always pass
        once.last_shown["broker connection"] = -1e9                        # the mute window has passed
        logger.error("Unable connect to node with id %s: %s", 111, "again")
    finally:
        logger.removeHandler(handler)
        logging.getLogger("omnihub.test-once").removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == ("Kafka broker unreachable or failing: Unable connect to node with id 111: [Errno 111] Connect "
                        "call failed; similar client errors are muted for 60 s")
    assert lines[1] == "the sink stopped"
    assert lines[2].endswith("(155 similar lines muted before this one)")
    assert len(lines) == 3


def test_a_record_whose_arguments_do_not_fit_its_message_still_passes():
    record = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, "%s %s", ("only one",), None)
    assert OncePerCause().filter(record) is True
