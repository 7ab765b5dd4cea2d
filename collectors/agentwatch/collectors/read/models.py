"""The read model: runs, trace trees and fleet statistics as Python values, with their JSON round-trips.

``RunSummary`` is the one Python form of an ``agent_runs`` row: ``RUN_COLUMNS`` is what to SELECT
and ``run_from_row`` maps the row. The read API, the CLI and replay's recordings all read runs so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from agentwatch.collectors.dialect_names import (  # the trace tree reads and renders them
    GEN_AI_USAGE_COMPLETION_TOKENS,
    GEN_AI_USAGE_PROMPT_TOKENS,
    OPENINFERENCE_COMPLETION_TOKENS,
    OPENINFERENCE_MODEL,
    OPENINFERENCE_PROMPT_TOKENS,
    OPENINFERENCE_SPAN_KIND,
    OPENINFERENCE_TOOL_NAME,
    TRACELOOP_ENTITY_NAME,
    TRACELOOP_SPAN_KIND,
)


def iso_utc(moment: datetime) -> str:
    """ISO-8601 UTC with microseconds and a ``Z``: the times of the read JSON."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def from_ns(nanos: int) -> datetime:
    """An aware UTC time from Unix nanoseconds (as the SQL reads them), to the microsecond."""
    return datetime.fromtimestamp(nanos // 1_000_000_000, UTC) + timedelta(microseconds=(nanos % 1_000_000_000) // 1000)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One row of ``agent_runs``. ``input``/``output`` (captured content) only when read (``get_run``, replay)."""

    run_id: str
    tenant: str
    agent: str
    version: str
    track: str
    runtime: str
    start_time: datetime
    end_time: datetime
    duration_s: float
    stop_reason: str
    budget_exhausted: str
    steps: int
    tool_calls: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    unpriced_llm_calls: int
    trace_id: str
    span_id: str
    parent_run_id: str
    conversation_id: str
    service_name: str
    status_code: str
    input: str | None = None
    output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; times ISO-8601 UTC; content fields only when read."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("input", "output") and value is None:
                continue
            out[item.name] = iso_utc(value) if isinstance(value, datetime) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """Inverse of ``to_dict`` (what the CLI does with the read API's JSON)."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            if item.name not in data:
                continue
            value = data[item.name]
            values[item.name] = datetime.fromisoformat(value) if item.name in ("start_time", "end_time") else value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """A span event (budget exhausted, policy denied, approval ...), offset from the trace start."""

    name: str
    offset_ms: float
    attributes: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "offset_ms": self.offset_ms, "attributes": dict(self.attributes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceEvent:
        return cls(name=data["name"], offset_ms=float(data["offset_ms"]), attributes=dict(data["attributes"]))


@dataclass(slots=True)
class TraceNode:
    """One span of a trace tree. ``kind`` is run/step/llm/tool/other; ``attributes`` holds only the key ones.

    ``content`` holds the captured content attributes (inputs, outputs, tool arguments and results, as
    redacted at ingest) only when the trace was read with ``content=True``; empty otherwise.
    """

    span_id: str
    parent_span_id: str
    name: str
    kind: str
    span_kind: str
    service_name: str
    start_offset_ms: float
    duration_ms: float
    status: str
    status_message: str
    attributes: dict[str, str]
    events: list[TraceEvent] = field(default_factory=list)
    children: list[TraceNode] = field(default_factory=list)
    content: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "kind": self.kind,
            "span_kind": self.span_kind,
            "service_name": self.service_name,
            "start_offset_ms": self.start_offset_ms,
            "duration_ms": self.duration_ms,
            "status": self.status,
            "status_message": self.status_message,
            "attributes": dict(self.attributes),
            "events": [event.to_dict() for event in self.events],
            "children": [child.to_dict() for child in self.children],
            "content": dict(self.content),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceNode:
        return cls(
            span_id=data["span_id"],
            parent_span_id=data["parent_span_id"],
            name=data["name"],
            kind=data["kind"],
            span_kind=data["span_kind"],
            service_name=data["service_name"],
            start_offset_ms=float(data["start_offset_ms"]),
            duration_ms=float(data["duration_ms"]),
            status=data["status"],
            status_message=data["status_message"],
            attributes=dict(data["attributes"]),
            events=[TraceEvent.from_dict(event) for event in data["events"]],
            children=[TraceNode.from_dict(child) for child in data["children"]],
            content=dict(data.get("content") or {}),
        )

    def walk(self) -> Iterable[TraceNode]:
        """This node and its descendants, depth first in start order."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(slots=True)
class TraceView:
    """A whole trace as a tree; ``roots`` are spans whose parent is absent (normally the run span).

    ``run`` is the run the trace was found by, or the trace's outermost agentwatch run when it was found
    by its trace id; None for a trace without agentwatch runs (foreign spans only).
    """

    trace_id: str
    run: RunSummary | None
    start_time: datetime
    duration_ms: float
    span_count: int
    truncated: bool
    roots: list[TraceNode]

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "run": self.run.to_dict() if self.run is not None else None,
            "start_time": iso_utc(self.start_time),
            "duration_ms": self.duration_ms,
            "span_count": self.span_count,
            "truncated": self.truncated,
            "roots": [root.to_dict() for root in self.roots],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceView:
        return cls(
            trace_id=data["trace_id"],
            run=RunSummary.from_dict(data["run"]) if data.get("run") is not None else None,
            start_time=datetime.fromisoformat(data["start_time"]),
            duration_ms=float(data["duration_ms"]),
            span_count=int(data["span_count"]),
            truncated=bool(data["truncated"]),
            roots=[TraceNode.from_dict(root) for root in data["roots"]],
        )

    def nodes(self) -> list[TraceNode]:
        return [node for root in self.roots for node in root.walk()]


@dataclass(frozen=True, slots=True)
class Stats:
    """Fleet answers for a time window: stop reasons, budgets hit, denials, cost per run, top tools."""

    since: datetime | None
    until: datetime | None
    tenant: str | None
    stop_reasons: list[dict[str, Any]]
    budgets: list[dict[str, Any]]
    denials: list[dict[str, Any]]
    cost: list[dict[str, Any]]
    top_tools: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": iso_utc(self.since) if self.since else None,
            "until": iso_utc(self.until) if self.until else None,
            "tenant": self.tenant,
            "stop_reasons": self.stop_reasons,
            "budgets": self.budgets,
            "denials": self.denials,
            "cost": self.cost,
            "top_tools": self.top_tools,
        }


