"""`flowlogs agent --pcap` → real Kafka → worker → chDB: per-flow packets and bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from schemas.inventory import Eni, Inventory, Subnet, Vpc
from tests.integration.test_spine import _stored_totals, _wait_for
from tests.test_pcap import cases, write_pcap

pytestmark = pytest.mark.integration


def test_pcap_replay_lands_per_flow(settings_factory, worker_factory, tmp_path: Path) -> None:
    settings = settings_factory()
    worker = worker_factory(settings)
    inventory = Inventory(
        vpcs=(Vpc(id="vpc-p"),),
        subnets=(Subnet(id="subnet-p", vpc="vpc-p"),),
        enis=(
            Eni(id="eni-v4", subnet="subnet-p", ips=("10.0.1.10",)),
            Eni(id="eni-v6", subnet="subnet-p", ips=("2001:db8::10",)),
        ),
    )
    inventory_path = tmp_path / "inventory.yaml"
    inventory.dump(inventory_path)
    packets, expected = zip(*cases())
    repeats = 50
    capture = write_pcap(
        tmp_path / "replay.pcap", [bytes(p) for p in packets] * repeats, t0=int(time.time()) - 300
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLOGS_")}
    env.update(
        FLOWLOGS_HOME=str(tmp_path / "agent-home"),
        FLOWLOGS_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers or "",
        FLOWLOGS_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
    )
    out = subprocess.run(
        [sys.executable, "-m", "flowlogs.cli", "agent", "--pcap", str(capture), "--inventory", str(inventory_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    summary = orjson.loads(out.stdout.strip().splitlines()[-1])
    total = len(expected) * repeats
    assert summary["packets_read"] == total and summary["packets_sent"] == total and summary["unmatched"] == 0

    want: Counter = Counter()
    for src, _dst, proto, sport, dport, length, _flags in expected:
        eni = "eni-v6" if ":" in src else "eni-v4"
        want[(eni, proto, sport, dport, "packets")] += repeats
        want[(eni, proto, sport, dport, "bytes")] += length * repeats
    _wait_for(lambda: _stored_totals(worker)[0] >= total, 90, "the replayed packets in the store")
    _, rows = worker.query(
        "SELECT interface_id, protocol, srcport, dstport, sum(packets), sum(bytes), any(flow_direction)"
        " FROM flows GROUP BY interface_id, protocol, srcport, dstport"
    )
    got: Counter = Counter()
    for eni, proto, sport, dport, pk, by, direction in rows:
        got[(eni, proto, sport, dport, "packets")] += pk
        got[(eni, proto, sport, dport, "bytes")] += by
        assert direction == "egress"
    assert got == want
