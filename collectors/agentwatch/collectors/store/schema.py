"""The ClickHouse schema of the collector, as versioned migrations.

``otel_traces`` has exactly the columns, types, codecs, ALIAS columns and bloom-filter indexes of
the OpenTelemetry Collector ClickHouse exporter (its ``traces_table.sql`` as of PR #50878), so
Grafana's ClickHouse trace view and ``otelcol-contrib`` both work against it. Deliberate
differences: a tenant-first sort key; bloom filters where the exporter uses ``text`` indexes on
ClickHouse 26.2+; dedup windows. An existing table is never re-keyed, so one made by
``otelcol-contrib`` keeps its own sort key and TTL, and ``schema_check`` says so. Everything
agent-specific is derived from it by materialized views that read nothing but ``otel_traces``
columns, so spans written by *any* OTLP writer fill ``agent_runs`` and ``agent_tool_calls`` the
same way the collector's own inserts do.

Every MergeTree table we own keeps a deduplication window, so an insert repeated with the same
``insert_deduplication_token`` (a spool replay after a crash or an outage) lands once, in the
source table and in every view target.

With ``SchemaOptions(cluster=NAME)`` every statement runs ``ON CLUSTER NAME``: the data lives in
``<name>_local`` tables on Replicated* engines, the public names are ``Distributed`` tables, and
the views run on each shard, reading the local ``otel_traces_local`` and writing local targets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from agentwatch.collectors.store.control_schema import v6_control
from agentwatch.collectors.store.ddl import (
    TRACES_TABLE,
    SchemaOptions,
    _attr,
    _num,
    _on_cluster,
    _Table,
    _view,
    quote_identifier,
    quote_literal,
)
from agentwatch.instrumentation import semconv

TRACE_ID_TS_TABLE: Final = "otel_traces_trace_id_ts"
TRACE_ID_TS_VIEW: Final = "otel_traces_trace_id_ts_mv"
RUNS_TABLE: Final = "agent_runs"
RUNS_VIEW: Final = "agent_runs_mv"
TOOL_CALLS_TABLE: Final = "agent_tool_calls"
TOOL_CALLS_VIEW: Final = "agent_tool_calls_mv"
MIGRATIONS_TABLE: Final = "agentwatch_schema_migrations"

# --- otel_traces: the exporter's columns, verbatim -------------------------------------------

_MAP = "Map(LowCardinality(String), String)"
_EVENTS_FIELDS: Final = (("Timestamp", "DateTime64(9)"), ("Name", "LowCardinality(String)"), ("Attributes", _MAP))
_LINKS_FIELDS: Final = (("TraceId", "String"), ("SpanId", "String"), ("TraceState", "String"), ("Attributes", _MAP))


def _nested(fields: tuple[tuple[str, str], ...]) -> str:
    return "Nested(" + ", ".join(f"{name} {type_}" for name, type_ in fields) + ")"


OTEL_TRACES_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", "LowCardinality(String)"),
    ("SpanKind", "LowCardinality(String)"),
    ("ServiceName", "LowCardinality(String)"),
    ("ResourceAttributes", _MAP),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", _MAP),
    ("Duration", "UInt64"),
    ("StatusCode", "LowCardinality(String)"),
    ("StatusMessage", "String"),
    ("Events", _nested(_EVENTS_FIELDS)),
    ("Links", _nested(_LINKS_FIELDS)),
)
"""Top-level ``otel_traces`` columns (name, type) as the exporter declares them (Nested un-flattened)."""

_NESTED_FIELDS: Final = {"Events": _EVENTS_FIELDS, "Links": _LINKS_FIELDS}

JSON_ROW_KEYS: Final[tuple[str, ...]] = tuple(
    key
    for name, _ in OTEL_TRACES_COLUMNS
    for key in ([f"{name}.{field}" for field, _ in _NESTED_FIELDS[name]] if name in _NESTED_FIELDS else [name])
)
"""Keys of one span row in the JSONEachRow interchange format: the columns, Nested ones flattened."""

# The exporter puts a Delta codec in front of ZSTD only on the timestamp.
_CODECS: Final = {"Timestamp": "CODEC(Delta, ZSTD(1))"}

_OTEL_TRACES_INDEXES: Final = (
    "INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1",
    "INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "INDEX idx_duration Duration TYPE minmax GRANULARITY 1",
)


# Added by migration 4, as in the exporter's current DDL: one ``key=value`` item per attribute,
# which queries can test with ``has(SpanAttributeItems, 'k=v')`` (ALIAS: computed on read, no storage).
_ITEMS: Final = "arrayMap(kv -> concat(kv.1, '=', kv.2), CAST({map}, 'Array(Tuple(String, String))'))"
OTEL_TRACES_ALIASES: Final[tuple[tuple[str, str, str], ...]] = (
    ("ResourceAttributeItems", "Array(String)", _ITEMS.format(map="ResourceAttributes")),
    ("SpanAttributeItems", "Array(String)", _ITEMS.format(map="SpanAttributes")),
)
"""ALIAS columns of ``otel_traces`` (name, type, expression): readable, never inserted."""
# The exporter's current codec for Duration (migration 1 created it with ZSTD(1) alone).
_DURATION_CODEC: Final = "CODEC(T64, ZSTD(1))"


def _column_ddl(name: str, type_: str) -> str:
    if name in _NESTED_FIELDS:
        # "Nested (...)" with a space is the exporter's spelling; both parse the same
        return f"{name} Nested ({type_[len('Nested(') : -1]}) CODEC(ZSTD(1))"
    return f"{name} {type_} {_CODECS.get(name, 'CODEC(ZSTD(1))')}"


# A trace stays on one shard (sharding by TraceId), and the agent tables are filled by views on
# that shard from the spans of that trace, so their rows live where their trace lives. Their
# Distributed tables declare the same key, so the placement they describe is the true one (shard
# pruning with optimize_skip_unused_shards stays correct, and a direct insert lands beside its
# trace). RunId would spread one run's rows differently from its spans for no gain: every row of
# a run already shares one TraceId.
_SHARD_KEY: Final = "cityHash64(TraceId)"

TRACES_SORT_KEY: Final = f"{_attr(semconv.TENANT_ID)}, ServiceName, SpanName, toDateTime(Timestamp)"
"""``otel_traces``' sort key as ClickHouse reports it in ``system.tables.sorting_key``."""

