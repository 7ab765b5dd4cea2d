"""A trace as a tree of its spans: ``get_trace`` (by run id or trace id), with ``build_tree`` and ``span_kind_of``.

Any stored trace reads back, agentwatch's own spans and foreign ones alike (the OTel GenAI
conventions, OpenInference, Traceloop/OpenLLMetry or plain OTel): each node keeps the attributes
that matter for its dialect and, when asked (``content=True``), the captured content, which the
collector redacted at ingest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from agentwatch.collectors.dialect_names import LLM_OPERATIONS
from agentwatch.collectors.read.filters import StoreReader, check_text
from agentwatch.collectors.read.models import (
    GEN_AI_USAGE_COMPLETION_TOKENS,
    GEN_AI_USAGE_PROMPT_TOKENS,
    OPENINFERENCE_COMPLETION_TOKENS,
    OPENINFERENCE_MODEL,
    OPENINFERENCE_PROMPT_TOKENS,
    OPENINFERENCE_SPAN_KIND,
    OPENINFERENCE_TOOL_NAME,
    TRACELOOP_ENTITY_NAME,
    TRACELOOP_SPAN_KIND,
    RunSummary,
    TraceEvent,
    TraceNode,
    TraceView,
    from_ns,
)
from agentwatch.collectors.read.runs import get_run
from agentwatch.collectors.store.schema import TRACE_ID_TS_TABLE, TRACES_TABLE
from agentwatch.instrumentation import semconv

MAX_TRACE_SPANS: Final = 10_000

# The tenant attribute is written into SQL text (a constant, never input) so the sort-key expression
# SpanAttributes['agentwatch.tenant.id'] matches the table's ORDER BY and the index prunes by tenant.
_TENANT_KEY_SQL: Final = f"SpanAttributes['{semconv.TENANT_ID}']"
assert re.fullmatch(r"[a-z_.]+", semconv.TENANT_ID)

_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
_NULL_TRACE_ID: Final = "0" * 32


_OPENINFERENCE_LLM_KINDS: Final = frozenset({"LLM", "EMBEDDING"})

# The attributes that matter for a span of any dialect, kept on every node where present.
_DIALECT_ATTRIBUTES: Final = (
    semconv.GEN_AI_OPERATION_NAME,
    semconv.OPERATION_NAME,
    semconv.GEN_AI_PROVIDER_NAME,
    "gen_ai.system",
    semconv.GEN_AI_AGENT_NAME,
    semconv.GEN_AI_REQUEST_MODEL,
    semconv.GEN_AI_RESPONSE_MODEL,
    semconv.GEN_AI_USAGE_INPUT_TOKENS,
    semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_PROMPT_TOKENS,
    GEN_AI_USAGE_COMPLETION_TOKENS,
    semconv.GEN_AI_RESPONSE_FINISH_REASONS,
    semconv.GEN_AI_TOOL_NAME,
    semconv.GEN_AI_TOOL_CALL_ID,
    OPENINFERENCE_SPAN_KIND,
    OPENINFERENCE_MODEL,
    "llm.provider",
    "llm.system",
    OPENINFERENCE_PROMPT_TOKENS,
    OPENINFERENCE_COMPLETION_TOKENS,
    "llm.token_count.total",
    OPENINFERENCE_TOOL_NAME,
    TRACELOOP_SPAN_KIND,
    TRACELOOP_ENTITY_NAME,
    "traceloop.workflow.name",
    "llm.request.type",
    semconv.ERROR_TYPE,
)

# Captured content (opt-in at the source, redacted at ingest): shown only with content=True.
CONTENT_ATTRIBUTES: Final = (
    semconv.RUN_INPUT,
    semconv.RUN_OUTPUT,
    "gen_ai.system_instructions",
    semconv.GEN_AI_INPUT_MESSAGES,
    semconv.GEN_AI_OUTPUT_MESSAGES,
    semconv.GEN_AI_TOOL_CALL_ARGUMENTS,
    semconv.GEN_AI_TOOL_CALL_RESULT,
    "input.value",
    "output.value",
    "traceloop.entity.input",
    "traceloop.entity.output",
)
# flattened message lists: OpenInference llm.input_messages.0.message.content, Traceloop gen_ai.prompt.0.content
_CONTENT_PREFIXES: Final = ("llm.input_messages.", "llm.output_messages.", "gen_ai.prompt.", "gen_ai.completion.")

_KEY_ATTRIBUTES: Final[dict[str, tuple[str, ...]]] = {
    "run": (
        semconv.GEN_AI_AGENT_NAME,
        semconv.GEN_AI_AGENT_VERSION,
        semconv.RUN_ID,
        semconv.RUN_PARENT_ID,
        semconv.TENANT_ID,
        semconv.TRACK,
        semconv.RUNTIME,
        semconv.STOP_REASON,
        semconv.BUDGET_EXHAUSTED,
        semconv.BUDGET_MAX_STEPS,
        semconv.BUDGET_MAX_TOOL_CALLS,
        semconv.BUDGET_MAX_SECONDS,
        semconv.BUDGET_MAX_USD,
        semconv.RUN_STEPS,
        semconv.RUN_TOOL_CALLS,
        semconv.RUN_LLM_CALLS,
        semconv.GEN_AI_USAGE_INPUT_TOKENS,
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
        semconv.RUN_COST_USD,
        semconv.RUN_UNPRICED_LLM_CALLS,
        semconv.RUN_COST_UNPRICED,
        semconv.ERROR_TYPE,
    ),
    "step": (semconv.STEP_INDEX, semconv.ERROR_TYPE),
    "llm": (
        semconv.GEN_AI_PROVIDER_NAME,
        semconv.GEN_AI_REQUEST_MODEL,
        semconv.GEN_AI_RESPONSE_MODEL,
        semconv.GEN_AI_USAGE_INPUT_TOKENS,
        semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
        semconv.GEN_AI_RESPONSE_FINISH_REASONS,
        semconv.COST_USD,
        semconv.COST_UNPRICED,
        semconv.STEP_INDEX,
        semconv.ERROR_TYPE,
    ),
    "tool": (
        semconv.GEN_AI_TOOL_NAME,
        semconv.GEN_AI_TOOL_CALL_ID,
        semconv.TOOL_DISPOSITION,
        semconv.TOOL_OUTCOME,
        semconv.TOOL_RISK,
        semconv.POLICY_RULE,
        semconv.TOOL_IDEMPOTENCY_KEY,
        semconv.STEP_INDEX,
        semconv.ERROR_TYPE,
    ),
    "other": (semconv.OPERATION_NAME, semconv.GEN_AI_OPERATION_NAME, semconv.ERROR_TYPE),
}


def span_kind_of(attributes: Mapping[str, str]) -> str:
    """run/step/llm/tool/other from the span's operation (a model name alone also means an LLM call).

    The operation is ``agentwatch.operation.name`` (steps, handoffs, guardrails), else
    ``gen_ai.operation.name``; spans of earlier agentwatch versions name steps, handoffs and
    guardrails in ``gen_ai.operation.name`` and read the same. Without an operation name,
    OpenInference's ``openinference.span.kind`` (LLM, EMBEDDING, TOOL) and Traceloop's
    ``traceloop.span.kind`` (tool) say it; any other span is ``other``.
    """
    operation = semconv.span_operation(attributes)
    if operation == semconv.OP_INVOKE_AGENT or (semconv.DIALECT in attributes and semconv.STOP_REASON in attributes):
        return "run"  # (the second: the root of a trace in another dialect, which the collector read as a run)
    if operation == semconv.OP_STEP:
        return "step"
    if operation == semconv.OP_EXECUTE_TOOL:
        return "tool"
    if operation in LLM_OPERATIONS:
        return "llm"
    if operation:
        return "other"
    openinference = attributes.get(OPENINFERENCE_SPAN_KIND, "").upper()
    if openinference in _OPENINFERENCE_LLM_KINDS:
        return "llm"
    if openinference == "TOOL" or attributes.get(TRACELOOP_SPAN_KIND) == "tool":
        return "tool"
    if not openinference and (semconv.GEN_AI_REQUEST_MODEL in attributes or OPENINFERENCE_MODEL in attributes):
        return "llm"
    return "other"


def _content_of(attributes: Mapping[str, str]) -> dict[str, str]:
    """The captured content attributes of a span, the named ones first, then flattened message lists by key."""
    named = {key: attributes[key] for key in CONTENT_ATTRIBUTES if key in attributes}
    flattened = sorted(key for key in attributes if key.startswith(_CONTENT_PREFIXES))
    return {**named, **{key: attributes[key] for key in flattened}}


def _trace_rows(store: StoreReader, trace_id: str, tenant: str | None) -> list[dict[str, Any]]:
    """Spans of one trace; the trace-id lookup table bounds the time range, as Grafana's trace view does."""
    parameters: dict[str, Any] = {"trace_id": trace_id, "max_spans": MAX_TRACE_SPANS + 1}
    tenant_condition = ""
    if tenant is not None:
        tenant_condition = f"AND {_TENANT_KEY_SQL} = {{tenant:String}}"
        parameters["tenant"] = tenant
    sql = f"""
        WITH
            (SELECT min(Start) FROM {TRACE_ID_TS_TABLE} WHERE TraceId = {{trace_id:String}}) AS trace_start,
            (SELECT max(End) + 1 FROM {TRACE_ID_TS_TABLE} WHERE TraceId = {{trace_id:String}}) AS trace_end
        SELECT
            SpanId, ParentSpanId, SpanName, SpanKind, ServiceName,
            toUnixTimestamp64Nano(Timestamp) AS StartNs, Duration, StatusCode, StatusMessage, SpanAttributes,
            arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`) AS EventNs,
            `Events.Name` AS EventNames, `Events.Attributes` AS EventAttributes
        FROM {TRACES_TABLE}
        WHERE TraceId = {{trace_id:String}} AND Timestamp >= trace_start AND Timestamp <= trace_end
            {tenant_condition}
        ORDER BY Timestamp, SpanId
        LIMIT 1 BY SpanId
        LIMIT {{max_spans:UInt32}}"""
    return store.query(sql, parameters)


