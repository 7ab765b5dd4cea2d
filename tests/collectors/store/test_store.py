"""ClickHouseStore against real engines: chDB in-process, and a ClickHouse URL nobody answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _chrows import count, counts, engine_url, json_rows, new_token, run_attributes, span_row

from agentwatch.collectors.store.clickhouse import (
    ClickHouseStore,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    parse_url,
    redacted_url,
)
from agentwatch.collectors.store.schema import SchemaOptions

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

PASSWORD = "hunter2:s3cr3t@x"
PASSWORD_IN_URL = "hunter2%3As3cr3t%40x"


# --- URLs -------------------------------------------------------------------------------------


def test_parse_chdb_urls() -> None:
    relative = parse_url("chdb://./agentwatch-data")
    assert (relative.kind, relative.path, relative.database) == (
        "chdb",
        os.path.join(os.getcwd(), "agentwatch-data"),
        "default",
    )
    assert parse_url("chdb:///var/lib/aw?database=prod").path == "/var/lib/aw"
    assert parse_url("chdb:///var/lib/aw?database=prod").database == "prod"
    assert parse_url("chdb://:memory:").path == ":memory:"
    assert parse_url("chdb://data").embedded


def test_parse_http_urls() -> None:
    target = parse_url(f"http://alice:{PASSWORD_IN_URL}@ch.internal:9000/agentwatch")
    assert (target.kind, target.host, target.port, target.username, target.password, target.database) == (
        "http",
        "ch.internal",
        9000,
        "alice",
        PASSWORD,
        "agentwatch",
    )
    assert PASSWORD not in repr(target)
    plain = parse_url("http://ch")
    assert (plain.port, plain.username, plain.password, plain.database) == (8123, "default", "", "default")
    secure = parse_url("https://ch/")
    assert (secure.kind, secure.port) == ("https", 8443)
    assert parse_url("http://[::1]:8124/db").host == "::1"


@pytest.mark.parametrize(
    "url",
    [
        "ch.internal:8123",
        "tcp://ch:9000",
        f"http://u:{PASSWORD_IN_URL}@ch:notaport/db",
        f"http://u:{PASSWORD_IN_URL}@ch/db;drop",
        f"http://u:{PASSWORD_IN_URL}@ch/db?x=1",
        "chdb://",
        "chdb://data?foo=1",
    ],
)
def test_bad_urls_are_refused_without_leaking_the_password(url: str) -> None:
    with pytest.raises(ValueError, match=r"URL|url|path|port|host|option|query|database") as info:
        parse_url(url)
    assert PASSWORD_IN_URL not in str(info.value)
    assert PASSWORD not in str(info.value)


def test_redacted_url() -> None:
    assert redacted_url(f"https://alice:{PASSWORD_IN_URL}@ch:8443/db") == "https://alice:***@ch:8443/db"
    assert redacted_url("http://alice@ch/db") == "http://alice@ch/db"
    assert redacted_url("chdb://./data") == "chdb://./data"
    store = ClickHouseStore.open(f"http://alice:{PASSWORD_IN_URL}@127.0.0.1:1/db")
    assert store.url == "http://alice:***@127.0.0.1:1/db"
    assert PASSWORD not in repr(store)
    store.close()


# --- embedded store ---------------------------------------------------------------------------


def test_embedded_store_queries_with_server_side_parameters(clickhouse_store: ClickHouseStore) -> None:
    assert clickhouse_store.embedded
    assert clickhouse_store.ping()
    rows = clickhouse_store.query(
        "SELECT {name:String} AS name, {n:UInt32} + 1 AS n, currentDatabase() AS db",
        {"name": "x'); DROP TABLE otel_traces; --", "n": 41},
    )
    assert rows == [{"name": "x'); DROP TABLE otel_traces; --", "n": 42, "db": clickhouse_store.database}]
    assert clickhouse_store.command("SELECT count() FROM otel_traces") == 0
    assert clickhouse_store.pending_migrations() == []


def test_insert_json_rows_and_dedup(clickhouse_store: ClickHouseStore) -> None:
    payload = json_rows([span_row(attributes=run_attributes("run-1")), span_row()])
    clickhouse_store.insert_json_rows("otel_traces", payload, dedup_token="batch-1")
    clickhouse_store.insert_json_rows(f"{clickhouse_store.database}.otel_traces", payload, dedup_token="batch-1")
    assert count(clickhouse_store, "otel_traces") == 2
    assert count(clickhouse_store, "agent_runs") == 1
    with pytest.raises(ValueError, match="dedup_token"):
        clickhouse_store.insert_json_rows("otel_traces", payload, dedup_token="")


def test_insert_settings_win_over_a_hostile_profile(clickhouse_store: ClickHouseStore, clickhouse_url: str) -> None:
    # what a server profile might set (26.9's defaults already include async_insert = 1)
    hostile = {
        "insert_deduplicate": 0,
        "deduplicate_blocks_in_dependent_materialized_views": 0,
        "async_insert": 1,
        "input_format_skip_unknown_fields": 1,
    }
    with ClickHouseStore.open(clickhouse_url, settings=hostile) as store:
        assert store.query("SELECT getSetting('insert_deduplicate') AS d")[0]["d"] == 0
        payload = json_rows([span_row(attributes=run_attributes("run-h"))])
        for _ in range(3):
            store.insert_json_rows("otel_traces", payload, dedup_token="same")
        assert counts(store) == {
            "otel_traces": 1,
            "otel_traces_trace_id_ts": 1,
            "agent_runs": 1,
            "agent_tool_calls": 0,
        }
        with pytest.raises(StoreRejected):
            store.insert_json_rows("otel_traces", b'{"Unknown": 1}', dedup_token=new_token())


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b'{"Timestamp": "yesterday"}', 41),  # CANNOT_PARSE_DATETIME
        (b'{"NotAColumn": 1}', 117),  # INCORRECT_DATA: unknown keys are refused, not dropped
        (b'{"Duration": "x"}', 27),  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        (b'{"Events.Name": ["a"], "Events.Timestamp": []}', 190),  # SIZES_OF_ARRAYS_DONT_MATCH
        (b"{not json", 26),  # CANNOT_PARSE_QUOTED_STRING
    ],
)
def test_bad_rows_are_rejected_not_retryable(clickhouse_store: ClickHouseStore, payload: bytes, code: int) -> None:
    with pytest.raises(StoreRejected) as info:
        clickhouse_store.insert_json_rows("otel_traces", payload, dedup_token=new_token())
    assert info.value.code == code
    assert count(clickhouse_store, "otel_traces") == 0


def test_bad_sql_is_rejected_and_missing_tables_are_retryable(clickhouse_store: ClickHouseStore) -> None:
    with pytest.raises(StoreRejected) as syntax:
        clickhouse_store.query("SELEC 1")
    assert syntax.value.code == 62
    with pytest.raises(StoreRejected):
        clickhouse_store.query("SELECT {x:UInt8}", {"x": "not a number"})
    # a table that is not there yet (schema not applied) is an outage, not bad data
    with pytest.raises(StoreUnavailable) as missing:
        clickhouse_store.insert_json_rows("no_such_table", b"{}", dedup_token=new_token())
    assert missing.value.code == 60


def test_ensure_schema_creates_the_database_of_the_url(clickhouse_engine: ClickHouseStore) -> None:
    database = f"t_store_{os.getpid()}"
    store = ClickHouseStore.open(engine_url(clickhouse_engine, database))
    try:
        assert store.database == database
        assert store.ensure_schema() == [1, 2, 3, 4, 5, 6]
        assert store.query("SELECT currentDatabase() AS db") == [{"db": database}]
    finally:
        store.command(f"DROP DATABASE IF EXISTS {database} SYNC")
        store.close()
    with ClickHouseStore.open(engine_url(clickhouse_engine), database="system") as other:
        assert other.query("SELECT currentDatabase() AS db") == [{"db": "system"}]


def test_a_second_chdb_path_in_one_process_is_a_clear_error(
    clickhouse_engine: ClickHouseStore, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = tmp_path_factory.mktemp("other-engine")
    with pytest.raises(StoreError, match="already initialized with path") as info:
        ClickHouseStore.open(f"chdb://{other}")
    assert type(info.value) is StoreError
    assert clickhouse_engine.ping()


_CHILD = """
import os, sys
from agentwatch.collectors.store.clickhouse import ClickHouseStore, StoreError

