"""Read queries over the agentwatch tables: runs, one run's trace tree, fleet statistics, and their text rendering.

One layer for every reader: the collector's read API and the CLI (when it opens a store directly) call
the same functions, so both answer the same question the same way. The store is anything with
``query(sql, parameters) -> list[dict]`` (``ClickHouseStore``). User input never becomes SQL text:
every value travels as a ClickHouse server-side parameter (``{name:Type}``), and the SQL is built
only from constant fragments. Times are read as Unix nanoseconds so the result does not depend on
the server's or the client's time zone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from agentwatch.collectors.store.schema import RUNS_TABLE, TOOL_CALLS_TABLE, TRACE_ID_TS_TABLE, TRACES_TABLE
from agentwatch.instrumentation import semconv

MAX_LIMIT: Final = 1000
MAX_TRACE_SPANS: Final = 10_000
_MAX_FILTER_LENGTH: Final = 256
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
# The tenant attribute is written into SQL text (a constant, never input) so the sort-key expression
# SpanAttributes['agentwatch.tenant.id'] matches the table's ORDER BY and the index prunes by tenant.
_TENANT_KEY_SQL: Final = f"SpanAttributes['{semconv.TENANT_ID}']"
assert re.fullmatch(r"[a-z_.]+", semconv.TENANT_ID)

# Standard GenAI operation names of model calls (semconv pins only `chat`; runtimes emit the others).
_LLM_OPERATIONS: Final = frozenset({semconv.OP_CHAT, "text_completion", "generate_content", "embeddings"})


class StoreReader(Protocol):
    """What the queries need from a store: ``ClickHouseStore.query``."""

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


class InvalidQuery(ValueError):
    """A filter or time value the caller gave is malformed; the message says what is accepted."""


# --- filters ------------------------------------------------------------------------------------


STORE_EARLIEST: Final = datetime(1900, 1, 1, tzinfo=UTC)
STORE_LATEST: Final = datetime(2262, 4, 11, 23, 47, 16, tzinfo=UTC)
"""The span of ClickHouse's DateTime64(9), which every time column of the store uses."""


