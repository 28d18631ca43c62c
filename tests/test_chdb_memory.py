"""The embedded store's allocator gives freed memory back (flowlogs/malloc.py chdb_frees_soon).

Each case runs in a fresh interpreter: chDB reads its allocator settings once, when it loads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import sys, time
from pathlib import Path
from flowlogs.settings import Settings
from pipeline.store import Store
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
store = Store(Settings(home=Path(sys.argv[1])))
store.start()
before = rss_mb()
store.query("SELECT length(groupArray(number)) FROM numbers(40000000)")  # ~1 GB while it runs
time.sleep(1)
print(rss_mb() - before)
store.stop()
"""


def growth_mb(home: Path, **env: str) -> int:
    """How much larger a process is a second after a query that used ~1 GB than before it."""
    environment = {k: v for k, v in os.environ.items() if k != "JE_MALLOC_CONF"} | env
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(home)], capture_output=True, text=True, timeout=120, check=True, env=environment
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_the_embedded_store_gives_back_what_a_query_freed(tmp_path: Path) -> None:
    assert growth_mb(tmp_path / "default") < 100


def test_an_allocator_setting_of_the_users_own_is_kept(tmp_path: Path) -> None:
    # chDB as built gives freed pages back over 5 s: a second later most of the query's ~1 GB is still held.
    assert growth_mb(tmp_path / "as-built", JE_MALLOC_CONF="dirty_decay_ms:5000") > 500
