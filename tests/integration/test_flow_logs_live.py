"""Flow-log management end to end (real Kafka, a worker, chDB): until a flow log exists
everything is recorded; a flow log limits records to its scope within one window + 5 s;
enabling one on an idle ENI brings its NODATA records, disabling stops them; mutations
need the API token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agents.publisher import FramePublisher
from agents.synthetic import SyntheticConfig, synthetic_inventory
from flowlogs.kafka import ensure_topics
from schemas.inventory import Eni
from tests.integration.helpers import paced_agent, wait_for

pytestmark = pytest.mark.integration

WINDOW = 5
IDLE = "eni-idle000000000"


def call(worker, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(worker.api + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read())
        exc.close()
        return exc.code, answer


def enis_recorded_after(worker, moment: float) -> set[str]:
    _, rows = worker.query(f"SELECT DISTINCT interface_id FROM flows WHERE window_start >= toDateTime({int(moment)})")
    return {r[0] for r in rows}



def test_flow_logs_pick_what_is_recorded(settings_factory, worker_factory, tmp_path: Path) -> None:
    inventory = synthetic_inventory(4, 5)
    inventory = inventory.model_copy(update={"enis": (*inventory.enis, Eni(id=IDLE, subnet=inventory.subnets[0].id, ips=("10.0.0.99",)))})
    inventory_file = tmp_path / "inventory.yaml"
    inventory.dump(inventory_file)
    settings = settings_factory(
        kafka={"session_timeout_seconds": 6},
        worker={"window_seconds": WINDOW, "idle_close_seconds": 2.0, "allowed_lateness_seconds": 1.0, "inventory": str(inventory_file)},
        store={"batch_seconds": 0.3},
    )
    ensure_topics(settings)
    worker = worker_factory(settings)
    token = settings.api_token()
    traffic_enis = [e.id for e in inventory.enis[:4]]
    agent, sent = paced_agent(settings, SyntheticConfig(enis=4, flows=400, rate=3_000, duration=50, seed=5, chunk_packets=1024))
    stop = threading.Event()

    def watch_idle() -> None:  # an agent watching the idle ENI: heartbeats, no packets
        publisher = FramePublisher(settings)
        publisher.start()
        last = time.time_ns()
        while not stop.wait(0.5):
            now = time.time_ns()
            publisher.heartbeat((IDLE,), last, now)
            last = now
        publisher.stop()

    idle_agent = threading.Thread(target=watch_idle, daemon=True)
    agent.start()
    idle_agent.start()
    try:
        # No flow log yet: everything, the idle ENI's NODATA included.
        started = time.time()
        wait_for(lambda: enis_recorded_after(worker, started) == {*traffic_enis, IDLE}, 30, "records of every ENI")
        assert call(worker, "GET", "/api/v1/flow-logs") == (200, {"flow_logs": [], "recording_everything": True})

        body = {"name": "web tier", "scope": f"eni:{traffic_enis[0]}", "filter": "ALL", "destinations": ["store", "topic"]}
        assert call(worker, "POST", "/api/v1/flow-logs", body)[0] == 401
        assert call(worker, "POST", "/api/v1/flow-logs", body, token="x" * 32)[0] == 401
        assert call(worker, "POST", "/api/v1/flow-logs", {**body, "scope": "vpc:nope"}, token)[0] == 400
        assert call(worker, "POST", "/api/v1/flow-logs", {**body, "filter": "SOME"}, token)[0] == 400
        status, web = call(worker, "POST", "/api/v1/flow-logs", body, token)
        assert status == 201 and web["window_seconds"] == WINDOW and web["enabled"] is True
        created = time.time()
        # From the window after the one in progress, only the flow log's ENI. (That window
        # starts within WINDOW of now and is written a window + lateness after it starts.)
        after = (int(created) // WINDOW + 1) * WINDOW
        wait_for(lambda: enis_recorded_after(worker, after) == {traffic_enis[0]}, WINDOW + 10, "records of eni 0 only")
        assert enis_recorded_after(worker, after) == {traffic_enis[0]}

        # Enabling a flow log on the idle ENI: its NODATA records come back within one window + 5 s.
        status, idle = call(worker, "POST", "/api/v1/flow-logs", {"name": "idle", "scope": f"eni:{IDLE}"}, token)
        assert status == 201
        enabled = time.time()
        in_progress = enabled - enabled % WINDOW  # the window under way when it was enabled
        waited = wait_for(lambda: IDLE in enis_recorded_after(worker, in_progress), WINDOW + 10, "NODATA of the idle ENI")
        assert waited <= WINDOW + 5
        _, rows = worker.query(f"SELECT DISTINCT toString(log_status) FROM flows WHERE interface_id = '{IDLE}'")
        assert rows == [["NODATA"]]
        # Disabling it stops them.
        assert call(worker, "PATCH", f"/api/v1/flow-logs/{idle['id']}", {"enabled": False})[0] == 401
        status, disabled = call(worker, "PATCH", f"/api/v1/flow-logs/{idle['id']}", {"enabled": False}, token)
        assert status == 200 and disabled["enabled"] is False and disabled["version"] == 2
        off = time.time()
        time.sleep(2 * WINDOW + 3)
        assert IDLE not in enis_recorded_after(worker, off + WINDOW)

        status, listed = call(worker, "GET", "/api/v1/flow-logs")
        assert status == 200 and sorted(f["name"] for f in listed["flow_logs"]) == ["idle", "web tier"]
        assert listed["recording_everything"] is False
        assert call(worker, "DELETE", f"/api/v1/flow-logs/{web['id']}", token=token) == (200, {"deleted": web["id"]})
        assert call(worker, "GET", f"/api/v1/flow-logs/{web['id']}")[0] == 404

        # The command line manages the same flow logs.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLOGS_")}
        env["FLOWLOGS_CONFIG"] = str(settings.home / f"worker-{settings.worker.api_port}.yaml")

        def flowlog(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "flowlogs.cli", "flowlog", *args], env=env, capture_output=True, text=True, timeout=60)

        made = flowlog("create", "--name", "from-cli", "--scope", f"eni:{traffic_enis[1]}", "--filter", "REJECT", "--destinations", "store")
        assert made.returncode == 0, made.stderr
        cli_id = json.loads(made.stdout)["id"]
        wait_for(lambda: call(worker, "GET", f"/api/v1/flow-logs/{cli_id}")[0] == 200, 10, "the worker sees the CLI's flow log")
        assert call(worker, "GET", f"/api/v1/flow-logs/{cli_id}")[1]["destinations"] == ["store"]
        assert json.loads(flowlog("disable", cli_id).stdout)["enabled"] is False
        assert json.loads(flowlog("show", cli_id).stdout)["name"] == "from-cli"
        assert flowlog("list").returncode == 0
        bad = flowlog("show", "fl-nope")
        assert bad.returncode == 2 and "no flow log" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        stop.set()
        agent.join(90)
        idle_agent.join(10)
    assert sent and sent[0].failed_frames == 0
