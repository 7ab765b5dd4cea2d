"""``agentwatch demo --serve`` serves the read-only SQL endpoint for Grafana and says how to start Grafana.

The real command: its printed SQL URL answers dashboard-style SQL over the demo's own store, the
printed Grafana command names the compose file that exists, and a busy SQL port stops the demo
with exit 2 naming the port and ``AGENTWATCH_SQL`` (never another port the printed URL would not use).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _paths import REPO
from _sqlclient import sql_request

from agentwatch.collectors.demo.run import EXIT_PORT_BUSY, GRAFANA_LOCAL_COMPOSE

pytestmark = pytest.mark.integration  # the real demo command

DEMO = [sys.executable, "-m", "agentwatch.collectors.cli.main", "demo", "--runs", "40", "--parity-runs", "0"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AGENTWATCH_")}
    ports = {name: f"127.0.0.1:{_free_port()}" for name in ("OTLP_HTTP", "OTLP_GRPC", "METRICS", "SQL")}
    env.update({f"AGENTWATCH_{name}": address for name, address in ports.items()})
    env.update(extra)
    return env


def test_serve_prints_the_sql_url_and_the_grafana_command_and_the_url_answers(tmp_path: Path) -> None:
    env = _env()
    sql_port = int(env["AGENTWATCH_SQL"].rsplit(":", 1)[1])
    proc = subprocess.Popen(  # from the repository root, as a user runs it, with the store in tmp_path
        [*DEMO, "--serve", "--data", str(tmp_path / "data")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        out: list[str] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if "collector keeps running (Ctrl-C to stop)" in line:
                break
        stdout = "".join(out)
        assert f"SQL for Grafana      http://127.0.0.1:{sql_port}" in stdout, stdout
        grafana = re.search(r"Grafana dashboards\s+(docker compose -f (\S+) up -d)", stdout)
        assert grafana is not None, stdout
        assert grafana.group(2) == GRAFANA_LOCAL_COMPOSE  # relative: the demo ran from the repository root
        reply = sql_request(sql_port, "SELECT count() FROM agent_runs FINAL WHERE Track = 'canary'")
        assert reply.status == 200, reply.text
        assert int(reply.text) == 40, reply.text
        refused = sql_request(sql_port, "SELECT * FROM file('/etc/passwd')")
        assert refused.status == 403
        assert refused.text.startswith("Code: 497.")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_serve_with_the_sql_port_busy_stops_with_exit_2_and_names_it(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        done = subprocess.run(
            [*DEMO, "--serve"],
            cwd=tmp_path,
            env=_env(AGENTWATCH_SQL=f"127.0.0.1:{busy}"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == EXIT_PORT_BUSY, done.stderr
    assert f"127.0.0.1:{busy}" in done.stderr, done.stderr
    assert "AGENTWATCH_SQL" in done.stderr, done.stderr
    assert not (tmp_path / "agentwatch-data").exists()


def test_a_plain_run_opens_no_sql_port() -> None:
    from agentwatch.collectors.demo.run import demo_settings

    settings = demo_settings(Path("/tmp/agentwatch-demo-settings-check"))
    assert settings.sql == ""
