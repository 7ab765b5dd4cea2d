"""The ClickHouse schema against a real engine (chDB): exporter-exact otel_traces, views, dedup, TTL, cluster DDL."""

from __future__ import annotations

import re

import pytest
from _chrows import (
    count,
    counts,
    json_rows,
    new_span_id,
    new_token,
    new_trace_id,
    now_ns,
    run_attributes,
    span_row,
    timestamp,
    tool_attributes,
)

from agentwatch.collectors.store import schema
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.collectors.store.schema import MIGRATIONS, SchemaOptions
from agentwatch.instrumentation import semconv

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

# The OpenTelemetry Collector ClickHouse exporter's otel_traces, as ClickHouse reports it
# (Nested columns flattened to arrays), copied from the exporter's CREATE TABLE
# (internal/sqltemplates/traces_table.sql as of PR #50878; EXPORTER_TRACES_DDL in
# test_schema_check.py is the statement itself, and a test there compares the two tables).
EXPORTER_COLUMNS = [
    ("Timestamp", "DateTime64(9)", "CODEC(Delta(8), ZSTD(1))"),
    ("TraceId", "String", "CODEC(ZSTD(1))"),
    ("SpanId", "String", "CODEC(ZSTD(1))"),
    ("ParentSpanId", "String", "CODEC(ZSTD(1))"),
    ("TraceState", "String", "CODEC(ZSTD(1))"),
    ("SpanName", "LowCardinality(String)", "CODEC(ZSTD(1))"),
    ("SpanKind", "LowCardinality(String)", "CODEC(ZSTD(1))"),
    ("ServiceName", "LowCardinality(String)", "CODEC(ZSTD(1))"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)", "CODEC(ZSTD(1))"),
    ("ScopeName", "String", "CODEC(ZSTD(1))"),
    ("ScopeVersion", "String", "CODEC(ZSTD(1))"),
    ("SpanAttributes", "Map(LowCardinality(String), String)", "CODEC(ZSTD(1))"),
    ("Duration", "UInt64", "CODEC(T64, ZSTD(1))"),
    ("StatusCode", "LowCardinality(String)", "CODEC(ZSTD(1))"),
    ("StatusMessage", "String", "CODEC(ZSTD(1))"),
    ("Events.Timestamp", "Array(DateTime64(9))", "CODEC(ZSTD(1))"),
    ("Events.Name", "Array(LowCardinality(String))", "CODEC(ZSTD(1))"),
    ("Events.Attributes", "Array(Map(LowCardinality(String), String))", "CODEC(ZSTD(1))"),
    ("Links.TraceId", "Array(String)", "CODEC(ZSTD(1))"),
    ("Links.SpanId", "Array(String)", "CODEC(ZSTD(1))"),
    ("Links.TraceState", "Array(String)", "CODEC(ZSTD(1))"),
    ("Links.Attributes", "Array(Map(LowCardinality(String), String))", "CODEC(ZSTD(1))"),
]

_ITEMS = "arrayMap(kv -> concat(kv.1, '=', kv.2), CAST({}, 'Array(Tuple(String, String))'))"
EXPORTER_ALIASES = [
    ("ResourceAttributeItems", "Array(String)", _ITEMS.format("ResourceAttributes")),
    ("SpanAttributeItems", "Array(String)", _ITEMS.format("SpanAttributes")),
]

EXPORTER_INDEXES = [
    ("idx_trace_id", "TraceId", "bloom_filter(0.001)", 1),
    ("idx_res_attr_key", "mapKeys(ResourceAttributes)", "bloom_filter(0.01)", 1),
    ("idx_res_attr_value", "mapValues(ResourceAttributes)", "bloom_filter(0.01)", 1),
    ("idx_span_attr_key", "mapKeys(SpanAttributes)", "bloom_filter(0.01)", 1),
    ("idx_span_attr_value", "mapValues(SpanAttributes)", "bloom_filter(0.01)", 1),
    ("idx_duration", "Duration", "minmax", 1),
]

OWN_MERGE_TREES = ("otel_traces", "otel_traces_trace_id_ts", "agent_runs", "agent_tool_calls")


