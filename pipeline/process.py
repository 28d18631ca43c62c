"""WorkerProcess: `flowlogs worker` as a child process with exactly the parent's settings.

Used by `flowlogs up`, the integration tests and the benchmarks. The settings travel as a
config file (FLOWLOGS_CONFIG); the parent's other FLOWLOGS_* variables are not inherited,
so what the child runs with is what the parent decided.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from flowlogs.errors import FlowLogsError
from flowlogs.settings import Settings
from pipeline.api_auth import bearer
from pipeline.query import query_api


class WorkerProcess:
    def __init__(self, settings: Settings, log_path: Path | None = None) -> None:
        self.settings = settings
        self.api = f"http://{settings.worker.api_host}:{settings.worker.api_port}"
        self.log_path = log_path or settings.home / f"worker-{settings.worker.api_port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 90.0) -> "WorkerProcess":
        home = self.settings.home
        home.mkdir(parents=True, exist_ok=True)
        config = home / f"worker-{self.settings.worker.api_port}.yaml"
        config.write_text(yaml.safe_dump(self.settings.model_dump(mode="json", exclude_none=True)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLOGS_")}
        env["FLOWLOGS_CONFIG"] = str(config)
        with self.log_path.open("ab") as log_file:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "flowlogs.cli", "worker"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise FlowLogsError(f"the worker exited with code {self._proc.returncode}; {self.log_path}:\n{self.log_tail()}")
            try:
                self.get("/health")
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        self.kill()
        raise FlowLogsError(f"the worker API did not answer within {timeout:.0f} s; see {self.log_path}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def get(self, path: str, timeout: float = 5.0) -> dict[str, Any]:
        with urllib.request.urlopen(self.api + path, timeout=timeout) as response:
            return dict(json.loads(response.read()))

    def post(self, path: str, timeout: float = 120.0) -> dict[str, Any]:
        request = urllib.request.Request(self.api + path, data=b"{}", method="POST", headers=bearer(self.settings))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return dict(json.loads(response.read()))

    def stats(self) -> dict[str, Any]:
        return self.get("/stats")

    def query(self, sql: str) -> tuple[list[str], list[list[Any]]]:
        return query_api(self.api, sql)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (the worker writes and commits open windows), SIGKILL after ``timeout``."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return int(proc.returncode)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
