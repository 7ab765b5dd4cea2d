"""The agentwatch semantic contract: every span name, attribute, enum value and event name.

Standard OpenTelemetry GenAI names are used where they exist; they are pinned here to the GenAI
registry named in ``GENAI_SEMCONV_VERSION`` and ``SCHEMA_URL``. The GenAI conventions moved out of
the core semantic-conventions repository into ``open-telemetry/semantic-conventions-genai`` (core
v1.44.0 deprecates the GenAI names it still has); they are in *development* status, so a rename
upstream must be a deliberate change here, never a surprise. Names under ``agentwatch.*`` cover
what the standard lacks: runs, steps, budgets, stop reasons and the tool gateway. This module is a
leaf: it imports nothing from agentwatch, so the collector and the dashboards can use it without
pulling in the instrumentation.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

GENAI_SEMCONV_VERSION: Final = "1.42.0-dev"
"""Version of the GenAI semantic conventions (``open-telemetry/semantic-conventions-genai``) pinned here.

It is the ``schema_url`` that registry's ``model/manifest.yaml`` declares (dev channel, development
stability, built on core semantic conventions v1.44.0)."""

SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/gen-ai-dev/{GENAI_SEMCONV_VERSION}"
"""Schema URL stamped on the instrumentation scope of every agentwatch span."""

INSTRUMENTATION_SCOPE: Final = "agentwatch"
"""Name of the tracer that emits agentwatch spans."""

# --- operations ---------------------------------------------------------------------------------
# Standard values of gen_ai.operation.name (registered in the GenAI conventions).
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_CHAT: Final = "chat"
OP_EXECUTE_TOOL: Final = "execute_tool"

OPERATION_NAME: Final = "agentwatch.operation.name"
"""What an agentwatch span that is no GenAI operation does: a step, a handoff, a guardrail check.

These are agentwatch's own operations, so they never go into ``gen_ai.operation.name`` (whose
registered values are GenAI operations: ``chat``, ``invoke_agent``, ``execute_tool``, ...).
Spans written by agentwatch before this attribute existed carry these same values in
``gen_ai.operation.name``; ``span_operation`` reads both."""

# Values of agentwatch.operation.name: a contract (dashboards, queries and the collector use them).
OP_STEP: Final = "agentwatch.step"
OP_HANDOFF: Final = "agentwatch.handoff"
OP_GUARDRAIL: Final = "agentwatch.guardrail"
AGENTWATCH_OPERATIONS: Final = frozenset({OP_STEP, OP_HANDOFF, OP_GUARDRAIL})


def operation_attributes(operation: str) -> dict[str, str]:
    """The attribute that names ``operation`` on a span: ``agentwatch.operation.name`` for agentwatch's
    own operations (``agentwatch.*``), ``gen_ai.operation.name`` for GenAI ones."""
    if operation in AGENTWATCH_OPERATIONS or operation.startswith("agentwatch."):
        return {OPERATION_NAME: operation}
    return {GEN_AI_OPERATION_NAME: operation}


def span_operation(attributes: Mapping[str, object]) -> str:
    """The operation of a span, from ``agentwatch.operation.name`` or else ``gen_ai.operation.name``.

    Reads spans of every agentwatch version alike: a step written before ``agentwatch.operation.name``
    existed (``gen_ai.operation.name = agentwatch.step``) and one written after it both give
    ``agentwatch.step``. Empty when the span names no operation (or a non-text one)."""
    for key in (OPERATION_NAME, GEN_AI_OPERATION_NAME):
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def model_attributes(provider: str | None, model: str | None) -> dict[str, str]:
    """``gen_ai.provider.name`` and ``gen_ai.request.model`` for those of ``provider`` and ``model`` that are known."""
    known = ((GEN_AI_PROVIDER_NAME, provider), (GEN_AI_REQUEST_MODEL, model))
    return {key: value for key, value in known if value}


# --- span names (low cardinality: the agent, model or tool name, never ids) ----------------
SPAN_RUN: Final = "invoke_agent {agent}"
SPAN_STEP: Final = "step {agent}"
SPAN_LLM: Final = "chat {model}"
SPAN_TOOL: Final = "execute_tool {tool}"


def run_span_name(agent: str) -> str:
    """Span name of a run of ``agent``."""
    return f"{OP_INVOKE_AGENT} {agent}"


def step_span_name(agent: str) -> str:
    """Span name of one step of ``agent``."""
    return f"step {agent}"


def llm_span_name(model: str, operation: str = OP_CHAT) -> str:
    """Span name of an LLM call (``chat gpt-4o``)."""
    return f"{operation} {model}"


def tool_span_name(tool: str) -> str:
    """Span name of a tool call (``execute_tool db.write``)."""
    return f"{OP_EXECUTE_TOOL} {tool}"


# --- standard GenAI attributes ---------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_AGENT_NAME: Final = "gen_ai.agent.name"
GEN_AI_AGENT_ID: Final = "gen_ai.agent.id"
GEN_AI_AGENT_VERSION: Final = "gen_ai.agent.version"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
ERROR_TYPE: Final = "error.type"

# --- agentwatch attributes: runs --------------------------------------------------------------
RUN_ID: Final = "agentwatch.run.id"
RUN_PARENT_ID: Final = "agentwatch.run.parent_id"
TENANT_ID: Final = "agentwatch.tenant.id"
TRACK: Final = "agentwatch.track"
RUNTIME: Final = "agentwatch.runtime"
STOP_REASON: Final = "agentwatch.stop_reason"
RUN_STEPS: Final = "agentwatch.run.steps"
RUN_TOOL_CALLS: Final = "agentwatch.run.tool_calls"
RUN_LLM_CALLS: Final = "agentwatch.run.llm_calls"
RUN_COST_USD: Final = "agentwatch.run.cost_usd"
RUN_UNPRICED_LLM_CALLS: Final = "agentwatch.run.unpriced_llm_calls"
RUN_COST_UNPRICED: Final = "agentwatch.run.cost_unpriced"
"""True when some LLM call of the run had no price: ``agentwatch.run.cost_usd`` is then a lower bound."""
RUN_INPUT: Final = "agentwatch.run.input"
RUN_OUTPUT: Final = "agentwatch.run.output"

# --- what the collector adds to the root span of a run it reads from another GenAI dialect ---------
DIALECT: Final = "agentwatch.dialect"
"""Which dialect the run was read from (``otel_genai``, ``openinference``, ``openllmetry``, ``openlit``)."""
RUN_INPUT_TOKENS: Final = "agentwatch.run.input_tokens"
RUN_OUTPUT_TOKENS: Final = "agentwatch.run.output_tokens"
"""The run's tokens, summed over its counted LLM calls (the root's own ``gen_ai.usage.*``, when it has
any, may be one call's, as OpenLIT's workflow spans carry the last call's usage)."""
RUN_TOOLS: Final = "agentwatch.run.tools"
"""The run's counted tool calls, JSON: ``[span id, parent id, tool, call id, type, start ns, duration ns, error]``."""