_OTEL_TRACES: Final = _Table(
    name=TRACES_TABLE,
    definitions=tuple(_column_ddl(name, type_) for name, type_ in OTEL_TRACES_COLUMNS) + _OTEL_TRACES_INDEXES,
    family="MergeTree",
    partition_by="toDate(Timestamp)",
    # tenant first: every read path is scoped to one tenant. The exporter has PRIMARY KEY (ServiceName,
    # SpanName, toDateTime(Timestamp)) ORDER BY (..., Timestamp); ClickHouse cannot append an existing
    # column to a sort key, so stores made before that change could never follow it: we keep ours.
    order_by=f"({TRACES_SORT_KEY})",
    ttl_column="Timestamp",
    ttl_days=lambda options: options.traces_ttl_days,
    shard_key=_SHARD_KEY,
)

_TRACE_ID_TS: Final = _Table(
    name=TRACE_ID_TS_TABLE,
    definitions=(
        "TraceId String CODEC(ZSTD(1))",
        "Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1))",
        "End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))",
    ),
    family="AggregatingMergeTree",
    partition_by="toStartOfWeek(Start)",
    order_by="TraceId",
    ttl_column="Start",
    ttl_days=lambda options: options.traces_ttl_days,
    shard_key=_SHARD_KEY,
)

_TRACE_ID_TS_SELECT: Final = """SELECT TraceId, min(Timestamp) AS Start, max(Timestamp) AS End
FROM {source}
WHERE TraceId != ''
GROUP BY TraceId"""