def _normalize_operation(attributes: dict[str, str]) -> None:
    """A step, handoff or guardrail written before ``agentwatch.operation.name`` existed (its operation in
    ``gen_ai.operation.name``) reads back exactly like one written after it."""
    operation = attributes.get(semconv.GEN_AI_OPERATION_NAME)
    if operation in semconv.AGENTWATCH_OPERATIONS and semconv.OPERATION_NAME not in attributes:
        attributes[semconv.OPERATION_NAME] = attributes.pop(semconv.GEN_AI_OPERATION_NAME)


def _node_from_row(row: Mapping[str, Any], origin_ns: int, content: bool = False) -> TraceNode:
    attributes = {str(key): str(value) for key, value in dict(row["SpanAttributes"]).items()}
    _normalize_operation(attributes)
    kind = span_kind_of(attributes)
    keep = _KEY_ATTRIBUTES[kind] + tuple(key for key in _DIALECT_ATTRIBUTES if key not in _KEY_ATTRIBUTES[kind])
    events = [
        TraceEvent(
            name=str(name),
            offset_ms=round((int(nanos) - origin_ns) / 1e6, 3),
            attributes={str(key): str(value) for key, value in dict(event_attributes).items()},
        )
        for nanos, name, event_attributes in zip(
            row["EventNs"], row["EventNames"], row["EventAttributes"], strict=False
        )
    ]
    return TraceNode(
        span_id=str(row["SpanId"]),
        parent_span_id=str(row["ParentSpanId"]),
        name=str(row["SpanName"]),
        kind=kind,
        span_kind=str(row["SpanKind"]),
        service_name=str(row["ServiceName"]),
        start_offset_ms=round((int(row["StartNs"]) - origin_ns) / 1e6, 3),
        duration_ms=round(int(row["Duration"]) / 1e6, 3),
        status=str(row["StatusCode"]),
        status_message=str(row["StatusMessage"]),
        attributes={key: attributes[key] for key in keep if key in attributes},
        events=events,
        content=_content_of(attributes) if content else {},
    )