# --- what the runtime integrations add (OpenAI Agents SDK, LangGraph) ------------------------------
STEP_AGENT: Final = "agentwatch.step.agent"
"""The agent a step ran (a run that hands off between agents spans several)."""
GUARDRAIL_NAME: Final = "agentwatch.guardrail.name"
GUARDRAIL_TRIGGERED: Final = "agentwatch.guardrail.triggered"
MCP_METHOD_NAME: Final = "mcp.method.name"  # the OpenTelemetry MCP conventions' name
MCP_SERVER_NAME: Final = "agentwatch.mcp.server.name"
MCP_TOOLS: Final = "agentwatch.mcp.tools"
# the OpenTelemetry MCP conventions (development): tools/call spans of governed MCP tools
MCP_SESSION_ID: Final = "mcp.session.id"
MCP_PROTOCOL_VERSION: Final = "mcp.protocol.version"
JSONRPC_REQUEST_ID: Final = "jsonrpc.request.id"
NETWORK_TRANSPORT: Final = "network.transport"
MCP_TOOLS_CALL: Final = "tools/call"
MCP_TOOL: Final = "agentwatch.mcp.tool"
"""The tool's own name on its MCP server (``gen_ai.tool.name`` is the qualified ``server.tool``)."""
LANGGRAPH_STEP: Final = "langgraph.step"
"""The LangGraph superstep a step started in."""
LANGGRAPH_NODES: Final = "langgraph.nodes"
LANGGRAPH_RECURSION_LIMIT: Final = "langgraph.recursion_limit"
POLICY_RULE_UNGOVERNED: Final = "ungoverned"
"""``agentwatch.policy.rule`` of a tool call that ran outside the gateway (seen, not governed)."""
BUDGET_MAX_STEPS: Final = "agentwatch.budget.max_steps"
BUDGET_MAX_TOOL_CALLS: Final = "agentwatch.budget.max_tool_calls"
BUDGET_MAX_SECONDS: Final = "agentwatch.budget.max_seconds"
BUDGET_MAX_USD: Final = "agentwatch.budget.max_usd"
BUDGET_EXHAUSTED: Final = "agentwatch.budget.exhausted"

