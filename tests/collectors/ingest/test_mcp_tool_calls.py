"""MCP tool calls land in ClickHouse and /metrics like any tool call.

The seed's incident through MCP, end to end: the OpenAI Agents SDK (scripted model) uses the
helpdesk MCP server over stdio with agentwatch's MCP governance; the injected ticket steers the
model into the write tool; the call is denied, the write counter stays at zero, and the run's
stop reason, the denial event, the ``agent_tool_calls`` rows and ``agentwatch_tool_calls_total``
are read back from a running collector. Then ``agentwatch mcp-proxy --stdio`` in its own process,
used by the ``mcp`` SDK's unmodified client, exports its spans to the same collector over OTLP.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _mcp_servers import INJECTED_TICKET, SERVER_NAME, calls, stdio_command, writes
from _otlp_clients import Collector, http_request, running_collector
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.collectors import metric_names as m
from agentwatch.collectors.store.schema import RUNS_TABLE, TOOL_CALLS_TABLE, TRACES_TABLE
from agentwatch.instrumentation import (
    InstrumentationSettings,
    Policy,
    RunAttributesSpanProcessor,
    RunStopped,
    ToolGateway,
    semconv,
)
from agentwatch.instrumentation.integrations import mcp as aw_mcp
from agentwatch.instrumentation.integrations import openai_agents

pytestmark = pytest.mark.integration  # a real collector, store and processes

pytest_plugins = ["_chstore"]

READ = f"{SERVER_NAME}.lookup_order"
WRITE = f"{SERVER_NAME}.close_ticket"


@pytest.fixture
def collector(clickhouse_url: str, tmp_path: Path) -> Iterator[Collector]:
    with running_collector(clickhouse_url, tmp_path, metrics="127.0.0.1:0") as running:
        yield running


def metric(collector: Collector, name: str, **labels: str) -> float:
    reply = http_request(f"http://127.0.0.1:{collector.service.metrics_port}/metrics", None)
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_seed_incident_through_mcp_reaches_clickhouse_and_metrics(
    collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from _scripted_agents_model import call, message, scripted, turn
    from agents import Agent, Runner
    from agents.mcp import MCPServerStdio

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider = TracerProvider(resource=Resource.create({"service.name": "support-agent"}))
    provider.add_span_processor(RunAttributesSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector.traces_url)))
    settings = InstrumentationSettings(strict=True)
    gateway = ToolGateway(policy=Policy(allow=[READ]), tools={}, kill_switch=False)
    log = tmp_path / "calls.jsonl"
    command, args = stdio_command(log)
    model = scripted(
        [
            turn(call("lookup_order", {"order_id": "1234"}, "c1")),
            turn(call("close_ticket", {"ticket_id": "7"}, "c2")),  # the injected instruction
            turn(message("done")),
        ]
    )

    async def scenario() -> None:
        async with MCPServerStdio({"command": command, "args": args}, name=SERVER_NAME) as server:
            agent = Agent(name="support", model=model, mcp_servers=[server])
            with pytest.raises(RunStopped, match="policy_denied"):  # on_denied="stop": the run stops
                await Runner.run(agent, INJECTED_TICKET)

    openai_agents.instrument(tracer_provider=provider, settings=settings)
    aw_mcp.instrument(gateway=gateway, on_denied="stop")
    try:
        asyncio.run(scenario())
    finally:
        aw_mcp.uninstrument()
        openai_agents.uninstrument()
        provider.shutdown()
    collector.drain()

    assert writes(log) == 0
    runs = collector.query(f"SELECT AgentName, Runtime, StopReason, ToolCalls FROM {RUNS_TABLE}")
    assert runs == [{"AgentName": "support", "Runtime": "openai-agents", "StopReason": "policy_denied", "ToolCalls": 2}]
    rows = collector.query(
        f"SELECT ToolName, Disposition, Outcome, PolicyRule, StepIndex FROM {TOOL_CALLS_TABLE} ORDER BY Timestamp"
    )
    assert [(r["ToolName"], r["Disposition"], r["Outcome"], r["PolicyRule"]) for r in rows] == [
        (READ, "allowed", "ok", f"allow:{READ}"),
        (WRITE, "denied", "blocked", "default_deny"),
    ]
    assert all(int(str(r["StepIndex"])) > 0 for r in rows)
    spans = collector.query(
        f"SELECT SpanName, SpanAttributes['{semconv.MCP_SERVER_NAME}'] AS Server, Events.Name AS Events "
        f"FROM {TRACES_TABLE} WHERE SpanAttributes['{semconv.GEN_AI_TOOL_NAME}'] = '{WRITE}'"
    )
    assert spans == [
        {"SpanName": f"tools/call {WRITE}", "Server": SERVER_NAME, "Events": [semconv.EVENT_POLICY_DENIED]}
    ]
    labels = {"agent": "support", "track": "stable"}
    assert metric(collector, m.TOOL_CALLS_TOTAL, **labels, tool=WRITE, disposition="denied", outcome="blocked") == 1
    assert metric(collector, m.TOOL_CALLS_TOTAL, **labels, tool=READ, disposition="allowed", outcome="ok") == 1
    assert metric(collector, m.RUNS_TOTAL, **labels, stop_reason="policy_denied") == 1


def test_mcp_proxy_command_over_stdio_exports_to_the_collector(collector: Collector, tmp_path: Path) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    log = tmp_path / "calls.jsonl"
    command, args = stdio_command(log)
    config = {
        "architecture": {"tool_gateway": "owned", "runtime": "managed_or_custom"},
        "budgets": {"max_steps": 25, "max_tool_calls": 12},
        "approvals": {"required_for": [WRITE]},
        "logging": {"tool_calls": True, "stop_reasons": True},
        "tools": {"allow": [READ]},
        "mcp": {
            "agent": "helpdesk-proxy",
            "listen": {"transport": "stdio", "tenant": "acme"},
            "upstreams": {SERVER_NAME: {"command": command, "args": args}},
        },
    }
    config_file = tmp_path / "agentwatch.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.traces_url,
        "OTEL_SERVICE_NAME": "mcp-proxy",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    agentwatch = Path(sys.executable).with_name("agentwatch")
    parameters = StdioServerParameters(
        command=str(agentwatch), args=["mcp-proxy", "--config", str(config_file)], env=env
    )

    async def scenario() -> list[Any]:
        async with stdio_client(parameters) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            listed = sorted(tool.name for tool in (await session.list_tools()).tools)
            read_result = await session.call_tool(READ, {"order_id": "1234"})
            write_result = await session.call_tool(WRITE, {"ticket_id": "7"})  # approval: no elicitation, rejected
            return [listed, read_result, write_result]

    listed, read_result, write_result = asyncio.run(scenario())
    assert listed == [WRITE, READ]
    assert not read_result.isError
    assert write_result.isError
    assert writes(log) == 0
    assert [json.dumps(c["arguments"]) for c in calls(log)] == ['{"order_id": "1234"}']
    collector.drain()
    rows = collector.query(f"SELECT AgentName, ToolName, Disposition FROM {TOOL_CALLS_TABLE} ORDER BY Timestamp")
    assert rows == [
        {"AgentName": "helpdesk-proxy", "ToolName": READ, "Disposition": "allowed"},
        {"AgentName": "helpdesk-proxy", "ToolName": WRITE, "Disposition": "rejected"},
    ]
    runs = collector.query(f"SELECT Runtime, StopReason FROM {RUNS_TABLE}")
    assert runs == [{"Runtime": "mcp-proxy", "StopReason": "completed"}]
