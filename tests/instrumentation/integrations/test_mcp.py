"""MCP tools behind the gateway, in process: the real ``mcp`` SDK client and server (stdio and
Streamable HTTP on 127.0.0.1), and the OpenAI Agents SDK's MCP servers with a scripted model.

The server is the seed's helpdesk (``_mcp_servers``): a read tool and a write tool whose calls
the test counts. No network beyond loopback, no mocks of agentwatch or of the SDKs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from _mcp_servers import INJECTED_TICKET, SERVER_NAME, calls, http_server, stdio_command, writes
from _telemetry import Telemetry, attrs, event_names
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from agentwatch.instrumentation import (
    ApprovalDecision,
    ApprovalRequest,
    Budget,
    MemoryKillSwitch,
    Policy,
    RecordedCall,
    Recording,
    StopReason,
    ToolDenied,
    ToolGateway,
    semconv,
)
from agentwatch.instrumentation.integrations import mcp as aw_mcp

pytestmark = pytest.mark.integration  # the MCP servers run in processes of their own

READ = f"{SERVER_NAME}.lookup_order"
WRITE = f"{SERVER_NAME}.close_ticket"


@pytest.fixture
def governed(telemetry: Telemetry) -> Iterator[Telemetry]:
    aw_mcp.instrument()
    yield telemetry
    aw_mcp.uninstrument()


def gateway_of(telemetry: Telemetry, **kwargs: Any) -> ToolGateway:
    kwargs.setdefault("policy", Policy(allow=[READ]))
    kwargs.setdefault("kill_switch", False)
    return ToolGateway(tools={}, tracer_provider=telemetry.provider, settings=telemetry.settings, **kwargs)


@asynccontextmanager
async def stdio_session(log: Path) -> AsyncIterator[ClientSession]:
    command, args = stdio_command(log)
    async with (
        stdio_client(StdioServerParameters(command=command, args=args)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@asynccontextmanager
async def http_session(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    async with (
        httpx.AsyncClient(headers=headers or {}) as client,
        streamable_http_client(url, http_client=client) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def text_of(result: Any) -> str:
    return " ".join(getattr(item, "text", "") for item in result.content)


def test_stdio_session_read_allowed_write_denied_and_never_executed(governed: Telemetry, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    gateway = gateway_of(governed)

    async def scenario() -> tuple[Any, Any]:
        results: list[Any] = []
        async with governed.run("support", gateway=gateway), stdio_session(log) as session:
            results.append(await session.call_tool("lookup_order", {"order_id": "1234"}))
            results.append(await session.call_tool("close_ticket", {"ticket_id": "7"}))
        return results[0], results[1]

    read, write = asyncio.run(scenario())
    assert not read.isError
    assert "shipped" in text_of(read)
    assert write.isError
    assert "refused by policy" in text_of(write)
    assert writes(log) == 0  # the side effect never happened

    tools = {attrs(span)[semconv.GEN_AI_TOOL_NAME]: span for span in governed.tools()}
    assert set(tools) == {READ, WRITE}
    allowed, denied = tools[READ], tools[WRITE]
    assert allowed.name == f"tools/call {READ}"
    assert allowed.kind.name == "CLIENT"
    assert attrs(allowed)[semconv.MCP_METHOD_NAME] == "tools/call"
    assert attrs(allowed)[semconv.MCP_SERVER_NAME] == SERVER_NAME
    assert attrs(allowed)[semconv.MCP_TOOL] == "lookup_order"
    assert attrs(allowed)[semconv.JSONRPC_REQUEST_ID]
    assert attrs(allowed)[semconv.TOOL_DISPOSITION] == "allowed"
    assert attrs(allowed)[semconv.TOOL_OUTCOME] == "ok"
    assert attrs(allowed)[semconv.MCP_PROTOCOL_VERSION]
    assert attrs(denied)[semconv.TOOL_DISPOSITION] == "denied"
    assert attrs(denied)[semconv.TOOL_OUTCOME] == "blocked"
    assert attrs(denied)[semconv.POLICY_RULE] == "default_deny"
    assert semconv.EVENT_POLICY_DENIED in event_names(denied)
    # the trace context travelled in params._meta: the server saw the tools/call span as parent
    (executed,) = calls(log)
    trace_id, span_id = f"{allowed.context.trace_id:032x}", f"{allowed.context.span_id:016x}"
    assert executed["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    run = governed.run_span()
    assert attrs(allowed)[semconv.RUN_ID] == attrs(run)[semconv.RUN_ID]


def test_http_session_approval_and_kill_switch(governed: Telemetry, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    requests: list[ApprovalRequest] = []

    def approver(request: ApprovalRequest) -> ApprovalDecision:
        requests.append(request)
        return ApprovalDecision(approved=request.args.get("ticket_id") == "7", approver="oncall")

    switch = MemoryKillSwitch()
    gateway = gateway_of(governed, policy=Policy(allow=[READ], require_approval=[WRITE]), approver=approver)
    gateway_killable = gateway_of(governed, policy=Policy(allow=[READ]), kill_switch=switch)

    async def scenario(url: str) -> list[Any]:
        async with http_session(url) as session:
            aw_mcp.govern_session(session, server_name=SERVER_NAME)
            aw_mcp.instrument(gateway=gateway)
            approved = await session.call_tool("close_ticket", {"ticket_id": "7"})
            rejected = await session.call_tool("close_ticket", {"ticket_id": "8"})
            aw_mcp.instrument(gateway=gateway_killable)
            switch.engage("*")
            killed: Any
            try:
                killed = await session.call_tool("lookup_order", {"order_id": "1"})
            except Exception as exc:
                killed = exc
            return [approved, rejected, killed]

    with http_server(log) as server:
        approved, rejected, killed = asyncio.run(scenario(server.url))
    assert not approved.isError
    assert rejected.isError
    assert "approval" in text_of(rejected)
    assert isinstance(killed, Exception)
    assert [c["arguments"] for c in calls(log)] == [{"ticket_id": "7"}]
    assert [r.tool for r in requests] == [WRITE, WRITE]
    dispositions = [attrs(span)[semconv.TOOL_DISPOSITION] for span in governed.tools()]
    assert dispositions == ["approved", "rejected", "killed"]


def test_hidden_denied_tools_are_left_out_of_tools_list_and_still_refused(governed: Telemetry, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    aw_mcp.instrument(gateway=gateway_of(governed), hide_denied=True)

    async def scenario() -> tuple[list[str], Any]:
        async with stdio_session(log) as session:
            listed = [tool.name for tool in (await session.list_tools()).tools]
            return listed, await session.call_tool("close_ticket", {"ticket_id": "7"})

    listed, write = asyncio.run(scenario())
    assert listed == ["lookup_order"]
    assert write.isError
    assert writes(log) == 0


def test_stop_on_denied_stops_the_run_with_policy_denied(governed: Telemetry, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    gateway = gateway_of(governed)
    aw_mcp.instrument(on_denied="stop")

    async def scenario() -> Any:
        async with (
            governed.run("support", gateway=gateway, budget=Budget(max_tool_calls=5)) as run,
            stdio_session(log) as session,
        ):
            with pytest.raises(ToolDenied):
                await session.call_tool("close_ticket", {"ticket_id": "7"})
        return run

    run = asyncio.run(scenario())
    assert run.stop_reason is StopReason.POLICY_DENIED
    assert writes(log) == 0
    assert attrs(governed.run_span())[semconv.STOP_REASON] == "policy_denied"


# --- the OpenAI Agents SDK's MCP servers, with a scripted model ---------------------------------


@pytest.fixture
def sdk(governed: Telemetry, monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    from agentwatch.instrumentation.integrations import openai_agents

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    openai_agents.instrument(tracer_provider=governed.provider, settings=governed.settings)
    yield governed
    openai_agents.uninstrument()


def incident_model() -> Any:
    """The seed's incident: the model looks the order up, then the injected ticket steers it into the write tool."""
    from _scripted_agents_model import call, message, scripted, turn

    return scripted(
        [
            turn(call("lookup_order", {"order_id": "1234"}, "c1")),
            turn(call("close_ticket", {"ticket_id": "7"}, "c2")),
            turn(message("Your order 1234 arrives tomorrow.")),
        ]
    )


