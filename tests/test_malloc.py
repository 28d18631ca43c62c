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


# malloc and free from ctypes, and the probe's RSS.
LIBC = r"""
import ctypes, sys
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
def rss_mb():
    with open("/proc/self/status") as fh:
        return int(next(line for line in fh if line.startswith("VmRSS:")).split()[1]) / 1024
"""

RELEASE_PROBE = LIBC + r"""
from flowlogs.malloc import release_free_memory
chunks = [libc.malloc(64 * 1024) for _ in range(3200)]  # 200 MB below the mmap threshold: heap memory
for c in chunks:
    ctypes.memset(c, 1, 64 * 1024)
top = libc.malloc(64 * 1024)  # allocated last: the heap's top stays in use, so free() alone returns nothing
for c in chunks:
    libc.free(c)
before = rss_mb()
released = release_free_memory() if sys.argv[1] == "release" else False
print(released, before, rss_mb())
"""


def rss_after_free(how: str) -> tuple[bool, float, float]:
    out = subprocess.run([sys.executable, "-c", RELEASE_PROBE, how], capture_output=True, text=True, timeout=60, check=True)
    released, before, after = out.stdout.split()
    return released == "True", float(before), float(after)


def test_freed_heap_memory_is_given_back_to_the_system() -> None:
    kept, before_kept, after_kept = rss_after_free("keep")
    released, before, after = rss_after_free("release")
    assert before_kept > 150 and before > 150  # the freed 200 MB still count without a release
    assert not kept and after_kept > 150
    assert released and after < before - 150


ARROW_PROBE = r"""
import sys
import pyarrow as pa
from flowlogs.malloc import arrow_allocates_with_malloc, release_free_memory
if sys.argv[1] == "malloc":
    arrow_allocates_with_malloc()
def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
pa.array(range(2_000_000))  # the conversion machinery, loaded once
before = rss_mb()
arrays = [pa.array(range(2_000_000)) for _ in range(10)]  # ~160 MB of Arrow buffers
arrays = None
release_free_memory()
print(pa.default_memory_pool().backend_name, rss_mb() - before)
"""


def arrow_kept_mb(pool: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", ARROW_PROBE, pool], capture_output=True, text=True, timeout=60, check=True)
    backend, kept = out.stdout.split()
    return backend, int(kept)


def test_arrow_buffers_come_from_malloc_and_go_back_with_it() -> None:
    assert arrow_kept_mb("malloc") == ("system", pytest.approx(0, abs=30))
    backend, kept = arrow_kept_mb("bundled")
    assert backend != "system" and kept > 100  # what the bundled allocator kept, out of the trim's reach


THRESHOLD_PROBE = LIBC + r"""
from flowlogs.malloc import fix_mmap_threshold
print(fix_mmap_threshold(int(sys.argv[1])), file=sys.stderr)
libc.free(libc.malloc(16 << 20))  # a 16 MB block freed: glibc's own threshold rises to 16 MB
blocks = [libc.malloc(4 << 20) for _ in range(50)]  # 200 MB of 4 MB blocks, like a close's columns
for b in blocks:
    ctypes.memset(b, 1, 4 << 20)
keep = libc.malloc(64 * 1024)  # allocated after them: a heap's top stays in use
for b in blocks:
    libc.free(b)
print(rss_mb())
"""


def rss_after_freeing_4mb_blocks(threshold: int) -> tuple[bool, float]:
    out = subprocess.run(
        [sys.executable, "-c", THRESHOLD_PROBE, str(threshold)], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stderr.strip() == "True", float(out.stdout)


def test_blocks_above_a_fixed_mmap_threshold_leave_when_freed() -> None:
    applied, fixed_rss = rss_after_freeing_4mb_blocks(1 << 20)
    kept_default, default_rss = rss_after_freeing_4mb_blocks(0)
    assert applied and not kept_default
    # glibc's rising threshold put the blocks in an arena, where freeing them keeps them mapped.
    assert default_rss > fixed_rss + 150
