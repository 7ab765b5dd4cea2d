"""What agentwatch keeps about one OpenAI Agents SDK run while it maps the run onto the contract.

One ``SdkRun`` lives for one ``Runner.run`` / ``run_sync`` / ``run_streamed`` call. The SDK tells
agentwatch about the run through two channels that meet here: its tracing processor (turn, model,
function, handoff, guardrail and MCP spans) and the run hooks agentwatch adds to the call (before
and after each model call and each tool call). Hooks may raise, so every admission (a step, a
model call, a tool call) happens in a hook, before the action, exactly as in the custom loop;
the processor only records. The ``SdkRun`` of the run in progress travels in a context variable,
which asyncio copies into every task the SDK starts, so nested runs (agents used as tools) and
concurrent runs never mix.

Spans are created with explicit parents (the open step, else the run), never by attaching the
OpenTelemetry context inside a callback: the SDK calls its processor and hooks from different
tasks, and a context attached in one task cannot be detached in another.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._context import current_step
from agentwatch.instrumentation._guard import end_span, start_span, telemetry_failed
from agentwatch.instrumentation._llm import LLMCall
from agentwatch.instrumentation._run import AgentRun
from agentwatch.instrumentation.semconv import ToolDisposition, ToolOutcome

__all__ = [
    "GUARDRAIL_NAME",
    "GUARDRAIL_TRIGGERED",
    "MCP_METHOD_NAME",
    "MCP_SERVER_NAME",
    "MCP_TOOLS",
    "RUNTIME",
    "STEP_AGENT",
    "UNGOVERNED_RULE",
    "ModelUsage",
    "SdkRun",
    "active_run",
    "content_value",
    "finish_reasons_of",
    "parse_arguments",
    "provider_of",
]

logger: Final = logging.getLogger("agentwatch.instrumentation")
audit_logger: Final = logging.getLogger("agentwatch.audit")

RUNTIME: Final = "openai-agents"
"""``agentwatch.runtime`` of runs driven by the OpenAI Agents SDK."""

# Names the integration adds to the contract (pinned in semconv.py).
STEP_AGENT: Final = semconv.STEP_AGENT
"""The agent that took a step; differs from the run's ``gen_ai.agent.name`` after a handoff."""
GUARDRAIL_NAME: Final = semconv.GUARDRAIL_NAME
GUARDRAIL_TRIGGERED: Final = semconv.GUARDRAIL_TRIGGERED
MCP_METHOD_NAME: Final = semconv.MCP_METHOD_NAME
MCP_SERVER_NAME: Final = semconv.MCP_SERVER_NAME
MCP_TOOLS: Final = semconv.MCP_TOOLS
UNGOVERNED_RULE: Final = semconv.POLICY_RULE_UNGOVERNED
"""``agentwatch.policy.rule`` of a tool call that no gateway decided (the tool was not governed)."""

active_run: Final[ContextVar[SdkRun | None]] = ContextVar("agentwatch_openai_agents_run", default=None)
"""The SDK run the current task belongs to (set by the Runner wrapper, inherited by SDK tasks)."""


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """Token usage of one model call, clamped to what ``LLMCall.set_usage`` accepts."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    @classmethod
    def of(cls, usage: object) -> ModelUsage:
        """From an SDK ``Usage``, an OpenAI ``ResponseUsage`` or the usage dict of a span."""
        if usage is None:
            return cls()
        if isinstance(usage, Mapping):
            input_tokens = usage.get("input_tokens")
            output_tokens = usage.get("output_tokens")
            details = usage.get("input_tokens_details")
            cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
        else:
            input_tokens = getattr(usage, "input_tokens", None)
            output_tokens = getattr(usage, "output_tokens", None)
            cached = getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", None)
        inputs = _count(input_tokens)
        return cls(inputs, _count(output_tokens), min(_count(cached), inputs))


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def content_value(value: object) -> object:
    """A captured value in the shape the custom loop records: pydantic models as their data."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return dump(mode="json", exclude_none=True)
        except Exception:  # a model that cannot dump itself is captured as text
            return str(value)
    return value


def parse_arguments(arguments: str | None) -> object:
    """Tool arguments as the model sent them: a JSON object becomes a mapping, anything else stays text."""
    if not arguments:
        return {}
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def provider_of(model: str) -> str:
    """The provider behind a model name as the SDK's providers spell it (``litellm/anthropic/...``)."""
    parts = [part for part in model.split("/") if part]
    if len(parts) > 1:
        return parts[1] if parts[0] == "litellm" and len(parts) > 2 else parts[0]
    return "openai"


