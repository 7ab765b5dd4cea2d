"""Test fixtures: one embedded ClickHouse (chDB) per pytest process, and a fresh database per test.

chDB hosts ONE engine path per process, so every in-process test shares the session engine and
isolates itself with its own database. Use it from a test module with::

    pytest_plugins = ["_chstore"]

    def test_something(clickhouse_store: ClickHouseStore) -> None: ...

Fixtures:

- ``clickhouse_engine`` (session): a store on the shared engine, default database. Never open
  another ``chdb://`` path in the test process while it is open; ``_chrows.engine_url(engine)``
  gives URLs on the same engine.
- ``clickhouse_database`` (function): the name of a fresh, empty database (dropped afterwards).
- ``clickhouse_url`` (function): ``chdb://<engine path>?database=<fresh database>``, schema NOT
  applied: hand it to code that opens its own store (e.g. the collector service).
- ``clickhouse_store`` (function): a store on that URL with the schema applied; unqualified table
  names in its queries and inserts resolve to the fresh database.

Load this module only through ``pytest_plugins`` and never import it (pytest warns, and warnings
are errors here); the span-row builders live in ``_chrows``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from _chrows import engine_url

from agentwatch.collectors.store.clickhouse import ClickHouseStore


@pytest.fixture(scope="session")
def clickhouse_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    store = ClickHouseStore.open(f"chdb://{tmp_path_factory.mktemp('chdb')}")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def clickhouse_database(clickhouse_engine: ClickHouseStore) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    clickhouse_engine.command(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        clickhouse_engine.command(f"DROP DATABASE IF EXISTS {name} SYNC")


@pytest.fixture
def clickhouse_url(clickhouse_engine: ClickHouseStore, clickhouse_database: str) -> str:
    return engine_url(clickhouse_engine, clickhouse_database)


@pytest.fixture
def clickhouse_store(clickhouse_url: str) -> Iterator[ClickHouseStore]:
    store = ClickHouseStore.open(clickhouse_url)
    try:
        store.ensure_schema()
        yield store
    finally:
        store.close()
