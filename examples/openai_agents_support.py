"""The support agent of ``custom_agent.py`` on the OpenAI Agents SDK, governed and traced by agentwatch (no network).

Same tools, same tickets, same policy and budgets (``agentwatch.yaml``), same scripted "model"
deciding each turn; only the runtime changes. The Agents SDK runs the loop, and agentwatch keeps
the control layer outside it: ``govern_tools`` puts every tool behind the same ``ToolGateway``
(default deny, approvals, scoped credentials, idempotency), the run's budgets stop the SDK's
loop, and each ticket ends with the same stop reason as on the custom loop — one completes, one
loops until the tool-call budget stops it, one carries a prompt injection that steers the model
into a tool nobody allowed (denied), one needs an approval that is granted, one an approval that
is rejected. Run it directly::

    python examples/openai_agents_support.py

or through ``agentwatch demo``, which runs the runtimes side by side.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from agents import Agent, ModelResponse, ModelSettings, Runner, Tool, TResponseInputItem, Usage
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseOutputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.tracing import response_span
from openai.types.responses import (
    Response,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from openai.types.responses.response_prompt_param import ResponsePromptParam
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from opentelemetry.sdk.trace import TracerProvider
from typing_extensions import override

from agentwatch.instrumentation import (
    AgentRun,
    AgentWatchConfig,
    InstrumentationSettings,
    StopReason,
    ToolGateway,
    agent_run,
    load_config,
)
from agentwatch.instrumentation.integrations import openai_agents


def _load_custom_agent() -> ModuleType:
    """The custom-loop example next to this file (its tools, tickets, approver and scripted model)."""
    name = "agentwatch_examples.custom_agent"  # the name the demo loads it under: one module, not two
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("custom_agent.py"))
    if spec is None or spec.loader is None:
        raise ImportError("examples/custom_agent.py not found next to this example")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


custom = _load_custom_agent()
AGENT: str = custom.AGENT
MODEL: str = custom.MODEL
CONFIG_PATH: Path = custom.CONFIG_PATH
TOOLS: dict[str, Callable[..., Any]] = custom.TOOLS
SCENARIOS: Sequence[tuple[str, str]] = custom.SCENARIOS
INSTRUCTIONS = "You are a support agent. Answer from the help center and the order service; close tickets when done."


def gateway_name(sdk_name: str) -> str:
    """The model calls ``kb_search`` (function names cannot contain dots); the gateway knows ``kb.search``."""
    return sdk_name.replace("_", ".", 1)


def idempotency_key(tool: str, args: Mapping[str, Any]) -> str | None:
    """Closing a ticket twice must not close it twice: the same key as the custom loop uses."""
    return f"close-{args.get('ticket_id')}" if tool == "ticket.close" else None


# --- the scripted model, as an Agents SDK Model ------------------------------------------------


class SupportModel(Model):
    """The custom example's scripted model behind the SDK's ``Model`` interface.

    It reads the tool results of earlier turns from its input, as a real model does, asks the
    scripted model for the next turn, and answers with Responses API output items (function
    calls or a message) in a ``response`` span, as the SDK's ``OpenAIResponsesModel`` does.
    """

    def __init__(self, brain: Any, ticket: str, model_name: str = MODEL) -> None:
        self.brain = brain
        self.ticket = ticket
        self.model = model_name
        self._answered: set[str] = set()

    def _read_tool_results(self, input: str | list[TResponseInputItem]) -> None:
        if isinstance(input, str):
            return
        names: dict[str, str] = {}
        for entry in input:
            item: object = entry
            if not isinstance(item, Mapping):
                continue
            if item.get("type") == "function_call":
                names[str(item.get("call_id"))] = gateway_name(str(item.get("name")))
            elif item.get("type") == "function_call_output":
                call_id = str(item.get("call_id"))
                if call_id not in self._answered:
                    self._answered.add(call_id)
                    self.brain.seen.append((names.get(call_id, "?"), item.get("output")))

    def _respond(self, input: str | list[TResponseInputItem]) -> tuple[list[TResponseOutputItem], Response]:
        self._read_tool_results(input)
        turn = self.brain.next_turn(self.ticket)
        output: list[TResponseOutputItem] = [
            ResponseFunctionToolCall(
                type="function_call",
                name=call.name.replace(".", "_"),
                arguments=json.dumps(call.args),
                call_id=call.call_id,
                id=f"fc_{call.call_id}",
            )
            for call in turn.tool_calls
        ]
        if turn.final is not None:
            text = ResponseOutputText(type="output_text", text=turn.final, annotations=[])
            output.append(
                ResponseOutputMessage(
                    id=f"msg_{self.brain.turns_taken}",
                    type="message",
                    role="assistant",
                    status="completed",
                    content=[text],
                )
            )
        response = Response(
            id=f"resp_{self.brain.turns_taken}",
            created_at=time.time(),
            model=self.model,
            object="response",
            output=output,
            parallel_tool_calls=True,
            tool_choice="auto",
            tools=[],
            usage=ResponseUsage(
                input_tokens=turn.input_tokens,
                output_tokens=turn.output_tokens,
                total_tokens=turn.input_tokens + turn.output_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
                output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            ),
        )
        return output, response

    @override
    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        with response_span(disabled=tracing.is_disabled()) as span:
            output, response = self._respond(input)
            span.span_data.response = response
        usage = response.usage
        assert usage is not None
        return ModelResponse(
            output=output,
            usage=Usage(
                requests=1,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
            ),
            response_id=response.id,
        )

    @override
    def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("this example runs the agent without streaming")


# --- the run: this is all a team adds around its Agents SDK agent ----------------------------


@functools.cache
def _described_tools() -> tuple[Tool, ...]:
    # Built once: governing an agent copies its tools, so every agent can start from the same descriptions.
    return tuple(openai_agents.function_tools(TOOLS))


def build_agent(ticket: str, gateway: ToolGateway, *, brain: Any, model_name: str = MODEL) -> Agent[Any]:
    """The support agent: the gateway's tools described to the model, every call governed by the gateway."""
    agent: Agent[Any] = Agent(
        name=AGENT,
        instructions=INSTRUCTIONS,
        model=SupportModel(brain, ticket, model_name),
        tools=list(_described_tools()),
    )
    # "stop": a denied tool or a rejected approval ends the run, as it does on the custom loop
    openai_agents.govern_tools(agent, gateway, on_denied="stop", names=gateway_name, idempotency_key=idempotency_key)
    return agent


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
    """Run the support agent on one ticket with the Agents SDK; the returned run always has a stop reason.

    ``gateway`` replaces the config's (a replay gateway, say), ``settings`` the installed ones.
    """
    openai_agents.instrument()  # idempotent; a service calls it once at start-up
    brain = model or custom.ScriptedModel(version=version)
    own_gateway = gateway is None
    gateway = gateway or config.gateway(TOOLS, approver=custom.on_call_approver, credentials=custom.scoped_credentials)
    agent = build_agent(ticket, gateway, brain=brain, model_name=model_name)
    # The SDK call runs inside the team's own run block: tenant, version, track and budget are
    # chosen here, and a stop (a budget, a denial, the turn limit, a guardrail) ends the block
    # with its stop reason instead of a crash.
    with agent_run(
        AGENT,
        tenant_id=tenant_id,
        version=version,
        track=track,
        budget=config.budget,
        gateway=gateway,
        runtime=openai_agents.RUNTIME,
        tracer_provider=tracer_provider,
        settings=settings,
    ) as run:
        Runner.run_sync(agent, ticket)
    if own_gateway:
        gateway.close()
    return run


def replay_target() -> Any:
    """``agentwatch replay --target agentwatch_examples.openai_agents_support:replay_target``: onto the Agents SDK."""
    return custom.SupportReplayTarget(openai_agents.RUNTIME, handle_ticket)


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
