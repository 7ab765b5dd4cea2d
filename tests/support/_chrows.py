"""Test helpers for ClickHouse: span rows in the contract's JSONEachRow format, counts, URLs.

Rows are timestamped *now* by default: rows older than a table's TTL are dropped at insert time.
The fixtures that give a store are in ``_chstore`` (load it with ``pytest_plugins``).
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Final

from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.collectors.store.schema import RUNS_TABLE, TOOL_CALLS_TABLE, TRACE_ID_TS_TABLE, TRACES_TABLE
from agentwatch.instrumentation import semconv

ALL_TABLES: Final = (TRACES_TABLE, TRACE_ID_TS_TABLE, RUNS_TABLE, TOOL_CALLS_TABLE)

_ids = itertools.count(1)


def engine_url(engine: ClickHouseStore, database: str | None = None) -> str:
    """URL of the session engine ``engine``, optionally with a default database."""
    return f"chdb://{engine.target.path}" + (f"?database={database}" if database else "")


def timestamp(ns: int) -> str:
    """The row format's timestamp: ``"SECONDS.NANOS"`` (exact in DateTime64(9))."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def now_ns(offset_s: float = 0.0) -> int:
    """Now (plus ``offset_s``) in Unix nanoseconds, rounded to the microsecond plus 123 ns."""
    return (time.time_ns() // 1000) * 1000 + 123 + int(offset_s * 1e9)


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def span_row(
    name: str = "GET /",
    *,
    trace_id: str | None = None,
    span_id: str | None = None,
    parent_span_id: str = "",
    start_ns: int | None = None,
    duration_ns: int = 1_000_000,
    service: str = "checkout",
    attributes: Mapping[str, str] | None = None,
    resource: Mapping[str, str] | None = None,
    kind: str = "Internal",
    status: str = "Unset",
    status_message: str = "",
    scope: tuple[str, str] = ("test", "1.0"),
    events: Iterable[tuple[int, str, Mapping[str, str]]] = (),
    links: Iterable[tuple[str, str, str, Mapping[str, str]]] = (),
) -> dict[str, object]:
    """One span as the collector (or the OTel Collector exporter) writes it to ``otel_traces``."""
    start = now_ns() if start_ns is None else start_ns
    event_list = list(events)
    link_list = list(links)
    return {
        "Timestamp": timestamp(start),
        "TraceId": new_trace_id() if trace_id is None else trace_id,
        "SpanId": new_span_id() if span_id is None else span_id,
        "ParentSpanId": parent_span_id,
        "TraceState": "",
        "SpanName": name,
        "SpanKind": kind,
        "ServiceName": service,
        "ResourceAttributes": {"service.name": service, **(resource or {})},
        "ScopeName": scope[0],
        "ScopeVersion": scope[1],
        "SpanAttributes": dict(attributes or {}),
        "Duration": duration_ns,
        "StatusCode": status,
        "StatusMessage": status_message,
        "Events.Timestamp": [timestamp(ts) for ts, _, _ in event_list],
        "Events.Name": [name for _, name, _ in event_list],
        "Events.Attributes": [dict(attrs) for _, _, attrs in event_list],
        "Links.TraceId": [trace for trace, _, _, _ in link_list],
        "Links.SpanId": [span for _, span, _, _ in link_list],
        "Links.TraceState": [state for _, _, state, _ in link_list],
        "Links.Attributes": [dict(attrs) for _, _, _, attrs in link_list],
    }


def run_attributes(
    run_id: str,
    *,
    agent: str = "support",
    tenant: str = "acme",
    track: str = "stable",
    stop_reason: str = "completed",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Attributes of a finished ``invoke_agent`` run span (numbers as strings, as in the map)."""
    return {
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_INVOKE_AGENT,
        semconv.GEN_AI_AGENT_NAME: agent,
        semconv.RUN_ID: run_id,
        semconv.TENANT_ID: tenant,
        semconv.TRACK: track,
        semconv.RUNTIME: "custom",
        semconv.STOP_REASON: stop_reason,
        **(extra or {}),
    }


def tool_attributes(
    run_id: str,
    tool: str,
    *,
    agent: str = "support",
    tenant: str = "acme",
    track: str = "stable",
    disposition: str = "allowed",
    outcome: str = "ok",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Attributes of an ``execute_tool`` span inside run ``run_id``."""
    return {
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_EXECUTE_TOOL,
        semconv.GEN_AI_AGENT_NAME: agent,
        semconv.RUN_ID: run_id,
        semconv.TENANT_ID: tenant,
        semconv.TRACK: track,
        semconv.GEN_AI_TOOL_NAME: tool,
        semconv.TOOL_DISPOSITION: disposition,
        semconv.TOOL_OUTCOME: outcome,
        **(extra or {}),
    }


def json_rows(rows: Iterable[Mapping[str, object]]) -> bytes:
    """The JSONEachRow payload of ``rows``."""
    return b"\n".join(json.dumps(row, separators=(",", ":")).encode() for row in rows)


def new_token() -> str:
    return f"test-{os.getpid()}-{next(_ids)}-{uuid.uuid4().hex[:8]}"


def count(store: ClickHouseStore, table: str, where: str = "1") -> int:
    rows = store.query(f"SELECT count() AS n FROM {table} WHERE {where}")
    return int(str(rows[0]["n"]))


def counts(store: ClickHouseStore, tables: Iterable[str] = ALL_TABLES) -> dict[str, int]:
    """Row count of each table (the trace-id lookup counts rows, not distinct traces)."""
    return {table: count(store, table) for table in tables}
