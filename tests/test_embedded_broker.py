import socket

import pytest

from infra.broker import BrokerError, EmbeddedBroker
from tests.fixtures import first_port_choice_taken

pytestmark = pytest.mark.integration


def test_starts_on_a_free_port_logs_to_a_file_and_stops_cleanly(tmp_path):
    with EmbeddedBroker(tmp_path) as broker:
        assert broker.process.poll() is None
        socket.create_connection(("127.0.0.1", broker.port), timeout=2).close()
    assert broker.process.returncode == 0
    assert "listening on" in broker.log_file.read_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", broker.port), timeout=1).close()


def test_a_broker_that_cannot_start_fails_fast_with_its_log(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(BrokerError, match="exited with code"):
            broker.start(timeout=20)


def test_a_port_taken_before_tansu_listens_is_chosen_again(tmp_path, monkeypatch, caplog):
    """The ports are chosen free, then handed to tansu: another process may take one in between."""
    with first_port_choice_taken(monkeypatch) as (busy, chosen):
        with caplog.at_level("WARNING", logger="infra.broker"):
            with EmbeddedBroker(tmp_path) as broker:
                assert broker.port != busy and broker.process.poll() is None
                socket.create_connection(("127.0.0.1", broker.port), timeout=2).close()
    assert len(chosen) == 2
    assert [r.getMessage() for r in caplog.records if r.name == "infra.broker" and r.levelname == "WARNING"] == \
        [f"embedded broker: port {busy} was taken before it could listen; starting again on {broker.port}"]


def test_a_topic_is_deleted_on_the_disk_engine(tmp_path):
    """DeleteTopics on tansu's S3 engine deletes the topic's objects in one DeleteObjects request, which the
    hub's object store answers (the worker deletes each compacted generation of its state changelog)."""
    from kafka import KafkaProducer

    from infra.kafka import delete_topics, ensure_topics, matching_topics

    with EmbeddedBroker(tmp_path / "logs", "disk", disk_dir=tmp_path / "broker") as broker:
        bootstrap = broker.bootstrap_servers
        ensure_topics(bootstrap, ["doomed", "kept"], 1, 1)
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for topic in ("doomed", "kept"):
            producer.send(topic, b"x", partition=0)
        producer.flush()
        producer.close()
        assert delete_topics(bootstrap, ["doomed"]) == ["doomed"]
        assert matching_topics(bootstrap, "^(doomed|kept)$") == ["kept"]
    assert not list((tmp_path / "broker").rglob("*doomed*"))   # nothing of it left on disk
