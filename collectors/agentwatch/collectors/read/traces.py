"""One run's trace as a tree of its spans: ``get_trace``, with ``build_tree`` and ``span_kind_of``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from agentwatch.collectors.read.filters import StoreReader
from agentwatch.collectors.read.models import TraceEvent, TraceNode, TraceView, from_ns
from agentwatch.collectors.read.runs import get_run
from agentwatch.collectors.store.schema import TRACE_ID_TS_TABLE, TRACES_TABLE
from agentwatch.instrumentation import semconv

MAX_TRACE_SPANS: Final = 10_000

# The tenant attribute is written into SQL text (a constant, never input) so the sort-key expression
# SpanAttributes['agentwatch.tenant.id'] matches the table's ORDER BY and the index prunes by tenant.
_TENANT_KEY_SQL: Final = f"SpanAttributes['{semconv.TENANT_ID}']"
assert re.fullmatch(r"[a-z_.]+", semconv.TENANT_ID)

# Standard GenAI operation names of model calls (semconv pins only `chat`; runtimes emit the others).
_LLM_OPERATIONS: Final = frozenset({semconv.OP_CHAT, "text_completion", "generate_content", "embeddings"})

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
    "other": (semconv.GEN_AI_OPERATION_NAME, semconv.ERROR_TYPE),
}


def span_kind_of(attributes: Mapping[str, str]) -> str:
    """run/step/llm/tool/other from ``gen_ai.operation.name`` (a model name alone also means an LLM call)."""
    operation = attributes.get(semconv.GEN_AI_OPERATION_NAME, "")
    if operation == semconv.OP_INVOKE_AGENT:
        return "run"
    if operation == semconv.OP_STEP:
        return "step"
    if operation == semconv.OP_EXECUTE_TOOL:
        return "tool"
    if operation in _LLM_OPERATIONS or (not operation and semconv.GEN_AI_REQUEST_MODEL in attributes):
        return "llm"
    return "other"


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


def _node_from_row(row: Mapping[str, Any], origin_ns: int) -> TraceNode:
    attributes = {str(key): str(value) for key, value in dict(row["SpanAttributes"]).items()}
    kind = span_kind_of(attributes)
    keep = _KEY_ATTRIBUTES[kind]
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


def get_trace(store: StoreReader, run_id: str, *, tenant: str | None = None) -> TraceView | None:
    """The run's trace as a tree, or None when the run is unknown (or another tenant's)."""
    run = get_run(store, run_id, tenant=tenant)
    if run is None:
        return None
    rows = _trace_rows(store, run.trace_id, tenant)
    truncated = len(rows) > MAX_TRACE_SPANS
    rows = rows[:MAX_TRACE_SPANS]
    if not rows:
        return TraceView(run.trace_id, run, run.start_time, round(run.duration_s * 1000, 3), 0, False, [])
    origin_ns = min(int(row["StartNs"]) for row in rows)
    end_ns = max(int(row["StartNs"]) + int(row["Duration"]) for row in rows)
    nodes = [_node_from_row(row, origin_ns) for row in rows]
    return TraceView(
        trace_id=run.trace_id,
        run=run,
        start_time=from_ns(origin_ns),
        duration_ms=round((end_ns - origin_ns) / 1e6, 3),
        span_count=len(nodes),
        truncated=truncated,
        roots=build_tree(nodes),
    )


__all__ = ["MAX_TRACE_SPANS", "build_tree", "get_trace", "span_kind_of"]
