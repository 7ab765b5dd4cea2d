"""What a span written by another GenAI instrumentation says, in agentwatch's terms.

Teams arrive with telemetry already flowing: the OpenTelemetry GenAI semantic conventions (the
official OpenAI client instrumentation, ``opentelemetry-util-genai``), OpenInference (Arize's
instrumentations of the Agents SDK, LangChain/LangGraph and others), OpenLLMetry (Traceloop) and
OpenLIT. Each names the same facts differently. ``read_span`` recognises the dialect of one
converted span and returns its ``SpanFacts`` (is it an agent, an LLM call or a tool call; which
agent, model, tool; how many tokens), or None for a span that is no GenAI span or is agentwatch's
own. ``assembly`` turns the facts of a whole trace into a run. README's "Already instrumented?"
table is this module in prose; keep the two in step.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from agentwatch.collectors.dialect_names import (
    GEN_AI_SYSTEM,
    GEN_AI_USAGE_COMPLETION_TOKENS,
    GEN_AI_USAGE_PROMPT_TOKENS,
    LLM_OPERATIONS,
    OPENINFERENCE_CACHE_READ_TOKENS,
    OPENINFERENCE_COMPLETION_TOKENS,
    OPENINFERENCE_MODEL,
    OPENINFERENCE_PROMPT_TOKENS,
    OPENINFERENCE_SPAN_KIND,
    OPENINFERENCE_TOOL_NAME,
    TRACELOOP_ENTITY_NAME,
    TRACELOOP_SPAN_KIND,
)
from agentwatch.instrumentation import semconv

DIALECT: Final = semconv.DIALECT
RUN_TOOLS: Final = semconv.RUN_TOOLS


class Dialect(enum.StrEnum):
    OTEL_GENAI = "otel_genai"
    OPENINFERENCE = "openinference"
    OPENLLMETRY = "openllmetry"
    OPENLIT = "openlit"


class Role(enum.Enum):
    AGENT = "agent"
    LLM = "llm"
    TOOL = "tool"
    OTHER = "other"  # workflows, chains, tasks, handoffs, guardrails: structure, counted as nothing


@dataclass(frozen=True, slots=True)
class SpanFacts:
    """One foreign span, read: its role and the agent-level facts it carries (empty when absent)."""

    dialect: Dialect
    role: Role
    agent: str = ""
    agent_named: bool = False
    """The agent name came from an attribute that names an agent (not from the span name)."""
    agent_version: str = ""
    model: str = ""
    provider: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    native_cost_usd: float | None = None
    tool: str = ""
    tool_call_id: str = ""
    tool_type: str = ""
    conversation: str = ""
    runtime: str = ""


# --- the keys of each dialect ------------------------------------------------------------------

_TRACELOOP_REQUEST_TYPE: Final = "llm.request.type"
_OPENLIT_SDK: Final = "openlit"
# instrumentation scopes of the GenAI instrumentations whose spans may carry agentwatch's run id
_FOREIGN_SCOPES: Final = (
    "opentelemetry.instrumentation.",
    "openinference.",
    "openlit",
    "traceloop",
    "opentelemetry.util.genai",
)
_GEN_AI_MARKERS: Final = (semconv.GEN_AI_OPERATION_NAME, GEN_AI_SYSTEM, semconv.GEN_AI_PROVIDER_NAME)
_TELEMETRY_SDK_NAME: Final = "telemetry.sdk.name"

# the GenAI conventions' operations, by the role they play in a run
_AGENT_OPERATIONS: Final = frozenset({semconv.OP_INVOKE_AGENT, "agent"})
_TOOL_OPERATIONS: Final = frozenset({semconv.OP_EXECUTE_TOOL})

# input tokens under the names the dialects (and older versions of the conventions) use
_INPUT_TOKENS: Final = (
    semconv.GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_PROMPT_TOKENS,
    OPENINFERENCE_PROMPT_TOKENS,
    "llm.usage.prompt_tokens",
)
_OUTPUT_TOKENS: Final = (
    semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_COMPLETION_TOKENS,
    OPENINFERENCE_COMPLETION_TOKENS,
    "llm.usage.completion_tokens",
)
_CACHED_TOKENS: Final = (
    semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    "gen_ai.usage.cached_tokens",
    OPENINFERENCE_CACHE_READ_TOKENS,
    "gen_ai.usage.cache_read_input_tokens",
)
_MODELS: Final = (semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_REQUEST_MODEL, OPENINFERENCE_MODEL)
_PROVIDERS: Final = (semconv.GEN_AI_PROVIDER_NAME, GEN_AI_SYSTEM, "llm.provider", "llm.system")
_CONVERSATIONS: Final = (
    semconv.GEN_AI_CONVERSATION_ID,
    "session.id",
    "traceloop.association.properties.session_id",
    "traceloop.association.properties.conversation_id",
)
_OWN_MODEL_KEYS: Final = (semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_REQUEST_MODEL)
_OPENINFERENCE_ROLES: Final = {"AGENT": Role.AGENT, "LLM": Role.LLM, "TOOL": Role.TOOL, "EMBEDDING": Role.LLM}
_TRACELOOP_ROLES: Final = {"agent": Role.AGENT, "tool": Role.TOOL}
_RUNTIMES: Final = (
    # instrumentation scope prefix -> the runtime the run ran on (agentwatch's own runtime names)
    ("openinference.instrumentation.openai_agents", "openai_agents"),
    ("openinference.instrumentation.langchain", "langgraph"),
    ("opentelemetry.instrumentation.openai_agents", "openai_agents"),
    ("opentelemetry.instrumentation.langchain", "langgraph"),
    ("openlit.instrumentation.openai_agents", "openai_agents"),
    ("openlit.instrumentation.langgraph", "langgraph"),
    ("openlit.instrumentation.langchain", "langgraph"),
)
GUARDRAIL_TRIGGERED: Final = "gen_ai.guardrail.triggered"
"""OpenLIT writes a guardrail as an ``invoke_agent`` span of the guardrail with this attribute."""


def _first(attributes: Mapping[str, str], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = attributes.get(key)
        if value:
            return value
    return ""


def _count(attributes: Mapping[str, str], keys: tuple[str, ...]) -> int:
    """A token count from the first key that holds a non-negative integer (``12``, ``12.0``), else 0."""
    for key in keys:
        value = attributes.get(key)
        if not value:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if 0 <= number < 2**53:
            return int(number)
    return 0


def _cost(attributes: Mapping[str, str]) -> float | None:
    value = attributes.get("gen_ai.usage.cost")
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if 0 <= number < float("inf") else None


def is_own(attributes: Mapping[str, str], scope: str) -> bool:
    """A span agentwatch's instrumentation wrote: its scope, or its run id on a span of no GenAI instrumentation.

    The run id alone does not say it: agentwatch's span processor stamps it on every span started
    inside a run, the official OpenAI instrumentation's LLM spans included.
    """
    if scope.startswith(semconv.INSTRUMENTATION_SCOPE):
        return True
    return (
        semconv.RUN_ID in attributes
        and not scope.startswith(_FOREIGN_SCOPES)
        and OPENINFERENCE_SPAN_KIND not in attributes
        and TRACELOOP_SPAN_KIND not in attributes
    )


def dialect_of(attributes: Mapping[str, str], resource: Mapping[str, str], scope: str) -> Dialect | None:
    """Which dialect wrote a span, or None for agentwatch's own spans and spans of no GenAI dialect."""
    if is_own(attributes, scope):
        return None
    if OPENINFERENCE_SPAN_KIND in attributes:
        return Dialect.OPENINFERENCE
    if (
        TRACELOOP_SPAN_KIND in attributes
        or TRACELOOP_ENTITY_NAME in attributes
        or _TRACELOOP_REQUEST_TYPE in attributes
    ):
        return Dialect.OPENLLMETRY
    if scope.startswith(_OPENLIT_SDK) or resource.get(_TELEMETRY_SDK_NAME) == _OPENLIT_SDK:
        return Dialect.OPENLIT
    if (
        semconv.GEN_AI_OPERATION_NAME in attributes
        or GEN_AI_SYSTEM in attributes
        or semconv.GEN_AI_PROVIDER_NAME in attributes
    ):
        return Dialect.OTEL_GENAI
    return None


