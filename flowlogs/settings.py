"""Typed configuration: one tree, read from ``FLOWLOGS_*`` environment variables and a file.

Precedence, highest first: explicit arguments (CLI flags), environment variables
(``FLOWLOGS_<SECTION>__<FIELD>``, e.g. ``FLOWLOGS_KAFKA__BOOTSTRAP_SERVERS``), the YAML/TOML
file named by ``FLOWLOGS_CONFIG`` (default ``flowlogs.yaml`` in the working directory when
present), then the defaults below — which run the embedded stack: a local broker, chDB
under ``.flowlogs/``.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, FilePath, ValidationError, model_validator
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
    ssl_cafile: FilePath | None = Field(None, description="PEM file of the CA certificate(s) the brokers' certificates are checked against")

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
    max_batch_rows: int = Field(
        262_144, ge=1,
        description="rows written at once at most (whole closes; a bigger close goes alone): closes waiting"
        " beyond this wait for the next write, so a write's records never hold more in memory",
    )
    merge_threads: int = Field(
        1, ge=1, le=64,
        description="embedded chDB: merges run at once (its background_pool_size); more took CPU from the worker"
        " on 2 cores (pipeline/store.py merge_pool)",
    )
    ttl_days: int = Field(15, ge=1, description="retention of raw flow rows")
    ttl_1m_days: int = Field(7, ge=1, description="retention of the 1-minute rollup")
    ttl_5m_days: int = Field(90, ge=1, description="retention of the 5-minute rollup")
    ttl_1h_days: int = Field(365, ge=1, description="retention of the 1-hour rollup")
    cluster: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="a cluster of the server's remote_servers: every table sharded and replicated across it"
        " (schemas/cluster.py); unset = one server",
    )
    replication_path: str = Field(
        "/clickhouse/tables/{shard}/{database}/{table}",
        description="Keeper path of each replicated table in cluster mode: {database} and {table} are filled in,"
        " {shard} and other macros by each server",
    )

    @model_validator(mode="after")
    def _cluster_is_served(self) -> "StoreSettings":
        if self.cluster and self.url is None:
            raise ValueError("store.cluster needs store.url, a server of that cluster: embedded chDB runs no cluster")
        missing = [m for m in ("{shard}", "{table}") if m not in self.replication_path]
        if missing:
            raise ValueError(f"store.replication_path needs {' and '.join(missing)}: each shard and table its own Keeper path")
        return self

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
    prefetch_frames: int = Field(
        128, ge=1,
        description="frames queued ahead of the one being aggregated (Faust's stream buffer; a frame is up to"
        " ~0.5 MB)",
    )
    poll_frames: int = Field(
        64, ge=1,
        description="frames one poll of the Kafka client hands over at most; they wait, whole, to enter the"
        " stream buffer; the Kafka client fetches again once its last fetch is handed over (or 0.1 s later)",
    )
    fetch_partition_mb: int = Field(
        16, ge=1, le=1024,
        description="what one Kafka fetch asks for per partition (MB, compressed)",
    )
    fetch_wait_ms: int = Field(
        100, ge=1, le=1500,
        description="how long the broker may hold a Kafka fetch for partitions with nothing new; the worker fetches"
        " one request at a time per broker, so its other partitions wait that long (pipeline/frames_consumer.py)",
    )
    malloc_arenas: int = Field(
        2, ge=0,
        description="glibc malloc arenas of the worker and its producer process (0: glibc's default, 8 per core);"
        " with one per thread, memory freed by one thread is not reused by another (flowlogs/malloc.py)",
    )
    malloc_mmap_threshold_kb: int = Field(
        1024, ge=0, le=32 * 1024,
        description="glibc malloc serves blocks of this size or more with a mapping of their own, unmapped when"
        " freed (0: glibc's default, a threshold that rises to the largest block freed, up to 32 MB, after which"
        " such blocks stay in the arenas; flowlogs/malloc.py)",
    )
    malloc_trim_seconds: float = Field(
        10.0, ge=0,
        description="after a write, give memory freed since to the system if the last time was this long ago"
        " (glibc's malloc_trim; 0: never): without it RSS stays at its peak between bursts",
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
    page_rows: int = Field(
        50_000, ge=1, description="flow rows read from the store per query by an export or a what-if (memory per page)"
    )


class ScanSettings(_Section):
    """Scans, in the spirit of Zeek's scan policy: contacts within a sliding period, per VPC."""

    enabled: bool = True
    period_seconds: float = Field(300, gt=0, description="how far back contacts are remembered")
    hosts: float = Field(25, gt=0, description="address scan: score of distinct hosts reached on one port")
    ports: float = Field(15, gt=0, description="port scan: score of distinct ports reached on one host")
    failed_weight: float = Field(1.0, gt=0, description="score of a failed contact (every flow to it TCP SYN-only or REJECT)")
    answered_weight: float = Field(
        0.0, ge=0,
        description="score of a contact that was answered; 0 (Zeek's choice): busy clients — NAT gateways, proxies —"
        " reach thousands of servers a minute. Raise it (e.g. 0.02) to catch sweeps that succeed, at that risk",
    )


