"""glibc malloc arenas for the long-running processes, and giving freed memory back.

glibc gives threads their own malloc arenas, up to eight per core. The worker runs many
threads (chDB's insert and merge pools, the Kafka clients, Python's to_thread pool), and
memory freed in one arena is not reused by a thread allocating in another: at 1 M flows
per window the worker held ~300 MB more at its peak with the default than with two arenas
(bench/worker.py), for no measurable throughput. The cap must be set before the threads
start; it applies to arenas created afterwards.

Memory a process frees stays in glibc's arenas (only the top of a heap is returned to the
system on its own): idle after million-flow windows, the worker's RSS stayed ~0.8 GB above
what it holds after a trim (1.55 vs 0.77 GB), the producer process's ~45 MB.
:func:`release_free_memory` hands those pages back (``malloc_trim``), and what Arrow's
allocator keeps (~35 MB more in the producer process).
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # <malloc.h>


def limit_arenas(arenas: int) -> bool:
    """Let glibc's malloc use at most ``arenas`` arenas from now on (0: leave glibc's default).
    False where the C library is not glibc (musl has one arena anyway) or refused it."""
    if arenas <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        log.debug("no mallopt in this C library: malloc arenas left as they are")
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Return the memory Arrow's allocator keeps for reuse, then the free pages of every
    malloc arena (glibc's ``malloc_trim(0)``; it holds each arena's lock while it walks it)
    to the system. True if malloc released memory; False if it had none to give, or the C
    library is not glibc."""
    import pyarrow as pa  # here, not at the top: limit_arenas must run before imports start threads

    pa.default_memory_pool().release_unused()
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes, malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return bool(malloc_trim(0))