def _check_store_range(name: str, moment: datetime) -> None:
    if not STORE_EARLIEST <= moment <= STORE_LATEST:
        raise InvalidQuery(
            f"{name} {moment.isoformat()} is outside the times the store can hold "
            f"({STORE_EARLIEST.date().isoformat()} to {STORE_LATEST.date().isoformat()})"
        )


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``15m``/``2h``/``7d``/``1w``/``30s`` ago, or an ISO-8601 time (no zone means UTC) → aware UTC datetime."""
    value = text.strip()
    if not value:
        raise InvalidQuery("empty time: use a duration like 15m, 2h, 7d or an ISO-8601 time")
    match = _RELATIVE.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        try:
            moment = (now or datetime.now(UTC)) - timedelta(seconds=amount * _UNITS[unit])
        except OverflowError:
            raise InvalidQuery(f"duration {text!r} is too large") from None
        _check_store_range("time", moment)
        return moment
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidQuery(
            f"cannot read time {text!r}: use a duration like 15m, 2h, 7d or ISO-8601 like 2026-11-24T06:00:00Z"
        ) from None
    try:
        moment = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is a valid ISO time whose UTC year is 0
        raise InvalidQuery(f"time {text!r} is outside the times the store can hold") from None
    _check_store_range("time", moment)
    return moment


def _check_text(name: str, value: str | None) -> None:
    if value is None:
        return
    if not value or len(value) > _MAX_FILTER_LENGTH or any(ord(ch) < 32 for ch in value):
        raise InvalidQuery(f"{name} must be 1-{_MAX_FILTER_LENGTH} printable characters")


def check_window(since: datetime | None, until: datetime | None) -> None:
    """A time window's bounds are timezone-aware and in order; InvalidQuery says which is not."""
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidQuery(f"{name} must be timezone-aware")
        if moment is not None:
            _check_store_range(name, moment)
    if since is not None and until is not None and since > until:
        raise InvalidQuery("since is later than until")


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs to read; every field but ``limit`` is optional. ``tenant`` confines the result to one tenant."""

    agent: str | None = None
    track: str | None = None
    stop_reason: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        for name in ("agent", "track", "stop_reason", "tenant"):
            _check_text(name.replace("_", " "), getattr(self, name))
        if self.stop_reason is not None and self.stop_reason not in semconv.STOP_REASONS:
            known = ", ".join(sorted(semconv.STOP_REASONS))
            raise InvalidQuery(f"unknown stop reason {self.stop_reason!r} (one of: {known})")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be an integer from 1 to {MAX_LIMIT}")
        check_window(self.since, self.until)


def parse_limit(text: str) -> int:
    """The ``limit`` parameter as an int, with the same message as ``RunFilter``."""
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidQuery(f"limit must be an integer from 1 to {MAX_LIMIT}") from None


# --- result types -------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _from_ns(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos // 1_000_000_000, UTC) + timedelta(microseconds=(nanos % 1_000_000_000) // 1000)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One row of ``agent_runs``. ``input``/``output`` (captured content) are filled only by ``get_run``."""

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
            out[item.name] = _iso(value) if isinstance(value, datetime) else value
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
    """One span of a trace tree. ``kind`` is run/step/llm/tool/other; ``attributes`` holds only the key ones."""

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
        )

    def walk(self) -> Iterable[TraceNode]:
        """This node and its descendants, depth first in start order."""
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(slots=True)
class TraceView:
    """A run's whole trace as a tree; ``roots`` are spans whose parent is absent (normally the run span)."""

    trace_id: str
    run: RunSummary
    start_time: datetime
    duration_ms: float
    span_count: int
    truncated: bool
    roots: list[TraceNode]

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "run": self.run.to_dict(),
            "start_time": _iso(self.start_time),
            "duration_ms": self.duration_ms,
            "span_count": self.span_count,
            "truncated": self.truncated,
            "roots": [root.to_dict() for root in self.roots],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TraceView:
        return cls(
            trace_id=data["trace_id"],
            run=RunSummary.from_dict(data["run"]),
            start_time=datetime.fromisoformat(data["start_time"]),
            duration_ms=float(data["duration_ms"]),
            span_count=int(data["span_count"]),
            truncated=bool(data["truncated"]),
            roots=[TraceNode.from_dict(root) for root in data["roots"]],
        )

    def nodes(self) -> list[TraceNode]:
        return [node for root in self.roots for node in root.walk()]


# --- runs ---------------------------------------------------------------------------------------

_RUN_COLUMNS: Final = """
    RunId, TenantId, AgentName, AgentVersion, Track, Runtime, ParentRunId, ConversationId, ServiceName,
    TraceId, SpanId, toUnixTimestamp64Nano(StartTime) AS StartNs, toUnixTimestamp64Nano(EndTime) AS EndNs,
    DurationSeconds, StopReason, BudgetExhausted, Steps, ToolCalls, LlmCalls, InputTokens, OutputTokens,
    CostUsd, UnpricedLlmCalls, StatusCode"""


def _run_conditions(flt: RunFilter, time_column: str = "StartTime") -> tuple[list[str], dict[str, Any]]:
    """WHERE fragments (constants only) and their parameters for the filter's set fields."""
    conditions: list[str] = []
    parameters: dict[str, Any] = {}
    for column, name, value in (
        ("TenantId", "tenant", flt.tenant),
        ("AgentName", "agent", flt.agent),
        ("Track", "track", flt.track),
        ("StopReason", "stop_reason", flt.stop_reason),
    ):
        if value is not None:
            conditions.append(f"{column} = {{{name}:String}}")
            parameters[name] = value
    if flt.since is not None:
        conditions.append(f"{time_column} >= fromUnixTimestamp64Nano({{since_ns:Int64}})")
        parameters["since_ns"] = _to_ns(flt.since)
    if flt.until is not None:
        conditions.append(f"{time_column} <= fromUnixTimestamp64Nano({{until_ns:Int64}})")
        parameters["until_ns"] = _to_ns(flt.until)
    return conditions, parameters


