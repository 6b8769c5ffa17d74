"""One malloc arena for the node process (glibc), so that its resident memory stays flat.

glibc gives each new thread that allocates its own malloc arena (up to 8 per core), and memory
freed in an arena stays in that arena. The node's threads take turns with very different
allocations: the executor thread deserialises requests (a hostile one holds 600 kB of clicks)
and loads a model at each configure, a new worker thread per configure runs the model, the
middleware's threads hold their buffers. Measured on the node with prompts and bad prompts at 15
Hz and a cleanup/configure every 12 s (24 cycles, 2 cores): RSS went from 391 to 410-427 MiB
with glibc's default, and stayed at 385-401 MiB with one arena (frames alone, without bad
prompts, were flat either way; two arenas rose like the default). The price: the threads share
one arena's lock, and the node's CPU time per frame went from 16.1-17.0 ms to 18.1-19.1 ms
(bundled model, 320x240 at 15 Hz, 1 inference thread; engine/benchmarks/results/hostile_mix.md).
Where memory matters less than 2 ms of CPU per frame, set ``MALLOC_ARENA_MAX`` (e.g. 16).

``MALLOC_ARENA_MAX`` set in the environment is the user's choice and wins; on a C library other
than glibc nothing changes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
ARENAS = 1


def limit_malloc_arenas(arenas: int = ARENAS) -> str:
    """Ask glibc for at most ``arenas`` malloc arenas from now on (call it before threads
    start). Returns what was done, for the log."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return f"malloc arenas: MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']} (environment)"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "malloc arenas: not glibc, left as they are"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:
        return "malloc arenas: mallopt refused the limit, left as they are"
    return f"malloc arenas: at most {arenas} (set MALLOC_ARENA_MAX to choose another number)"
