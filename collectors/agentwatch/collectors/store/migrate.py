"""Applying the schema's migrations to a store: what is applied, what is pending, and applying it.

The migrations themselves (their DDL, versions and checksums) are in ``schema``; this module only
talks to a store through the small ``CommandClient`` protocol, so the same code runs against the
embedded engine and a server, and against the cluster variant with ``ON CLUSTER`` DDL.
"""

from __future__ import annotations

import logging
from typing import Protocol

from agentwatch.collectors.store.schema import (
    MIGRATIONS,
    MIGRATIONS_TABLE,
    Migration,
    SchemaOptions,
    database_ddl,
    migrations_table_ddl,
)

logger = logging.getLogger("agentwatch.collectors.store.schema")  # the name migrations always logged under


class CommandClient(Protocol):
    """The part of a clickhouse-connect client that migrations use."""

    def command(
        self,
        cmd: str,
        parameters: dict[str, object] | None = ...,
        data: str | bytes | None = ...,
        settings: dict[str, object] | None = ...,
        use_database: bool = ...,
    ) -> object: ...


def _scalar(client: CommandClient, sql: str, parameters: dict[str, object]) -> str:
    # use_database=False: the connection's default database may be the one we are about to create
    return str(client.command(sql, parameters=parameters, use_database=False))


def _table_exists(client: CommandClient, database: str, table: str) -> bool:
    sql = "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {table:String}"
    return _scalar(client, sql, {"db": database, "table": table}) != "0"


def _applied(client: CommandClient, options: SchemaOptions) -> dict[int, str]:
    """Applied versions and their recorded checksums ({} before the first migration)."""
    if not _table_exists(client, options.database, MIGRATIONS_TABLE):
        return {}
    # command() returns one value, so the rows come back as one "version:checksum,..." string
    sql = (
        "SELECT arrayStringConcat(groupArray(concat(toString(version), ':', checksum)), ',') FROM ("
        f"SELECT version, argMax(checksum, applied_at) AS checksum FROM {options.qualified(MIGRATIONS_TABLE)} "
        "GROUP BY version)"
    )
    text = _scalar(client, sql, {})
    applied: dict[int, str] = {}
    for item in filter(None, text.split(",")):
        version, _, checksum = item.partition(":")
        applied[int(version)] = checksum
    return applied


def applied_versions(client: CommandClient, options: SchemaOptions) -> list[int]:
    """Versions recorded as applied, ascending."""
    return sorted(_applied(client, options))


def pending(client: CommandClient, options: SchemaOptions) -> list[Migration]:
    """Migrations not applied yet, in order."""
    done = _applied(client, options)
    return [migration for migration in MIGRATIONS if migration.version not in done]


def apply(client: CommandClient, options: SchemaOptions) -> list[int]:
    """Create the database if needed and apply the pending migrations; returns their versions.

    Idempotent: applied versions are skipped, and every statement is ``IF NOT EXISTS``, so a
    migration interrupted half-way is simply re-run. Concurrent appliers are harmless too.
    """
    exists = _scalar(client, "SELECT count() FROM system.databases WHERE name = {db:String}", {"db": options.database})
    if exists == "0":
        # only when missing: an existing database needs no CREATE grant
        client.command(database_ddl(options), use_database=False)
    client.command(migrations_table_ddl(options), use_database=False)
    done = _applied(client, options)
    applied: list[int] = []
    for migration in MIGRATIONS:
        recorded = done.get(migration.version)
        if recorded is not None:
            if recorded != migration.checksum:
                logger.warning(
                    "schema migration %d (%s) was applied with different DDL (checksum %s, now %s)",
                    migration.version,
                    migration.description,
                    recorded[:12],
                    migration.checksum[:12],
                )
            continue
        for statement in migration.statements(options):
            client.command(statement, use_database=False)
        _record(client, options, migration)
        applied.append(migration.version)
        logger.info("applied schema migration %d: %s", migration.version, migration.description)
    return applied


def _record(client: CommandClient, options: SchemaOptions, migration: Migration) -> None:
    client.command(
        f"INSERT INTO {options.qualified(MIGRATIONS_TABLE)} (version, description, checksum) "
        "SELECT {version:UInt32}, {description:String}, {checksum:String}",
        parameters={"version": migration.version, "description": migration.description, "checksum": migration.checksum},
        use_database=False,
    )


__all__ = ["CommandClient", "applied_versions", "apply", "pending"]