def _to_ns(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _where(conditions: Sequence[str]) -> str:
    return "WHERE " + " AND ".join(conditions) if conditions else ""


def _run_from_row(row: Mapping[str, Any]) -> RunSummary:
    content = {"input": str(row["Input"]), "output": str(row["Output"])} if "Input" in row else {}
    return RunSummary(
        run_id=str(row["RunId"]),
        tenant=str(row["TenantId"]),
        agent=str(row["AgentName"]),
        version=str(row["AgentVersion"]),
        track=str(row["Track"]),
        runtime=str(row["Runtime"]),
        start_time=_from_ns(int(row["StartNs"])),
        end_time=_from_ns(int(row["EndNs"])),
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


def list_runs(store: StoreReader, flt: RunFilter) -> list[RunSummary]:
    """Runs matching ``flt``, newest first, at most ``flt.limit``."""
    conditions, parameters = _run_conditions(flt)
    parameters["limit"] = flt.limit
    # LIMIT 1 BY: a run is one row even if a replayed insert ever slipped past deduplication
    sql = f"""
        SELECT {_RUN_COLUMNS}
        FROM {RUNS_TABLE}
        {_where(conditions)}
        ORDER BY StartTime DESC, RunId
        LIMIT 1 BY TenantId, RunId
        LIMIT {{limit:UInt32}}"""
    return [_run_from_row(row) for row in store.query(sql, parameters)]


def get_run(store: StoreReader, run_id: str, *, tenant: str | None = None) -> RunSummary | None:
    """One run with its captured input/output, or None (also when it belongs to another tenant)."""
    _check_text("run id", run_id)
    _check_text("tenant", tenant)
    conditions = ["RunId = {run_id:String}"]
    parameters: dict[str, Any] = {"run_id": run_id}
    if tenant is not None:
        conditions.append("TenantId = {tenant:String}")
        parameters["tenant"] = tenant
    sql = f"""
        SELECT {_RUN_COLUMNS}, Input, Output
        FROM {RUNS_TABLE}
        {_where(conditions)}
        ORDER BY StartTime DESC
        LIMIT 1"""
    rows = store.query(sql, parameters)
    return _run_from_row(rows[0]) if rows else None


# --- traces -------------------------------------------------------------------------------------

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
        start_time=_from_ns(origin_ns),
        duration_ms=round((end_ns - origin_ns) / 1e6, 3),
        span_count=len(nodes),
        truncated=truncated,
        roots=build_tree(nodes),
    )


# --- statistics ---------------------------------------------------------------------------------


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
            "since": _iso(self.since) if self.since else None,
            "until": _iso(self.until) if self.until else None,
            "tenant": self.tenant,
            "stop_reasons": self.stop_reasons,
            "budgets": self.budgets,
            "denials": self.denials,
            "cost": self.cost,
            "top_tools": self.top_tools,
        }


# Gateway decisions that kept a tool from running as asked.
_DENYING_DISPOSITIONS: Final = (
    semconv.ToolDisposition.DENIED.value,
    semconv.ToolDisposition.REJECTED.value,
    semconv.ToolDisposition.KILLED.value,
)


