"""``agentwatch mcp-proxy`` on the collector's control plane: its kill switch and its approvals.

A real collector process (with tokens), the proxy in front of the helpdesk server, the ``mcp``
SDK's client unmodified: ``agentwatch kill`` stops the proxy's next call for that agent and
tenant, and a write that needs approval waits for ``agentwatch approvals approve`` and then runs once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _collector_proc import CollectorProcess
from _mcp_proxy import READ, WRITE, client, make_proxy, proxy_config, serving, text_of
from _mcp_servers import stdio_command, writes
from _telemetry import Telemetry, attrs

from agentwatch.instrumentation import semconv

pytestmark = pytest.mark.integration  # a real collector process

TOKENS = """
tokens:
  - {token: oncall-secret, scopes: [control], name: oncall}
  - {token: acme-ingest, tenant: acme, scopes: [ingest], name: mcp-proxy-acme}
  - {token: globex-ingest, tenant: globex, scopes: [ingest], name: mcp-proxy-globex}
"""


def cli(collector: CollectorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "agentwatch.collectors.cli.main", *args]
    command += ["--collector", collector.base_url, "--token", "oncall-secret"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def approve_when_pending(collector: CollectorProcess, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = cli(collector, "approvals", "--json")
        assert listed.returncode == 0, listed.stderr
        pending = [a for a in json.loads(listed.stdout)["approvals"] if a.get("status") == "pending"]
        if pending:
            decided = cli(collector, "approvals", "approve", str(pending[0]["id"]))
            assert decided.returncode == 0, decided.stderr
            found: dict[str, Any] = pending[0]
            return found
        time.sleep(0.2)
    raise AssertionError("no pending approval appeared")


def test_kill_switch_and_approvals_come_from_the_control_plane(telemetry: Telemetry, tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text(TOKENS)
    collector = CollectorProcess(tmp_path / "collector", extra_args=["--tokens", str(tmp_path / "tokens.yaml")])
    collector.start()
    log = tmp_path / "calls.jsonl"
    command, args = stdio_command(log)
    config = proxy_config(
        {"command": command, "args": args},
        agent="helpdesk-proxy",
        control={"url": collector.base_url, "tenant_tokens": {"acme": "acme-ingest", "globex": "globex-ingest"}},
    )
    proxy = make_proxy(telemetry, config)

    async def scenario(url: str) -> list[Any]:
        results: list[Any] = []
        async with client(url, "tok-acme") as acme:
            results.append(await acme.call_tool(READ, {"order_id": "1"}))
            done = await asyncio.to_thread(
                cli, collector, "kill", "--agent", "helpdesk-proxy", "--tenant", "acme", "--reason", "injection"
            )
            assert done.returncode == 0, done.stderr
            await asyncio.sleep(1.0)  # the long-poll brings the change at once; leave it a moment
            results.append(await acme.call_tool(READ, {"order_id": "2"}))
        async with client(url, "tok-globex") as globex:  # another tenant: not killed; its write waits for a person
            approval = asyncio.create_task(asyncio.to_thread(approve_when_pending, collector))
            results.append(await globex.call_tool(WRITE, {"ticket_id": "7"}))
            results.append(await approval)
        return results

    try:
        with serving(proxy) as url:
            read, killed, approved, filed = asyncio.run(scenario(url))
    finally:
        proxy.close()
        collector.stop()
    assert not read.isError
    assert killed.isError
    assert "kill_switch" in text_of(killed)
    assert not approved.isError, text_of(approved)
    assert filed["tool"] == WRITE
    assert writes(log) == 1
    dispositions = [(attrs(s)[semconv.TENANT_ID], attrs(s)[semconv.TOOL_DISPOSITION]) for s in telemetry.tools()]
    assert dispositions == [("acme", "allowed"), ("acme", "killed"), ("globex", "approved")]