_RUNS: Final = _Table(
    name=RUNS_TABLE,
    definitions=(
        "TenantId LowCardinality(String)",
        "AgentName LowCardinality(String)",
        "AgentVersion LowCardinality(String)",
        "Track LowCardinality(String)",
        "Runtime LowCardinality(String)",
        "RunId String",
        "ParentRunId String",
        "TraceId String",
        "SpanId String",
        "ConversationId String",
        "ServiceName LowCardinality(String)",
        "StartTime DateTime64(9) CODEC(Delta, ZSTD(1))",
        "EndTime DateTime64(9) CODEC(Delta, ZSTD(1))",
        "DurationSeconds Float64",
        "StopReason LowCardinality(String)",
        "BudgetExhausted LowCardinality(String)",
        "Steps UInt32",
        "ToolCalls UInt32",
        "LlmCalls UInt32",
        "InputTokens UInt64",
        "OutputTokens UInt64",
        "CostUsd Float64",
        "UnpricedLlmCalls UInt32",
        "StatusCode LowCardinality(String)",
        "Input String CODEC(ZSTD(1))",
        "Output String CODEC(ZSTD(1))",
        "INDEX idx_run_id RunId TYPE bloom_filter(0.001) GRANULARITY 1",
        "INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1",
    ),
    # One row per run even if an SDK re-exports a run span after a lost response (a new request,
    # so a new dedup token): the copies share the whole sort key and collapse on merge (or FINAL).
    family="ReplacingMergeTree",
    partition_by="toYYYYMM(StartTime)",
    order_by="(TenantId, AgentName, Track, toDateTime(StartTime), RunId)",
    ttl_column="StartTime",
    ttl_days=lambda options: options.runs_ttl_days,
    shard_key=_SHARD_KEY,
)

_RUNS_SELECT: Final = f"""SELECT
    {_attr(semconv.TENANT_ID)} AS TenantId,
    {_attr(semconv.GEN_AI_AGENT_NAME)} AS AgentName,
    {_attr(semconv.GEN_AI_AGENT_VERSION)} AS AgentVersion,
    {_attr(semconv.TRACK)} AS Track,
    {_attr(semconv.RUNTIME)} AS Runtime,
    {_attr(semconv.RUN_ID)} AS RunId,
    {_attr(semconv.RUN_PARENT_ID)} AS ParentRunId,
    TraceId,
    SpanId,
    {_attr(semconv.GEN_AI_CONVERSATION_ID)} AS ConversationId,
    ServiceName,
    Timestamp AS StartTime,
    addNanoseconds(Timestamp, Duration) AS EndTime,
    Duration / 1e9 AS DurationSeconds,
    {_attr(semconv.STOP_REASON)} AS StopReason,
    {_attr(semconv.BUDGET_EXHAUSTED)} AS BudgetExhausted,
    {_num("toUInt32", semconv.RUN_STEPS)} AS Steps,
    {_num("toUInt32", semconv.RUN_TOOL_CALLS)} AS ToolCalls,
    {_num("toUInt32", semconv.RUN_LLM_CALLS)} AS LlmCalls,
    {_num("toUInt64", semconv.GEN_AI_USAGE_INPUT_TOKENS)} AS InputTokens,
    {_num("toUInt64", semconv.GEN_AI_USAGE_OUTPUT_TOKENS)} AS OutputTokens,
    {_num("toFloat64", semconv.RUN_COST_USD)} AS CostUsd,
    {_num("toUInt32", semconv.RUN_UNPRICED_LLM_CALLS)} AS UnpricedLlmCalls,
    StatusCode,
    {_attr(semconv.RUN_INPUT)} AS Input,
    {_attr(semconv.RUN_OUTPUT)} AS Output
FROM {{source}}
WHERE {_attr(semconv.GEN_AI_OPERATION_NAME)} = {quote_literal(semconv.OP_INVOKE_AGENT)}
    AND {_attr(semconv.RUN_ID)} != ''
    AND {_attr(semconv.STOP_REASON)} != ''"""