def _plain(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (ClickHouse floats rounded so the JSON stays readable)."""
    return [{key: round(value, 9) if isinstance(value, float) else value for key, value in row.items()} for row in rows]


def stats(store: StoreReader, flt: RunFilter, *, top: int = 20) -> Stats:
    """Aggregate ``agent_runs`` and ``agent_tool_calls`` over the filter's tenant, agent, track and window."""
    run_conditions, parameters = _run_conditions(flt)
    tool_conditions, tool_parameters = _run_conditions(
        RunFilter(agent=flt.agent, track=flt.track, tenant=flt.tenant, since=flt.since, until=flt.until),
        time_column="Timestamp",
    )
    parameters.update(tool_parameters)
    parameters["top"] = top
    parameters["denying"] = list(_DENYING_DISPOSITIONS)
    runs_where = _where(run_conditions)
    budget_where = _where([*run_conditions, "BudgetExhausted != ''"])
    denial_where = _where([*tool_conditions, "has({denying:Array(String)}, Disposition)"])
    tools_where = _where(tool_conditions)
    stop_reasons = store.query(
        f"""SELECT AgentName AS agent, Track AS track, StopReason AS stop_reason, count() AS runs
            FROM {RUNS_TABLE} {runs_where}
            GROUP BY agent, track, stop_reason ORDER BY agent, track, runs DESC, stop_reason""",
        parameters,
    )
    budgets = store.query(
        f"""SELECT AgentName AS agent, Track AS track, BudgetExhausted AS budget, count() AS runs
            FROM {RUNS_TABLE} {budget_where}
            GROUP BY agent, track, budget ORDER BY agent, track, runs DESC, budget""",
        parameters,
    )
    denials = store.query(
        f"""SELECT AgentName AS agent, Track AS track, ToolName AS tool, Disposition AS disposition,
                   PolicyRule AS rule, count() AS calls
            FROM {TOOL_CALLS_TABLE} {denial_where}
            GROUP BY agent, track, tool, disposition, rule
            ORDER BY calls DESC, agent, track, tool, disposition, rule""",
        parameters,
    )
    cost = store.query(
        f"""SELECT AgentName AS agent, Track AS track, count() AS runs, sum(CostUsd) AS total_usd,
                   avg(CostUsd) AS mean_usd, quantile(0.5)(CostUsd) AS p50_usd, quantile(0.95)(CostUsd) AS p95_usd,
                   max(CostUsd) AS max_usd, avg(DurationSeconds) AS mean_duration_s, avg(Steps) AS mean_steps,
                   sum(InputTokens) AS input_tokens, sum(OutputTokens) AS output_tokens
            FROM {RUNS_TABLE} {runs_where}
            GROUP BY agent, track ORDER BY agent, track""",
        parameters,
    )
    top_tools = store.query(
        f"""SELECT AgentName AS agent, ToolName AS tool, count() AS calls,
                   countIf(has({{denying:Array(String)}}, Disposition)) AS denied,
                   countIf(Outcome = {{error_outcome:String}}) AS errors
            FROM {TOOL_CALLS_TABLE} {tools_where}
            GROUP BY agent, tool ORDER BY calls DESC, agent, tool LIMIT {{top:UInt32}}""",
        {**parameters, "error_outcome": semconv.ToolOutcome.ERROR.value},
    )
    return Stats(
        since=flt.since,
        until=flt.until,
        tenant=flt.tenant,
        stop_reasons=_plain(stop_reasons),
        budgets=_plain(budgets),
        denials=_plain(denials),
        cost=_plain(cost),
        top_tools=_plain(top_tools),
    )


# --- rendering ----------------------------------------------------------------------------------


def format_duration_ms(milliseconds: float) -> str:
    """``0.42ms``, ``12.3ms``, ``4.21s``, ``3m05s``: short enough for a tree column."""
    if milliseconds < 10:
        return f"{milliseconds:.2f}ms"
    if milliseconds < 1000:
        return f"{milliseconds:.1f}ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def format_usd(value: float) -> str:
    return f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int]) -> str:
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells)]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def render_runs(rows: Sequence[RunSummary]) -> str:
    """An aligned table, one run per line (what ``agentwatch runs`` prints)."""
    if not rows:
        return "no runs match"
    header = (
        "START (UTC)",
        "RUN",
        "TENANT",
        "AGENT",
        "VERSION",
        "TRACK",
        "STOP REASON",
        "BUDGET",
        "STEPS",
        "TOOLS",
        "LLM",
        "TOKENS IN/OUT",
        "COST",
        "DURATION",
    )
    table = [
        (
            run.start_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            run.run_id,
            run.tenant or "-",
            run.agent,
            run.version or "-",
            run.track,
            run.stop_reason,
            run.budget_exhausted or "-",
            str(run.steps),
            str(run.tool_calls),
            str(run.llm_calls),
            f"{run.input_tokens}/{run.output_tokens}",
            format_usd(run.cost_usd),
            format_duration_ms(run.duration_s * 1000),
        )
        for run in rows
    ]
    return _table(header, table, right=frozenset({8, 9, 10, 11, 12, 13}))