@pytest.mark.parametrize("on_denied", ["refuse", "stop"])
def test_agents_sdk_stdio_server_seed_incident_is_denied(sdk: Telemetry, tmp_path: Path, on_denied: str) -> None:
    from agents import Agent, Runner
    from agents.mcp import MCPServerStdio

    log = tmp_path / "calls.jsonl"
    command, args = stdio_command(log)
    aw_mcp.instrument(gateway=gateway_of(sdk), on_denied=on_denied)  # type: ignore[arg-type]

    async def scenario() -> Any:
        async with MCPServerStdio({"command": command, "args": args}, name=SERVER_NAME) as server:
            agent = Agent(name="support", model=incident_model(), mcp_servers=[server])
            try:
                return await Runner.run(agent, INJECTED_TICKET)
            except Exception as exc:
                return exc

    outcome = asyncio.run(scenario())
    assert writes(tmp_path / "calls.jsonl") == 0
    assert [c["tool"] for c in calls(log)] == ["lookup_order"]
    run = sdk.run_span()
    tools = sdk.tools()
    # one span per call (the SDK's own tool hooks leave MCP calls to the gateway)
    assert [attrs(span)[semconv.GEN_AI_TOOL_NAME] for span in tools] == [READ, WRITE]
    assert [attrs(span)[semconv.TOOL_DISPOSITION] for span in tools] == ["allowed", "denied"]
    assert semconv.EVENT_POLICY_DENIED in event_names(tools[1])
    assert all(attrs(span)[semconv.RUN_ID] == attrs(run)[semconv.RUN_ID] for span in tools)
    assert all(attrs(span).get(semconv.STEP_INDEX) for span in tools)
    if on_denied == "stop":
        assert attrs(run)[semconv.STOP_REASON] == "policy_denied"
        assert isinstance(outcome, Exception)
    else:
        assert attrs(run)[semconv.STOP_REASON] == "completed"
        assert outcome.final_output == "Your order 1234 arrives tomorrow."