first = ClickHouseStore.open("chdb://./nested/data")
assert os.path.isdir("nested/data"), "directory not created"
assert first.ensure_schema() == [1, 2, 3, 4, 5, 6]
first.insert_json_rows("otel_traces", sys.argv[1].encode(), dedup_token="t1")
try:
    ClickHouseStore.open("chdb://./elsewhere")
except StoreError:
    pass
else:
    raise AssertionError("a second engine path opened")
first.close()
second = ClickHouseStore.open("chdb://./elsewhere")  # closing every store frees the engine
assert second.ping()
second.close()
third = ClickHouseStore.open("chdb://nested/data")
print(third.command("SELECT count() FROM agent_runs"))
"""


def test_relative_embedded_path_is_created_and_the_engine_released_on_close(tmp_path: Path) -> None:
    # a child process: this one already hosts the session engine (one chDB path per process)
    payload = json_rows([span_row(attributes=run_attributes("run-1"))]).decode()
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, payload], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    assert (tmp_path / "elsewhere").is_dir()


def test_closed_store_refuses_work(clickhouse_url: str) -> None:
    store = ClickHouseStore.open(clickhouse_url)
    store.close()
    assert not store.ping()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.query("SELECT 1")


def test_one_writer_and_many_readers_share_a_store(clickhouse_store: ClickHouseStore) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for _ in range(20):
                clickhouse_store.insert_json_rows("otel_traces", json_rows([span_row()] * 5), dedup_token=new_token())
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set():
                rows = clickhouse_store.query("SELECT count() AS n FROM otel_traces")
                assert len(rows) == 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write), *(threading.Thread(target=read) for _ in range(6))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert count(clickhouse_store, "otel_traces") == 100


# --- a ClickHouse server that is not there ----------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (kernel backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def _assert_unavailable_without_secret(exc: StoreUnavailable) -> None:
    text = f"{exc} {exc!r} {exc.__cause__!s}"
    assert PASSWORD not in text
    assert PASSWORD_IN_URL not in text
    assert "***" in str(exc)


def test_server_down_never_fails_open_and_is_retryable(closed_port: int) -> None:
    started = time.monotonic()
    store = ClickHouseStore.open(f"http://alice:{PASSWORD_IN_URL}@127.0.0.1:{closed_port}/agentwatch")
    assert not store.embedded
    assert not store.ping()
    with pytest.raises(StoreUnavailable) as insert:
        store.insert_json_rows("otel_traces", b"{}", dedup_token="t")
    _assert_unavailable_without_secret(insert.value)
    with pytest.raises(StoreUnavailable) as query:
        store.query("SELECT 1")
    _assert_unavailable_without_secret(query.value)
    with pytest.raises(StoreUnavailable):
        store.ensure_schema(SchemaOptions(database="agentwatch"))
    assert time.monotonic() - started < 5.0
    store.close()


def test_silent_server_times_out_within_the_connect_timeout(silent_port: int) -> None:
    store = ClickHouseStore.open(f"http://alice:{PASSWORD_IN_URL}@127.0.0.1:{silent_port}/db", connect_timeout=0.5)
    started = time.monotonic()
    assert not store.ping()
    with pytest.raises(StoreUnavailable) as insert:
        store.insert_json_rows("otel_traces", b"{}", dedup_token="t")
    # both attempts are bounded by the handshake (connect timeout, rounded up to a whole second)
    assert time.monotonic() - started < 3.5
    _assert_unavailable_without_secret(insert.value)
    store.close()


# --- a ClickHouse HTTP endpoint (the chDB-backed shim: real engine, real HTTP client) ---------


def test_http_store_end_to_end_and_through_an_outage(tmp_path: Path, closed_port: int) -> None:
    import chshim

    port = closed_port
    data = tmp_path / "server"
    server = chshim.start_in_subprocess(port, data, user="alice", password=PASSWORD)
    try:
        store = ClickHouseStore.open(f"http://alice:{PASSWORD_IN_URL}@127.0.0.1:{port}/agentwatch", connect_timeout=2)
        assert store.ping()
        assert store.ensure_schema() == [1, 2, 3, 4, 5, 6]  # creates the database named in the URL
        payload = json_rows([span_row(attributes=run_attributes("run-http"))])
        store.insert_json_rows("otel_traces", payload, dedup_token="http-1")
        store.insert_json_rows("otel_traces", payload, dedup_token="http-1")
        assert counts(store)["agent_runs"] == 1
        assert store.query("SELECT {x:String} AS x, currentDatabase() AS db", {"x": "a'b"}) == [
            {"x": "a'b", "db": "agentwatch"}
        ]
        with pytest.raises(StoreRejected):
            store.insert_json_rows("otel_traces", b'{"Duration": "x"}', dedup_token=new_token())

        chshim.kill(server)  # outage: the same store reports it, then recovers by itself
        assert not store.ping()
        with pytest.raises(StoreUnavailable) as down:
            store.insert_json_rows("otel_traces", payload, dedup_token="http-2")
        _assert_unavailable_without_secret(down.value)
        server = chshim.start_in_subprocess(port, data, user="alice", password=PASSWORD)
        store.insert_json_rows("otel_traces", payload, dedup_token="http-2")
        store.insert_json_rows("otel_traces", payload, dedup_token="http-1")  # a replay from before
        assert counts(store)["agent_runs"] == 2
        store.close()

        wrong = ClickHouseStore.open(f"http://alice:wrong-{PASSWORD_IN_URL}@127.0.0.1:{port}/agentwatch")
        assert not wrong.ping()  # the connection handshake runs queries, and they are refused
        with pytest.raises(StoreUnavailable) as denied:  # bad credentials never make data "bad"
            wrong.query("SELECT 1")
        assert denied.value.code == 516
        _assert_unavailable_without_secret(denied.value)
        wrong.close()
    finally:
        chshim.stop(server)