def _short(attributes: Mapping[str, str], key: str) -> str:
    return attributes.get(key, "")


def _cost(attributes: Mapping[str, str], key: str) -> str:
    raw = attributes.get(key)
    try:
        return format_usd(float(raw)) if raw is not None else ""
    except ValueError:
        return raw or ""


def describe(node: TraceNode) -> str:
    """The key facts of one span on one line: disposition and rule of a tool, model/tokens/cost of an LLM call ..."""
    a = node.attributes
    parts: list[str] = []
    if node.kind == "run":
        parts.append(f"stop={_short(a, semconv.STOP_REASON) or '?'}")
        if a.get(semconv.BUDGET_EXHAUSTED):
            parts.append(f"budget={a[semconv.BUDGET_EXHAUSTED]}")
        for label, key in (("steps", semconv.RUN_STEPS), ("tools", semconv.RUN_TOOL_CALLS)):
            if key in a:
                parts.append(f"{label}={a[key]}")
        if semconv.GEN_AI_USAGE_INPUT_TOKENS in a:
            parts.append(
                f"tokens={a[semconv.GEN_AI_USAGE_INPUT_TOKENS]}/{a.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, '0')}"
            )
        if semconv.RUN_COST_USD in a:
            parts.append(f"cost={_cost(a, semconv.RUN_COST_USD)}")
    elif node.kind == "step":
        parts.append(f"#{_short(a, semconv.STEP_INDEX)}")
    elif node.kind == "llm":
        model = a.get(semconv.GEN_AI_RESPONSE_MODEL) or a.get(semconv.GEN_AI_REQUEST_MODEL, "")
        if model:
            parts.append(f"model={model}")
        if semconv.GEN_AI_USAGE_INPUT_TOKENS in a:
            parts.append(
                f"tokens={a[semconv.GEN_AI_USAGE_INPUT_TOKENS]}/{a.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, '0')}"
            )
        if semconv.COST_USD in a:
            parts.append(f"cost={_cost(a, semconv.COST_USD)}")
        elif a.get(semconv.COST_UNPRICED) == "true":
            parts.append("cost=unpriced")
    elif node.kind == "tool":
        decision = "/".join(filter(None, (a.get(semconv.TOOL_DISPOSITION), a.get(semconv.TOOL_OUTCOME))))
        if decision:
            parts.append(decision)
        if a.get(semconv.POLICY_RULE):
            parts.append(f"rule={a[semconv.POLICY_RULE]}")
        if a.get(semconv.TOOL_RISK):
            parts.append(f"risk={a[semconv.TOOL_RISK]}")
    if node.status == "Error":
        parts.append(f"ERROR {a.get(semconv.ERROR_TYPE) or node.status_message}".rstrip())
    parts.extend(
        f"!{event.name.removeprefix('agentwatch.')}" for event in node.events if event.name.startswith("agentwatch.")
    )
    return "  ".join(parts)


def render_trace(view: TraceView) -> str:
    """An indented tree with start offsets and durations (what ``agentwatch trace`` prints)."""
    run = view.run
    lines = [
        f"run {run.run_id}  agent={run.agent} version={run.version or '-'} track={run.track} "
        f"tenant={run.tenant or '-'}  stop={run.stop_reason}"
        + (f" budget={run.budget_exhausted}" if run.budget_exhausted else "")
        + f"  cost={format_usd(run.cost_usd)}",
        f"trace {view.trace_id}  {view.span_count} spans  {format_duration_ms(view.duration_ms)}  "
        f"started {_iso(view.start_time)}" + ("  (truncated)" if view.truncated else ""),
        "",
        f"{'START':>10} {'DURATION':>10}  SPAN",
    ]

    def emit(node: TraceNode, prefix: str, branch: str) -> None:
        label = f"{prefix}{branch}{node.name}"
        detail = describe(node)
        timing = f"{format_duration_ms(node.start_offset_ms):>10} {format_duration_ms(node.duration_ms):>10}"
        lines.append(f"{timing}  {label}" + (f"  {detail}" if detail else ""))
        child_prefix = prefix + ("" if not branch else ("│  " if branch == "├─ " else "   "))
        for index, child in enumerate(node.children):
            emit(child, child_prefix, "└─ " if index == len(node.children) - 1 else "├─ ")

    for root in view.roots:
        emit(root, "", "")
    if not view.roots:
        lines.append(f"{'':>21}  (no spans stored for this trace)")
    return "\n".join(lines)


