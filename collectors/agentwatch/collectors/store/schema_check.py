"""How an existing store differs from the schema the collector expects (``agentwatch schema --check``).

Migrations only ever create what is missing (``IF NOT EXISTS``), and ClickHouse cannot change a
table's sort key, so an ``otel_traces`` another writer created first, typically the OpenTelemetry
Collector's ClickHouse exporter in ``otelcol-contrib`` with ``ORDER BY (ServiceName, SpanName,
toDateTime(Timestamp))``, keeps that key: every tenant-scoped read then scans every tenant's
spans. Nothing fails, so nothing would say so; this module does, at collector start (a WARNING per
finding) and in ``agentwatch schema --check`` (one line per finding, exit 1).

Findings: migrations pending; ``otel_traces`` with another sort key or another TTL than the
configured one; a table or column missing, or a column of ``otel_traces`` with another type than
the exporter's.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from agentwatch.collectors.store import migrate, schema
from agentwatch.collectors.store.schema import SchemaOptions

logger = logging.getLogger(__name__)

# which migration creates each table, and which adds each otel_traces ALIAS column
_TABLE_SINCE: Final = {
    schema.TRACES_TABLE: 1,
    schema.TRACE_ID_TS_TABLE: 1,
    schema.RUNS_TABLE: 2,
    schema.TOOL_CALLS_TABLE: 3,
}
_ALIASES_SINCE: Final = 4
_EXPORTER_SORT_KEY: Final = "ServiceName, SpanName, toDateTime(Timestamp)"


class SupportsCommand(Protocol):
    """What the check needs of a store: ``ClickHouseStore.command`` (a one-value statement)."""

    def command(self, sql: str, parameters: Mapping[str, object] | None = None) -> Any: ...


class _Commands:
    """A ``migrate.CommandClient`` over a store (every statement here is fully qualified)."""

    def __init__(self, store: SupportsCommand) -> None:
        self._store = store

    def command(
        self,
        cmd: str,
        parameters: dict[str, object] | None = None,
        data: str | bytes | None = None,
        settings: dict[str, object] | None = None,
        use_database: bool = True,
    ) -> object:
        return self._store.command(cmd, parameters)


@dataclass(frozen=True)
class Finding:
    """One way the store differs: ``kind`` is pending, sort_key, ttl, missing_table, missing_column or type."""

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class _Column:
    name: str
    type: str
    since: int


def _expected_columns(table: str) -> list[_Column]:
    """Columns of one of our tables (public name), with the migration that adds each."""
    since = _TABLE_SINCE[table]
    if table == schema.TRACES_TABLE:
        # types of the top-level columns; the Nested ones ClickHouse reports flattened (Events.Name
        # Array(LowCardinality(String)), ...), checked by name
        types = dict(schema.OTEL_TRACES_COLUMNS)
        columns = [_Column(key, types.get(key, ""), since) for key in schema.JSON_ROW_KEYS]
        return columns + [_Column(name, type_, _ALIASES_SINCE) for name, type_, _ in schema.OTEL_TRACES_ALIASES]
    # other tables: names only ("Name Type [CODEC(...)]"; INDEX lines are not columns)
    return [
        _Column(definition.split(" ", 1)[0], "", since)
        for definition in schema.TABLE_DEFINITIONS[table]
        if not definition.startswith("INDEX ")
    ]


def _rows(store: SupportsCommand, row: str, source: str, database: str) -> list[dict[str, str]]:
    """Rows of a system table as dicts; ``command`` returns one value, so they come back as JSON.

    Base64 on the way: ``command`` reads TabSeparated, whose escaping would mangle the JSON.
    """
    sql = f"SELECT base64Encode(toJSONString(groupArray({row}))) FROM {source} WHERE database = {{db:String}}"
    text = store.command(sql, {"db": database})
    loaded = json.loads(base64.b64decode(str(text)) or b"[]")
    return [{str(k): str(v) for k, v in row.items()} for row in loaded]


def _squash(expression: str) -> str:
    return re.sub(r"[\s`]", "", expression)


def _ttl(engine_full: str) -> str:
    """The table TTL expression in ``engine_full``, '' without one."""
    match = re.search(r"\bTTL (.+?)(?= SETTINGS |$)", engine_full)
    return match.group(1).strip() if match else ""


def _expected_ttl(options: SchemaOptions) -> str:
    days = options.traces_ttl_days
    return f"toDateTime(Timestamp) + toIntervalDay({days})" if days > 0 else ""


def _traces_layout(table: str, info: Mapping[str, str], options: SchemaOptions) -> list[Finding]:
    findings: list[Finding] = []
    sort_key = info.get("sorting_key", "")
    if _squash(sort_key) != _squash(schema.TRACES_SORT_KEY):
        origin = (
            ", the OpenTelemetry Collector ClickHouse exporter's layout (created by otelcol-contrib?)"
            if _squash(sort_key).startswith(_squash(_EXPORTER_SORT_KEY))
            else ""
        )
        findings.append(
            Finding(
                "sort_key",
                f"{table}: sort key is ({sort_key}){origin}, not agentwatch's tenant-first "
                f"({schema.TRACES_SORT_KEY}): reads for one tenant scan every tenant's spans. ClickHouse "
                "cannot change a sort key: keep it, or rename the table away, restart the collector (or "
                "`agentwatch schema --apply`) and copy the rows back with INSERT INTO ... SELECT",
            )
        )
    actual, expected = _ttl(info.get("engine_full", "")), _expected_ttl(options)
    if _squash(actual) != _squash(expected):
        fix = f"ALTER TABLE {table} MODIFY TTL {expected}" if expected else f"ALTER TABLE {table} REMOVE TTL"
        findings.append(
            Finding(
                "ttl",
                f"{table}: TTL is {actual or 'none'}, expected {expected or 'none'} "
                f"(traces TTL {options.traces_ttl_days} days); to follow the setting: {fix}",
            )
        )
    return findings


def check(store: SupportsCommand, options: SchemaOptions) -> list[Finding]:
    """Every way the store at ``options.database`` differs from the latest schema; [] when none."""
    pending = migrate.pending(_Commands(store), options)
    pending_versions = {migration.version for migration in pending}
    findings: list[Finding] = []
    if pending:
        listed = ", ".join(f"{m.version} ({m.description})" for m in pending)
        findings.append(
            Finding("pending", f"migrations pending: {listed}; start the collector or run `agentwatch schema --apply`")
        )
    tables = {
        row["name"]: row
        for row in _rows(
            store,
            "map('name', name, 'sorting_key', sorting_key, 'engine_full', engine_full)",
            "system.tables",
            options.database,
        )
    }
    columns: dict[str, dict[str, str]] = {}
    for row in _rows(
        store,
        "map('table', table, 'name', name, 'type', type)",
        "system.columns",
        options.database,
    ):
        columns.setdefault(row["table"], {})[row["name"]] = row["type"]
    for table, since in _TABLE_SINCE.items():
        storage = options.storage_table(table)
        qualified = f"{options.database}.{storage}"
        if storage not in tables:
            if since not in pending_versions:
                findings.append(
                    Finding("missing_table", f"{qualified} is missing, though migration {since} is recorded as applied")
                )
            continue
        if table == schema.TRACES_TABLE:
            findings.extend(_traces_layout(qualified, tables[storage], options))
        present = columns.get(storage, {})
        for column in _expected_columns(table):
            if column.name not in present:
                # a migration that adds columns (ALTER) fixes it; a CREATE ... IF NOT EXISTS would not
                added_later = column.since in pending_versions and column.since != since
                note = f" (pending migration {column.since} adds it)" if added_later else ""
                findings.append(Finding("missing_column", f"{qualified}: column {column.name} is missing{note}"))
            elif column.type and present[column.name] != column.type:
                findings.append(
                    Finding(
                        "type",
                        f"{qualified}: column {column.name} is {present[column.name]}, the exporter's is {column.type}",
                    )
                )
    return findings


def warn_at_start(store: SupportsCommand, options: SchemaOptions, log: logging.Logger = logger) -> list[Finding]:
    """Log a WARNING per finding (after the migrations ran); never raises: the store must keep working."""
    try:
        findings = check(store, options)
    except Exception as exc:  # a failed check must not stop the collector: the data path is what matters
        log.warning("could not check the ClickHouse schema: %s", exc)
        return []
    for finding in findings:
        log.warning("ClickHouse schema: %s", finding)
    return findings


__all__ = ["Finding", "SupportsCommand", "check", "warn_at_start"]
