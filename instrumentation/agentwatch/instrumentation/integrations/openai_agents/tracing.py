"""The two channels from the Agents SDK into agentwatch: a tracing processor and run hooks.

``AgentwatchTracingProcessor`` is *added* to the SDK's processors (``add_trace_processor``), next
to the SDK's own exporter, which keeps receiving every span. It maps SDK spans of a run that
agentwatch is watching: turns become steps, ``generation``/``response`` spans LLM calls (priced
with agentwatch's price table), handoffs, guardrails and MCP tool listings child spans of the
step. ``AgentwatchRunHooks`` wraps the caller's run hooks (which still run, after agentwatch's):
before each model call it admits the step and the call, before each ungoverned tool call the
tool call (budgets, kill switch: raising here stops the run), and after the model answered it
records a model call no span reported and screens calls to tools the agent lacks.

The processor never raises (the SDK would only log it): a mapping failure is logged, or kept and
raised when the run ends under strict settings (tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Final

from agents import Agent, ModelResponse, RunContextWrapper, Tool, TResponseInputItem
from agents.lifecycle import RunHooksBase
from agents.run_context import AgentHookContext
from agents.tracing import (
    CustomSpanData,
    FunctionSpanData,
    GenerationSpanData,
    GuardrailSpanData,
    HandoffSpanData,
    MCPListToolsSpanData,
    ResponseSpanData,
    Span,
    Trace,
    TracingProcessor,
    TurnSpanData,
    get_current_span,
)

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation.errors import RunStopped
from agentwatch.instrumentation.integrations.openai_agents.state import (
    GUARDRAIL_NAME,
    GUARDRAIL_TRIGGERED,
    MCP_METHOD_NAME,
    MCP_SERVER_NAME,
    MCP_TOOLS,
    ModelUsage,
    SdkRun,
    active_run,
    content_value,
    finish_reasons_of,
)
from agentwatch.instrumentation.integrations.openai_agents.tools import is_governed, screen_unknown_calls

__all__ = ["AgentwatchRunHooks", "AgentwatchTracingProcessor", "model_name", "sdk_default_model"]

_MCP_LIST_TOOLS: Final = "tools/list"


class AgentwatchTracingProcessor(TracingProcessor):
    """Maps the SDK spans of watched runs onto agentwatch spans; ignores everything else.

    ``enabled`` turns it into a no-op (used when the SDK's provider offers no way to remove a
    processor on ``uninstrument``).
    """

    def __init__(self) -> None:
        self.enabled = True
        self._lock = threading.Lock()
        self._owners: dict[str, SdkRun] = {}  # SDK span id -> the run it belongs to, until it ends

    def on_trace_start(self, trace: Trace) -> None:
        return None

    def on_trace_end(self, trace: Trace) -> None:
        return None

    def on_span_start(self, span: Span[Any]) -> None:
        if not self.enabled:
            return
        state = active_run.get()
        if state is None:
            return
        try:
            mapped = _span_started(state, span)
        except Exception as exc:
            state.failed("mapping an Agents SDK span", exc)
            return
        if mapped:
            with self._lock:
                self._owners[span.span_id] = state

    def on_span_end(self, span: Span[Any]) -> None:
        # Looked up by span id, not by context: an SDK span may end in another task than it started.
        with self._lock:
            state = self._owners.pop(span.span_id, None)
        if state is None:
            return
        try:
            _span_ended(state, span)
        except Exception as exc:
            state.failed("mapping an Agents SDK span", exc)

    def forget(self, state: SdkRun) -> None:
        """Drop the spans of a finished run that never ended (the run was cancelled mid-span)."""
        with self._lock:
            for span_id in [key for key, owner in self._owners.items() if owner is state]:
                del self._owners[span_id]

    def shutdown(self) -> None:
        return None

    def force_flush(self) -> None:
        return None


def _error_message(span: Span[Any]) -> str | None:
    error = span.error
    if not error:
        return None
    message = error.get("message")
    return message if isinstance(message, str) and message else "error"


def _span_started(state: SdkRun, span: Span[Any]) -> bool:
    data = span.span_data
    if isinstance(data, TurnSpanData):
        state.turn_started(data.agent_name)
    elif isinstance(data, GenerationSpanData | ResponseSpanData):
        state.model_span_started(span.span_id)
    elif isinstance(data, FunctionSpanData):
        pass  # the tool call itself is opened by the gateway or by the on_tool_start hook
    elif isinstance(data, HandoffSpanData):
        state.child_started(
            span.span_id, semconv.OP_HANDOFF, semconv.OP_HANDOFF, {semconv.HANDOFF_FROM: data.from_agent}
        )
    elif isinstance(data, GuardrailSpanData):
        state.child_started(
            span.span_id, f"{semconv.OP_GUARDRAIL} {data.name}", semconv.OP_GUARDRAIL, {GUARDRAIL_NAME: data.name}
        )
    elif isinstance(data, MCPListToolsSpanData):
        name = f"{_MCP_LIST_TOOLS} {data.server}" if data.server else _MCP_LIST_TOOLS
        state.child_started(span.span_id, name, None, {MCP_METHOD_NAME: _MCP_LIST_TOOLS, MCP_SERVER_NAME: data.server})
    elif isinstance(data, CustomSpanData):
        state.child_started(span.span_id, data.name, None, {})
    else:
        return False  # task and agent spans are the run itself; speech spans are not agent work
    return True


def _span_ended(state: SdkRun, span: Span[Any]) -> None:
    data = span.span_data
    if isinstance(data, TurnSpanData):
        state.turn_ended()
    elif isinstance(data, GenerationSpanData):
        state.model_span_ended(
            span.span_id,
            model=data.model,
            usage=ModelUsage.of(data.usage),
            finish_reasons=finish_reasons_of(list(data.output) if data.output is not None else None),
            response_id=None,
            input_messages=list(data.input) if data.input is not None else None,
            output_messages=list(data.output) if data.output is not None else None,
            error=_error_message(span),
        )
    elif isinstance(data, ResponseSpanData):
        response = data.response
        output = list(response.output) if response is not None else None
        state.model_span_ended(
            span.span_id,
            model=response.model if response is not None else None,
            usage=ModelUsage.of(data.usage if data.usage is not None else getattr(response, "usage", None)),
            finish_reasons=finish_reasons_of(output),
            response_id=response.id if response is not None else None,
            input_messages=_messages(data.input),
            output_messages=[content_value(item) for item in output] if output is not None else None,
            error=_error_message(span),
        )
    elif isinstance(data, FunctionSpanData):
        state.function_span_ended(span.span_id)
    elif isinstance(data, HandoffSpanData):
        name = f"{semconv.OP_HANDOFF} {data.to_agent}" if data.to_agent else None
        state.child_ended(span.span_id, {semconv.HANDOFF_TO: data.to_agent}, name=name, error=_error_message(span))
    elif isinstance(data, GuardrailSpanData):
        state.child_ended(span.span_id, {GUARDRAIL_TRIGGERED: bool(data.triggered)}, error=_error_message(span))
    elif isinstance(data, MCPListToolsSpanData):
        tools = [str(tool) for tool in data.result] if data.result is not None else None
        state.child_ended(span.span_id, {MCP_TOOLS: tools}, error=_error_message(span))
    else:
        state.child_ended(span.span_id, error=_error_message(span))


def _messages(value: object) -> Sequence[Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, Sequence):
        return [content_value(item) for item in value]
    return [content_value(value)]


def model_name(model: object) -> str | None:
    """The name of a model as configured on an agent or run config (a string or a ``Model``)."""
    if isinstance(model, str):
        return model
    name = getattr(model, "model", None)
    return name if isinstance(name, str) else None


def _request_model(agent: Agent[Any], state: SdkRun) -> str | None:
    # A model set on the run config wins over the agent's, as in the SDK's own resolution.
    if state.default_model is not None:
        return state.default_model
    configured = model_name(agent.model)
    return configured if configured is not None else sdk_default_model()


def sdk_default_model() -> str | None:
    """The model the SDK uses for an agent without one (it may come from the environment)."""
    try:
        from agents.models import get_default_model

        return get_default_model()
    except Exception:  # an SDK without the helper: the model stays unknown until the span names it
        return None


class AgentwatchRunHooks(RunHooksBase[Any, Agent[Any]]):
    """agentwatch's admissions and records around the caller's own run hooks (which run after them)."""

    def __init__(self, state: SdkRun, inner: RunHooksBase[Any, Any] | None) -> None:
        self._state = state
        self._inner = inner

    def _guarded(self, action: str, work: Callable[[], None]) -> None:
        """Run recording work; a ``RunStopped`` stops the run, any other failure is the mapping's own."""
        try:
            work()
        except RunStopped:
            raise
        except Exception as exc:
            self._state.failed(action, exc)

    async def on_llm_start(
        self,
        context: RunContextWrapper[Any],
        agent: Agent[Any],
        system_prompt: str | None,
        input_items: list[TResponseInputItem],
    ) -> None:
        state = self._state
        self._guarded(
            "admitting a model call", lambda: state.begin_model_call(agent.name, _request_model(agent, state))
        )
        if self._inner is not None:
            await self._inner.on_llm_start(context, agent, system_prompt, input_items)

    async def on_llm_end(self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse) -> None:
        state = self._state
        self._guarded("recording a model call", lambda: state.model_call_ended(response))
        try:
            await screen_unknown_calls(state, agent, response.output)
        except RunStopped:
            raise
        except Exception as exc:
            state.failed("screening calls to unknown tools", exc)
        if self._inner is not None:
            await self._inner.on_llm_end(context, agent, response)

    async def on_tool_start(self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool) -> None:
        if not is_governed(tool):  # a governed call is admitted and recorded by the gateway
            state = self._state
            current = get_current_span()
            sdk_span_id = (
                current.span_id if current is not None and isinstance(current.span_data, FunctionSpanData) else None
            )

            def start() -> None:
                state.tool_started(
                    tool=tool.name,
                    call_id=getattr(context, "tool_call_id", None),
                    arguments=getattr(context, "tool_arguments", None),
                    sdk_span_id=sdk_span_id,
                )

            self._guarded("opening a tool call", start)
        if self._inner is not None:
            await self._inner.on_tool_start(context, agent, tool)

    async def on_tool_end(self, context: RunContextWrapper[Any], agent: Agent[Any], tool: Tool, result: object) -> None:
        if not is_governed(tool):
            state = self._state
            current = get_current_span()
            sdk_span_id = (
                current.span_id if current is not None and isinstance(current.span_data, FunctionSpanData) else None
            )
            key = getattr(context, "tool_call_id", None) or sdk_span_id
            # the SDK turns a failing function tool into an error text for the model and marks its span
            failed = current is not None and sdk_span_id is not None and current.error is not None
            if key is not None:
                self._guarded("closing a tool call", lambda: state.tool_ended(key, result=result, failed=failed))
        if self._inner is not None:
            await self._inner.on_tool_end(context, agent, tool, result)

    async def on_agent_start(self, context: AgentHookContext[Any], agent: Agent[Any]) -> None:
        if self._inner is not None:
            await self._inner.on_agent_start(context, agent)

    async def on_agent_end(self, context: AgentHookContext[Any], agent: Agent[Any], output: Any) -> None:
        if self._inner is not None:
            await self._inner.on_agent_end(context, agent, output)

    async def on_handoff(self, context: RunContextWrapper[Any], from_agent: Agent[Any], to_agent: Agent[Any]) -> None:
        if self._inner is not None:
            await self._inner.on_handoff(context, from_agent, to_agent)


def _forwarder(name: str) -> Callable[..., Coroutine[Any, Any, None]]:
    async def forward(self: AgentwatchRunHooks, *args: Any, **kwargs: Any) -> None:
        inner = self._inner
        if inner is not None:
            await getattr(inner, name)(*args, **kwargs)

    forward.__name__ = name
    return forward


# Hooks a later SDK version adds still reach the caller's hooks.
for _name in dir(RunHooksBase):
    if _name.startswith("on_") and _name not in AgentwatchRunHooks.__dict__:
        setattr(AgentwatchRunHooks, _name, _forwarder(_name))


def tool_not_found_refusal(args: Any) -> str | None:
    """``RunConfig.tool_error_formatter`` for governed runs: a refused unknown tool gets the refusal text."""
    state = active_run.get()
    if state is None or getattr(args, "kind", None) != "tool_not_found":
        return None
    call_id = getattr(args, "call_id", None)
    return state.refusals.get(call_id) if isinstance(call_id, str) else None
