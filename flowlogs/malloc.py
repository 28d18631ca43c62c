"""How the long-running processes allocate: glibc arenas and mmap threshold, Arrow on malloc, chDB's jemalloc decay, and trims.

glibc gives threads their own malloc arenas, up to eight per core. The worker runs many
threads (chDB's insert and merge pools, the Kafka clients, Python's to_thread pool), and
memory freed in one arena is not reused by a thread allocating in another: at 1 M flows
per window the worker held ~300 MB more at its peak with the default than with two arenas
(bench/worker.py), for no measurable throughput. The cap must be set before the threads
start; it applies to arenas created afterwards.

glibc serves a large block (≥ 128 kB at first) with a mapping of its own, unmapped when it
is freed; but each time such a block is freed, glibc raises that threshold to its size (up
to 32 MB) and serves blocks up to it from its arenas from then on. After the first close,
the worker's column temporaries (8 MB per column at a million flows) went into the arenas,
where a freed block is only reusable, not given back, and where they fragment them. A fixed
threshold (:func:`fix_mmap_threshold`, 1 MB by default: ``worker.malloc_mmap_threshold_kb``)
keeps every block ≥ 1 MB in its own mapping: at 1 M flows per window the worker's peak fell
by 110–220 MB and the producer process's by ~20 MB (bench/worker.py, four alternating pairs),
with the same packet rates at 100 k and 1 M flows. Frames and per-frame temporaries stay
below it.

Memory a process frees stays in glibc's arenas (only the top of a heap is returned to the
system on its own): idle after million-flow windows, the worker's RSS stayed ~0.8 GB above
what it holds after a trim (1.55 vs 0.77 GB), the producer process's ~45 MB.
:func:`release_free_memory` hands those pages back (``malloc_trim``). Arrow allocates with
malloc too (:func:`arrow_allocates_with_malloc`): its bundled mimalloc kept ~35 MB of its
own in the producer process, out of reach of the trim, and raised its peak by ~25 MB.

The embedded ClickHouse (chDB) brings its own jemalloc, built to give freed pages back
over 5 s: a query that used 1 GB left the process 1.1 GB larger for a second and 0.6 GB
after six. :func:`chdb_frees_soon`, called before chDB loads, makes that 200 ms
(``dirty_decay_ms:200``): back to its size within a second. At 1 M flows per window the
worker's peak fell by ~100 MB (bench/worker.py). At once (``dirty_decay_ms:0``) did as
much for the peak, but the store's inserts cost 40 % more CPU (13.6–14.5 vs 9.3–10.3 µs a
row with the rollups' views and merges); 200 ms costs none measurable (10.5).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowlogs.settings import WorkerSettings

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # <malloc.h>
_M_ARENA_MAX = -8
_CHDB_ALLOCATOR_ENV = "JE_MALLOC_CONF"  # read by chDB's jemalloc when chDB loads
_CHDB_DECAY = "dirty_decay_ms:200"


def _mallopt(option: int, value: int) -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in this C library: malloc option %d left as it is", option)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(option, value))


def limit_arenas(arenas: int) -> bool:
    """Let glibc's malloc use at most ``arenas`` arenas from now on (0: leave glibc's default).
    False where the C library is not glibc (musl has one arena anyway) or refused it."""
    return arenas > 0 and _mallopt(_M_ARENA_MAX, arenas)


def fix_mmap_threshold(nbytes: int) -> bool:
    """Serve every malloc of ``nbytes`` or more with a mapping of its own, given back to the
    system when freed, from now on (0: leave glibc's threshold, which rises with the blocks
    freed). False where the C library is not glibc or refused it."""
    return nbytes > 0 and _mallopt(_M_MMAP_THRESHOLD, nbytes)


def release_free_memory() -> bool:
    """Return the free pages of every malloc arena (glibc's ``malloc_trim(0)``; it holds
    each arena's lock while it walks it) to the system. True if malloc released memory;
    False if it had none to give, or the C library is not glibc."""
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes, malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return bool(malloc_trim(0))


def chdb_frees_soon() -> bool:
    """Have chDB's jemalloc return freed pages to the system within ~200 ms, unless
    ``JE_MALLOC_CONF`` already sets ``dirty_decay_ms``. Only before chDB is loaded in this
    process; False if too late, or left to the user's setting."""
    conf = os.environ.get(_CHDB_ALLOCATOR_ENV, "")
    if "dirty_decay_ms" in conf:
        return False
    if "chdb" in sys.modules:
        log.debug("chDB is loaded already: its allocator keeps freed memory as it was built to")
        return False
    os.environ[_CHDB_ALLOCATOR_ENV] = f"{conf},{_CHDB_DECAY}" if conf else _CHDB_DECAY
    return True


def arrow_allocates_with_malloc() -> None:
    """Arrow's buffers from malloc (its system pool) instead of its bundled mimalloc, so what
    they free is reused by the process's other allocations and given back by
    :func:`release_free_memory` like the rest."""
    import pyarrow as pa  # here, not at the top: limit_arenas must run before imports start threads

    pa.set_memory_pool(pa.system_memory_pool())


def configure_allocators(worker: WorkerSettings) -> None:
    """A long-running process's allocators (the worker's, its producer process's): at most
    ``worker.malloc_arenas`` glibc arenas, blocks ≥ ``worker.malloc_mmap_threshold_kb``
    mapped on their own, Arrow on malloc. First thing in the process: the arena cap applies
    to arenas made after it."""
    limit_arenas(worker.malloc_arenas)
    fix_mmap_threshold(worker.malloc_mmap_threshold_kb * 1024)
    arrow_allocates_with_malloc()
