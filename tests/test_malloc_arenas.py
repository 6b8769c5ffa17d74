"""The node's process keeps one malloc arena (sam2_ros/malloc_arenas.py): threads that allocate
share it instead of each holding freed memory in an arena of its own. Counted with glibc's
``malloc_info`` in a fresh interpreter, with and without the limit."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent("""
    import ctypes, os, sys, tempfile, threading
    sys.path.insert(0, sys.argv[1])
    if sys.argv[2] == "limit":
        from sam2_ros.malloc_arenas import limit_malloc_arenas
        print(limit_malloc_arenas(), file=sys.stderr)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.fclose.argtypes = (ctypes.c_void_p,)
    barrier = threading.Barrier(6)

    def work():
        blocks = [libc.malloc(64 * 1024) for _ in range(20)]  # below the mmap threshold
        barrier.wait()  # all threads allocate at once: each would take an arena of its own
        for b in blocks:
            libc.free(b)
    threads = [threading.Thread(target=work) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    path = tempfile.mktemp()
    f = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, f)
    libc.fclose(f)
    print(open(path).read().count("<heap nr="))
    os.remove(path)
""")


def _heaps(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), mode], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_one_arena_for_every_thread_once_limited():
    default = _heaps("default")
    if default == 1:
        pytest.skip("this C library gave the threads no arenas of their own to begin with")
    assert default > 1
    assert _heaps("limit") == 1


def test_the_environment_wins(monkeypatch):
    from sam2_ros.malloc_arenas import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert "MALLOC_ARENA_MAX=4" in limit_malloc_arenas()
