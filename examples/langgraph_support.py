"""The support agent of ``custom_agent.py`` as a LangGraph graph, governed and traced by agentwatch.

Same tools, same tickets, same policy and budgets (``examples/agentwatch.yaml``), same scripted
model (no network): only the runtime changes. The graph has the usual ReAct shape, an ``agent``
node calling the chat model and a ``tools`` node, and agentwatch adds two things to it:

* the ``tools`` node is ``governed_tool_node(gateway)``: every tool call, including one to a tool
  the graph does not offer (the prompt-injected ``db.drop_table``), goes through the same
  ``ToolGateway`` as the custom loop: default deny, approvals, scoped credentials, kill switch;
* the run is recorded by ``AgentwatchCallbackHandler`` (``invoke_graph`` returns it): the same
  spans, budgets and stop reasons as the custom loop, with ``agentwatch.runtime = "langgraph"``.

So the five tickets end the same way on both runtimes: completed, max_tool_calls, policy_denied,
completed after an approval, approval_rejected. Run it directly::

    python examples/langgraph_support.py

``handle_ticket`` has the custom example's signature, so a demo can run both side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from opentelemetry.sdk.trace import TracerProvider

from agentwatch.instrumentation import (
    AgentRun,
    AgentWatchConfig,
    Budget,
    InstrumentationSettings,
    StopReason,
    ToolGateway,
    load_config,
)
from agentwatch.instrumentation.integrations.langgraph import (
    RUNTIME,
    AgentwatchCallbackHandler,
    governed_tool_node,
    invoke_graph,
    lc_tool_name,
)


def _custom_agent() -> ModuleType:
    """The custom-loop example beside this file (its tools, tickets and model), under the demo's module name."""
    name = "agentwatch_examples.custom_agent"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("custom_agent.py"))
        if spec is None or spec.loader is None:
            raise ImportError("examples/custom_agent.py not found beside langgraph_support.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their module through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


_custom = _custom_agent()
CONFIG_PATH: Path = _custom.CONFIG_PATH
AGENT: str = _custom.AGENT
MODEL: str = _custom.MODEL
PROVIDER: str = _custom.PROVIDER
SCENARIOS: Sequence[tuple[str, str]] = _custom.SCENARIOS


# --- the scripted model as a LangChain chat model ------------------------------------------------


class ScriptedChatModel(BaseChatModel):
    """The custom example's ``ScriptedModel`` behind LangChain's chat-model interface.

    Each call reads the ticket (the first user message) and the tool results since its last turn
    (the raw values, from the ``ToolMessage`` artifacts), asks the script for the next turn, and
    answers like a provider would: tool calls, usage, model name and finish reason.
    """

    script: Any  # custom_agent.ScriptedModel
    model_name: str = MODEL
    provider: str = PROVIDER

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # what LangChain reports as provider and model (agentwatch prices the call from it)
        return LangSmithParams(ls_provider=self.provider, ls_model_name=self.model_name, ls_model_type="chat")

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self  # the script already knows the tools

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        ticket = next((str(m.content) for m in messages if isinstance(m, HumanMessage)), "")
        gateway_names = {lc_tool_name(name): name for name in _custom.TOOLS}
        results: list[tuple[str, Any]] = []
        for message in reversed(messages):
            if isinstance(message, AIMessage):
                break
            if isinstance(message, ToolMessage) and message.status == "success":
                name = message.name or ""
                results.append((gateway_names.get(name, name), message.artifact))
        self.script.seen.extend(reversed(results))
        turn = self.script.next_turn(ticket)
        calls = [
            ToolCall(
                # a tool the graph offers under its model-facing name; anything else as the model said it
                name=lc_tool_name(call.name) if call.name in _custom.TOOLS else call.name,
                args=call.args,
                id=call.call_id,
            )
            for call in turn.tool_calls
        ]
        reply = AIMessage(
            content=turn.final or "",
            tool_calls=calls,
            usage_metadata={
                "input_tokens": turn.input_tokens,
                "output_tokens": turn.output_tokens,
                "total_tokens": turn.input_tokens + turn.output_tokens,
            },
            response_metadata={"model_name": self.model_name, "finish_reason": "tool_calls" if calls else "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=reply)])


# --- the graph: the usual ReAct shape ---------------------------------------------------------------


def build_graph(model: BaseChatModel, tools: ToolNode) -> CompiledStateGraph[MessagesState, None, MessagesState]:
    """An ``agent`` node that calls the model and a ``tools`` node, looping until the model answers."""
    bound = model.bind_tools(list(tools.tools_by_name.values()))

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [bound.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", tools)
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(name=AGENT)


def recursion_limit(budget: Budget) -> int:
    """LangGraph's superstep limit, high enough that agentwatch's budget decides (a turn is 2 supersteps)."""
    return 2 * (budget.max_steps or 25) + 1


def handle_ticket(
    ticket: str,
    *,
    config: AgentWatchConfig,
    tenant_id: str,
    version: str = "v1",
    track: str = "stable",
    tracer_provider: TracerProvider | None = None,
    model: Any = None,
    model_name: str = MODEL,
    gateway: ToolGateway | None = None,
    settings: InstrumentationSettings | None = None,
) -> AgentRun:
    """Run the support agent on one ticket as a LangGraph graph; the returned run always has a stop reason.

    ``model`` is a ``custom_agent.ScriptedModel`` (a fresh one by default), ``gateway`` replaces the
    config's (a replay gateway, say), ``settings`` the installed ones.
    """
    script = model if model is not None else _custom.ScriptedModel(version=version)
    own_gateway = gateway is None
    gateway = gateway or config.gateway(
        _custom.TOOLS, approver=_custom.on_call_approver, credentials=_custom.scoped_credentials
    )
    graph = build_graph(
        ScriptedChatModel(script=script, model_name=model_name),
        # a refused call ends the run with policy_denied / approval_rejected, as in the custom loop
        governed_tool_node(gateway, on_denied="stop"),
    )
    handler = AgentwatchCallbackHandler(
        AGENT,
        tenant_id=tenant_id,
        version=version,
        track=track,
        budget=config.budget,
        gateway=gateway,
        tracer_provider=tracer_provider,
        settings=settings,
    )
    result = invoke_graph(
        graph,
        {"messages": [HumanMessage(ticket)]},
        {"recursion_limit": recursion_limit(config.budget)},
        handler=handler,
    )
    if own_gateway:
        gateway.close()
    return result.run


def replay_target() -> Any:
    """``agentwatch replay --target agentwatch_examples.langgraph_support:replay_target``: onto LangGraph."""
    return _custom.SupportReplayTarget(RUNTIME, handle_ticket)


def run_scenarios(
    *,
    tracer_provider: TracerProvider | None = None,
    config: AgentWatchConfig | None = None,
    track: str = "stable",
    settings: InstrumentationSettings | None = None,
) -> list[tuple[str, AgentRun]]:
    """Run every scenario once; returns (ticket, run) pairs."""
    config = config or load_config(CONFIG_PATH)
    return [
        (
            ticket,
            handle_ticket(
                ticket, config=config, tenant_id=tenant, track=track, tracer_provider=tracer_provider, settings=settings
            ),
        )
        for tenant, ticket in SCENARIOS
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    for ticket, run in run_scenarios():
        marker = "ok " if run.stop_reason is StopReason.COMPLETED else "!! "
        print(f"{marker}{run.stop_reason!s:<18} steps={run.steps:<3} tools={run.tool_calls:<3} {ticket[:60]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
