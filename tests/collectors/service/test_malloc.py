"""The collector caps glibc's malloc arenas: threads then share two arenas instead of one each."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from agentwatch.collectors.service.malloc import limit_arenas

pytestmark = [
    pytest.mark.integration,  # real engines or processes: not in `make test-fast`
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
    ),
]

# Six threads each allocate a buffer above pymalloc's size (so from malloc) and stay alive together;
# glibc's malloc_stats() then prints one "Arena N:" block per arena in use.
_ARENAS_SCRIPT = textwrap.dedent(
    """
    import ctypes, sys, threading
    from agentwatch.collectors.service.malloc import limit_arenas
    applied = limit_arenas() if sys.argv[1] == "limit" else False
    print(f"applied={applied}", flush=True)
    barrier = threading.Barrier(7)
    buffers = []
    def allocate():
        buffers.append(bytearray(300_000))
        barrier.wait()
    threads = [threading.Thread(target=allocate) for _ in range(6)]
    for thread in threads:
        thread.start()
    barrier.wait()
    ctypes.CDLL("libc.so.6").malloc_stats()
    for thread in threads:
        thread.join()
    """
)


def _arenas(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | (env or {})
    done = subprocess.run(
        [sys.executable, "-c", _ARENAS_SCRIPT, mode],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    arenas = sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))
    return done.stdout.strip(), arenas


def test_threads_share_at_most_two_arenas_once_limited() -> None:
    applied, unlimited = _arenas("none")
    assert applied == "applied=False"
    assert unlimited > 2, "without the cap every thread gets its own arena"
    applied, limited = _arenas("limit")
    assert applied == "applied=True"
    assert 1 <= limited <= 2


def test_an_operators_malloc_arena_max_wins() -> None:
    applied, arenas = _arenas("limit", {"MALLOC_ARENA_MAX": "4"})
    assert applied == "applied=False"
    assert arenas <= 4


def test_at_least_one_arena() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        limit_arenas(0)
