"""Reading a trace whose spans are all in: its counted calls, its run's labels, stop reason and totals.

The rules README's "Already instrumented?" states, as functions of an ``OpenTrace`` that the
``assembly`` gathered: which LLM and tool calls count (one per nest; agentwatch's own first;
usage matching where instrumentations build side-by-side trees), the observations the metrics
get for them, and the attributes stamped on the root span of a foreign run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from opentelemetry.semconv.attributes.service_attributes import SERVICE_VERSION

from agentwatch.collectors.ingest.dialects import DIALECT, RUN_TOOLS, Role, SpanFacts
from agentwatch.instrumentation import semconv
from agentwatch.instrumentation.pricing import PriceTable

_MAX_TOOLS_STAMPED: Final = 1000
_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
_OUTCOMES: Final = {False: semconv.ToolOutcome.OK.value, True: semconv.ToolOutcome.ERROR.value}
_ENVIRONMENTS: Final = ("deployment.environment.name", "deployment.environment")
_TRACKS: Final = frozenset(track.value for track in semconv.Track)
# what a framework's error says -> the stop reason it means; read from status messages, exception
# types and messages, and error.type (first match wins, in this order)
_SIGNALS: Final = (
    ("GuardrailTripwireTriggered", semconv.StopReason.GUARDRAIL),
    ("Guardrail tripwire", semconv.StopReason.GUARDRAIL),
    ("MaxTurnsExceeded", semconv.StopReason.MAX_STEPS),
    ("Max turns", semconv.StopReason.MAX_STEPS),
    ("GraphRecursionError", semconv.StopReason.MAX_STEPS),
    ("Recursion limit", semconv.StopReason.MAX_STEPS),
    ("CancelledError", semconv.StopReason.CANCELLED),
    ("KeyboardInterrupt", semconv.StopReason.CANCELLED),
)
_SIGNAL_ORDER: Final = {reason: rank for rank, (_, reason) in enumerate(reversed(_SIGNALS))}

Observation = tuple[dict[str, str], int]
"""A span's attributes and duration as ``CollectorMetrics.observe_spans`` reads them."""


@dataclass(slots=True)
class TraceSpan:
    """One span of an open trace, as much of it as reading the trace needs."""

    span_id: str
    parent: str
    role: Role
    own: bool
    facts: SpanFacts | None
    start_ns: int
    duration_ns: int
    error: bool
    signal: str
    usage: tuple[int, int] = (0, 0)  # an LLM call's input and output tokens (agentwatch's own spans)


Calls = tuple[list["TraceSpan"], list["TraceSpan"]]  # a trace's counted LLM calls and tool calls


@dataclass(slots=True)
class OpenTrace:
    """The spans of a trace seen so far, and what they said about who wrote them."""

    spans: dict[str, TraceSpan] = field(default_factory=dict)
    foreign: bool = False
    own: bool = False  # agentwatch instruments this trace: its spans are the run and its tool calls
    own_labels: tuple[str, str] | None = None  # agent, track of agentwatch's run in this trace
    resource: Mapping[str, str] | None = None  # of the first foreign span
    service: str = ""
    touched: float = 0.0


def signal_of(text: str) -> str:
    """The stop reason a framework's error text names, or ''."""
    for needle, reason in _SIGNALS:
        if needle in text:
            return reason.value
    return ""


def _track(attributes: Mapping[str, str], resource: Mapping[str, str]) -> str:
    """``agentwatch.track`` of the span or resource, else a deployment environment that names a track."""
    for source in (attributes, resource):
        track = source.get(semconv.TRACK, "")
        if track:
            return track
    for key in _ENVIRONMENTS:
        environment = resource.get(key, "")
        if environment in _TRACKS:
            return environment
    return semconv.Track.STABLE.value


def ancestors(trace: OpenTrace, span_id: str) -> list[TraceSpan]:
    found: list[TraceSpan] = []
    seen = {span_id}
    parent = trace.spans[span_id].parent
    while parent and parent not in seen and (span := trace.spans.get(parent)) is not None:
        found.append(span)
        seen.add(parent)
        parent = span.parent
    return found


