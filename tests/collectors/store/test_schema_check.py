"""``agentwatch schema --check`` and the start-up warning: a store that differs from ours says so."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from _chrows import json_rows, new_token, span_row

from agentwatch.collectors.cli.main import main
from agentwatch.collectors.metrics import CollectorMetrics
from agentwatch.collectors.store import schema
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.collectors.store.schema import SchemaOptions
from agentwatch.collectors.store.schema_check import check, warn_at_start
from agentwatch.collectors.store.spool import Spool
from agentwatch.collectors.store.writer import SpoolWriter

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

# The OpenTelemetry Collector ClickHouse exporter's traces table, verbatim from its
# internal/sqltemplates/traces_table.sql (as of PR #50878), rendered the way the exporter renders
# it for ClickHouse < 26.2 (bloom filters), ENGINE = MergeTree() and `ttl: 72h`.
EXPORTER_TRACES_DDL = """CREATE TABLE IF NOT EXISTS `{database}`.`otel_traces`  (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(ResourceAttributes, 'Array(Tuple(String, String))')),
    SpanAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(SpanAttributes, 'Array(Tuple(String, String))')),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
TTL toDateTime(Timestamp) + toIntervalDay(3)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""  # noqa: E501


def _columns(store: ClickHouseStore, database: str) -> list[tuple[object, ...]]:
    rows = store.query(
        "SELECT name, type, compression_codec, default_kind, default_expression FROM system.columns "
        "WHERE database = {db:String} AND table = 'otel_traces' ORDER BY position",
        {"db": database},
    )
    return [tuple(row.values()) for row in rows]


def _indexes(store: ClickHouseStore, database: str) -> list[tuple[object, ...]]:
    rows = store.query(
        "SELECT name, expr, type_full, granularity FROM system.data_skipping_indices "
        "WHERE database = {db:String} AND table = 'otel_traces' ORDER BY name",
        {"db": database},
    )
    return [tuple(row.values()) for row in rows]


@pytest.fixture
def exporter_database(clickhouse_engine: ClickHouseStore, clickhouse_database: str) -> str:
    """A database whose otel_traces the exporter created (as otelcol-contrib would, before us)."""
    clickhouse_engine.command(EXPORTER_TRACES_DDL.format(database=clickhouse_database))
    return clickhouse_database


def test_our_otel_traces_has_the_columns_and_indexes_the_exporters_ddl_creates(
    clickhouse_engine: ClickHouseStore, exporter_database: str
) -> None:
    ours = f"{exporter_database}_ours"
    try:
        clickhouse_engine.ensure_schema(SchemaOptions(database=ours))
        assert _columns(clickhouse_engine, ours) == _columns(clickhouse_engine, exporter_database)
        assert _indexes(clickhouse_engine, ours) == _indexes(clickhouse_engine, exporter_database)
    finally:
        clickhouse_engine.command(f"DROP DATABASE IF EXISTS {ours} SYNC")


def test_an_exporter_made_otel_traces_is_reported_by_sort_key_and_ttl(
    clickhouse_engine: ClickHouseStore, exporter_database: str
) -> None:
    options = SchemaOptions(database=exporter_database)
    findings = check(clickhouse_engine, options)
    assert [f.kind for f in findings] == ["pending", "sort_key", "ttl"]  # every column is there
    assert "migrations pending: 1 (" in str(findings[0])
    assert "(ServiceName, SpanName, toDateTime(Timestamp), Timestamp)" in str(findings[1])
    assert "otelcol-contrib" in str(findings[1])
    assert schema.TRACES_SORT_KEY in str(findings[1])
    assert "toIntervalDay(3), expected toDateTime(Timestamp) + toIntervalDay(30)" in str(findings[2])

    # applying the schema keeps the foreign key (ClickHouse cannot change it) and says so
    assert clickhouse_engine.ensure_schema(options) == [1, 2, 3, 4, 5, 6]
    assert [f.kind for f in check(clickhouse_engine, options)] == ["sort_key", "ttl"]
    # the TTL can follow the setting; the sort key stays reported
    clickhouse_engine.command(
        f"ALTER TABLE {exporter_database}.otel_traces MODIFY TTL toDateTime(Timestamp) + toIntervalDay(3)"
    )
    assert [f.kind for f in check(clickhouse_engine, SchemaOptions(database=exporter_database, traces_ttl_days=3))] == [
        "sort_key"
    ]
    # and the collector's rows still go in
    payload = json_rows([span_row()])
    clickhouse_engine.insert_json_rows(f"{exporter_database}.otel_traces", payload, dedup_token=new_token())
    assert str(clickhouse_engine.command(f"SELECT count() FROM {exporter_database}.otel_traces")) == "1"


def test_a_fresh_schema_checks_clean(clickhouse_engine: ClickHouseStore, clickhouse_database: str) -> None:
    options = SchemaOptions(database=clickhouse_database)
    assert [f.kind for f in check(clickhouse_engine, options)] == ["pending"]
    clickhouse_engine.ensure_schema(options)
    assert check(clickhouse_engine, options) == []
    ttl = check(clickhouse_engine, SchemaOptions(database=clickhouse_database, traces_ttl_days=0))
    assert [f.kind for f in ttl] == ["ttl"]
    assert "expected none" in str(ttl[0])
    assert "REMOVE TTL" in str(ttl[0])