# the Agents SDK 0.24 still opens Streamable HTTP with the mcp SDK's deprecated streamablehttp_client
@pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning")
def test_agents_sdk_streamable_http_server_is_governed(sdk: Telemetry, tmp_path: Path) -> None:
    from agents import Agent, Runner
    from agents.mcp import MCPServerStreamableHttp

    log = tmp_path / "calls.jsonl"
    # the name the client configured wins over the one the server announces ("helpdesk")
    aw_mcp.instrument(gateway=gateway_of(sdk, policy=Policy(allow=["desk.lookup_order"], deny=["desk.close_*"])))

    async def scenario(url: str) -> Any:
        async with MCPServerStreamableHttp({"url": url}, name="desk") as server:
            agent = Agent(name="support", model=incident_model(), mcp_servers=[server])
            return await Runner.run(agent, INJECTED_TICKET)

    with http_server(log) as server:
        result = asyncio.run(scenario(server.url))
    assert result.final_output == "Your order 1234 arrives tomorrow."
    assert writes(log) == 0
    tools = sdk.tools()
    assert [attrs(span)[semconv.TOOL_DISPOSITION] for span in tools] == ["allowed", "denied"]
    assert attrs(tools[1])[semconv.POLICY_RULE] == "deny:desk.close_*"
    assert [attrs(span)[semconv.MCP_SERVER_NAME] for span in tools] == ["desk", "desk"]
    assert attrs(sdk.run_span())[semconv.RUN_TOOL_CALLS] == 2


def test_replay_answers_from_the_recording_and_never_reaches_the_server(governed: Telemetry, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    recording = Recording([RecordedCall(WRITE, {"ticket_id": "7"}, result="ticket 7 closed")])
    aw_mcp.instrument(gateway=gateway_of(governed, policy=Policy(allow=[f"{SERVER_NAME}.*"]), replay=recording))

    async def scenario() -> tuple[Any, Any]:
        async with stdio_session(log) as session:
            replayed = await session.call_tool("close_ticket", {"ticket_id": "7"})
            unrecorded = await session.call_tool("close_ticket", {"ticket_id": "8"})
        return replayed, unrecorded

    replayed, unrecorded = asyncio.run(scenario())
    assert text_of(replayed) == "ticket 7 closed"
    assert not replayed.isError
    assert unrecorded.isError
    assert calls(log) == []  # replay never executes a tool
    assert [attrs(s)[semconv.TOOL_DISPOSITION] for s in governed.tools()] == ["replayed", "denied"]


def test_idempotency_key_in_meta_deduplicates_within_a_run(governed: Telemetry, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    gateway = gateway_of(governed, policy=Policy(allow=[f"{SERVER_NAME}.*"]))
    meta = {aw_mcp.IDEMPOTENCY_META_KEY: "close-7"}

    async def scenario() -> list[Any]:
        async with governed.run("support", gateway=gateway), stdio_session(log) as session:
            first = await session.call_tool("close_ticket", {"ticket_id": "7"}, meta=meta)
            again = await session.call_tool("close_ticket", {"ticket_id": "7"}, meta=meta)
        return [first, again]

    first, again = asyncio.run(scenario())
    assert text_of(first) == text_of(again) == "ticket 7 closed"
    assert writes(log) == 1
    assert [attrs(s)[semconv.TOOL_DISPOSITION] for s in governed.tools()] == ["allowed", "deduplicated"]