_TOOL_CALLS: Final = _Table(
    name=TOOL_CALLS_TABLE,
    definitions=(
        "TenantId LowCardinality(String)",
        "AgentName LowCardinality(String)",
        "Track LowCardinality(String)",
        "RunId String",
        "StepIndex UInt32",
        "TraceId String",
        "SpanId String",
        "ParentSpanId String",
        "Timestamp DateTime64(9) CODEC(Delta, ZSTD(1))",
        "DurationSeconds Float64",
        "ToolName LowCardinality(String)",
        "ToolCallId String",
        "ToolType LowCardinality(String)",
        "Disposition LowCardinality(String)",
        "Outcome LowCardinality(String)",
        "Risk LowCardinality(String)",
        "PolicyRule LowCardinality(String)",
        "IdempotencyKey String",
        "StatusCode LowCardinality(String)",
        "Arguments String CODEC(ZSTD(1))",
        "Result String CODEC(ZSTD(1))",
        "INDEX idx_run_id RunId TYPE bloom_filter(0.001) GRANULARITY 1",
    ),
    family="MergeTree",
    partition_by="toYYYYMM(Timestamp)",
    order_by="(TenantId, AgentName, ToolName, toDateTime(Timestamp), RunId)",
    ttl_column="Timestamp",
    ttl_days=lambda options: options.runs_ttl_days,
    shard_key=_SHARD_KEY,
)

_TOOL_CALLS_SELECT: Final = f"""SELECT
    {_attr(semconv.TENANT_ID)} AS TenantId,
    {_attr(semconv.GEN_AI_AGENT_NAME)} AS AgentName,
    {_attr(semconv.TRACK)} AS Track,
    {_attr(semconv.RUN_ID)} AS RunId,
    {_num("toUInt32", semconv.STEP_INDEX)} AS StepIndex,
    TraceId,
    SpanId,
    ParentSpanId,
    Timestamp,
    Duration / 1e9 AS DurationSeconds,
    {_attr(semconv.GEN_AI_TOOL_NAME)} AS ToolName,
    {_attr(semconv.GEN_AI_TOOL_CALL_ID)} AS ToolCallId,
    {_attr(semconv.GEN_AI_TOOL_TYPE)} AS ToolType,
    {_attr(semconv.TOOL_DISPOSITION)} AS Disposition,
    {_attr(semconv.TOOL_OUTCOME)} AS Outcome,
    {_attr(semconv.TOOL_RISK)} AS Risk,
    {_attr(semconv.POLICY_RULE)} AS PolicyRule,
    {_attr(semconv.TOOL_IDEMPOTENCY_KEY)} AS IdempotencyKey,
    StatusCode,
    {_attr(semconv.GEN_AI_TOOL_CALL_ARGUMENTS)} AS Arguments,
    {_attr(semconv.GEN_AI_TOOL_CALL_RESULT)} AS Result
FROM {{source}}
WHERE {_attr(semconv.GEN_AI_OPERATION_NAME)} = {quote_literal(semconv.OP_EXECUTE_TOOL)}"""


TABLE_DEFINITIONS: Final[dict[str, tuple[str, ...]]] = {
    table.name: table.definitions for table in (_OTEL_TRACES, _TRACE_ID_TS, _RUNS, _TOOL_CALLS)
}
"""Column and index definitions of each MergeTree table, by public name, as migrations 1-3 create them."""


def _v1_traces(options: SchemaOptions) -> list[str]:
    return [
        *_OTEL_TRACES.statements(options),
        *_TRACE_ID_TS.statements(options),
        _view(options, TRACE_ID_TS_VIEW, TRACE_ID_TS_TABLE, _TRACE_ID_TS_SELECT),
    ]


def _v2_runs(options: SchemaOptions) -> list[str]:
    return [*_RUNS.statements(options), _view(options, RUNS_VIEW, RUNS_TABLE, _RUNS_SELECT)]


def _v3_tool_calls(options: SchemaOptions) -> list[str]:
    return [*_TOOL_CALLS.statements(options), _view(options, TOOL_CALLS_VIEW, TOOL_CALLS_TABLE, _TOOL_CALLS_SELECT)]


def _v4_exporter_fidelity(options: SchemaOptions) -> list[str]:
    """The exporter's later additions: its ALIAS columns and Duration's T64 codec.

    Both are metadata changes (existing parts are recompressed by later merges), safe to re-run and
    harmless on an ``otel_traces`` another writer created. On a cluster the Distributed table gets
    the ALIAS columns too: it has its own column list.
    """
    add = ",\n    ".join(
        f"ADD COLUMN IF NOT EXISTS {name} {type_} ALIAS {expr}" for name, type_, expr in OTEL_TRACES_ALIASES
    )
    storage = options.qualified(options.storage_table(TRACES_TABLE))
    statements = [
        f"ALTER TABLE {storage}{_on_cluster(options)}\n    {add},\n    MODIFY COLUMN Duration {_DURATION_CODEC}"
    ]
    if options.replicated:
        statements.append(f"ALTER TABLE {options.qualified(TRACES_TABLE)}{_on_cluster(options)}\n    {add}")
    return statements