def _table(store: ClickHouseStore, name: str) -> dict[str, object]:
    rows = store.query(
        "SELECT engine, engine_full, sorting_key, partition_key FROM system.tables "
        "WHERE database = currentDatabase() AND name = {name:String}",
        {"name": name},
    )
    assert len(rows) == 1, f"table {name} missing"
    return rows[0]


def _insert(store: ClickHouseStore, rows: list[dict[str, object]], token: str | None = None) -> str:
    token = token or new_token()
    store.insert_json_rows("otel_traces", json_rows(rows), dedup_token=token)
    return token


# --- otel_traces is the exporter's table -------------------------------------------------------


def test_otel_traces_columns_are_exactly_the_exporters(clickhouse_store: ClickHouseStore) -> None:
    rows = clickhouse_store.query(
        "SELECT name, type, compression_codec, default_kind, default_expression FROM system.columns "
        "WHERE database = currentDatabase() AND table = 'otel_traces' ORDER BY position"
    )
    stored = [r for r in rows if r["default_kind"] != "ALIAS"]
    assert [(r["name"], r["type"], r["compression_codec"]) for r in stored] == EXPORTER_COLUMNS
    aliases = [(r["name"], r["type"], r["default_expression"]) for r in rows if r["default_kind"] == "ALIAS"]
    assert aliases == EXPORTER_ALIASES
    assert [name for name, _, _ in schema.OTEL_TRACES_ALIASES] == [name for name, _, _ in EXPORTER_ALIASES]
    assert [r["name"] for r in rows] == [name for name, _, _ in EXPORTER_COLUMNS + EXPORTER_ALIASES]  # their order
    assert list(schema.JSON_ROW_KEYS) == [name for name, _, _ in EXPORTER_COLUMNS]
    top_level = [(name, type_) for name, type_ in schema.OTEL_TRACES_COLUMNS]
    assert top_level[:15] == [(name, type_) for name, type_, _ in EXPORTER_COLUMNS[:15]]
    assert top_level[15:] == [
        (
            "Events",
            "Nested(Timestamp DateTime64(9), Name LowCardinality(String), "
            "Attributes Map(LowCardinality(String), String))",
        ),
        (
            "Links",
            "Nested(TraceId String, SpanId String, TraceState String, Attributes Map(LowCardinality(String), String))",
        ),
    ]


def test_otel_traces_indexes_sort_key_ttl_and_settings(clickhouse_store: ClickHouseStore) -> None:
    indexes = clickhouse_store.query(
        "SELECT name, expr, type_full, granularity FROM system.data_skipping_indices "
        "WHERE database = currentDatabase() AND table = 'otel_traces'"
    )
    assert sorted((r["name"], r["expr"], r["type_full"], r["granularity"]) for r in indexes) == sorted(EXPORTER_INDEXES)
    table = _table(clickhouse_store, "otel_traces")
    assert table["engine"] == "MergeTree"
    assert table["partition_key"] == "toDate(Timestamp)"
    assert (
        table["sorting_key"] == "SpanAttributes['agentwatch.tenant.id'], ServiceName, SpanName, toDateTime(Timestamp)"
    )
    engine_full = str(table["engine_full"])
    assert "TTL toDateTime(Timestamp) + toIntervalDay(30)" in engine_full
    assert "ttl_only_drop_parts = 1" in engine_full
    assert "index_granularity = 8192" in engine_full


_LC = "LowCardinality(String)"
AGENT_RUNS_COLUMNS = [
    *[(name, _LC) for name in ("TenantId", "AgentName", "AgentVersion", "Track", "Runtime")],
    *[(name, "String") for name in ("RunId", "ParentRunId", "TraceId", "SpanId", "ConversationId")],
    ("ServiceName", _LC),
    ("StartTime", "DateTime64(9)"),
    ("EndTime", "DateTime64(9)"),
    ("DurationSeconds", "Float64"),
    ("StopReason", _LC),
    ("BudgetExhausted", _LC),
    *[(name, "UInt32") for name in ("Steps", "ToolCalls", "LlmCalls")],
    ("InputTokens", "UInt64"),
    ("OutputTokens", "UInt64"),
    ("CostUsd", "Float64"),
    ("UnpricedLlmCalls", "UInt32"),
    ("StatusCode", _LC),
    ("Input", "String"),
    ("Output", "String"),
]
AGENT_TOOL_CALLS_COLUMNS = [
    *[(name, _LC) for name in ("TenantId", "AgentName", "Track")],
    ("RunId", "String"),
    ("StepIndex", "UInt32"),
    *[(name, "String") for name in ("TraceId", "SpanId", "ParentSpanId")],
    ("Timestamp", "DateTime64(9)"),
    ("DurationSeconds", "Float64"),
    ("ToolName", _LC),
    ("ToolCallId", "String"),
    *[(name, _LC) for name in ("ToolType", "Disposition", "Outcome", "Risk", "PolicyRule")],
    ("IdempotencyKey", "String"),
    ("StatusCode", _LC),
    ("Arguments", "String"),
    ("Result", "String"),
]


