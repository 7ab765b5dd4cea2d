"""Recorded runs for ``agentwatch replay``: a run's input, its tool calls (arguments, results, errors) and its output.

A run can be replayed when content capture was on while it ran: ``agent_runs.Input`` holds its input
and every ``agent_tool_calls`` row holds its arguments (and the result, for a call that ran). A run
read without them is still returned, with ``skip_reason`` saying why it cannot be replayed, so a
report can list it instead of dropping it silently. Values stay as captured: redacted and, past
the capture limit, truncated (a truncated input or result cannot be replayed faithfully: skipped).

Every user value travels as a server-side parameter; the SQL is built from constant fragments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Final

from agentwatch.collectors.read.filters import (
    MAX_LIMIT,
    InvalidQuery,
    RunFilter,
    StoreReader,
    check_text,
    check_window,
    parse_limit,
    parse_since,
)
from agentwatch.collectors.read.models import RUN_COLUMNS, RunSummary, run_from_row
from agentwatch.collectors.read.runs import run_conditions, where
from agentwatch.collectors.store.schema import RUNS_TABLE, TOOL_CALLS_TABLE, TRACES_TABLE
from agentwatch.instrumentation import semconv

FILTER_PARAMETERS: Final = frozenset({"agent", "track", "tenant", "since", "until", "limit", "run_ids"})
"""Query parameters of ``GET /api/v1/recordings`` (``run_ids`` is comma-separated)."""

DEFAULT_LIMIT: Final = 50
_RUN_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# what Redactor.to_attribute appends when it cuts captured content
_TRUNCATED_RE: Final = re.compile(r"…\[truncated \d+ chars\]$")
# calls that ran (or were served) and so have a result or an error to replay
EXECUTED_DISPOSITIONS: Final = frozenset(
    {
        semconv.ToolDisposition.ALLOWED.value,
        semconv.ToolDisposition.APPROVED.value,
        semconv.ToolDisposition.DEDUPLICATED.value,
        semconv.ToolDisposition.REPLAYED.value,
    }
)


@dataclass(frozen=True, slots=True)
class RecordedToolCall:
    """One tool call as stored: ``arguments`` and ``result`` are the captured (redacted) text."""

    tool: str
    arguments: str
    result: str
    disposition: str
    outcome: str
    rule: str
    step: int
    error: str = ""  # the status message of a call that raised

    def to_dict(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordedToolCall:
        return cls(
            tool=str(data["tool"]),
            arguments=str(data["arguments"]),
            result=str(data["result"]),
            disposition=str(data["disposition"]),
            outcome=str(data["outcome"]),
            rule=str(data["rule"]),
            step=int(data["step"]),
            error=str(data.get("error", "")),
        )


@dataclass(frozen=True, slots=True)
class RecordedRun:
    """A stored run with what replay needs (``from_summary``: the read model's run); ``calls`` in start order."""

    run_id: str
    tenant: str
    agent: str
    version: str
    track: str
    runtime: str
    start_time: datetime
    stop_reason: str
    steps: int
    tool_calls: int
    llm_calls: int
    cost_usd: float
    input: str
    output: str
    calls: tuple[RecordedToolCall, ...] = ()
    missing: bool = False  # asked for by id and not in the store

    @classmethod
    def from_summary(cls, run: RunSummary, calls: Iterable[RecordedToolCall] = ()) -> RecordedRun:
        """The replay view of a run read with its content (``RUN_COLUMNS, Input, Output`` via ``run_from_row``)."""
        return cls(
            run_id=run.run_id,
            tenant=run.tenant,
            agent=run.agent,
            version=run.version,
            track=run.track,
            runtime=run.runtime,
            start_time=run.start_time,
            stop_reason=run.stop_reason,
            steps=run.steps,
            tool_calls=run.tool_calls,
            llm_calls=run.llm_calls,
            cost_usd=run.cost_usd,
            input=run.input or "",
            output=run.output or "",
            calls=tuple(calls),
        )

    @property
    def skip_reason(self) -> str | None:
        """Why this run cannot be replayed, or None when it can."""
        if self.missing:
            return "not found in the store (or it belongs to another tenant)"
        if not self.input:
            return "no recording: content capture was off when it ran (its input was not captured)"
        if _TRUNCATED_RE.search(self.input):
            return "its input was truncated at capture (raise AGENTWATCH_MAX_CONTENT_LENGTH to record it whole)"
        if len(self.calls) < self.tool_calls:
            return f"only {len(self.calls)} of its {self.tool_calls} tool calls are in the store"
        for index, call in enumerate(self.calls, start=1):
            if not call.arguments:
                return f"no recording: the arguments of tool call {index} ({call.tool}) were not captured"
            if _TRUNCATED_RE.search(call.arguments) or _TRUNCATED_RE.search(call.result):
                return f"tool call {index} ({call.tool}) was truncated at capture"
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the read API's shape); the start time in ISO-8601 UTC."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "calls":
                value = [call.to_dict() for call in value]
            elif isinstance(value, datetime):
                value = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
            out[item.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordedRun:
        return cls(
            run_id=str(data["run_id"]),
            tenant=str(data["tenant"]),
            agent=str(data["agent"]),
            version=str(data["version"]),
            track=str(data["track"]),
            runtime=str(data["runtime"]),
            start_time=datetime.fromisoformat(str(data["start_time"])),
            stop_reason=str(data["stop_reason"]),
            steps=int(data["steps"]),
            tool_calls=int(data["tool_calls"]),
            llm_calls=int(data["llm_calls"]),
            cost_usd=float(data["cost_usd"]),
            input=str(data["input"]),
            output=str(data["output"]),
            calls=tuple(RecordedToolCall.from_dict(call) for call in data.get("calls", [])),
            missing=bool(data.get("missing", False)),
        )


@dataclass(frozen=True, slots=True)
class RecordingFilter:
    """Which runs to replay: explicit ``run_ids``, else the newest top-level runs matching the fields."""

    agent: str | None = None
    track: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    run_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("agent", "track", "tenant"):
            check_text(name, getattr(self, name))
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be an integer from 1 to {MAX_LIMIT}")
        if len(self.run_ids) > MAX_LIMIT:
            raise InvalidQuery(f"at most {MAX_LIMIT} run ids at once")
        for run_id in self.run_ids:
            if not _RUN_ID_RE.match(run_id):
                raise InvalidQuery(f"run id {run_id[:40]!r} is malformed (letters, digits and _.:- only)")
        check_window(self.since, self.until)

    @classmethod
    def from_params(cls, params: Mapping[str, str], *, tenant: str | None = None) -> RecordingFilter:
        """The filter from raw strings (CLI flags or read-API parameters); ``tenant`` overrides ``params``."""
        unknown = set(params) - FILTER_PARAMETERS
        if unknown:
            expected = ", ".join(sorted(FILTER_PARAMETERS))
            raise InvalidQuery(f"unknown parameter {sorted(unknown)[0]!r} (expected: {expected})")
        since, until, limit = params.get("since"), params.get("until"), params.get("limit")
        run_ids = tuple(part.strip() for part in params.get("run_ids", "").split(",") if part.strip())
        return cls(
            agent=params.get("agent"),
            track=params.get("track"),
            tenant=tenant if tenant is not None else params.get("tenant"),
            since=parse_since(since) if since is not None else None,
            until=parse_since(until) if until is not None else None,
            limit=parse_limit(limit) if limit is not None else DEFAULT_LIMIT,
            run_ids=run_ids,
        )


# --- reading the store ------------------------------------------------------------------------------

# runs as the read model reads them (the same columns, the same row mapping), with their content
_RUN_SELECT: Final = f"""
    SELECT {RUN_COLUMNS}, Input, Output
    FROM {RUNS_TABLE}"""

_CALLS_SQL: Final = f"""
    SELECT RunId, TenantId, ToolName, Arguments, Result, Disposition, Outcome, PolicyRule, StepIndex, StatusCode,
        TraceId, SpanId
    FROM {TOOL_CALLS_TABLE}
    WHERE RunId IN {{run_ids:Array(String)}}
    ORDER BY RunId, Timestamp, SpanId
    LIMIT 1 BY RunId, SpanId"""

# agent_tool_calls keeps no status message: the error text of a failed call comes from its span
_ERRORS_SQL: Final = f"""
    SELECT SpanId, StatusMessage, SpanAttributes['{semconv.ERROR_TYPE}'] AS ErrorType
    FROM {TRACES_TABLE}
    WHERE TraceId IN {{trace_ids:Array(String)}} AND SpanId IN {{span_ids:Array(String)}}
    LIMIT 1 BY SpanId"""


def _run_query(flt: RecordingFilter) -> tuple[str, dict[str, Any]]:
    window = RunFilter(agent=flt.agent, track=flt.track, tenant=flt.tenant, since=flt.since, until=flt.until)
    conditions, parameters = run_conditions(window)
    parameters["limit"] = len(flt.run_ids) or flt.limit
    if flt.run_ids:
        conditions.append("RunId IN {run_ids:Array(String)}")
        parameters["run_ids"] = list(flt.run_ids)
    else:
        conditions.append("ParentRunId = ''")  # a sub-run is replayed by replaying its parent
    sql = f"""{_RUN_SELECT}
    {where(conditions)}
    ORDER BY StartTime DESC, RunId
    LIMIT 1 BY TenantId, RunId
    LIMIT {{limit:UInt32}}"""
    return sql, parameters


def _error_texts(store: StoreReader, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    failed = [row for row in rows if row["Outcome"] == semconv.ToolOutcome.ERROR.value]
    if not failed:
        return {}
    trace_ids = sorted({str(row["TraceId"]) for row in failed})
    found = store.query(_ERRORS_SQL, {"trace_ids": trace_ids, "span_ids": [str(row["SpanId"]) for row in failed]})
    return {str(row["SpanId"]): str(row["StatusMessage"]) or str(row["ErrorType"]) for row in found}


CallsByRun = dict[tuple[str, str], list[RecordedToolCall]]  # (tenant, run id) -> its calls in order


def _calls_by_run(store: StoreReader, runs: Sequence[RunSummary]) -> CallsByRun:
    if not runs:
        return {}
    rows = store.query(_CALLS_SQL, {"run_ids": sorted({run.run_id for run in runs})})
    errors = _error_texts(store, rows)
    calls: CallsByRun = {}
    for row in rows:
        failed = row["Outcome"] == semconv.ToolOutcome.ERROR.value
        calls.setdefault((str(row["TenantId"]), str(row["RunId"])), []).append(
            RecordedToolCall(
                tool=str(row["ToolName"]),
                arguments=str(row["Arguments"]),
                result=str(row["Result"]),
                disposition=str(row["Disposition"]),
                outcome=str(row["Outcome"]),
                rule=str(row["PolicyRule"]),
                step=int(row["StepIndex"]),
                error=(errors.get(str(row["SpanId"])) or "the recorded call failed") if failed else "",
            )
        )
    return calls


def load_recordings(store: StoreReader, flt: RecordingFilter) -> list[RecordedRun]:
    """The runs ``flt`` selects with their tool calls, oldest first; requested ids not found come back ``missing``."""
    sql, parameters = _run_query(flt)
    runs = [run_from_row(row) for row in store.query(sql, parameters)]
    calls = _calls_by_run(store, runs)
    recorded = [RecordedRun.from_summary(run, calls.get((run.tenant, run.run_id), ())) for run in runs]
    recorded.sort(key=lambda run: (run.start_time, run.run_id))
    found = {run.run_id for run in recorded}
    recorded.extend(_missing(run_id) for run_id in flt.run_ids if run_id not in found)
    return recorded


def _missing(run_id: str) -> RecordedRun:
    return RecordedRun(
        run_id=run_id,
        tenant="",
        agent="",
        version="",
        track="",
        runtime="",
        start_time=datetime(1970, 1, 1, tzinfo=UTC),
        stop_reason="",
        steps=0,
        tool_calls=0,
        llm_calls=0,
        cost_usd=0.0,
        input="",
        output="",
        missing=True,
    )


def filter_params(values: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """The set values as read-API parameters (what ``RecordingFilter.from_params`` reads back)."""
    return {name: value for name, value in values if value is not None}


__all__ = [
    "EXECUTED_DISPOSITIONS",
    "FILTER_PARAMETERS",
    "RecordedRun",
    "RecordedToolCall",
    "RecordingFilter",
    "filter_params",
    "load_recordings",
]