def test_a_store_at_version_3_reports_then_gets_migration_4(
    clickhouse_engine: ClickHouseStore, clickhouse_database: str
) -> None:
    options = SchemaOptions(database=clickhouse_database)
    clickhouse_engine.ensure_schema(options)
    # as an earlier version left it: no ALIAS columns, Duration with ZSTD(1) alone, migration 4 unrecorded
    clickhouse_engine.command(
        f"ALTER TABLE {clickhouse_database}.otel_traces DROP COLUMN ResourceAttributeItems, "
        "DROP COLUMN SpanAttributeItems, MODIFY COLUMN Duration CODEC(ZSTD(1))"
    )
    clickhouse_engine.command(
        f"DELETE FROM {clickhouse_database}.agentwatch_schema_migrations WHERE version = 4 SETTINGS mutations_sync = 1"
    )
    findings = check(clickhouse_engine, options)
    assert [str(f) for f in findings] == [
        "migrations pending: 4 (otel_traces: the exporter's ALIAS columns and Duration codec); "
        "start the collector or run `agentwatch schema --apply`",
        f"{clickhouse_database}.otel_traces: column ResourceAttributeItems is missing (pending migration 4 adds it)",
        f"{clickhouse_database}.otel_traces: column SpanAttributeItems is missing (pending migration 4 adds it)",
    ]
    assert clickhouse_engine.ensure_schema(options) == [4]
    assert check(clickhouse_engine, options) == []
    codec = clickhouse_engine.query(
        "SELECT compression_codec FROM system.columns WHERE database = {db:String} "
        "AND table = 'otel_traces' AND name = 'Duration'",
        {"db": clickhouse_database},
    )
    assert codec == [{"compression_codec": "CODEC(T64, ZSTD(1))"}]


def test_missing_columns_and_tables_are_reported(clickhouse_engine: ClickHouseStore, clickhouse_database: str) -> None:
    options = SchemaOptions(database=clickhouse_database)
    clickhouse_engine.ensure_schema(options)
    clickhouse_engine.command(f"DROP TABLE {clickhouse_database}.agent_tool_calls_mv")
    clickhouse_engine.command(f"DROP TABLE {clickhouse_database}.agent_tool_calls")
    clickhouse_engine.command(f"ALTER TABLE {clickhouse_database}.agent_runs DROP COLUMN Output")
    messages = [str(f) for f in check(clickhouse_engine, options)]
    assert messages == [
        f"{clickhouse_database}.agent_runs: column Output is missing",
        f"{clickhouse_database}.agent_tool_calls is missing, though migration 3 is recorded as applied",
    ]


def test_schema_check_command_exit_codes(
    clickhouse_engine: ClickHouseStore,
    clickhouse_url: str,
    clickhouse_database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clickhouse_engine.command(EXPORTER_TRACES_DDL.format(database=clickhouse_database))
    assert main(["schema", "--check", "--clickhouse", clickhouse_url]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("migrations pending: 1 (")
    assert lines[1].startswith(f"{clickhouse_database}.otel_traces: sort key is (ServiceName, SpanName,")
    assert lines[2].startswith(f"{clickhouse_database}.otel_traces: TTL is toDateTime(Timestamp) + toIntervalDay(3)")

    clickhouse_engine.command(f"DROP TABLE {clickhouse_database}.otel_traces SYNC")
    clickhouse_engine.ensure_schema(SchemaOptions(database=clickhouse_database))
    assert main(["schema", "--check", "--clickhouse", clickhouse_url]) == 0
    assert capsys.readouterr().out.strip() == f"schema is as expected (version {schema.LATEST_VERSION})"


def test_schema_check_command_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # refused by the URL parser before anything opens: a setup error, not a difference
    assert main(["schema", "--check", "--clickhouse", "ftp://nowhere/db"]) == 2
    assert "agentwatch schema:" in capsys.readouterr().err


def test_warn_at_start_logs_each_finding_and_never_raises(
    clickhouse_engine: ClickHouseStore, exporter_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("agentwatch.test")
    options = SchemaOptions(database=exporter_database)
    clickhouse_engine.ensure_schema(options)
    with caplog.at_level(logging.WARNING, logger="agentwatch.test"):
        assert [f.kind for f in warn_at_start(clickhouse_engine, options, log)] == ["sort_key", "ttl"]
        assert warn_at_start(_Broken(), options, log) == []
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith(f"ClickHouse schema: {exporter_database}.otel_traces: sort key is (ServiceName")
    assert messages[1].startswith(f"ClickHouse schema: {exporter_database}.otel_traces: TTL is")
    assert messages[2] == "could not check the ClickHouse schema: store down"


class _Broken:
    def command(self, sql: str, parameters: object = None) -> object:
        raise RuntimeError("store down")


def test_collector_start_warns_about_a_foreign_otel_traces(
    clickhouse_url: str, exporter_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ClickHouseStore.open(clickhouse_url)
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    writer = SpoolWriter(
        spool=spool,
        store=store,
        metrics=CollectorMetrics(),
        schema=SchemaOptions(database=exporter_database),
        dead_letter_dir=tmp_path / "dead",
        batch_max_spans=100,
        batch_max_bytes=1 << 20,
        batch_timeout_s=0.05,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="agentwatch.collector"):
            writer.start()
            ready = threading.Event()
            for _ in range(200):
                if writer.ready:
                    ready.set()
                    break
                ready.wait(0.05)
            assert writer.ready
    finally:
        writer.stop(drain_timeout_s=1)
        spool.close()
        store.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("otel_traces: sort key is (ServiceName, SpanName" in m and "otelcol-contrib" in m for m in warnings)
    assert any("otel_traces: TTL is toDateTime(Timestamp) + toIntervalDay(3)" in m for m in warnings)