def counted(trace: OpenTrace, role: Role) -> list[TraceSpan]:
    """The foreign spans of ``role`` that count: one per nest, none where agentwatch's own span is."""
    covered: set[int] = set()
    for span_id, span in trace.spans.items():
        if span.own and span.role is role:
            covered.update(id(ancestor) for ancestor in ancestors(trace, span_id))
    counted = []
    for span_id, span in trace.spans.items():
        if span.own or span.role is not role or id(span) in covered:
            continue
        if any(ancestor.role is role for ancestor in ancestors(trace, span_id)):
            continue
        counted.append(span)
    if role is Role.LLM and trace.own:
        counted = unrecorded(trace, counted)
    return counted


def unrecorded(trace: OpenTrace, calls: list[TraceSpan]) -> list[TraceSpan]:
    """The foreign LLM calls agentwatch's own spans in the trace did not record.

    Instrumentations of one runtime rarely nest their spans in each other's (each makes its
    own tree from the runtime's callbacks), so a call agentwatch recorded is recognised by its
    usage: a foreign call with the input and output tokens of an own call of the trace is that
    call. Each own call absorbs one call of each dialect; two calls with identical usage of
    which agentwatch recorded only one are undercounted by one, never counted twice.
    """
    recorded = Counter(span.usage for span in trace.spans.values() if span.own and span.role is Role.LLM)
    unmatched: dict[str, Counter[tuple[int, int]]] = {}
    kept = []
    for span in sorted(calls, key=lambda call: call.start_ns):
        facts = span.facts
        assert facts is not None
        left = unmatched.setdefault(facts.dialect.value, Counter(recorded))
        usage = (facts.input_tokens, facts.output_tokens)
        if left[usage] > 0:
            left[usage] -= 1
        else:
            kept.append(span)
    return kept


def counted_calls(
    key: tuple[str, str], trace: OpenTrace, *, run_id: str, labels: tuple[str, str] | None
) -> tuple[list[Observation], list[TraceSpan], list[TraceSpan]]:
    """Observations of a trace's counted LLM and tool calls, and those calls."""
    agent, track = labels or (trace.service, _track({}, trace.resource or {}))
    base = {semconv.RUN_ID: run_id, semconv.GEN_AI_AGENT_NAME: agent, semconv.TRACK: track}
    if key[0]:
        base[semconv.TENANT_ID] = key[0]
    observations: list[Observation] = []
    llm = counted(trace, Role.LLM)
    for span in llm:
        facts = span.facts
        assert facts is not None
        observations.append(
            (
                {
                    **base,
                    semconv.GEN_AI_OPERATION_NAME: semconv.OP_CHAT,
                    semconv.GEN_AI_RESPONSE_MODEL: facts.model,
                    semconv.GEN_AI_USAGE_INPUT_TOKENS: str(facts.input_tokens),
                    semconv.GEN_AI_USAGE_OUTPUT_TOKENS: str(facts.output_tokens),
                },
                span.duration_ns,
            )
        )
    tools = [] if trace.own else counted(trace, Role.TOOL)
    for span in tools:
        assert span.facts is not None
        observations.append(
            (
                {
                    **base,
                    semconv.GEN_AI_OPERATION_NAME: semconv.OP_EXECUTE_TOOL,
                    semconv.GEN_AI_TOOL_NAME: span.facts.tool,
                    semconv.TOOL_DISPOSITION: semconv.ToolDisposition.UNGOVERNED.value,
                    semconv.TOOL_OUTCOME: (semconv.ToolOutcome.ERROR if span.error else semconv.ToolOutcome.OK).value,
                },
                span.duration_ns,
            )
        )
    return observations, llm, tools


def run_labels(
    trace: OpenTrace, root_attributes: Mapping[str, str], root_resource: Mapping[str, str], root_name: str = ""
) -> tuple[str, str]:
    """The run's agent (its outermost named agent span, else the service) and track.

    On LangGraph, instrumentations name agent spans after graph nodes ("agent", "tools"); the agent
    is the graph: the root's agent name, else its workflow name, else the root span's name (unless
    that is LangGraph's default or a LangChain class name), else the service.
    """
    track = _track(root_attributes, root_resource)
    if any(span.facts is not None and span.facts.runtime == "langgraph" for span in trace.spans.values()):
        if root_name == "LangGraph" or root_name.startswith("Runnable"):
            root_name = ""  # the default graph name or a LangChain class: it names no agent
        graph = root_attributes.get(semconv.GEN_AI_AGENT_NAME) or root_attributes.get(_WORKFLOW_NAME) or root_name
        return graph or trace.service or "unknown", track
    agents = [
        (not span.facts.agent_named, len(ancestors(trace, span_id)), span.start_ns, span.facts.agent)
        for span_id, span in trace.spans.items()
        if span.facts is not None and span.role is Role.AGENT and span.facts.agent
    ]
    named = [entry for entry in agents if not entry[0]]
    if named:
        agent = min(named)[3]
    elif agents:
        # span names only (OpenInference): the workflow root is named after the workflow, its
        # first agent span after the agent
        children = [entry for entry in agents if entry[1] > 0]
        agent = min(children or agents, key=lambda entry: (entry[2], entry[1]))[3]
    else:
        agent = trace.service or "unknown"
    return agent, track