def _break_cycles(nodes: Sequence[TraceNode], by_id: Mapping[str, TraceNode], roots: list[TraceNode]) -> None:
    """Spans whose parent links form a loop are reachable from no root: make each loop's first span a root."""
    reached: set[int] = set()

    def mark(start: TraceNode) -> None:
        stack = [start]
        while stack:
            node = stack.pop()
            if id(node) not in reached:
                reached.add(id(node))
                stack.extend(node.children)

    for root in roots:
        mark(root)
    for node in nodes:
        if id(node) not in reached:
            by_id[node.parent_span_id].children.remove(node)
            roots.append(node)
            mark(node)


def build_tree(nodes: Sequence[TraceNode]) -> list[TraceNode]:
    """Link nodes by ParentSpanId; a span whose parent is missing becomes a root. Children in start order."""
    by_id = {node.span_id: node for node in nodes}
    roots: list[TraceNode] = []
    for node in nodes:
        parent = by_id.get(node.parent_span_id) if node.parent_span_id else None
        if parent is None or parent is node:
            roots.append(node)
        else:
            parent.children.append(node)
    _break_cycles(nodes, by_id, roots)
    order = {id(node): index for index, node in enumerate(nodes)}
    for node in nodes:
        node.children.sort(key=lambda child: (child.start_offset_ms, order[id(child)]))
    roots.sort(key=lambda root: (root.start_offset_ms, order[id(root)]))
    return roots


