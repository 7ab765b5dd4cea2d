"""Start-up failures of ``agentwatch collector`` that a first-time user meets, run as the real command.

- a busy port is one line naming the address and the flag, exit status 2, before the spool and
  the store are created (nothing is left on disk);
- an unreachable ``--clickhouse`` server keeps /readyz at 503 with the reason, and the log says
  that reason once, not once per retry.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _collector_proc import CollectorProcess
from _ports import free_port

pytestmark = pytest.mark.integration  # real processes: not in `make test-fast`


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process (here: this one) is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("flag", ["--otlp-http", "--otlp-grpc", "--metrics"])
def test_a_busy_port_names_the_port_and_the_flag_before_the_store_exists(
    tmp_path: Path, busy_port: int, flag: str
) -> None:
    listeners = {"--otlp-http": "127.0.0.1:0", "--otlp-grpc": "127.0.0.1:0", "--metrics": "127.0.0.1:0"}
    listeners[flag] = f"127.0.0.1:{busy_port}"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "agentwatch.collectors.cli.main", "collector"),
            *("--clickhouse", f"chdb://{tmp_path / 'data'}", "--spool", str(tmp_path / "spool")),
            *(arg for pair in listeners.items() for arg in pair),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"agentwatch collector: {flag} 127.0.0.1:{busy_port} is in use by another process; "
        f"choose another port with {flag} HOST:PORT"
    ], done.stderr
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "spool").exists()
    assert not (tmp_path / "agentwatch-data").exists()


def test_an_unreachable_clickhouse_is_one_log_line_and_the_readyz_reason(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    collector = CollectorProcess(tmp_path, clickhouse=f"http://127.0.0.1:{closed}/default")
    collector.start(wait_ready=False)
    try:
        time.sleep(3.0)  # several backoff steps (0.1, 0.2, 0.4, 0.8, 1.6 s)
        status, body = collector.get("/readyz")
        assert status == 503, body
        reason = f"cannot connect to 127.0.0.1:{closed}: connection refused"
        assert reason in body.decode(), body
        lines = collector.log().splitlines()
        assert sum(reason in line for line in lines) == 1, collector.log()
        assert not any("Unexpected Http Driver Exception" in line or "Retrying" in line for line in lines)
        assert "Traceback" not in collector.log()
    finally:
        assert collector.stop() == 0


def test_port_zero_still_binds_and_the_store_connection_is_logged_once(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path, extra_args=["--otlp-grpc", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
    collector.start()
    try:
        status, body = collector.get("/readyz")
        assert status == 200, body
        assert sum("ClickHouse reachable at" in line for line in collector.log().splitlines()) == 1
        started = [line for line in collector.log().splitlines() if "OTLP/HTTP :" in line]
        assert len(started) == 1, started
        assert "OTLP/gRPC :off" not in started[0], started
        assert ":0," not in started[0], started  # the bound ports are reported, not 0
    finally:
        assert collector.stop() == 0
