"""LangGraph with MCP tools from ``langchain-mcp-adapters``: the same gateway, one span per call.

A prebuilt ReAct agent with a scripted chat model gets the helpdesk's tools from
``MultiServerMCPClient`` (stdio, the server's own process); the injected ticket steers it into
the write tool, which the gateway refuses. The tool calls belong to the graph's run and step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from _mcp_servers import INJECTED_TICKET, calls, stdio_command, writes
from _telemetry import Telemetry, attrs, event_names
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable

from agentwatch.instrumentation import Policy, StopReason, ToolGateway, semconv
from agentwatch.instrumentation.integrations import mcp as aw_mcp
from agentwatch.instrumentation.integrations.langgraph import AgentwatchCallbackHandler, ainvoke_graph

pytestmark = pytest.mark.integration  # the MCP servers run in processes of their own


class ScriptedModel(FakeMessagesListChatModel):
    """LangChain's fake chat model, able to call tools."""

    model_name: str = "gpt-4o-mini"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        reply = result.generations[0].message.model_copy(update={"id": None})
        return ChatResult(generations=[ChatGeneration(message=reply)])


def turn(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[ToolCall(name=name, args=args, id=call_id)],
        usage_metadata={"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100},
    )


@pytest.fixture
def governed(telemetry: Telemetry) -> Iterator[Telemetry]:
    aw_mcp.instrument()
    yield telemetry
    aw_mcp.uninstrument()


@pytest.mark.filterwarnings("ignore::langgraph.warnings.LangGraphDeprecatedSinceV10")  # moved to langchain.agents
def test_langgraph_agent_with_mcp_adapter_tools_is_governed(governed: Telemetry, tmp_path: Path) -> None:
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langgraph.prebuilt import create_react_agent

    log = tmp_path / "calls.jsonl"
    command, args = stdio_command(log)
    gateway = ToolGateway(policy=Policy(allow=["desk.lookup_order"]), tools={}, kill_switch=False)
    handler = AgentwatchCallbackHandler(
        "support", gateway=gateway, tracer_provider=governed.provider, settings=governed.settings
    )
    model = ScriptedModel(
        responses=[
            turn("lookup_order", {"order_id": "1234"}, "c1"),
            turn("close_ticket", {"ticket_id": "7"}, "c2"),
            AIMessage(content="Your order arrives tomorrow."),
        ]
    )

    async def scenario() -> Any:
        client = MultiServerMCPClient({"desk": {"transport": "stdio", "command": command, "args": args}})
        tools = await client.get_tools()
        agent = create_react_agent(model, tools, name="support")
        return await ainvoke_graph(agent, {"messages": [HumanMessage(INJECTED_TICKET)]}, handler=handler)

    result = asyncio.run(scenario())
    assert result.run.stop_reason is StopReason.COMPLETED
    assert writes(log) == 0
    assert [c["tool"] for c in calls(log)] == ["lookup_order"]
    refusals = [m for m in result.output["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "c2"]
    assert "refused by policy" in str(refusals[0].content)
    tools = governed.tools()  # one span per call: the handler leaves MCP tools to the gateway
    assert [attrs(s)[semconv.GEN_AI_TOOL_NAME] for s in tools] == ["desk.lookup_order", "desk.close_ticket"]
    assert [attrs(s)[semconv.TOOL_DISPOSITION] for s in tools] == ["allowed", "denied"]
    assert semconv.EVENT_POLICY_DENIED in event_names(tools[1])
    run_id = attrs(governed.run_span())[semconv.RUN_ID]
    assert all(attrs(s)[semconv.RUN_ID] == run_id for s in tools)
    assert all(attrs(s).get(semconv.STEP_INDEX) for s in tools)
    assert result.run.tool_calls == 2