# --- agentwatch attributes: steps, LLM calls, tool calls ---------------------------------
STEP_INDEX: Final = "agentwatch.step.index"
COST_USD: Final = "agentwatch.cost_usd"
COST_UNPRICED: Final = "agentwatch.cost.unpriced"
TOOL_DISPOSITION: Final = "agentwatch.tool.disposition"
TOOL_OUTCOME: Final = "agentwatch.tool.outcome"
TOOL_RISK: Final = "agentwatch.tool.risk"
POLICY_RULE: Final = "agentwatch.policy.rule"
TOOL_IDEMPOTENCY_KEY: Final = "agentwatch.tool.idempotency_key"
HANDOFF_FROM: Final = "agentwatch.handoff.from"
HANDOFF_TO: Final = "agentwatch.handoff.to"

# --- span events and their attributes -------------------------------------------------------
EVENT_BUDGET_EXHAUSTED: Final = "agentwatch.budget.exhausted"
EVENT_POLICY_DENIED: Final = "agentwatch.policy.denied"
EVENT_APPROVAL_REQUESTED: Final = "agentwatch.approval.requested"
EVENT_APPROVAL_GRANTED: Final = "agentwatch.approval.granted"
EVENT_APPROVAL_REJECTED: Final = "agentwatch.approval.rejected"
EVENT_KILL_SWITCH_ENGAGED: Final = "agentwatch.kill_switch.engaged"
EVENT_ATTR_BUDGET: Final = "budget"
EVENT_ATTR_LIMIT: Final = "limit"
EVENT_ATTR_USED: Final = "used"
EVENT_ATTR_TOOL: Final = "tool"
EVENT_ATTR_RULE: Final = "rule"
EVENT_ATTR_REASON: Final = "reason"
EVENT_ATTR_SCOPE: Final = "scope"
EVENT_ATTR_APPROVER: Final = "approver"
EVENT_ATTR_MODEL: Final = "model"

BUDGET_REASON_UNPRICED_MODEL: Final = "unpriced_model"
"""``reason`` of an ``agentwatch.budget.exhausted`` event when a ``max_usd`` run met a model without a price."""


class StopReason(enum.StrEnum):
    """Why a run ended: a closed set, so dashboards and alerts can rely on it."""

    COMPLETED = "completed"
    MAX_STEPS = "max_steps"
    MAX_TOOL_CALLS = "max_tool_calls"
    MAX_TIME = "max_time"
    MAX_USD = "max_usd"
    POLICY_DENIED = "policy_denied"
    APPROVAL_REJECTED = "approval_rejected"
    KILL_SWITCH = "kill_switch"
    GUARDRAIL = "guardrail"
    ERROR = "error"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class BudgetName(enum.StrEnum):
    """The budgets a run can exhaust; the value is the ``budget`` label and event attribute."""

    STEPS = "steps"
    TOOL_CALLS = "tool_calls"
    SECONDS = "seconds"
    USD = "usd"

    def __str__(self) -> str:
        return self.value

    @property
    def stop_reason(self) -> StopReason:
        """The stop reason a run ends with when this budget is exhausted."""
        return _BUDGET_STOP_REASONS[self]


_BUDGET_STOP_REASONS: Final = {
    BudgetName.STEPS: StopReason.MAX_STEPS,
    BudgetName.TOOL_CALLS: StopReason.MAX_TOOL_CALLS,
    BudgetName.SECONDS: StopReason.MAX_TIME,
    BudgetName.USD: StopReason.MAX_USD,
}


class Track(enum.StrEnum):
    """Deployment track of an agent version; drift compares canary with baseline (else stable)."""

    STABLE = "stable"
    CANARY = "canary"
    BASELINE = "baseline"

    def __str__(self) -> str:
        return self.value


class ToolDisposition(enum.StrEnum):
    """What the gateway decided about a tool call."""

    ALLOWED = "allowed"
    DENIED = "denied"
    APPROVED = "approved"
    REJECTED = "rejected"
    KILLED = "killed"
    DEDUPLICATED = "deduplicated"
    REPLAYED = "replayed"
    UNGOVERNED = "ungoverned"
    """A tool call another instrumentation reported that no agentwatch gateway saw (the collector
    sets it on tool calls it reads from foreign GenAI telemetry; the gateway never does)."""

    def __str__(self) -> str:
        return self.value


class ToolOutcome(enum.StrEnum):
    """How a tool call ended: it ran and returned, it ran and raised, or it never ran."""

    OK = "ok"
    ERROR = "error"
    BLOCKED = "blocked"

    def __str__(self) -> str:
        return self.value


class ToolRisk(enum.StrEnum):
    """Risk tier of a tool: read-only, with side effects, or gated by a human approval."""

    READ = "read"
    WRITE = "write"
    APPROVAL = "approval"

    def __str__(self) -> str:
        return self.value


STOP_REASONS: Final = frozenset(reason.value for reason in StopReason)
"""Every valid ``agentwatch.stop_reason`` value; anything else is reported as ``other``."""

STOP_REASON_OTHER: Final = "other"
"""Metric label value for a stop reason outside the closed set."""

CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""Standard variable that turns on capture of prompts, tool arguments and results."""