def stop_reason(trace: OpenTrace, root_id: str) -> str:
    signals = [span.signal for span in trace.spans.values() if span.signal and not span.own]
    if signals:
        return strongest_signal(signals)
    root = trace.spans[root_id]
    if root.error or any(span.error for span in trace.spans.values() if span.role is Role.AGENT and not span.own):
        return semconv.StopReason.ERROR.value
    return semconv.StopReason.COMPLETED.value


def run_stamps(
    prices: PriceTable, key: tuple[str, str], trace: OpenTrace, root_id: str, labels: tuple[str, str], *, calls: Calls
) -> dict[str, str]:
    llm, tools = calls
    root = trace.spans[root_id]
    facts = [span.facts for span in trace.spans.values() if span.facts is not None]
    cost = 0.0
    unpriced = 0
    for span in llm:
        assert span.facts is not None
        price = prices.cost(
            span.facts.model,
            input_tokens=span.facts.input_tokens,
            output_tokens=span.facts.output_tokens,
            cached_input_tokens=min(span.facts.cached_input_tokens, span.facts.input_tokens),
        )
        if price is None:
            price = span.facts.native_cost_usd
        if price is None and not span.facts.input_tokens and not span.facts.output_tokens:
            price = 0.0  # a call that used no tokens (the model answered with an error) cost nothing
        if price is None:
            unpriced += 1
        else:
            cost += price
    resource = trace.resource or {}
    root_facts = root.facts
    stamps = {
        DIALECT: (root_facts or facts[0]).dialect.value if (root_facts or facts) else "",
        semconv.RUN_ID: key[1],
        semconv.STOP_REASON: stop_reason(trace, root_id),
        semconv.TRACK: labels[1],
        semconv.RUNTIME: next((f.runtime for f in facts if f.runtime), "") or "other",
        semconv.RUN_STEPS: str(len(llm)),
        semconv.RUN_TOOL_CALLS: str(len(tools)),
        semconv.RUN_LLM_CALLS: str(len(llm)),
        semconv.RUN_COST_USD: repr(cost),
        semconv.RUN_UNPRICED_LLM_CALLS: str(unpriced),
        semconv.RUN_INPUT_TOKENS: str(sum(s.facts.input_tokens for s in llm if s.facts)),
        semconv.RUN_OUTPUT_TOKENS: str(sum(s.facts.output_tokens for s in llm if s.facts)),
    }
    if tools:
        stamps[RUN_TOOLS] = json.dumps(
            [
                [
                    s.span_id,
                    s.parent,
                    s.facts.tool,
                    s.facts.tool_call_id,
                    s.facts.tool_type,
                    str(s.start_ns),
                    s.duration_ns,
                    int(s.error),
                ]
                for s in sorted(tools, key=lambda span: span.start_ns)[:_MAX_TOOLS_STAMPED]
                if s.facts is not None
            ],
            separators=(",", ":"),
        )
    added = {
        semconv.GEN_AI_AGENT_NAME: labels[0],
        semconv.GEN_AI_AGENT_VERSION: next((f.agent_version for f in facts if f.agent_version), "")
        or resource.get(SERVICE_VERSION, ""),
        semconv.GEN_AI_CONVERSATION_ID: next((f.conversation for f in facts if f.conversation), ""),
    }
    return {**{k: v for k, v in added.items() if v}, **stamps}


def strongest_signal(reasons: list[str]) -> str:
    """Of several stop reasons the spans' errors name, the one that explains the others."""
    return max(reasons, key=lambda reason: _SIGNAL_ORDER[semconv.StopReason(reason)]) if reasons else ""


__all__ = [
    "Calls",
    "Observation",
    "OpenTrace",
    "TraceSpan",
    "ancestors",
    "counted",
    "counted_calls",
    "run_labels",
    "run_stamps",
    "signal_of",
    "stop_reason",
    "strongest_signal",
    "unrecorded",
]
