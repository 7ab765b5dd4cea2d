"""``agentwatch mcp-proxy`` with real parts: the ``mcp`` SDK's own client, unmodified, talks to the
proxy over Streamable HTTP on 127.0.0.1; the proxy fronts the helpdesk server of ``_mcp_servers``
over Streamable HTTP and over stdio. Policy, approvals (MCP elicitation), the kill switch, the
session budget, bearer tokens mapped to tenants and per-tenant upstream credentials.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from _mcp_proxy import READ, UPSTREAM_SECRETS, WRITE, client, make_proxy, proxy_config, serving, text_of
from _mcp_servers import SERVER_NAME, calls, http_server, stdio_command, writes
from _telemetry import Telemetry, attrs, event_names

from agentwatch.instrumentation import ConfigError, MemoryKillSwitch, load_config, semconv
from agentwatch.instrumentation.integrations.mcp.proxy import McpProxy

pytestmark = pytest.mark.integration  # the MCP servers run in processes of their own


def all_attribute_values(telemetry: Telemetry) -> str:
    values = []
    for span in telemetry.spans():
        values += [str(v) for v in attrs(span).values()]
        values += [str(v) for event in span.events for v in (event.attributes or {}).values()]
    return "\n".join(values)


def test_unmodified_client_is_governed_and_tenants_keep_their_credentials(telemetry: Telemetry, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"

    async def scenario(url: str) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with client(url, "tok-acme") as acme:
            seen["listed"] = sorted(tool.name for tool in (await acme.list_tools()).tools)
            seen["acme_read"] = await acme.call_tool(READ, {"order_id": "1234"})
            seen["acme_write"] = await acme.call_tool(WRITE, {"ticket_id": "7"})  # no elicitation: rejected
            seen["unknown"] = await acme.call_tool(f"{SERVER_NAME}.drop_tables", {})
        async with client(url, "tok-globex") as globex:
            seen["globex_read"] = await globex.call_tool(READ, {"order_id": "99"})
        return seen

    with http_server(log) as upstream:
        config = proxy_config(
            {
                "url": upstream.url,
                "credentials": {tenant: {"Authorization": secret} for tenant, secret in UPSTREAM_SECRETS.items()},
            }
        )
        with serving(make_proxy(telemetry.with_settings(capture_content=True), config)) as url:
            seen = asyncio.run(scenario(url))

    assert seen["listed"] == [WRITE, READ]  # listed and refused: the model sees what it may not do
    assert "shipped" in text_of(seen["acme_read"])
    assert seen["acme_write"].isError
    assert "approval" in text_of(seen["acme_write"])
    assert seen["unknown"].isError
    assert writes(log) == 0
    executed = calls(log)
    assert [(c["arguments"], c["authorization"]) for c in executed] == [
        ({"order_id": "1234"}, UPSTREAM_SECRETS["acme"]),
        ({"order_id": "99"}, UPSTREAM_SECRETS["globex"]),
    ]
    tools = telemetry.tools()
    summary = [
        (attrs(s)[semconv.GEN_AI_TOOL_NAME], attrs(s)[semconv.TOOL_DISPOSITION], attrs(s)[semconv.TENANT_ID])
        for s in tools
    ]
    assert summary == [
        (READ, "allowed", "acme"),
        (WRITE, "rejected", "acme"),
        (f"{SERVER_NAME}.drop_tables", "denied", "acme"),
        (READ, "allowed", "globex"),
    ]
    assert all(span.name == f"tools/call {attrs(span)[semconv.GEN_AI_TOOL_NAME]}" for span in tools)
    assert all(span.kind.name == "SERVER" for span in tools)
    assert all(attrs(span)[semconv.MCP_SESSION_ID] for span in tools)
    # the SDK client sends no trace context of its own here; the upstream got the proxy's span as parent
    trace_id, span_id = f"{tools[0].context.trace_id:032x}", f"{tools[0].context.span_id:016x}"
    assert executed[0]["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    assert semconv.EVENT_APPROVAL_REJECTED in event_names(tools[1])
    assert semconv.EVENT_POLICY_DENIED in event_names(tools[2])
    # one run per client session, each with the tenant of its token
    runs = telemetry.runs()
    assert sorted(attrs(run)[semconv.TENANT_ID] for run in runs) == ["acme", "globex"]
    assert {attrs(run)[semconv.RUNTIME] for run in runs} == {"mcp-proxy"}
    # content capture is on, and still no upstream secret reaches a span
    dumped = all_attribute_values(telemetry)
    assert "1234" in dumped
    assert all(secret.split()[1] not in dumped for secret in UPSTREAM_SECRETS.values())


def test_tokens_are_required_and_a_session_stays_with_its_tenant(telemetry: Telemetry, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    command, args = stdio_command(log)
    proxy = make_proxy(telemetry, proxy_config({"command": command, "args": args}))
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with serving(proxy) as url:
        assert httpx.post(url, json=initialize, headers=accept).status_code == 401
        assert httpx.post(url, json=initialize, headers={**accept, "Authorization": "Bearer nope"}).status_code == 401
        opened = httpx.post(url, json=initialize, headers={**accept, "Authorization": "Bearer tok-acme"})
        assert opened.status_code == 200
        session = opened.headers["mcp-session-id"]
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": READ, "arguments": {}}}
        hijack = {**accept, "Authorization": "Bearer tok-globex", "mcp-session-id": session}
        assert httpx.post(url, json=call, headers=hijack).status_code == 403
    assert calls(log) == []


def test_approval_through_elicitation_kill_switch_and_session_budget(telemetry: Telemetry, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    command, args = stdio_command(log)  # a stdio upstream this time
    switch = MemoryKillSwitch()
    proxy = make_proxy(telemetry, proxy_config({"command": command, "args": args}), kill_switch=switch)

    async def scenario(url: str) -> list[Any]:
        results = []
        async with client(url, "tok-acme", approve=True) as session:
            results.append(await session.call_tool(WRITE, {"ticket_id": "7"}))  # approved by the client's user
            results.append(await session.call_tool(READ, {"order_id": "1"}))
            switch.engage("agent:mcp-proxy")
            results.append(await session.call_tool(READ, {"order_id": "2"}))  # killed
        switch.release("agent:mcp-proxy")
        async with client(url, "tok-globex", approve=False) as session:
            results.append(await session.call_tool(WRITE, {"ticket_id": "8"}))  # the user said no
            for order in range(4):
                results.append(await session.call_tool(READ, {"order_id": str(order)}))
        return results

    with serving(proxy) as url:
        results = asyncio.run(scenario(url))
    approved, read, killed, rejected, *budgeted = results
    assert not approved.isError
    assert not read.isError
    assert killed.isError
    assert "kill_switch" in text_of(killed)
    assert rejected.isError
    assert [r.isError for r in budgeted] == [False, False, False, True]  # max_tool_calls: 4 per session
    assert "max_tool_calls" in text_of(budgeted[-1])
    assert writes(log) == 1
    dispositions = [attrs(s)[semconv.TOOL_DISPOSITION] for s in telemetry.tools()]
    assert dispositions == ["approved", "allowed", "killed", "rejected", "allowed", "allowed", "allowed"]
    stops = {attrs(run)[semconv.TENANT_ID]: attrs(run)[semconv.STOP_REASON] for run in telemetry.runs()}
    assert stops == {"acme": "kill_switch", "globex": "max_tool_calls"}


def test_the_mcp_section_is_validated_like_the_rest_of_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mcp\.upstreams\.helpdesk\.url: give exactly one"):
        McpProxy(proxy_config({"url": "http://127.0.0.1:1/mcp", "command": "x"}))
    with pytest.raises(ConfigError, match=r"mcp\.tokens: listening on 0\.0\.0\.0"):
        McpProxy(load_config({"mcp": {"upstreams": {"a": {"command": "x"}}, "listen": {"host": "0.0.0.0"}}}))
    with pytest.raises(ConfigError, match=r"mcp\.upstreamz: unknown field"):
        McpProxy(load_config({"mcp": {"upstreamz": {}}}))


def test_a_governed_client_and_the_proxy_make_one_linked_trace(telemetry: Telemetry, tmp_path: Path) -> None:
    from agentwatch.instrumentation import Policy, ToolGateway
    from agentwatch.instrumentation.integrations import mcp as aw_mcp

    log = tmp_path / "calls.jsonl"
    command, args = stdio_command(log)
    proxy = make_proxy(telemetry, proxy_config({"command": command, "args": args}))
    # the client process governs its own calls too: to it the proxy is the server "proxy" (proxy.helpdesk.*)
    client_gateway = ToolGateway(
        policy=Policy(allow=[f"proxy.{READ}"]), tools={}, kill_switch=False, tracer_provider=telemetry.provider
    )
    aw_mcp.instrument(gateway=client_gateway)

    async def scenario(url: str) -> Any:
        async with client(url, "tok-acme") as session:
            aw_mcp.govern_session(session, server_name="proxy")
            return await session.call_tool(READ, {"order_id": "1"})

    try:
        with serving(proxy) as url:
            result = asyncio.run(scenario(url))
    finally:
        aw_mcp.uninstrument()
    assert not result.isError
    by_kind = {span.kind.name: span for span in telemetry.tools()}
    client_span, proxy_span = by_kind["CLIENT"], by_kind["SERVER"]
    assert attrs(client_span)[semconv.GEN_AI_TOOL_NAME] == f"proxy.{READ}"
    assert [link.context.span_id for link in proxy_span.links] == [client_span.context.span_id]
    (executed,) = calls(log)
    assert executed["traceparent"].split("-")[2] == f"{proxy_span.context.span_id:016x}"


def test_without_tokens_the_proxy_stays_on_loopback_and_refuses_foreign_hosts(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    command, args = stdio_command(log)
    proxy = make_proxy(telemetry, proxy_config({"command": command, "args": args}, tokens={}))

    async def scenario(url: str) -> Any:
        async with client(url, "unused") as session:
            return await session.call_tool(READ, {"order_id": "1"})

    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    headers = {"Accept": "application/json, text/event-stream", "Host": "attacker.example:80"}
    with serving(proxy) as url:
        assert not asyncio.run(scenario(url)).isError
        rebound = httpx.post(url, json=initialize, headers=headers)
    assert rebound.status_code in (400, 403, 421)
    (span,) = telemetry.tools()
    assert semconv.TENANT_ID not in attrs(span)


def test_the_command_reports_a_bad_config_and_exits_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "agentwatch.yaml"
    bad.write_text(
        "budgets:\n  max_tool_calls: 3\nmcp:\n  upstreams:\n    helpdesk: {url: http://127.0.0.1:1/mcp, command: x}\n"
    )
    for command in (
        [str(Path(sys.executable).with_name("agentwatch")), "mcp-proxy", "--config", str(bad)],
        [sys.executable, "-m", "agentwatch.instrumentation.integrations.mcp.proxy", "--config", str(bad)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, done.stderr
        assert "mcp.upstreams.helpdesk.url: give exactly one of url" in done.stderr
