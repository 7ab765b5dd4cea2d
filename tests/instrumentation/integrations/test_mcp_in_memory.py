"""MCP governance without processes: the ``mcp`` SDK's client and a FastMCP server connected in memory.

The fast tests (``make test-fast``): naming, listed-and-refused against hidden tools, the gateway
a call finds (the run's, the configured one, the fallback), opting out, and the proxy's config.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from _telemetry import Telemetry, attrs
from mcp.server.fastmcp import FastMCP
from mcp.shared.memory import create_connected_server_and_client_session

from agentwatch.instrumentation import ConfigError, Policy, ToolGateway, load_config, semconv
from agentwatch.instrumentation.integrations import mcp as aw_mcp
from agentwatch.instrumentation.integrations.mcp.proxy import proxy_settings


@pytest.fixture
def governed(telemetry: Telemetry) -> Iterator[Telemetry]:
    yield telemetry
    aw_mcp.uninstrument()


def server(counter: list[str]) -> FastMCP[Any]:
    app = FastMCP("Help Desk/EU")  # announced name with characters a label may not have

    @app.tool()
    def lookup_order(order_id: str) -> str:
        """Read."""
        return f"order {order_id}: shipped"

    @app.tool()
    def close_ticket(ticket_id: str) -> str:
        """Write."""
        counter.append(ticket_id)
        return f"ticket {ticket_id} closed"

    return app


def run_calls(app: FastMCP[Any], *calls: tuple[str, dict[str, Any]], server_name: str | None = None) -> list[Any]:
    async def scenario() -> list[Any]:
        async with create_connected_server_and_client_session(app._mcp_server) as session:
            if server_name:
                aw_mcp.govern_session(session, server_name=server_name)
            results: list[Any] = [[tool.name for tool in (await session.list_tools()).tools]]
            for name, arguments in calls:
                results.append(await session.call_tool(name, arguments))
            return results

    return asyncio.run(scenario())


def test_names_are_server_dot_tool_with_a_bounded_server_label() -> None:
    assert aw_mcp.qualified_name("github", "create_issue") == "github.create_issue"
    assert aw_mcp.server_label("Help Desk/EU") == "Help_Desk_EU"
    assert aw_mcp.server_label("") == "mcp"
    assert len(aw_mcp.server_label("x" * 500)) == 64


def test_the_announced_name_is_used_when_the_client_names_none(governed: Telemetry) -> None:
    counter: list[str] = []
    gateway = ToolGateway(
        policy=Policy(allow=["Help_Desk_EU.lookup_order"]),
        tools={},
        kill_switch=False,
        tracer_provider=governed.provider,
    )
    aw_mcp.instrument(gateway=gateway)
    listed, read, write = run_calls(
        server(counter), ("lookup_order", {"order_id": "1"}), ("close_ticket", {"ticket_id": "7"})
    )
    assert listed == ["lookup_order", "close_ticket"]  # listed and refused by default
    assert not read.isError
    assert write.isError
    assert counter == []
    assert [attrs(s)[semconv.GEN_AI_TOOL_NAME] for s in governed.tools()] == [
        "Help_Desk_EU.lookup_order",
        "Help_Desk_EU.close_ticket",
    ]


def test_hide_denied_and_the_run_gateway_wins_over_the_configured_one(governed: Telemetry) -> None:
    counter: list[str] = []
    configured = ToolGateway(policy=Policy(allow=["desk.*"]), tools={}, kill_switch=False)
    aw_mcp.instrument(gateway=configured, hide_denied=True)
    run_gateway = ToolGateway(policy=Policy(allow=["desk.lookup_order"]), tools={}, kill_switch=False)

    async def scenario() -> list[Any]:
        results: list[Any] = []
        async with (
            governed.run("support", gateway=run_gateway),
            create_connected_server_and_client_session(server(counter)._mcp_server) as session,
        ):
            aw_mcp.govern_session(session, server_name="desk")
            results.append([tool.name for tool in (await session.list_tools()).tools])
            results.append(await session.call_tool("close_ticket", {"ticket_id": "7"}))
        return results

    listed, write = asyncio.run(scenario())
    assert listed == ["lookup_order"]
    assert write.isError
    assert counter == []


def test_without_a_gateway_calls_are_refused_unless_allowed_explicitly(
    governed: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    counter: list[str] = []
    aw_mcp.instrument()  # default deny: no policy allows a call made outside any gateway
    with caplog.at_level(logging.WARNING, logger="agentwatch.instrumentation"):
        _, refused = run_calls(server(counter), ("close_ticket", {"ticket_id": "7"}), server_name="desk")
    assert refused.isError
    assert counter == []
    aw_mcp.instrument(require_gateway=False)
    _, write = run_calls(server(counter), ("close_ticket", {"ticket_id": "8"}), server_name="desk")
    assert not write.isError
    assert counter == ["8"]


def test_the_environment_opts_out(governed: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(aw_mcp.DISABLED_ENV, "true")
    aw_mcp.instrument(gateway=ToolGateway(policy=Policy(), tools={}, kill_switch=False))
    assert not aw_mcp.governs_mcp_calls()
    counter: list[str] = []
    _, write = run_calls(server(counter), ("close_ticket", {"ticket_id": "7"}))
    assert not write.isError
    assert counter == ["7"]


def test_the_sdk_config_loads_with_an_mcp_section_and_the_proxy_validates_it() -> None:
    config = load_config(
        {
            "architecture": {"tool_gateway": "owned", "runtime": "managed_or_custom"},
            "budgets": {"max_steps": 25, "max_tool_calls": 12},
            "approvals": {"required_for": ["db.write", "email.send", "ticket.close"]},
            "logging": {"tool_calls": True, "stop_reasons": True},
            "mcp": {"upstreams": {"helpdesk": {"command": "helpdesk-server", "args": ["--stdio"]}}},
        }
    )
    settings = proxy_settings(config)
    assert [u.name for u in settings.upstreams] == ["helpdesk"]
    assert settings.upstreams[0].transport == "pipe"
    with pytest.raises(ConfigError, match=r"mcp\.upstreams\.help\.desk: upstream names"):
        proxy_settings(load_config({"mcp": {"upstreams": {"help.desk": {"command": "x"}}}}))
    with pytest.raises(ConfigError, match=r"mcp\.control\.url"):
        proxy_settings(load_config({"mcp": {"upstreams": {"a": {"command": "x"}}, "control": {"token": "t"}}}))
