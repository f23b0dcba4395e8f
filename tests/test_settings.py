import pytest

from infra.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(__import__("os").environ):
        if key.startswith("OMNIHUB_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray ./omnihub.toml


def test_defaults_mean_embedded_servers():
    settings = load_settings()
    assert settings.embedded_kafka and settings.embedded_clickhouse
    assert settings.topics.all_names() == ["customer-timeline", "customer-profiles", "identity-merges", "identity-warnings",
                                           "identity-commands", "campaigns", "customer-erasures", "dead-letters"]
    assert settings.topics.channel_pattern == r"^channel\."


def test_environment_overrides_config_file(tmp_path, monkeypatch):
    config = tmp_path / "hub.toml"
    config.write_text('[kafka]\nbootstrap_servers = "kafka1:9092,kafka2:9092"\n[topics]\ncustomer_timeline = "timeline"\npartitions = 12\n')
    monkeypatch.setenv("OMNIHUB_TOPICS__PARTITIONS", "24")
    settings = load_settings(config)
    assert settings.kafka.bootstrap_servers == "kafka1:9092,kafka2:9092"
    assert not settings.embedded_kafka
    assert settings.topics.customer_timeline == "timeline"
    assert settings.topics.partitions == 24


def test_default_config_file_is_read_from_working_directory(tmp_path):
    (tmp_path / "omnihub.toml").write_text('[clickhouse]\nurl = "http://default:pw@ch.example:8123/"\n')
    assert load_settings().clickhouse.url == "http://default:pw@ch.example:8123/"


def test_misspelled_key_is_named_in_the_error(tmp_path):
    config = tmp_path / "hub.toml"
    config.write_text('[kafka]\nbootstrap_server = "kafka1:9092"\n')
    with pytest.raises(SettingsError, match=r"kafka\.bootstrap_server: unknown setting"):
        load_settings(config)


def test_invalid_value_names_setting_and_env_variable(monkeypatch):
    monkeypatch.setenv("OMNIHUB_KAFKA__BOOTSTRAP_SERVERS", "kafka-without-port")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "kafka.bootstrap_servers" in str(error.value)
    assert "OMNIHUB_KAFKA__BOOTSTRAP_SERVERS" in str(error.value)


def test_unsupported_embedded_storage_is_refused(monkeypatch):
    monkeypatch.setenv("OMNIHUB_KAFKA__EMBEDDED_STORAGE", "sqlite://tansu.db")
    with pytest.raises(SettingsError, match="expected disk, memory://... or s3://"):
        load_settings()


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_malformed_toml_is_an_error(tmp_path):
    config = tmp_path / "hub.toml"
    config.write_text("[kafka\n")
    with pytest.raises(SettingsError, match="invalid configuration"):
        load_settings(config)


def test_query_endpoint_off_loopback_needs_a_token(monkeypatch):
    monkeypatch.setenv("OMNIHUB_CLICKHOUSE__QUERY_HOST", "0.0.0.0")
    with pytest.raises(SettingsError, match="reachable from other machines: set query_token too"):
        load_settings()
    monkeypatch.setenv("OMNIHUB_CLICKHOUSE__QUERY_TOKEN", "s3cret")
    assert load_settings().clickhouse.query_token == "s3cret"


def test_embedded_broker_keeps_its_data_on_disk_unless_told_otherwise():
    assert load_settings().kafka.embedded_storage == "disk"