def _view(
    trace_id: str, run: RunSummary | None, rows: list[dict[str, Any]], content: bool
) -> tuple[TraceView, list[TraceNode]]:
    truncated = len(rows) > MAX_TRACE_SPANS
    rows = rows[:MAX_TRACE_SPANS]
    origin_ns = min(int(row["StartNs"]) for row in rows)
    end_ns = max(int(row["StartNs"]) + int(row["Duration"]) for row in rows)
    nodes = [_node_from_row(row, origin_ns, content) for row in rows]
    view = TraceView(
        trace_id=trace_id,
        run=run,
        start_time=from_ns(origin_ns),
        duration_ms=round((end_ns - origin_ns) / 1e6, 3),
        span_count=len(nodes),
        truncated=truncated,
        roots=build_tree(nodes),
    )
    return view, nodes


def is_trace_id(text: str) -> bool:
    """A W3C/OTLP trace id: 32 hex digits, not all zero (any case; stored lower-case)."""
    return _TRACE_ID.fullmatch(text) is not None and text != _NULL_TRACE_ID


def get_trace_by_id(
    store: StoreReader, trace_id: str, *, tenant: str | None = None, content: bool = False
) -> TraceView | None:
    """Any stored trace by its trace id, or None when no span of it is stored (for this tenant).

    The spans need no agentwatch attributes. A tenant reads only the spans stamped with its tenant at
    ingest. ``run`` is the trace's outermost agentwatch run when it has one (else None).
    """
    check_text("tenant", tenant)
    if not is_trace_id(trace_id):
        return None
    trace_id = trace_id.lower()
    rows = _trace_rows(store, trace_id, tenant)
    if not rows:
        return None
    view, nodes = _view(trace_id, None, rows, content)
    depth: dict[int, int] = {}
    stack = [(root, 0) for root in view.roots]
    while stack:
        node, level = stack.pop()
        depth[id(node)] = level
        stack.extend((child, level + 1) for child in node.children)
    runs = [node for node in nodes if node.kind == "run" and node.attributes.get(semconv.RUN_ID)]
    if runs:
        outermost = min(runs, key=lambda node: (depth[id(node)], node.start_offset_ms))
        view.run = get_run(store, outermost.attributes[semconv.RUN_ID], tenant=tenant)
    return view


def get_trace(
    store: StoreReader, run_or_trace_id: str, *, tenant: str | None = None, content: bool = False
) -> TraceView | None:
    """A run's trace, or (when the id is no run id but a trace id) any stored trace, as a tree.

    None when the id is neither a known run nor a stored trace (or belongs to another tenant).
    ``content=True`` adds each span's captured content (redacted at ingest) to its node.
    """
    run = get_run(store, run_or_trace_id, tenant=tenant)
    if run is None:
        return get_trace_by_id(store, run_or_trace_id, tenant=tenant, content=content)
    rows = _trace_rows(store, run.trace_id, tenant)
    if not rows:
        return TraceView(run.trace_id, run, run.start_time, round(run.duration_s * 1000, 3), 0, False, [])
    view, _ = _view(run.trace_id, run, rows, content)
    return view


__all__ = [
    "CONTENT_ATTRIBUTES",
    "MAX_TRACE_SPANS",
    "build_tree",
    "get_trace",
    "get_trace_by_id",
    "is_trace_id",
    "span_kind_of",
]