AGENT_TABLES = {
    "agent_runs": (
        AGENT_RUNS_COLUMNS,
        "TenantId, AgentName, Track, toDateTime(StartTime), RunId",
        "toYYYYMM(StartTime)",
        "ReplacingMergeTree",
    ),
    "agent_tool_calls": (
        AGENT_TOOL_CALLS_COLUMNS,
        "TenantId, AgentName, ToolName, toDateTime(Timestamp), RunId",
        "toYYYYMM(Timestamp)",
        "MergeTree",
    ),
}


@pytest.mark.parametrize("table", sorted(AGENT_TABLES))
def test_agent_tables_match_the_contract(clickhouse_store: ClickHouseStore, table: str) -> None:
    columns, sorting_key, partition_key, engine = AGENT_TABLES[table]
    rows = clickhouse_store.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
        "ORDER BY position",
        {"t": table},
    )
    assert [(r["name"], r["type"]) for r in rows] == columns
    info = _table(clickhouse_store, table)
    assert (info["sorting_key"], info["partition_key"], info["engine"]) == (sorting_key, partition_key, engine)


def test_every_own_table_keeps_a_dedup_window(clickhouse_store: ClickHouseStore) -> None:
    for name in OWN_MERGE_TREES:
        assert "non_replicated_deduplication_window = 10000" in str(_table(clickhouse_store, name)["engine_full"]), name


