"""Typed configuration: one tree, read from ``FLOWLOGS_*`` environment variables and a file.

Precedence, highest first: explicit arguments (CLI flags), environment variables
(``FLOWLOGS_<SECTION>__<FIELD>``, e.g. ``FLOWLOGS_KAFKA__BOOTSTRAP_SERVERS``), the YAML/TOML
file named by ``FLOWLOGS_CONFIG`` (default ``flowlogs.yaml`` in the working directory when
present), then the defaults below — which run the embedded stack: a local broker, chDB
under ``.flowlogs/``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from flowlogs.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str | None = Field(
        None, description="host:port list of an existing cluster; unset = the local broker from `flowlogs broker`"
    )
    topic_prefix: str = "flowlogs."
    partitions: int = Field(8, ge=1, description="partitions of topics this project creates")
    replication_factor: int = Field(1, ge=1)
    session_timeout_seconds: float = Field(
        10.0, ge=6, description="consumer-group session timeout; short keeps group joins fast (Tansu waits it out)"
    )
    frame_retention_hours: float = Field(24, gt=0, description="how long raw frames stay on the frames topic")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: Path | None = None

    def confluent_config(self) -> dict[str, Any]:
        """Client settings in librdkafka spelling (bootstrap excluded)."""
        conf: dict[str, Any] = {"security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf.update(
                {
                    "sasl.mechanism": self.sasl_mechanism,
                    "sasl.username": self.sasl_username or "",
                    "sasl.password": self.sasl_password or "",
                }
            )
        if self.ssl_cafile:
            conf["ssl.ca.location"] = str(self.ssl_cafile)
        return conf


class BrokerSettings(_Section):
    kind: Literal["auto", "kafka", "tansu"] = Field(
        "auto", description="auto = Apache Kafka when java is on PATH, else Tansu"
    )
    host: str = "127.0.0.1"
    port: int = Field(9092, ge=0, le=65535, description="0 picks a free port")
    heap: str = "1g"


class StoreSettings(_Section):
    url: str | None = Field(None, description="http(s)://user:pass@host:8123 of a ClickHouse server; unset = chDB")
    path: Path | None = Field(None, description="chDB data directory; default <home>/chdb")
    database: str = "flowlogs"
    batch_rows: int = Field(10_000, ge=1, description="insert when this many rows are buffered…")
    batch_seconds: float = Field(1.0, gt=0, description="…or when the oldest buffered row is this old")
    ttl_days: int = Field(15, ge=1, description="retention of raw flow rows")
    ttl_1m_days: int = Field(7, ge=1, description="retention of the 1-minute rollup")
    ttl_5m_days: int = Field(90, ge=1, description="retention of the 5-minute rollup")
    ttl_1h_days: int = Field(365, ge=1, description="retention of the 1-hour rollup")

    def rollup_ttl_days(self) -> dict[str, int]:
        """Retention of each rollup, by its label in schemas/rollups.py."""
        return {"1m": self.ttl_1m_days, "5m": self.ttl_5m_days, "1h": self.ttl_1h_days}


class WorkerSettings(_Section):
    app_id: str = "flowlogs-worker"
    window_seconds: int = Field(60, ge=5, le=600, description="flow aggregation window (AWS: 60 or 600)")
    allowed_lateness_seconds: float = Field(
        2.0,
        ge=0,
        description="how long a window waits for late packets; live agents deliver frames ≤ ~1.1 s old"
        " (agent.frame_seconds + linger), and their heartbeats must come at least this often",
    )
    idle_close_seconds: float = Field(
        10.0, gt=0, description="close a partition's windows when no frame arrived for this long"
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(6066, ge=0, le=65535)
    inventory: Path | None = Field(None, description="inventory YAML/JSON: vpc-id/subnet-id, subnets and ENI IPs for verdicts")
    rules: Path | None = Field(
        None, description="rule set YAML/JSON in force at start; `flowlogs rules apply` publishes newer ones"
    )
    record_filter: Literal["ALL", "ACCEPT", "REJECT"] = Field(
        "ALL", description="store and publish only the records with this action (NODATA/SKIPDATA rows always)"
    )


class AgentSettings(_Section):
    agent_id: str = Field("agent-1", max_length=16)
    frame_packets: int = Field(8192, ge=1, le=65_535, description="packets per frame (per Kafka message)")
    frame_seconds: float = Field(
        1.0, gt=0, le=60, description="capture time one frame spans at most; frames go out oldest first across ENIs"
    )
    linger_ms: int = Field(20, ge=0)
    compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = "lz4"
    send_buffer_mb: int = Field(
        256, ge=16, description="frames waiting for Kafka; when full, live capture drops the oldest (counted, reported)"
    )
    delivery_timeout_seconds: float = Field(30.0, gt=0, description="a frame Kafka has not taken by then counts as dropped")
    heartbeat_seconds: float = Field(
        1.0,
        gt=0,
        description="capture time between heartbeats: ENIs watched with no traffic get NODATA records;"
        " keep it below the workers' allowed lateness, or a heartbeat comes after its window closed",
    )
    metrics_port: int | None = Field(None, ge=0, lt=65536, description="serve Prometheus metrics on this port (0 = any free one)")
    metrics_host: str = "127.0.0.1"


class ExportSettings(_Section):
    account_id: str | None = Field(
        None, pattern=r"^\S+$", description="account-id written in tencent/aws exports (no spaces); unset = '-'"
    )
    page_rows: int = Field(50_000, ge=1, description="flow rows read from the store per query while exporting")


class _FileSource(PydanticBaseSettingsSource):
    """Values from the file named by FLOWLOGS_CONFIG (or ./flowlogs.yaml if present)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        named = os.environ.get("FLOWLOGS_CONFIG")
        path = Path(named) if named else Path("flowlogs.yaml")
        self._data: dict[str, Any] = {}
        if named and not path.exists():
            raise ConfigError(f"FLOWLOGS_CONFIG names {path}, which does not exist")
        if path.exists():
            try:
                text = path.read_text()
                data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
            except (OSError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from exc
            if not isinstance(data, dict):
                raise ConfigError(f"config file {path} must hold a mapping of sections")
            self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLOWLOGS_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    home: Path = Field(Path(".flowlogs"), description="state directory: broker data, chDB, run files")
    kafka: KafkaSettings = KafkaSettings()
    broker: BrokerSettings = BrokerSettings()
    store: StoreSettings = StoreSettings()
    worker: WorkerSettings = WorkerSettings()
    agent: AgentSettings = AgentSettings()
    export: ExportSettings = ExportSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls)

    @property
    def chdb_path(self) -> Path:
        return self.store.path or self.home / "chdb"

    def topic(self, suffix: str) -> str:
        return self.kafka.topic_prefix + suffix

    def with_section(self, section: str, **changes: Any) -> "Settings":
        """A copy with some fields of one section replaced (CLI flags use this)."""
        current = getattr(self, section)
        try:
            updated = type(current).model_validate({**current.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(f"invalid {section} setting: {_problems(exc)}") from exc
        return self.model_copy(update={section: updated})


def load_settings(**overrides: Any) -> Settings:
    """Build the settings tree, turning validation errors into a readable ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {_problems(exc)}") from exc


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
