import socket

import pytest

from infra.broker import BrokerError, EmbeddedBroker

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