def _runtime(scope: str) -> str:
    for prefix, runtime in _RUNTIMES:
        if scope.startswith(prefix):
            return runtime
    return ""


def read_span(attributes: Mapping[str, str], resource: Mapping[str, str], scope: str, name: str) -> SpanFacts | None:
    """The facts of one foreign GenAI span, or None (own span, or not a GenAI span)."""
    dialect = dialect_of(attributes, resource, scope)
    if dialect is None:
        return None
    if dialect is Dialect.OPENINFERENCE:
        role = _OPENINFERENCE_ROLES.get(attributes[OPENINFERENCE_SPAN_KIND].upper(), Role.OTHER)
        agent_attribute = attributes.get("agent.name", "")
        tool = attributes.get(OPENINFERENCE_TOOL_NAME, "")
        if role is Role.TOOL and not tool:
            # the Agents SDK's handoffs are TOOL spans without a tool name ("handoff to X"): structure
            role = Role.OTHER if name.startswith("handoff") else role
            tool = name
    elif dialect is Dialect.OPENLLMETRY:
        kind = attributes.get(TRACELOOP_SPAN_KIND, "")
        role = _TRACELOOP_ROLES.get(kind, Role.OTHER)
        if _TRACELOOP_REQUEST_TYPE in attributes or (role is Role.OTHER and _first(attributes, _MODELS)):
            role = Role.LLM
        entity = attributes.get(TRACELOOP_ENTITY_NAME, "")
        agent_attribute = attributes.get(semconv.GEN_AI_AGENT_NAME) or (entity if role is Role.AGENT else "")
        tool = attributes.get(semconv.GEN_AI_TOOL_NAME) or (entity if role is Role.TOOL else "")
    else:  # the GenAI conventions, which OpenLIT follows with a few names of its own
        operation = attributes.get(semconv.GEN_AI_OPERATION_NAME, "")
        if operation in _AGENT_OPERATIONS:
            role = Role.AGENT
        elif operation in _TOOL_OPERATIONS:
            role = Role.TOOL
        elif operation in LLM_OPERATIONS or (not operation and _first(attributes, _MODELS)):
            role = Role.LLM
        else:
            role = Role.OTHER
        agent_attribute = attributes.get(semconv.GEN_AI_AGENT_NAME, "")
        tool = attributes.get(semconv.GEN_AI_TOOL_NAME, "")
    if role is Role.AGENT and GUARDRAIL_TRIGGERED in attributes:
        role, agent_attribute = Role.OTHER, ""  # a guardrail, not an agent
    agent = agent_attribute or (name if role is Role.AGENT else "")
    llm = role is Role.LLM
    return SpanFacts(
        dialect=dialect,
        role=role,
        agent=agent,
        agent_named=bool(agent_attribute),
        agent_version=attributes.get(semconv.GEN_AI_AGENT_VERSION, ""),
        model=_first(attributes, _MODELS) if llm else "",
        provider=_first(attributes, _PROVIDERS),
        input_tokens=_count(attributes, _INPUT_TOKENS) if llm else 0,
        output_tokens=_count(attributes, _OUTPUT_TOKENS) if llm else 0,
        cached_input_tokens=_count(attributes, _CACHED_TOKENS) if llm else 0,
        native_cost_usd=_cost(attributes) if llm else None,
        tool=tool if role is Role.TOOL else "",
        tool_call_id=_first(attributes, (semconv.GEN_AI_TOOL_CALL_ID, "tool_call.id")) if role is Role.TOOL else "",
        tool_type=attributes.get(semconv.GEN_AI_TOOL_TYPE, "") if role is Role.TOOL else "",
        conversation=_first(attributes, _CONVERSATIONS),
        runtime=_runtime(scope),
    )


def own_role(attributes: Mapping[str, str]) -> Role:
    """The role of one of agentwatch's own spans (steps, handoffs and guardrails are structure)."""
    operation = semconv.span_operation(attributes)
    if operation == semconv.OP_INVOKE_AGENT:
        return Role.AGENT
    if operation == semconv.OP_EXECUTE_TOOL:
        return Role.TOOL
    if (
        operation == semconv.OP_CHAT
        or semconv.GEN_AI_RESPONSE_MODEL in attributes
        or semconv.GEN_AI_REQUEST_MODEL in attributes
    ):
        return Role.LLM
    return Role.OTHER


__all__ = [
    "DIALECT",
    "GUARDRAIL_TRIGGERED",
    "RUN_TOOLS",
    "Dialect",
    "Role",
    "SpanFacts",
    "dialect_of",
    "is_own",
    "own_role",
    "read_span",
]