# --- the agent_runs row ----------------------------------------------------------------------------

RUN_COLUMNS: Final = """
    RunId, TenantId, AgentName, AgentVersion, Track, Runtime, ParentRunId, ConversationId, ServiceName,
    TraceId, SpanId, toUnixTimestamp64Nano(StartTime) AS StartNs, toUnixTimestamp64Nano(EndTime) AS EndNs,
    DurationSeconds, StopReason, BudgetExhausted, Steps, ToolCalls, LlmCalls, InputTokens, OutputTokens,
    CostUsd, UnpricedLlmCalls, StatusCode"""


def run_from_row(row: Mapping[str, Any]) -> RunSummary:
    """One ``agent_runs`` row read with ``RUN_COLUMNS`` (and ``Input, Output`` when selected) as a RunSummary."""
    content = {"input": str(row["Input"]), "output": str(row["Output"])} if "Input" in row else {}
    return RunSummary(
        run_id=str(row["RunId"]),
        tenant=str(row["TenantId"]),
        agent=str(row["AgentName"]),
        version=str(row["AgentVersion"]),
        track=str(row["Track"]),
        runtime=str(row["Runtime"]),
        start_time=from_ns(int(row["StartNs"])),
        end_time=from_ns(int(row["EndNs"])),
        duration_s=float(row["DurationSeconds"]),
        stop_reason=str(row["StopReason"]),
        budget_exhausted=str(row["BudgetExhausted"]),
        steps=int(row["Steps"]),
        tool_calls=int(row["ToolCalls"]),
        llm_calls=int(row["LlmCalls"]),
        input_tokens=int(row["InputTokens"]),
        output_tokens=int(row["OutputTokens"]),
        cost_usd=float(row["CostUsd"]),
        unpriced_llm_calls=int(row["UnpricedLlmCalls"]),
        trace_id=str(row["TraceId"]),
        span_id=str(row["SpanId"]),
        parent_run_id=str(row["ParentRunId"]),
        conversation_id=str(row["ConversationId"]),
        service_name=str(row["ServiceName"]),
        status_code=str(row["StatusCode"]),
        **content,
    )


__all__ = [
    "GEN_AI_USAGE_COMPLETION_TOKENS",
    "GEN_AI_USAGE_PROMPT_TOKENS",
    "OPENINFERENCE_COMPLETION_TOKENS",
    "OPENINFERENCE_MODEL",
    "OPENINFERENCE_PROMPT_TOKENS",
    "OPENINFERENCE_SPAN_KIND",
    "OPENINFERENCE_TOOL_NAME",
    "RUN_COLUMNS",
    "TRACELOOP_ENTITY_NAME",
    "TRACELOOP_SPAN_KIND",
    "RunSummary",
    "Stats",
    "TraceEvent",
    "TraceNode",
    "TraceView",
    "from_ns",
    "iso_utc",
    "run_from_row",
]