class ThreatIpSettings(_Section):
    enabled: bool = True
    lists: tuple[Path, ...] = Field((), description="FireHOL .netset/.ipset or Spamhaus DROP files, or directories of them")
    reload_seconds: float = Field(10, gt=0, description="how often the lists' files are checked for changes")


class UncommonProtocolSettings(_Section):
    enabled: bool = True
    learn_seconds: float = Field(3600, ge=0, description="an ENI's protocol/port pairs seen in its first this-many seconds are its baseline")
    allow: tuple[str, ...] = Field(
        ("tcp/80", "tcp/443", "udp/53", "tcp/53", "udp/123", "icmp"),
        description="pairs never reported: 'tcp/443', 'udp/53', 'icmp', or a protocol number ('47')",
    )


class BroadcastStormSettings(_Section):
    enabled: bool = True
    per: Literal["eni", "subnet"] = "eni"
    packets_per_second: float = Field(1000, gt=0, description="broadcast + multicast packets per second that make a storm")


class BandwidthSettings(_Section):
    enabled: bool = True
    limit_bps: float | None = Field(None, gt=0, description="an ENI's limit in bits/s (in + out); unset = baseline only")
    baseline_factor: float = Field(3.0, gt=1, description="k: alarm over k × the ENI's p95 bits/s of recent windows")
    baseline_windows: int = Field(1440, ge=10, description="recent windows the p95 is taken over")
    baseline_min_windows: int = Field(30, ge=5, description="windows an ENI needs before its baseline is used")
    baseline_min_bps: float = Field(1e6, ge=0, description="rates below this never count as overuse of a baseline")


class DetectorSettings(_Section):
    """Thresholds of every detector; ``DetectSettings.for_scope`` overlays the overrides."""

    scan: ScanSettings = ScanSettings()
    uncommon: UncommonProtocolSettings = UncommonProtocolSettings()
    storm: BroadcastStormSettings = BroadcastStormSettings()
    bandwidth: BandwidthSettings = BandwidthSettings()


class DetectSettings(DetectorSettings):
    enabled: bool = True
    threat_ip: ThreatIpSettings = ThreatIpSettings()
    quiet_seconds: float = Field(600, gt=0, description="an alert not raised again for this long is closed")
    max_scan_contacts: int = Field(
        2_000_000, ge=1000,
        description="contacts the scan detector remembers (34–98 bytes each with their groups' tallies); beyond, the ones seen longest ago are forgotten",
    )
    overrides: dict[str, dict[str, dict[str, Any]]] = Field(
        {},
        description="per VPC, subnet or ENI id: detector sections to change, e.g. {eni-1: {bandwidth: {limit_bps: 1e9}}};"
        " the most specific scope wins (scans take the VPC's)",
    )

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> "DetectSettings":
        for scope in self.overrides:
            self.for_scope(scope)  # a bad override fails at start, naming its scope
        return self

    def for_scope(self, *scope_ids: str) -> DetectorSettings:
        """The thresholds for a VPC, subnet or ENI: ``scope_ids`` from the widest (VPC) to the narrowest (ENI)."""
        merged: dict[str, Any] = {name: getattr(self, name).model_dump() for name in DetectorSettings.model_fields}
        for scope in scope_ids:
            for section, changes in self.overrides.get(scope, {}).items():
                if section not in merged:
                    raise ConfigError(f"detect.overrides.{scope}: no detector section {section!r} (one of {', '.join(merged)})")
                merged[section] = {**merged[section], **changes}
        try:
            return DetectorSettings.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(f"detect.overrides for {'/'.join(scope_ids)}: {_problems(exc)}") from exc


class ApiSettings(_Section):
    token: str | None = Field(
        None, min_length=16,
        description="bearer token every mutation of the worker API needs; unset = one generated in <home>/api-token",
    )
    token_for_reads: bool = Field(False, description="require the token for reads too")


class ReportSettings(_Section):
    geoip_mmdb: Path | None = Field(
        None, description="a MaxMind-format country database (GeoLite2/DB-IP .mmdb); unset = the bundled dataset"
    )
    top: int = Field(20, ge=1, le=10_000, description="rows of top-N reports unless asked otherwise")


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
    detect: DetectSettings = DetectSettings()
    report: ReportSettings = ReportSettings()
    api: ApiSettings = ApiSettings()

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

    def api_token(self) -> str:
        """The worker API's bearer token: ``api.token``, else the one generated in
        ``<home>/api-token`` (made on first use, readable by this user only)."""
        if self.api.token:
            return self.api.token
        path = self.home / "api-token"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            self.home.mkdir(parents=True, exist_ok=True)
            token = secrets.token_urlsafe(24)
            # Written aside, then linked into place: a reader never sees a half-written file.
            partial = path.with_name(f".api-token.{os.getpid()}")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
            try:
                os.link(partial, path)
            except FileExistsError:  # another process made it first
                token = path.read_text().strip()
            finally:
                partial.unlink()
            return token

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