def test_trace_id_lookup_table_and_view(clickhouse_store: ClickHouseStore) -> None:
    columns = clickhouse_store.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() "
        "AND table = 'otel_traces_trace_id_ts' ORDER BY position"
    )
    assert [(c["name"], c["type"]) for c in columns] == [
        ("TraceId", "String"),
        ("Start", "SimpleAggregateFunction(min, DateTime)"),
        ("End", "SimpleAggregateFunction(max, DateTime)"),
    ]
    table = _table(clickhouse_store, "otel_traces_trace_id_ts")
    assert table["engine"] == "AggregatingMergeTree"
    assert table["partition_key"] == "toStartOfWeek(Start)"
    assert table["sorting_key"] == "TraceId"
    assert "TTL toDateTime(Start) + toIntervalDay(30)" in str(table["engine_full"])

    trace_id = new_trace_id()
    start = now_ns()
    _insert(
        clickhouse_store,
        [
            span_row(trace_id=trace_id, start_ns=start),
            span_row(trace_id=trace_id, start_ns=start + 3_000_000_000),
            span_row(trace_id=""),  # no trace id: not indexed
        ],
    )
    rows = clickhouse_store.query(
        "SELECT TraceId, toUnixTimestamp(min(Start)) AS s, toUnixTimestamp(max(End)) AS e "
        "FROM otel_traces_trace_id_ts GROUP BY TraceId"
    )
    assert rows == [{"TraceId": trace_id, "s": start // 10**9, "e": start // 10**9 + 3}]


# --- migrations -------------------------------------------------------------------------------


def test_apply_is_versioned_and_idempotent(clickhouse_engine: ClickHouseStore, clickhouse_database: str) -> None:
    options = SchemaOptions(database=clickhouse_database)
    assert [m.version for m in clickhouse_engine.pending_migrations(options)] == [1, 2, 3, 4, 5, 6]
    assert clickhouse_engine.ensure_schema(options) == [1, 2, 3, 4, 5, 6]
    assert clickhouse_engine.ensure_schema(options) == []
    assert clickhouse_engine.pending_migrations(options) == []
    recorded = clickhouse_engine.query(
        f"SELECT version, description, checksum FROM {clickhouse_database}.agentwatch_schema_migrations "
        "ORDER BY version"
    )
    assert recorded == [
        {"version": m.version, "description": m.description, "checksum": m.checksum} for m in MIGRATIONS
    ]

    # a database left at version 2 gets exactly version 3, and only that
    clickhouse_engine.command(f"DROP TABLE {clickhouse_database}.agent_tool_calls_foreign_mv")
    clickhouse_engine.command(f"DROP TABLE {clickhouse_database}.agent_tool_calls_mv")
    clickhouse_engine.command(f"DROP TABLE {clickhouse_database}.agent_tool_calls")
    clickhouse_engine.command(
        f"DELETE FROM {clickhouse_database}.agentwatch_schema_migrations WHERE version = 3 SETTINGS mutations_sync = 1"
    )
    assert [m.version for m in clickhouse_engine.pending_migrations(options)] == [3]
    assert clickhouse_engine.ensure_schema(options) == [3]
    tables = clickhouse_engine.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND name LIKE 'agent_tool_calls%' ORDER BY name",
        {"db": clickhouse_database},
    )
    assert [t["name"] for t in tables] == ["agent_tool_calls", "agent_tool_calls_mv"]


def test_apply_creates_a_missing_database(clickhouse_engine: ClickHouseStore) -> None:
    options = SchemaOptions(database=f"t_missing_{new_span_id()}")
    try:
        assert clickhouse_engine.ensure_schema(options) == [1, 2, 3, 4, 5, 6]
        assert count(clickhouse_engine, f"{options.database}.otel_traces") == 0
    finally:
        clickhouse_engine.command(f"DROP DATABASE IF EXISTS {options.database} SYNC")


def test_checksums_ignore_options_but_not_ddl() -> None:
    checksums = [m.checksum for m in MIGRATIONS]
    assert len(set(checksums)) == len(checksums)
    assert all(re.fullmatch(r"[0-9a-f]{64}", c) for c in checksums)
    edited = schema.Migration(1, "x", lambda options: [*MIGRATIONS[0].statements(options), "SELECT 1"])
    assert edited.checksum != MIGRATIONS[0].checksum
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


def test_ttl_options(clickhouse_engine: ClickHouseStore, clickhouse_database: str) -> None:
    options = SchemaOptions(database=clickhouse_database, traces_ttl_days=7, runs_ttl_days=0)
    clickhouse_engine.ensure_schema(options)
    tables = {
        r["name"]: str(r["engine_full"])
        for r in clickhouse_engine.query(
            "SELECT name, engine_full FROM system.tables WHERE database = {db:String}", {"db": clickhouse_database}
        )
    }
    assert "TTL toDateTime(Timestamp) + toIntervalDay(7)" in tables["otel_traces"]
    assert "TTL toDateTime(Start) + toIntervalDay(7)" in tables["otel_traces_trace_id_ts"]
    for name in ("agent_runs", "agent_tool_calls"):
        assert "TTL" not in tables[name]
        assert "ttl_only_drop_parts" not in tables[name]
        assert "non_replicated_deduplication_window = 10000" in tables[name]
    default_ddl = "\n".join(schema.render(SchemaOptions()))
    assert "TTL toDateTime(StartTime) + toIntervalDay(400)" in default_ddl
    assert "TTL toDateTime(Timestamp) + toIntervalDay(400)" in default_ddl  # agent_tool_calls


@pytest.mark.parametrize("database", ["", "a-b", "x;DROP", "1abc", "a b"])
def test_schema_options_refuse_unsafe_names(database: str) -> None:
    with pytest.raises(ValueError, match="database"):
        SchemaOptions(database=database)


def test_schema_options_refuse_negative_ttl() -> None:
    with pytest.raises(ValueError, match="traces_ttl_days"):
        SchemaOptions(traces_ttl_days=-1)
    with pytest.raises(ValueError, match="cluster"):
        SchemaOptions(cluster="a'b")


# --- the views --------------------------------------------------------------------------------


def test_agent_spans_fill_agent_runs_and_tool_calls(clickhouse_store: ClickHouseStore) -> None:
    trace_id, run_span, tool_span = new_trace_id(), new_span_id(), new_span_id()
    start = now_ns()
    run = span_row(
        "invoke_agent support",
        trace_id=trace_id,
        span_id=run_span,
        start_ns=start,
        duration_ns=2_500_000_123,
        service="support-bot",
        status="Ok",
        attributes=run_attributes(
            "run-1",
            tenant="acme",
            track="canary",
            stop_reason="max_steps",
            extra={
                semconv.GEN_AI_AGENT_VERSION: "1.4.2",
                semconv.RUNTIME: "openai-agents",
                semconv.GEN_AI_CONVERSATION_ID: "conv-9",
                semconv.RUN_PARENT_ID: "run-0",
                semconv.RUN_STEPS: "5",
                semconv.RUN_TOOL_CALLS: "3",
                semconv.RUN_LLM_CALLS: "6",
                semconv.RUN_COST_USD: "1e-05",
                semconv.RUN_UNPRICED_LLM_CALLS: "1",
                semconv.GEN_AI_USAGE_INPUT_TOKENS: "12345678901",
                semconv.GEN_AI_USAGE_OUTPUT_TOKENS: "456",
                semconv.BUDGET_MAX_STEPS: "5",
                semconv.BUDGET_EXHAUSTED: "steps",
                semconv.RUN_INPUT: "hello",
                semconv.RUN_OUTPUT: "bye",
            },
        ),
        events=[
            (start + 2_000_000_000, semconv.EVENT_BUDGET_EXHAUSTED, {"budget": "steps", "limit": "5", "used": "5"})
        ],
    )
    tool = span_row(
        "execute_tool kb.search",
        trace_id=trace_id,
        span_id=tool_span,
        parent_span_id=run_span,
        start_ns=start + 1_000_000_000,
        duration_ns=250_000_000,
        status="Error",
        attributes=tool_attributes(
            "run-1",
            "kb.search",
            track="canary",
            disposition="denied",
            outcome="blocked",
            extra={
                semconv.STEP_INDEX: "2",
                semconv.GEN_AI_TOOL_CALL_ID: "call-7",
                semconv.GEN_AI_TOOL_TYPE: "function",
                semconv.TOOL_RISK: "write",
                semconv.POLICY_RULE: "deny:kb.*",
                semconv.TOOL_IDEMPOTENCY_KEY: "idem-1",
                semconv.GEN_AI_TOOL_CALL_ARGUMENTS: '{"q":"x"}',
                semconv.GEN_AI_TOOL_CALL_RESULT: "[REDACTED]",
            },
        ),
    )
    llm = span_row(
        "chat gpt-4o", trace_id=trace_id, parent_span_id=run_span, attributes={"gen_ai.operation.name": "chat"}
    )
    _insert(clickhouse_store, [run, tool, llm])

    runs = clickhouse_store.query(
        "SELECT * EXCEPT (StartTime, EndTime), toUnixTimestamp64Nano(StartTime) AS s, "
        "toUnixTimestamp64Nano(EndTime) AS e FROM agent_runs"
    )
    assert len(runs) == 1
    row = runs[0]
    assert (row.pop("s"), row.pop("e")) == (start, start + 2_500_000_123)
    assert row == {
        "TenantId": "acme",
        "AgentName": "support",
        "AgentVersion": "1.4.2",
        "Track": "canary",
        "Runtime": "openai-agents",
        "RunId": "run-1",
        "ParentRunId": "run-0",
        "TraceId": trace_id,
        "SpanId": run_span,
        "ConversationId": "conv-9",
        "ServiceName": "support-bot",
        "DurationSeconds": pytest.approx(2.500000123),
        "StopReason": "max_steps",
        "BudgetExhausted": "steps",
        "Steps": 5,
        "ToolCalls": 3,
        "LlmCalls": 6,
        "InputTokens": 12345678901,
        "OutputTokens": 456,
        "CostUsd": pytest.approx(1e-05),
        "UnpricedLlmCalls": 1,
        "StatusCode": "Ok",
        "Input": "hello",
        "Output": "bye",
    }

    calls = clickhouse_store.query(
        "SELECT * EXCEPT Timestamp, toUnixTimestamp64Nano(Timestamp) AS t FROM agent_tool_calls"
    )
    assert len(calls) == 1
    call = calls[0]
    assert call.pop("t") == start + 1_000_000_000
    assert call == {
        "TenantId": "acme",
        "AgentName": "support",
        "Track": "canary",
        "RunId": "run-1",
        "StepIndex": 2,
        "TraceId": trace_id,
        "SpanId": tool_span,
        "ParentSpanId": run_span,
        "DurationSeconds": pytest.approx(0.25),
        "ToolName": "kb.search",
        "ToolCallId": "call-7",
        "ToolType": "function",
        "Disposition": "denied",
        "Outcome": "blocked",
        "Risk": "write",
        "PolicyRule": "deny:kb.*",
        "IdempotencyKey": "idem-1",
        "StatusCode": "Error",
        "Arguments": '{"q":"x"}',
        "Result": "[REDACTED]",
    }
    spans = clickhouse_store.query(
        "SELECT toUnixTimestamp64Nano(Events.Timestamp[1]) AS t, Events.Attributes[1]['budget'] AS b FROM otel_traces "
        "WHERE SpanId = {span:String}",
        {"span": run_span},
    )
    assert spans == [{"t": start + 2_000_000_000, "b": "steps"}]


def test_malformed_numbers_from_foreign_writers_read_as_zero(clickhouse_store: ClickHouseStore) -> None:
    extra = {semconv.RUN_STEPS: "many", semconv.RUN_COST_USD: "", semconv.GEN_AI_USAGE_INPUT_TOKENS: "-3"}
    _insert(clickhouse_store, [span_row(attributes=run_attributes("run-x", extra=extra))])
    rows = clickhouse_store.query("SELECT Steps, CostUsd, InputTokens, TenantId FROM agent_runs")
    assert rows == [{"Steps": 0, "CostUsd": 0.0, "InputTokens": 0, "TenantId": "acme"}]


def test_plain_otel_spans_land_only_in_otel_traces(clickhouse_store: ClickHouseStore) -> None:
    trace_id = new_trace_id()
    plain = [
        span_row("GET /cart", trace_id=trace_id, kind="Server", attributes={"http.request.method": "GET"}),
        span_row("SELECT", trace_id=trace_id, kind="Client", attributes={"db.system": "postgresql"}),
        # an agent span of a foreign instrumentation without run id or stop reason is not a run
        span_row("invoke_agent x", trace_id=trace_id, attributes={semconv.GEN_AI_OPERATION_NAME: "invoke_agent"}),
        span_row("unfinished", trace_id=trace_id, attributes=run_attributes("run-y", stop_reason="")),
    ]
    _insert(clickhouse_store, plain)
    assert counts(clickhouse_store) == {
        "otel_traces": 4,
        "otel_traces_trace_id_ts": 1,
        "agent_runs": 0,
        "agent_tool_calls": 0,
    }
    assert count(clickhouse_store, "otel_traces", "SpanAttributes['agentwatch.tenant.id'] = ''") == 3


def test_same_dedup_token_stores_once_everywhere(clickhouse_store: ClickHouseStore) -> None:
    trace_id = new_trace_id()
    rows = [
        span_row(trace_id=trace_id, attributes=run_attributes("run-d")),
        span_row(trace_id=trace_id, attributes=tool_attributes("run-d", "kb.search")),
        # two days back: the batch spans two partitions, each deduplicated on its own
        span_row(start_ns=now_ns(-2 * 86400), attributes=tool_attributes("run-e", "kb.fetch")),
    ]
    token = _insert(clickhouse_store, rows)
    once = counts(clickhouse_store)
    assert once == {"otel_traces": 3, "otel_traces_trace_id_ts": 2, "agent_runs": 1, "agent_tool_calls": 2}
    _insert(clickhouse_store, rows, token)
    _insert(clickhouse_store, rows, token)
    assert counts(clickhouse_store) == once
    _insert(clickhouse_store, rows)  # a new token is new data
    assert counts(clickhouse_store) == {k: 2 * v for k, v in once.items()}


def test_rows_older_than_the_ttl_are_dropped_at_insert(clickhouse_store: ClickHouseStore) -> None:
    old = span_row(start_ns=now_ns(-40 * 86400), attributes=run_attributes("run-old"))
    _insert(clickhouse_store, [old, span_row()])
    assert count(clickhouse_store, "otel_traces") == 1
    assert count(clickhouse_store, "agent_runs") == 1  # runs keep 400 days


def test_timestamps_keep_nanoseconds(clickhouse_store: ClickHouseStore) -> None:
    start = now_ns() // 10**9 * 10**9 + 1
    _insert(clickhouse_store, [span_row(start_ns=start)])
    rows = clickhouse_store.query("SELECT toUnixTimestamp64Nano(Timestamp) AS ns FROM otel_traces")
    assert rows == [{"ns": start}]
    assert timestamp(start).endswith(".000000001")


# --- cluster variant --------------------------------------------------------------------------


def test_cluster_ddl_parses_and_is_replicated_and_distributed(clickhouse_engine: ClickHouseStore) -> None:
    options = SchemaOptions(database="agentwatch", cluster="prod")
    statements = schema.render(options)
    for statement in statements:
        # formatQuery parses with the engine's own parser: a syntax error raises
        formatted = clickhouse_engine.query("SELECT formatQuery({q:String}) AS f", {"q": statement})[0]["f"]
        assert "ON CLUSTER prod" in str(formatted), statement
    text = "\n".join(statements)
    for name, engine in (
        ("otel_traces", "ReplicatedMergeTree"),
        ("otel_traces_trace_id_ts", "ReplicatedAggregatingMergeTree"),
        ("agent_runs", "ReplicatedReplacingMergeTree"),
        ("agent_tool_calls", "ReplicatedMergeTree"),
    ):
        assert f"CREATE TABLE IF NOT EXISTS `agentwatch`.`{name}_local` ON CLUSTER `prod`" in text
        assert f"ENGINE = {engine}('/clickhouse/tables/{{shard}}/{{database}}/{name}_local', '{{replica}}'" in text
        assert (
            f"CREATE TABLE IF NOT EXISTS `agentwatch`.`{name}` ON CLUSTER `prod`\nAS `agentwatch`.`{name}_local`\n"
            f"ENGINE = Distributed('prod', 'agentwatch', '{name}_local', cityHash64(TraceId))"
        ) in text
    for view, target in (
        ("otel_traces_trace_id_ts_mv", "otel_traces_trace_id_ts"),
        ("agent_runs_mv", "agent_runs"),
        ("agent_tool_calls_mv", "agent_tool_calls"),
        ("agent_tool_calls_foreign_mv", "agent_tool_calls"),
    ):
        assert f"`{view}` ON CLUSTER `prod`\nTO `agentwatch`.`{target}_local`\n" in text
    # four views, two of them made again by migration 5 (runs and tool calls of other dialects), and the
    # audit trail's denials view of migration 6
    assert text.count("FROM `agentwatch`.`otel_traces_local`") == 7
    assert text.count("DROP VIEW IF EXISTS `agentwatch`.`agent_runs_mv` ON CLUSTER `prod`") == 1
    assert "non_replicated_deduplication_window" not in text
    assert text.count("replicated_deduplication_window = 10000") == 7  # and the 3 control-plane tables
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{database}/agentwatch_schema_migrations'" in text
    # the control plane: every version of a key on one shard (the key is the sharding key)
    for name, engine, key in (
        ("agent_killswitch", "ReplicatedReplacingMergeTree", "cityHash64(Scope)"),
        ("agent_approvals", "ReplicatedReplacingMergeTree", "cityHash64(ApprovalId)"),
        ("agent_audit", "ReplicatedMergeTree", "cityHash64(TenantId)"),
    ):
        assert f"ENGINE = {engine}('/clickhouse/tables/{{shard}}/{{database}}/{name}_local', '{{replica}}'" in text
        assert f"ENGINE = Distributed('prod', 'agentwatch', '{name}_local', {key})" in text
    assert "`agent_audit_denials_mv` ON CLUSTER `prod`\nTO `agentwatch`.`agent_audit_local`\n" in text


def test_single_node_render_matches_what_apply_runs() -> None:
    statements = schema.render(SchemaOptions(database="db"))
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS `db`"
    assert "ON CLUSTER" not in "\n".join(statements)
    assert "Distributed" not in "\n".join(statements)
    assert len(statements) == 2 + sum(len(m.statements(SchemaOptions(database="db"))) for m in MIGRATIONS)