__all__ = [
    "MAX_LIMIT",
    "MAX_TRACE_SPANS",
    "InvalidQuery",
    "RunFilter",
    "RunSummary",
    "Stats",
    "StoreReader",
    "TraceEvent",
    "TraceNode",
    "TraceView",
    "build_tree",
    "check_window",
    "describe",
    "format_duration_ms",
    "format_usd",
    "get_run",
    "get_trace",
    "list_runs",
    "parse_limit",
    "parse_since",
    "render_runs",
    "render_trace",
    "span_kind_of",
    "stats",
]


def _share(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f}%)" if whole else str(part)


def render_stats(view: Stats) -> str:
    """The fleet report the demo prints: stop reasons per track, budgets, denials, cost, top tools."""
    if not view.stop_reasons:
        return "no runs in this window"
    tracks = sorted({(row["agent"], row["track"]) for row in view.stop_reasons})
    totals = {key: sum(int(r["runs"]) for r in view.stop_reasons if (r["agent"], r["track"]) == key) for key in tracks}
    reasons = sorted({str(row["stop_reason"]) for row in view.stop_reasons})
    counts = {(r["agent"], r["track"], r["stop_reason"]): int(r["runs"]) for r in view.stop_reasons}
    sections = [
        "Runs by stop reason",
        _table(
            ("STOP REASON", *(f"{agent}/{track}" for agent, track in tracks)),
            [
                (
                    reason,
                    *(_share(counts.get((agent, track, reason), 0), totals[(agent, track)]) for agent, track in tracks),
                )
                for reason in reasons
            ]
            + [("total", *(str(totals[key]) for key in tracks))],
            right=frozenset(range(1, len(tracks) + 1)),
        ),
        "",
        "Cost and effort per run",
        _table(
            ("AGENT/TRACK", "RUNS", "MEAN COST", "P95 COST", "TOTAL", "MEAN STEPS", "MEAN DURATION"),
            [
                (
                    f"{row['agent']}/{row['track']}",
                    str(row["runs"]),
                    format_usd(float(row["mean_usd"])),
                    format_usd(float(row["p95_usd"])),
                    format_usd(float(row["total_usd"])),
                    f"{float(row['mean_steps']):.2f}",
                    format_duration_ms(float(row["mean_duration_s"]) * 1000),
                )
                for row in view.cost
            ],
            right=frozenset(range(1, 7)),
        ),
    ]
    if view.budgets:
        sections += [
            "",
            "Budgets hit",
            _table(
                ("AGENT/TRACK", "BUDGET", "RUNS"),
                [(f"{r['agent']}/{r['track']}", str(r["budget"]), str(r["runs"])) for r in view.budgets],
                right=frozenset({2}),
            ),
        ]
    if view.denials:
        sections += [
            "",
            "Tool calls the gateway stopped",
            _table(
                ("AGENT/TRACK", "TOOL", "DISPOSITION", "RULE", "CALLS"),
                [
                    (
                        f"{r['agent']}/{r['track']}",
                        str(r["tool"]),
                        str(r["disposition"]),
                        str(r["rule"]),
                        str(r["calls"]),
                    )
                    for r in view.denials
                ],
                right=frozenset({4}),
            ),
        ]
    if view.top_tools:
        sections += [
            "",
            "Top tools",
            _table(
                ("AGENT", "TOOL", "CALLS", "STOPPED", "ERRORS"),
                [
                    (str(r["agent"]), str(r["tool"]), str(r["calls"]), str(r["denied"]), str(r["errors"]))
                    for r in view.top_tools
                ],
                right=frozenset({2, 3, 4}),
            ),
        ]
    return "\n".join(sections)
