"""``agentwatch demo``'s "where to look next" is true for how it ran, and ``--serve`` never hides a busy port.

After a plain run the printed commands read the store the demo used, with an ``agentwatch`` the
shell can run, and they work once the demo has exited; ``--serve`` prints the URLs it bound, and a
port it needs that is taken stops it with exit 2 and a message naming the port and the flag.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentwatch.collectors.demo.run import EXIT_PORT_BUSY

pytestmark = pytest.mark.integration  # real processes and embedded stores: not in `make test-fast`

DEMO = [sys.executable, "-m", "agentwatch.collectors.cli.main", "demo", "--runs", "60", "--parity-runs", "5"]


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTWATCH_")}
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _printed(stdout: str, label: str) -> list[str]:
    """The command printed after ``label`` in the "Where to look next" block, as argv."""
    block = stdout[stdout.index("Where to look next") :]
    line = next(line for line in block.splitlines() if line.strip().startswith(label))
    command = line.strip()[len(label) :].split("  (")[0]
    return shlex.split(command)


def test_a_plain_run_names_commands_that_work_after_it_exits(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere" / "store"
    done = subprocess.run(
        [*DEMO, "--data", str(data)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f"store at {data}" in done.stdout
    runs = _printed(done.stdout, "runs")
    assert f"chdb://{data}" in runs  # the store it used, not the default one
    assert Path(runs[0]).name == "agentwatch"
    assert Path(runs[0]).is_absolute()  # the venv's, runnable from any shell
    assert f"source {Path(sys.executable).parent / 'activate'}" in done.stdout
    assert "agentwatch demo --serve --data" in done.stdout
    assert "differ" in done.stdout  # the drift section says why a later `agentwatch drift` may disagree

    listed = subprocess.run(
        [*runs, "--limit", "1", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert '"run_id"' in listed.stdout
    assert '"max_tool_calls"' in listed.stdout
    example = re.search(r"e\.g\. ([0-9a-f]{32})", done.stdout)
    assert example is not None
    trace = _printed(done.stdout, "one run's trace")
    trace[trace.index("RUN_ID")] = example.group(1)
    traced = subprocess.run(trace, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert traced.returncode == 0, traced.stderr
    assert example.group(1) in traced.stdout
    assert "invoke_agent support" in traced.stdout


def test_serve_with_a_busy_port_stops_with_exit_2_and_names_it(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        done = subprocess.run(
            [*DEMO, "--serve"],
            cwd=tmp_path,
            env=_env(AGENTWATCH_OTLP_HTTP=f"127.0.0.1:{busy}"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == EXIT_PORT_BUSY, done.stderr
    assert f"127.0.0.1:{busy}" in done.stderr
    assert "--serve" in done.stderr
    assert "AGENTWATCH_OTLP_HTTP" in done.stderr
    assert "Runs by stop reason" not in done.stdout  # nothing ran on some other port
    assert not (tmp_path / "agentwatch-data").exists()


def test_serve_prints_the_urls_it_bound_and_commands_that_reach_it(tmp_path: Path) -> None:
    http, grpc, metrics, sql = _free_port(), _free_port(), _free_port(), _free_port()
    env = _env(
        AGENTWATCH_OTLP_HTTP=f"127.0.0.1:{http}",
        AGENTWATCH_OTLP_GRPC=f"127.0.0.1:{grpc}",
        AGENTWATCH_METRICS=f"127.0.0.1:{metrics}",
        AGENTWATCH_SQL=f"127.0.0.1:{sql}",
    )
    proc = subprocess.Popen(
        [*DEMO, "--serve"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stdout is not None
        out: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if "collector keeps running (Ctrl-C to stop)" in line:
                break
        stdout = "".join(out)
        assert "collector keeps running (Ctrl-C to stop)" in stdout, stdout
        assert f"http://127.0.0.1:{http}/api/v1/runs" in stdout
        assert f"http://127.0.0.1:{metrics}/metrics" in stdout
        runs = _printed(stdout, "runs")
        assert f"--collector http://127.0.0.1:{http}" in " ".join(runs)
        listed = subprocess.run(
            [*runs, "--limit", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
        )
        assert listed.returncode == 0, listed.stderr
        assert "max_tool_calls" in listed.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