# Migration 5: runs and tool calls read from other GenAI dialects. The collector's assembler stamps
# the root span of such a run (``agentwatch.dialect``, the run id, stop reason and totals, and its
# counted tool calls as JSON in ``agentwatch.run.tools``), adding attributes and changing none, so
# the root keeps its own ``gen_ai.operation.name`` (or none). The runs view takes those roots too;
# the tool-call view takes only agentwatch's own tool spans (in a run, or the gateway's outside
# one; a foreign span that agentwatch's processor gave a run id is marked with the dialect and
# left out), and a third view turns a root's tool list into rows, so each tool call is one row.
_OWN_TOOL_CALL: Final = (
    f"({_attr(semconv.RUN_ID)} != '' OR {_attr(semconv.TOOL_DISPOSITION)} != '') AND {_attr(semconv.DIALECT)} = ''"
)
_FOREIGN_TOOLS_VIEW: Final = "agent_tool_calls_foreign_mv"
_TOOL_TUPLE: Final = "Array(Tuple(String, String, String, String, String, String, UInt64, UInt8))"
_FOREIGN_TOOL_CALLS_SELECT: Final = f"""SELECT
    {_attr(semconv.TENANT_ID)} AS TenantId,
    {_attr(semconv.GEN_AI_AGENT_NAME)} AS AgentName,
    {_attr(semconv.TRACK)} AS Track,
    {_attr(semconv.RUN_ID)} AS RunId,
    toUInt32(0) AS StepIndex,
    TraceId,
    tool.1 AS SpanId,
    tool.2 AS ParentSpanId,
    fromUnixTimestamp64Nano(toInt64OrZero(tool.6)) AS Timestamp,
    tool.7 / 1e9 AS DurationSeconds,
    tool.3 AS ToolName,
    tool.4 AS ToolCallId,
    tool.5 AS ToolType,
    {quote_literal(semconv.ToolDisposition.UNGOVERNED.value)} AS Disposition,
    if(tool.8 = 1, {quote_literal(semconv.ToolOutcome.ERROR.value)}, {quote_literal(semconv.ToolOutcome.OK.value)})
        AS Outcome,
    '' AS Risk,
    '' AS PolicyRule,
    '' AS IdempotencyKey,
    if(tool.8 = 1, 'Error', 'Unset') AS StatusCode,
    '' AS Arguments,
    '' AS Result
FROM {{source}}
ARRAY JOIN JSONExtract({_attr(semconv.RUN_TOOLS)}, {quote_literal(_TOOL_TUPLE)}) AS tool
WHERE {_attr(semconv.DIALECT)} != '' AND {_attr(semconv.RUN_TOOLS)} != ''"""


def _v5_foreign_runs(options: SchemaOptions) -> list[str]:
    runs_select, _, _ = _RUNS_SELECT.rpartition("\nWHERE ")
    for own, foreign in (
        (semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.RUN_INPUT_TOKENS),
        (semconv.GEN_AI_USAGE_OUTPUT_TOKENS, semconv.RUN_OUTPUT_TOKENS),
    ):
        # a foreign run's totals are the collector's sums (its root's own usage may be one call's)
        column = _num("toUInt64", own)
        runs_select = runs_select.replace(
            column, f"if({_attr(semconv.DIALECT)} != '', {_num('toUInt64', foreign)}, {column})"
        )
    runs_where = (
        f"WHERE ({_attr(semconv.GEN_AI_OPERATION_NAME)} = {quote_literal(semconv.OP_INVOKE_AGENT)}"
        f" OR {_attr(semconv.DIALECT)} != '')\n    AND {_attr(semconv.RUN_ID)} != ''"
        f"\n    AND {_attr(semconv.STOP_REASON)} != ''"
    )
    drop = "DROP VIEW IF EXISTS {name}" + _on_cluster(options)
    return [
        drop.format(name=options.qualified(RUNS_VIEW)),
        _view(options, RUNS_VIEW, RUNS_TABLE, f"{runs_select}\n{runs_where}"),
        drop.format(name=options.qualified(TOOL_CALLS_VIEW)),
        _view(options, TOOL_CALLS_VIEW, TOOL_CALLS_TABLE, f"{_TOOL_CALLS_SELECT}\n    AND {_OWN_TOOL_CALL}"),
        _view(options, _FOREIGN_TOOLS_VIEW, TOOL_CALLS_TABLE, _FOREIGN_TOOL_CALLS_SELECT),
    ]


