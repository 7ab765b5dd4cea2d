"""The building blocks of the collector's ClickHouse DDL: options, quoting, tables, views, attributes.

``schema`` declares the tables and migrations with these; they are apart so that the DDL of a
table can be read without the machinery that renders it single-node or on a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

TRACES_TABLE: Final = "otel_traces"
LOCAL_SUFFIX: Final = "_local"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CLUSTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")

# --- options ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaOptions:
    """Where and how the schema is created.

    ``traces_ttl_days`` applies to ``otel_traces`` and its trace-id lookup, ``runs_ttl_days`` to
    ``agent_runs`` and ``agent_tool_calls`` (the audit trail outlives raw spans); 0 means no TTL.
    ``dedup_window`` is how many recent insert blocks each table remembers for deduplication: it
    must cover every batch a spool can hold, or a long replay could duplicate its oldest batches.
    """

    database: str = "default"
    cluster: str | None = None
    traces_ttl_days: int = 30
    runs_ttl_days: int = 400
    dedup_window: int = 10000
    index_granularity: int = 8192

    def __post_init__(self) -> None:
        # names are interpolated into DDL: refuse anything that could escape its quoting
        if not _IDENTIFIER.match(self.database):
            raise ValueError(f"invalid database name {self.database!r}: letters, digits and _ only")
        if self.cluster is not None and not _CLUSTER_NAME.match(self.cluster):
            raise ValueError(f"invalid cluster name {self.cluster!r}")
        for name in ("traces_ttl_days", "runs_ttl_days", "dedup_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.index_granularity <= 0:
            raise ValueError("index_granularity must be > 0")

    @property
    def replicated(self) -> bool:
        """True for the cluster variant (Replicated* + Distributed)."""
        return self.cluster is not None

    def qualified(self, table: str) -> str:
        """``database.table``, quoted, for a public (Distributed in cluster mode) table name."""
        return f"{quote_identifier(self.database)}.{quote_identifier(table)}"

    def storage_table(self, table: str) -> str:
        """Name of the table that holds the data: ``<table>_local`` on a cluster, else ``table``."""
        return table + LOCAL_SUFFIX if self.replicated else table


def quote_identifier(name: str) -> str:
    """Backquote an identifier (already validated or a constant of ours)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_literal(text: str) -> str:
    """Single-quote a string literal for ClickHouse SQL."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --- statement builders -----------------------------------------------------------------------


def _on_cluster(options: SchemaOptions) -> str:
    return f" ON CLUSTER {quote_identifier(options.cluster)}" if options.cluster is not None else ""


def _engine(options: SchemaOptions, family: str, storage_name: str, *args: str) -> str:
    """``family`` (e.g. ``MergeTree``) or its Replicated variant with a per-shard Keeper path."""
    if not options.replicated:
        return f"{family}({', '.join(args)})"
    path = quote_literal(f"/clickhouse/tables/{{shard}}/{{database}}/{storage_name}")
    return f"Replicated{family}({', '.join((path, quote_literal('{replica}'), *args))})"


def _table_settings(options: SchemaOptions, *, ttl: bool) -> str:
    settings = [f"index_granularity = {options.index_granularity}"]
    if ttl:
        # partitions are per day/week/month, so expiry drops whole parts instead of rewriting them
        settings.append("ttl_only_drop_parts = 1")
    # insert_deduplication_token only deduplicates when the table keeps a window of block ids;
    # Replicated engines keep theirs in Keeper (default 1000), plain MergeTree keeps none by default
    window = "replicated_deduplication_window" if options.replicated else "non_replicated_deduplication_window"
    settings.append(f"{window} = {options.dedup_window}")
    return "SETTINGS " + ", ".join(settings)


@dataclass(frozen=True)
class _Table:
    """A MergeTree-family table, rendered single-node or as local + Distributed on a cluster."""

    name: str
    definitions: tuple[str, ...]
    family: str
    partition_by: str
    order_by: str
    ttl_column: str
    ttl_days: Callable[[SchemaOptions], int]
    shard_key: str
    engine_args: tuple[str, ...] = ()

    def statements(self, options: SchemaOptions) -> list[str]:
        storage = options.storage_table(self.name)
        days = self.ttl_days(options)
        ttl = f"\nTTL toDateTime({self.ttl_column}) + toIntervalDay({days})" if days > 0 else ""
        body = ",\n    ".join(self.definitions)
        create = (
            f"CREATE TABLE IF NOT EXISTS {options.qualified(storage)}{_on_cluster(options)}\n(\n    {body}\n)\n"
            f"ENGINE = {_engine(options, self.family, storage, *self.engine_args)}\n"
            f"PARTITION BY {self.partition_by}\nORDER BY {self.order_by}{ttl}\n"
            f"{_table_settings(options, ttl=days > 0)}"
        )
        if not options.replicated:
            return [create]
        assert options.cluster is not None
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {options.qualified(self.name)}{_on_cluster(options)}\n"
            f"AS {options.qualified(storage)}\n"
            f"ENGINE = Distributed({quote_literal(options.cluster)}, {quote_literal(options.database)}, "
            f"{quote_literal(storage)}, {self.shard_key})"
        )
        return [create, distributed]


def _view(options: SchemaOptions, name: str, target: str, select: str) -> str:
    """A materialized view on the (local) ``otel_traces`` writing the (local) ``target``."""
    source = options.qualified(options.storage_table(TRACES_TABLE))
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {options.qualified(name)}{_on_cluster(options)}\n"
        f"TO {options.qualified(options.storage_table(target))}\n"
        f"AS {select.format(source=source)}"
    )


def _attr(key: str) -> str:
    """SQL for a span attribute (attributes are strings in the map; missing keys read as '')."""
    return f"SpanAttributes[{quote_literal(key)}]"


def _num(function: str, key: str) -> str:
    # *OrZero: a malformed or missing number from a foreign writer must not fail the insert
    return f"{function}OrZero({_attr(key)})"