@dataclass(slots=True)
class _OpenStep:
    index: int
    span: Span
    agent: str
    model_calls: int = 0


@dataclass(slots=True)
class _OpenTool:
    span: Span
    tool: str
    arguments: object
    sdk_span_id: str | None


@dataclass(slots=True)
class _Pending:
    """An SDK turn that started but whose step is not admitted yet (admission happens before the model call)."""

    started_ns: int
    agent: str


@dataclass
class SdkRun:
    """One SDK run being mapped: its ``AgentRun`` and the steps, calls and spans still open."""

    run: AgentRun
    default_model: str | None = None
    errors: list[Exception] = field(default_factory=list)
    refusals: dict[str, str] = field(default_factory=dict)
    """Refusals of calls to tools the agent lacks, by call id, for the SDK's tool-not-found answer."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _step: _OpenStep | None = None
    _turn: _Pending | None = None
    _turn_spans: bool = False
    _model_span_seen: bool = False
    _request_model: str | None = None
    _model_starts: dict[str, int] = field(default_factory=dict)
    _spans: dict[str, Span] = field(default_factory=dict)
    _tools: dict[str, _OpenTool] = field(default_factory=dict)
    _tool_keys: dict[str, str] = field(default_factory=dict)
    _tool_serial: int = 0

    # -- failures of the mapping itself ---------------------------------------------------------

    def failed(self, action: str, exc: Exception) -> None:
        """A mapping bug: logged in production; kept and raised at the end of the run under strict settings.

        The SDK swallows (and logs) exceptions of tracing processors, so raising here would hide
        the bug in a test; it surfaces when the run ends instead.
        """
        if self.run.settings.strict:
            self.errors.append(exc)
        else:
            telemetry_failed(action, exc, strict=False)

    # -- context helpers ------------------------------------------------------------------------

    def _parent(self) -> tuple[Context, int | None]:
        step = self._step
        if step is not None:
            return trace.set_span_in_context(step.span), step.index
        return trace.set_span_in_context(self.run.span), None

    @contextmanager
    def in_step(self) -> Iterator[None]:
        """Make the open step (else the run) the current span and step for code that reads the context.

        Only for code that enters and leaves in the same task: a governed tool call, or an LLM
        span started from a processor callback.
        """
        parent, index = self._parent()
        context_token = otel_context.attach(parent)
        step_token = current_step.set(index)
        try:
            yield
        finally:
            current_step.reset(step_token)
            otel_context.detach(context_token)

    def _attributes(self, operation: str | None) -> dict[str, AttributeValue]:
        attributes = self.run.span_attributes()
        if operation is not None:
            # steps, handoffs and guardrails name their operation in agentwatch.operation.name
            attributes.update(semconv.operation_attributes(operation))
        return attributes

    # -- steps (SDK turns) ----------------------------------------------------------------------

    def turn_started(self, agent: str) -> None:
        with self._lock:
            self._turn_spans = True
            self._turn = _Pending(time.time_ns(), agent)

    def turn_ended(self) -> None:
        with self._lock:
            step, self._step = self._step, None
            self._turn = None
        if step is not None:
            end_span(step.span, strict=self.run.settings.strict)

    def begin_model_call(self, agent: str, request_model: str | None) -> None:
        """Admit the step (once per turn) and the model call; raises ``RunStopped`` when the run must stop.

        Without turn spans (tracing disabled, or the run config turned them off), every model
        call starts a new step, as a turn is exactly one model call.
        """
        run = self.run
        with self._lock:
            step = self._step
            needs_step = step is None or (not self._turn_spans and step.model_calls > 0)
        if needs_step:
            if step is not None:
                self.turn_ended()
            index = run.admit_step()  # budgets and kill switch: the refused step never starts
            pending = self._turn
            step_agent = pending.agent if pending is not None else agent
            attributes = self._attributes(semconv.OP_STEP)
            attributes[semconv.STEP_INDEX] = index
            attributes[STEP_AGENT] = step_agent
            span = start_span(
                run.tracer,
                semconv.step_span_name(run.agent),
                attributes,
                context=trace.set_span_in_context(run.span),
                strict=run.settings.strict,
                start_time=pending.started_ns if pending is not None else None,
            )
            with self._lock:
                self._step = _OpenStep(index, span, step_agent)
        run._admit_llm_call(*((request_model,) if request_model else ()))  # USD/time budgets, kill switch
        with self._lock:
            if self._step is not None:
                self._step.model_calls += 1
            self._model_span_seen = False
            self._request_model = request_model

    # -- model calls ----------------------------------------------------------------------------

    def model_span_started(self, sdk_span_id: str) -> None:
        with self._lock:
            self._model_starts[sdk_span_id] = time.time_ns()
            self._model_span_seen = True

    def model_span_ended(
        self,
        sdk_span_id: str,
        *,
        model: str | None,
        usage: ModelUsage,
        finish_reasons: Sequence[str] | None,
        response_id: str | None,
        input_messages: Sequence[Any] | None,
        output_messages: Sequence[Any] | None,
        error: str | None,
    ) -> None:
        with self._lock:
            started = self._model_starts.pop(sdk_span_id, None)
            request_model = self._request_model or self.default_model
        self._record_model_call(
            request_model=request_model or model or "unknown",
            response_model=model,
            usage=usage,
            finish_reasons=finish_reasons,
            response_id=response_id,
            input_messages=input_messages,
            output_messages=output_messages,
            started_ns=started,
            error=error,
        )

    def model_call_ended(self, response: object) -> None:
        """After the model returned (the run's ``on_llm_end``): record it if no model span did.

        Models that emit no ``generation``/``response`` span (custom ``Model`` implementations,
        tracing disabled) are still counted, priced and attributed to their step.
        """
        with self._lock:
            seen, self._model_span_seen = self._model_span_seen, False
            request_model = self._request_model or self.default_model
        if seen:
            return
        output = getattr(response, "output", None)
        self._record_model_call(
            request_model=request_model or "unknown",
            response_model=None,
            usage=ModelUsage.of(getattr(response, "usage", None)),
            finish_reasons=finish_reasons_of(output),
            response_id=getattr(response, "response_id", None),
            input_messages=None,
            output_messages=[content_value(item) for item in output] if isinstance(output, list) else None,
            started_ns=None,
            error=None,
        )

    def _record_model_call(
        self,
        *,
        request_model: str,
        response_model: str | None,
        usage: ModelUsage,
        finish_reasons: Sequence[str] | None,
        response_id: str | None,
        input_messages: Sequence[Any] | None,
        output_messages: Sequence[Any] | None,
        started_ns: int | None,
        error: str | None,
    ) -> None:
        # LLMCall, not run.record_llm_call: the call already happened, so it is recorded even if
        # the run became terminal meanwhile (its tokens were spent); admission was done before it.
        call = LLMCall(
            self.run,
            model=request_model,
            provider=provider_of(request_model),
            operation=semconv.OP_CHAT,
            input_messages=input_messages,
        )
        with self.in_step():
            call.start(start_time_ns=started_ns)
        call.set_usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
        )
        call.set_response(
            model=response_model if response_model and response_model != request_model else None,
            finish_reasons=finish_reasons,
            response_id=response_id,
            output_messages=output_messages,
        )
        call.finish(error=_SdkSpanError(error) if error else None)

    # -- tool calls the gateway does not see (tools that were not governed) -----------------------

    def tool_started(self, *, tool: str, call_id: str | None, arguments: str | None, sdk_span_id: str | None) -> str:
        """Admit and open an ungoverned tool call; returns its key. Raises ``RunStopped`` over budget."""
        run = self.run
        run.admit_tool_call()  # counted like any gateway call: the tool-call budget covers every tool
        parent, index = self._parent()
        attributes = self._attributes(semconv.OP_EXECUTE_TOOL)
        attributes[semconv.GEN_AI_TOOL_NAME] = tool
        attributes[semconv.GEN_AI_TOOL_TYPE] = "function"
        attributes[semconv.POLICY_RULE] = UNGOVERNED_RULE
        if call_id:
            attributes[semconv.GEN_AI_TOOL_CALL_ID] = call_id
        if index is not None:
            attributes[semconv.STEP_INDEX] = index
        span = start_span(
            run.tracer, semconv.tool_span_name(tool), attributes, context=parent, strict=run.settings.strict
        )
        with self._lock:
            self._tool_serial += 1
            key = call_id or sdk_span_id or f"tool-{self._tool_serial}"
            self._tools[key] = _OpenTool(span, tool, parse_arguments(arguments), sdk_span_id)
            if sdk_span_id is not None:
                self._tool_keys[sdk_span_id] = key
        return key

    def tool_ended(self, key: str, *, result: object, failed: bool) -> None:
        with self._lock:
            open_tool = self._tools.pop(key, None)
            if open_tool is not None and open_tool.sdk_span_id is not None:
                self._tool_keys.pop(open_tool.sdk_span_id, None)
        if open_tool is not None:
            self._finish_tool(open_tool, result=result, failed=failed)

    def function_span_ended(self, sdk_span_id: str) -> None:
        """The SDK's function span ended: close its tool call if no ``on_tool_end`` did (the tool raised)."""
        with self._lock:
            key = self._tool_keys.pop(sdk_span_id, None)
            open_tool = self._tools.pop(key, None) if key is not None else None
        if open_tool is not None:
            self._finish_tool(open_tool, result=None, failed=True)

    def _finish_tool(self, open_tool: _OpenTool, *, result: object, failed: bool) -> None:
        run = self.run
        outcome = ToolOutcome.ERROR if failed else ToolOutcome.OK
        span = open_tool.span
        span.set_attributes(
            {semconv.TOOL_DISPOSITION: ToolDisposition.ALLOWED.value, semconv.TOOL_OUTCOME: outcome.value}
        )
        if failed:
            span.set_status(Status(StatusCode.ERROR))
        settings = run.settings
        if settings.capture_content:
            # the same attributes, in the same shapes, as the gateway records for a governed call
            redactor = settings.redactor
            span.set_attribute(semconv.GEN_AI_TOOL_CALL_ARGUMENTS, redactor.to_attribute(open_tool.arguments))
            if result is not None:
                span.set_attribute(semconv.GEN_AI_TOOL_CALL_RESULT, redactor.to_attribute(content_value(result)))
        run.tool_call_recorded(open_tool.tool, ToolDisposition.ALLOWED, outcome)
        if settings.audit_tool_calls and audit_logger.isEnabledFor(logging.INFO):
            audit_logger.info(
                "tool call %s: %s/%s",
                open_tool.tool,
                ToolDisposition.ALLOWED.value,
                outcome.value,
                extra={
                    "agentwatch_tool": open_tool.tool,
                    "agentwatch_disposition": ToolDisposition.ALLOWED.value,
                    "agentwatch_outcome": outcome.value,
                    "agentwatch_rule": UNGOVERNED_RULE,
                    "agentwatch_run_id": run.run_id,
                    "agentwatch_tenant_id": run.tenant_id,
                },
            )
        end_span(span, strict=settings.strict)

    # -- other SDK spans: handoffs, guardrails, MCP tool listings, custom spans -------------------

    def child_started(self, sdk_span_id: str, name: str, operation: str | None, attributes: Mapping[str, Any]) -> None:
        parent, index = self._parent()
        span_attributes = self._attributes(operation)
        if index is not None:
            span_attributes[semconv.STEP_INDEX] = index
        span_attributes.update({key: value for key, value in attributes.items() if value is not None})
        span = start_span(self.run.tracer, name, span_attributes, context=parent, strict=self.run.settings.strict)
        with self._lock:
            self._spans[sdk_span_id] = span

    def child_ended(
        self,
        sdk_span_id: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        error: str | None = None,
    ) -> None:
        with self._lock:
            span = self._spans.pop(sdk_span_id, None)
        if span is None:
            return
        if attributes:
            span.set_attributes({key: value for key, value in attributes.items() if value is not None})
        if name is not None:
            span.update_name(name)
        if error is not None:
            # the SDK's span error messages are fixed texts ("Error running tool"), never content
            span.set_status(Status(StatusCode.ERROR, error))
        end_span(span, strict=self.run.settings.strict)

    # -- end of the run -------------------------------------------------------------------------

    def close(self) -> None:
        """End whatever the run left open (it failed or was cancelled mid-step)."""
        with self._lock:
            tools = list(self._tools.values())
            spans = list(self._spans.values())
            self._tools.clear()
            self._tool_keys.clear()
            self._spans.clear()
            self._model_starts.clear()
        for open_tool in tools:
            self._finish_tool(open_tool, result=None, failed=True)
        for span in spans:
            end_span(span, strict=self.run.settings.strict)
        self.turn_ended()


class _SdkSpanError(Exception):
    """The SDK reported an error on a model span (its message is a fixed text, never content)."""


def finish_reasons_of(output: object) -> list[str] | None:
    """``tool_calls`` when the model asked for tools, else ``stop`` (Responses output items or chat messages)."""
    if not isinstance(output, list):
        return None
    for item in output:
        kind = item.get("type") if isinstance(item, Mapping) else getattr(item, "type", None)
        calls = item.get("tool_calls") if isinstance(item, Mapping) else None
        if kind in ("function_call", "custom_tool_call") or calls:
            return ["tool_calls"]
    return ["stop"]