# --- migrations -------------------------------------------------------------------------------

# Checksums are taken over a fixed rendering, so changing TTLs or the database name is not
# mistaken for an edited migration, while editing an applied migration's DDL is noticed.
_CHECKSUM_OPTIONS: Final = (SchemaOptions(database="db"), SchemaOptions(database="db", cluster="cluster"))


@dataclass(frozen=True)
class Migration:
    """One schema version: DDL statements, each safe to re-run (``IF NOT EXISTS``)."""

    version: int
    description: str
    statements: Callable[[SchemaOptions], list[str]]

    @property
    def checksum(self) -> str:
        """SHA-256 of the migration's DDL, rendered single-node and clustered with fixed options."""
        text = "\n;\n".join(stmt for options in _CHECKSUM_OPTIONS for stmt in self.statements(options))
        return hashlib.sha256(text.encode()).hexdigest()


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "otel_traces, the trace-id time lookup and its view", _v1_traces),
    Migration(2, "agent_runs and its view", _v2_runs),
    Migration(3, "agent_tool_calls and its view", _v3_tool_calls),
    Migration(4, "otel_traces: the exporter's ALIAS columns and Duration codec", _v4_exporter_fidelity),
    Migration(5, "runs and tool calls read from other GenAI dialects", _v5_foreign_runs),
    Migration(6, "control plane: agent_killswitch, agent_approvals, agent_audit and its denials view", v6_control),
)
"""Every schema version in order. Append new versions; never edit an applied one."""

LATEST_VERSION: Final = MIGRATIONS[-1].version


def database_ddl(options: SchemaOptions) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {quote_identifier(options.database)}{_on_cluster(options)}"


def migrations_table_ddl(options: SchemaOptions) -> str:
    if options.replicated:
        # one bookkeeping table for the whole cluster: a shard-less Keeper path, and a replica
        # name made unique across shards, so any node answers "which versions are applied"
        engine = (
            "ReplicatedReplacingMergeTree("
            f"{quote_literal(f'/clickhouse/tables/{{database}}/{MIGRATIONS_TABLE}')}, "
            f"{quote_literal('{shard}-{replica}')}, applied_at)"
        )
    else:
        engine = "ReplacingMergeTree(applied_at)"
    return (
        f"CREATE TABLE IF NOT EXISTS {options.qualified(MIGRATIONS_TABLE)}{_on_cluster(options)}\n(\n"
        "    version UInt32,\n    description String,\n    checksum String,\n"
        "    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)\n)\n"
        f"ENGINE = {engine}\nORDER BY version"
    )


def render(options: SchemaOptions | None = None) -> list[str]:
    """All DDL of the latest schema, in order (``agentwatch schema --print``)."""
    options = options or SchemaOptions()
    statements = [database_ddl(options), migrations_table_ddl(options)]
    for migration in MIGRATIONS:
        statements.extend(migration.statements(options))
    return statements


__all__ = [
    "JSON_ROW_KEYS",
    "LATEST_VERSION",
    "MIGRATIONS",
    "MIGRATIONS_TABLE",
    "OTEL_TRACES_ALIASES",
    "OTEL_TRACES_COLUMNS",
    "RUNS_TABLE",
    "RUNS_VIEW",
    "TABLE_DEFINITIONS",
    "TOOL_CALLS_TABLE",
    "TOOL_CALLS_VIEW",
    "TRACES_SORT_KEY",
    "TRACES_TABLE",
    "TRACE_ID_TS_TABLE",
    "TRACE_ID_TS_VIEW",
    "Migration",
    "SchemaOptions",
    "database_ddl",
    "migrations_table_ddl",
    "quote_identifier",
    "quote_literal",
    "render",
]
