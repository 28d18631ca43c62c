from pathlib import Path

import pytest

from flowlogs.errors import ConfigError
from flowlogs.settings import Settings, load_settings


def test_defaults_run_the_embedded_stack() -> None:
    s = Settings()
    assert s.kafka.bootstrap_servers is None  # the local broker
    assert s.store.url is None  # chDB
    assert s.chdb_path == Path(".flowlogs/chdb")
    assert s.worker.window_seconds == 60


def test_environment_overrides_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "flowlogs.yaml"
    config.write_text("worker:\n  window_seconds: 120\n  api_port: 7000\nkafka:\n  topic_prefix: x.\n")
    monkeypatch.setenv("FLOWLOGS_CONFIG", str(config))
    monkeypatch.setenv("FLOWLOGS_WORKER__WINDOW_SECONDS", "30")
    s = load_settings()
    assert s.worker.window_seconds == 30
    assert s.worker.api_port == 7000
    assert s.kafka.topic_prefix == "x."


def test_invalid_values_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLOGS_WORKER__WINDOW_SECONDS", "2")
    with pytest.raises(ConfigError, match="window_seconds"):
        load_settings()


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLOWLOGS_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_a_missing_ca_file_is_named_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLOWLOGS_KAFKA__SSL_CAFILE", str(tmp_path / "no-ca.pem"))
    with pytest.raises(ConfigError, match=r"ssl_cafile(.|\n)*does not point to a file"):
        load_settings()
    (tmp_path / "no-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert load_settings().kafka.ssl_cafile == tmp_path / "no-ca.pem"


def test_with_section_validates() -> None:
    with pytest.raises(ConfigError, match="window_seconds"):
        Settings().with_section("worker", window_seconds=3)
    assert Settings().with_section("worker", window_seconds=5).worker.window_seconds == 5

