"""The `flowlogs` command: clear errors for bad input, without tracebacks."""

import os
import subprocess
import sys
from pathlib import Path

import orjson


def flowlogs(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLOGS_")}
    environment.update(FLOWLOGS_HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, "-m", "flowlogs.cli", *args], env=environment, capture_output=True, text=True, timeout=120
    )


def test_help_lists_the_commands(tmp_path: Path) -> None:
    out = flowlogs("--help", home=tmp_path)
    assert out.returncode == 0
    for command in ("broker", "agent", "worker", "up", "query", "export", "schemas"):
        assert command in out.stdout


def test_worker_without_a_broker_says_how_to_get_one(tmp_path: Path) -> None:
    out = flowlogs("worker", home=tmp_path)
    assert out.returncode == 2
    assert "no Kafka broker" in out.stderr and "flowlogs broker" in out.stderr
    assert "Traceback" not in out.stderr


def test_agent_needs_a_source(tmp_path: Path) -> None:
    out = flowlogs("agent", home=tmp_path)
    assert out.returncode == 2
    assert "--synthetic" in out.stderr


def test_agent_source_errors_say_what_to_do(tmp_path: Path) -> None:
    two = flowlogs("agent", "--synthetic", "--vxlan", home=tmp_path)
    assert two.returncode == 2 and "--synthetic, --vxlan" in two.stderr.replace("\n", " ")
    stray = flowlogs("agent", "--pcap", "x.pcap", "--netns", "ns1", home=tmp_path)
    assert stray.returncode == 2 and "--netns names the network namespace of --interface" in stray.stderr
    no_inventory = flowlogs("agent", "--vxlan", home=tmp_path)
    assert no_inventory.returncode == 2 and "--vxlan needs --inventory FILE" in no_inventory.stderr
    assert "Traceback" not in two.stderr + stray.stderr + no_inventory.stderr


def test_invalid_setting_names_the_variable(tmp_path: Path) -> None:
    out = flowlogs("query", "SELECT 1", home=tmp_path, FLOWLOGS_STORE__BATCH_ROWS="lots")
    assert out.returncode == 2
    assert "batch_rows" in out.stderr


def test_query_opens_a_free_store_and_reports_bad_sql(tmp_path: Path) -> None:
    ok = flowlogs("query", "SELECT count() AS n FROM flows", "--format", "json", home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert orjson.loads(ok.stdout) == {"n": 0}
    bad = flowlogs("query", "SELEKT nonsense", home=tmp_path)
    assert bad.returncode == 2
    assert "query failed" in bad.stderr and "Traceback" not in bad.stderr
    write = flowlogs("query", "DROP TABLE flows", home=tmp_path)
    assert write.returncode == 2 and "readonly" in write.stderr.lower()


def test_export_refuses_bad_times_and_formats(tmp_path: Path) -> None:
    bad_format = flowlogs("export", "--since", "1h", "--format", "csv", home=tmp_path)
    assert bad_format.returncode == 2
    assert "unknown export format 'csv'" in bad_format.stderr and "Traceback" not in bad_format.stderr
    bad_time = flowlogs("export", "--since", "last tuesday", "--format", "aws", home=tmp_path)
    assert bad_time.returncode == 2
    assert "--since 'last tuesday' is not a time" in bad_time.stderr and "Traceback" not in bad_time.stderr
    assert not (tmp_path / "chdb").exists()  # refused before the store was opened
