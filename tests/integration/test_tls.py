"""Security on the wire, TLS: a local Apache Kafka whose clients must talk TLS (alone, and
with SASL/PLAIN logins over it), its certificate signed by a CA made for the test. A worker
and an agent that trust that CA (``kafka.ssl_cafile``) get every packet stored exactly once
per ENI; a client that does not trust it is refused with a message that says so."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.synthetic import SyntheticConfig
from deploy.broker import LocalBroker, free_port
from flowlogs.errors import BrokerError
from flowlogs.kafka import ensure_topics
from flowlogs.settings import Settings
from tests.integration.helpers import paced_agent, wait_until_stored_exactly

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test CA (.ci/run installs it)"),
]

USER, PASSWORD = "flowlogs", "tls-pass-phrase"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the CA's certificate, the broker's keystore: its key and certificate for 127.0.0.1, PEM)."""
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=flowlogs test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "broker.pem",
             "-days", "2", "-extfile", "san.ext", cwd=d)
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "broker.key", "-out", "broker.pk8", cwd=d)
    keystore = d / "keystore.pem"
    keystore.write_text((d / "broker.pk8").read_text() + (d / "broker.pem").read_text())
    return d / "ca.pem", keystore


@pytest.fixture(params=["SSL", "SASL_SSL"])
def tls_broker(request: pytest.FixtureRequest, certificates: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(bootstrap address, security protocol) of a broker taking only that protocol."""
    protocol = request.param
    users = {USER: PASSWORD} if protocol == "SASL_SSL" else None
    broker = LocalBroker(tmp_path / "kafka", kind="kafka", port=0, heap="384m", sasl_users=users, tls_keystore=certificates[1])
    yield broker.start(timeout=180), protocol
    broker.stop()


def tls_settings(bootstrap: str, protocol: str, home: Path, cafile: Path | None) -> Settings:
    run = uuid.uuid4().hex[:8]
    login = {"sasl_mechanism": "PLAIN", "sasl_username": USER, "sasl_password": PASSWORD} if protocol == "SASL_SSL" else {}
    return Settings(
        home=home,
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": f"t{run}.", "partitions": 2, "session_timeout_seconds": 6,
               "security_protocol": protocol, "ssl_cafile": cafile, **login},
        worker={"app_id": f"tls-{run}", "window_seconds": 5, "idle_close_seconds": 2.0, "allowed_lateness_seconds": 1.0,
                "api_port": free_port()},
        store={"batch_seconds": 0.3},
    )


def test_a_worker_and_an_agent_over_tls(tls_broker: tuple[str, str], certificates: tuple[Path, Path], worker_factory, tmp_path: Path) -> None:
    bootstrap, protocol = tls_broker
    with pytest.raises(BrokerError, match=r"the TLS handshake with Kafka at .* failed: .*certificate verify failed.*kafka\.ssl_cafile"):
        ensure_topics(tls_settings(bootstrap, protocol, tmp_path / "untrusting", cafile=None), timeout=10)
    settings = tls_settings(bootstrap, protocol, tmp_path / "home", cafile=certificates[0])
    ensure_topics(settings)
    worker = worker_factory(settings)
    thread, stats = paced_agent(settings, SyntheticConfig(enis=3, flows=300, rate=5_000, duration=8, seed=77, chunk_packets=1024))
    thread.start()
    thread.join(90)
    assert stats and stats[0].failed_frames == 0
    sent = {eni: (c.packets, c.bytes) for eni, c in stats[0].per_eni.items()}
    assert len(sent) == 3 and all(packets > 0 for packets, _ in sent.values())
    wait_until_stored_exactly(worker, sent)
