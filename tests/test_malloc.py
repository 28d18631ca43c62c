"""The malloc arena cap of the worker processes (flowlogs/malloc.py), seen in glibc's own
report of its heaps. Each case runs in a fresh interpreter: the cap is process-wide."""

from __future__ import annotations

import platform
import re
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, os, sys, threading
from flowlogs.malloc import limit_arenas
print(limit_arenas(int(sys.argv[1])), file=sys.stderr)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
held, ready, done = [], threading.Barrier(9), threading.Event()
def allocate():
    held.append(libc.malloc(4096))  # a thread's first malloc picks (or makes) its arena
    ready.wait()
    done.wait()
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads:
    t.start()
ready.wait()
libc.fdopen.restype = ctypes.c_void_p
libc.fdopen.argtypes = (ctypes.c_int, ctypes.c_char_p)
out = libc.fdopen(os.dup(1), b"w")
libc.malloc_info(0, ctypes.c_void_p(out))
libc.fflush(ctypes.c_void_p(out))
done.set()
"""

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's (CI runs Debian)")


def heaps(arenas: int) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(arenas)], capture_output=True, text=True, timeout=60, check=True)
    return out.stderr.strip() == "True", len(re.findall(r"<heap nr=", out.stdout))


def test_two_arenas_serve_eight_threads() -> None:
    applied, count = heaps(2)
    assert applied and count == 2


def test_zero_leaves_glibcs_default() -> None:
    applied, count = heaps(0)
    assert not applied and count > 2  # main arena + one per thread, up to 8 per core
