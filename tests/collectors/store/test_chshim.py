"""The chDB-backed ClickHouse HTTP shim (tests/chshim.py), driven through clickhouse-connect's real HTTP client.

These tests pin what the collector's tests rely on: the handshake, commands, queries, native and
JSONEachRow inserts (compressed or not), insert deduplication tokens, ClickHouse's DDL types and
materialized views, server-side parameters, errors with their codes and HTTP statuses,
authentication, and outages: a killed or stopped shim makes the client fail fast, and a shim
restarted on the same directory serves the same data to the same client.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import chshim
import clickhouse_connect
import lz4.frame  # type: ignore[import-untyped]
import pytest
from _ports import free_port
from backports import zstd
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from clickhouse_connect.driver.summary import QuerySummary

from agentwatch.collectors.store.clickhouse import ClickHouseStore, StoreRejected, StoreUnavailable

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

USER = "aw"
PASSWORD = "s3cret:p@ss"


@dataclass
class Shim:
    """A running shim process."""

    port: int
    path: Path
    proc: Any

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("username", USER)
        kwargs.setdefault("password", PASSWORD)
        return clickhouse_connect.get_client(host=chshim.HOST, port=self.port, **kwargs)

    def http(
        self,
        method: str,
        params: Mapping[str, str],
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP exchange, authenticated unless ``headers`` say otherwise."""
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        conn = http.client.HTTPConnection(chshim.HOST, self.port, timeout=10)
        try:
            conn.request(method, f"/?{urlencode(params)}", body, {"Authorization": f"Basic {token}", **(headers or {})})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shim]:
    path = tmp_path_factory.mktemp("chshim") / "data"
    port = free_port()
    proc = chshim.start_in_subprocess(port, path, user=USER, password=PASSWORD)
    try:
        yield Shim(port, path, proc)
    finally:
        assert chshim.stop(proc) == 0, chshim.log_path_for(port, path).read_text()


@pytest.fixture
def client(shim: Shim) -> Iterator[Client]:
    client = shim.client()
    try:
        yield client
    finally:
        client.close()


def _count(client: Client, table: str) -> int:
    return int(client.command(f"SELECT count() FROM {table}"))  # type: ignore[arg-type]


# --- the happy paths --------------------------------------------------------------------------


def test_handshake_commands_and_queries(shim: Shim, client: Client) -> None:
    assert str(client.server_version).startswith("26.")
    assert client.command("SELECT 1 + 1") == 2
    assert client.command("SELECT 'a', 'b'") == ["a", "b"]
    # a statement producing no rows is still a result set, unlike DDL
    assert client.command("SELECT number FROM numbers(3) WHERE number > 5") == ""
    assert isinstance(client.command("CREATE TABLE IF NOT EXISTS hs (a UInt8) ENGINE = Memory"), QuerySummary)
    result = client.query("SELECT number AS n, toString(number) AS s FROM numbers(3) ORDER BY n")
    assert result.column_names == ("n", "s")
    assert result.result_rows == [(0, "0"), (1, "1"), (2, "2")]
    assert client.query("SELECT number AS n FROM numbers(3) LIMIT 0").column_names == ("n",)
    # raw HTTP: health check, query id echo, summary and format headers
    conn = http.client.HTTPConnection(chshim.HOST, shim.port, timeout=5)
    conn.request("GET", "/ping")
    assert conn.getresponse().read() == b"Ok.\n"
    conn.close()
    status, headers, body = shim.http("POST", {"query_id": "q-1", "default_format": "JSONEachRow"}, b"SELECT 7 AS x")
    assert (status, body) == (200, b'{"x":7}\n')
    assert headers["X-ClickHouse-Query-Id"] == "q-1"
    assert headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert headers["X-ClickHouse-Timezone"]
    assert json.loads(headers["X-ClickHouse-Summary"])["read_rows"] == "1"


DDL = """
CREATE TABLE {name} (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    Events Nested (Timestamp DateTime64(9), Name LowCardinality(String),
                   Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1
) ENGINE = MergeTree PARTITION BY toDate(Timestamp)
ORDER BY (SpanAttributes['tenant'], ServiceName, toDateTime(Timestamp))
SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000
"""
VIEW_DDL = """
CREATE TABLE {name}_by_trace (TraceId String, Start SimpleAggregateFunction(min, DateTime),
    Spans SimpleAggregateFunction(sum, UInt64))
ENGINE = AggregatingMergeTree ORDER BY TraceId SETTINGS non_replicated_deduplication_window = 1000
"""
MV_DDL = """
CREATE MATERIALIZED VIEW {name}_mv TO {name}_by_trace AS
SELECT TraceId, min(toDateTime(Timestamp)) AS Start, count() AS Spans FROM {name} GROUP BY TraceId
"""


def _span_row(trace: str, tenant: str = "t1", events: int = 1) -> dict[str, object]:
    return {
        "Timestamp": f"{int(time.time())}.000000123",
        "TraceId": trace,
        "ServiceName": "svc",
        "SpanAttributes": {"tenant": tenant, "gen_ai.operation.name": "chat"},
        "Duration": 1500,
        "Events.Timestamp": [f"{int(time.time())}.5"] * events,
        "Events.Name": ["retry"] * events,
        "Events.Attributes": [{"attempt": str(i)} for i in range(events)],
    }


def _make_spans_table(client: Client, name: str) -> None:
    for ddl in (DDL, VIEW_DDL, MV_DDL):
        client.command(ddl.format(name=name))


@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "plain"])
def test_native_insert_roundtrips_map_lowcardinality_nested(shim: Shim, compress: bool) -> None:
    # compress=True (the default) sends lz4 bodies in chunked requests; compress=False sends them plain
    name = f"native_{int(compress)}"
    with_events = datetime(2024, 11, 24, 6, 53, 54, 123456)
    rows = [
        [with_events, "a" * 32, "svc", {"tenant": "t1", "k": "v"}, 10, [with_events], ["retry"], [{"n": "1"}]],
        [with_events + timedelta(seconds=1), "b" * 32, "svc", {}, 20, [], [], []],
    ]
    columns = ["Timestamp", "TraceId", "ServiceName", "SpanAttributes", "Duration"]
    columns += ["Events.Timestamp", "Events.Name", "Events.Attributes"]
    client = shim.client(compress=compress)
    try:
        _make_spans_table(client, name)
        summary = client.insert(name, rows, column_names=columns)
        assert summary.written_rows >= 2
        got = client.query(f"SELECT {', '.join(f'`{c}`' for c in columns)} FROM {name} ORDER BY TraceId").result_rows
        assert [list(row) for row in got] == rows
        assert client.query(f"SELECT TraceId, Spans FROM {name}_by_trace FINAL ORDER BY TraceId").result_rows == [
            ("a" * 32, 1),
            ("b" * 32, 1),
        ]
    finally:
        client.close()


def test_raw_insert_with_dedup_token_keeps_one_copy(client: Client) -> None:
    name = "dedup_spans"
    _make_spans_table(client, name)
    payload = b"\n".join(json.dumps(_span_row(trace, events=2)).encode() for trace in ("c" * 32, "d" * 32))
    settings = {"insert_deduplication_token": "batch-1", "deduplicate_blocks_in_dependent_materialized_views": 1}
    first = client.raw_insert(name, None, payload, settings=settings, fmt="JSONEachRow")
    client.raw_insert(name, None, payload, settings=settings, fmt="JSONEachRow")
    assert first.written_rows >= 2
    assert _count(client, name) == 2
    assert _count(client, f"{name}_by_trace") == 2  # the view's target deduplicated too
    client.raw_insert(name, None, payload, settings={"insert_deduplication_token": "batch-2"}, fmt="JSONEachRow")
    assert _count(client, name) == 4
    row = client.query(f"SELECT SpanAttributes, `Events.Name` FROM {name} LIMIT 1").first_row
    assert row == ({"tenant": "t1", "gen_ai.operation.name": "chat"}, ["retry", "retry"])


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "lz4", "identity"])
def test_compressed_and_chunked_request_bodies(shim: Shim, client: Client, encoding: str) -> None:
    table = f"enc_{encoding}"
    client.command(f"CREATE TABLE {table} (a UInt32, s String) ENGINE = MergeTree ORDER BY a")
    data = b"".join(json.dumps({"a": i, "s": "x" * i}).encode() + b"\n" for i in range(100))
    compressors: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "zstd": zstd.compress,
        "lz4": lambda raw: lz4.frame.compress(raw[:500]) + lz4.frame.compress(raw[500:]),  # two frames
        "identity": bytes,
    }
    body = compressors[encoding](data)
    params = {"query": f"INSERT INTO {table} FORMAT JSONEachRow"}
    status, headers, _ = shim.http("POST", params, body, {"Content-Encoding": encoding})
    assert status == 200
    assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "100"
    # chunked transfer encoding, the statement at the head of the body
    conn = http.client.HTTPConnection(chshim.HOST, shim.port, timeout=10)
    chunks = iter([f"INSERT INTO {table} FORMAT JSONEachRow\n".encode(), data[:700], data[700:]])
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    conn.request("POST", "/", chunks, {"Authorization": f"Basic {token}"}, encode_chunked=True)
    assert conn.getresponse().status == 200
    conn.close()
    assert client.query(f"SELECT count(), sum(length(s)) FROM {table}").first_row == (200, 2 * sum(range(100)))


def test_server_side_parameters_in_url_and_form(client: Client) -> None:
    tricky = "tab\there 'quoted' back\\slash\nnewline ünï"
    assert client.query("SELECT {s:String}, {n:UInt32}", parameters={"s": tricky, "n": 7}).first_row == (tricky, 7)
    # a parameter longer than 4 KiB makes clickhouse-connect switch to multipart/form-data
    long = "x" * 10_000
    assert client.query("SELECT length({s:String})", parameters={"s": long}).first_row == (10_000,)


def test_each_request_is_its_own_session(shim: Shim, client: Client) -> None:
    client.command("SET max_threads = 1")
    assert client.command("SELECT getSetting('max_threads')") != 1
    assert client.command("SELECT getSetting('max_threads')", settings={"max_threads": 3}) == 3
    client.command("CREATE DATABASE IF NOT EXISTS other")
    client.command("CREATE TABLE IF NOT EXISTS other.t (a UInt8) ENGINE = Memory")
    assert client.command("SELECT currentDatabase()") == "default"
    other = shim.client(database="other")
    try:
        assert other.command("SELECT currentDatabase()") == "other"
        assert other.command("EXISTS TABLE t") == 1
    finally:
        other.close()


def test_concurrent_clients(shim: Shim) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        client = shim.client(autogenerate_session_id=False)
        try:
            for i in range(10):
                assert client.command(f"SELECT {n} * 100 + {i}") == n * 100 + i
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# --- errors -----------------------------------------------------------------------------------


def test_errors_carry_clickhouse_codes(client: Client) -> None:
    with pytest.raises(DatabaseError, match="SYNTAX_ERROR") as syntax:
        client.command("SELEC 1")
    assert syntax.value.code == 62
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE") as unknown:
        client.query("SELECT * FROM no_such_table")
    assert unknown.value.code == 60
    with pytest.raises(DatabaseError) as setting:
        client.command("SELECT 1", settings={"no_such_setting": 1})
    assert setting.value.code == 115
    client.command("CREATE TABLE IF NOT EXISTS strict_rows (a UInt8) ENGINE = Memory")
    with pytest.raises(DatabaseError) as bad_row:
        client.raw_insert("strict_rows", None, b'{"a": "not a number"}', fmt="JSONEachRow")
    assert bad_row.value.code in (6, 26, 27, 72, 117)
    assert client.command("SELECT 1") == 1  # the client is still usable


@pytest.mark.parametrize(
    ("sql", "status", "code"),
    [
        ("SELEC 1", 400, "62"),
        ("  ", 400, "62"),  # an empty query
        ("SELECT * FROM no_such_table", 404, "60"),
        ("SELECT throwIf(1)", 500, "395"),
    ],
)
def test_error_responses_use_clickhouse_statuses(shim: Shim, sql: str, status: int, code: str) -> None:
    got, headers, body = shim.http("POST", {}, sql.encode())
    assert (got, headers["X-ClickHouse-Exception-Code"]) == (status, code)
    assert body.startswith(f"Code: {code}. DB::Exception: ".encode())
    assert b"(version 26." in body


def test_get_requests_are_readonly(shim: Shim) -> None:
    status, headers, _ = shim.http("GET", {"query": "CREATE TABLE ro (a UInt8) ENGINE = Memory"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164")  # READONLY
    assert shim.http("GET", {"query": "SELECT 1"})[2] == b"1\n"


def test_wrong_password_is_rejected(shim: Shim) -> None:
    with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED") as failure:
        shim.client(password="wrong")
    assert failure.value.code == 516
    with pytest.raises(DatabaseError):
        shim.client(username="default", password="")
    status, headers, _ = shim.http(
        "POST", {}, b"SELECT 1", {"Authorization": "Basic " + base64.b64encode(b"aw:x").decode()}
    )
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516")
    status, _, body = shim.http(
        "POST", {}, b"SELECT 1", {"Authorization": "", "X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD}
    )
    assert (status, body) == (200, b"1\n")


# --- outages ----------------------------------------------------------------------------------


def test_outage_then_restart_on_the_same_directory(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "data"
    proc = chshim.start_in_subprocess(port, path, user=USER, password=PASSWORD)
    shim = Shim(port, path, proc)
    client = shim.client()
    try:
        client.command("CREATE TABLE kept (a UInt32) ENGINE = MergeTree ORDER BY a")
        client.raw_insert("kept", None, b'{"a": 1}\n{"a": 2}', fmt="JSONEachRow")
        for stop in (chshim.kill, chshim.stop):  # a crash, then a clean shutdown
            stop(shim.proc)
            started = time.monotonic()
            with pytest.raises(OperationalError):
                client.command("SELECT 1")
            with pytest.raises(OperationalError):
                client.raw_insert("kept", None, b'{"a": 3}', fmt="JSONEachRow")
            assert time.monotonic() - started < 2.0
            assert not client.ping()
            shim.proc = chshim.start_in_subprocess(port, path, user=USER, password=PASSWORD)
            assert client.ping()
            assert client.query("SELECT a FROM kept ORDER BY a").result_rows == [(1,), (2,)]
    finally:
        client.close()
        chshim.stop(shim.proc)


def test_wait_listening_reports_a_shim_that_cannot_start(tmp_path: Path) -> None:
    port = free_port()
    # the port is taken: the second shim exits, and the helper says so with its log
    with chshim.running(port, tmp_path / "a"), pytest.raises(RuntimeError, match="exited"):
        chshim.start_in_subprocess(port, tmp_path / "b", timeout=20)
    with pytest.raises(TimeoutError):
        chshim.wait_listening(port, 0.2)


# --- the product's store over HTTP ------------------------------------------------------------


def test_store_over_http_through_the_shim(shim: Shim) -> None:
    password = PASSWORD.replace(":", "%3A").replace("@", "%40")
    store = ClickHouseStore.open(f"http://{USER}:{password}@{chshim.HOST}:{shim.port}/agentwatch_shim")
    try:
        assert store.ping()
        assert store.ensure_schema() != []
        assert store.pending_migrations() == []
        row = {
            "Timestamp": f"{int(time.time())}.000000123",
            "TraceId": "e" * 32,
            "SpanId": "f" * 16,
            "ParentSpanId": "",
            "TraceState": "",
            "SpanName": "chat",
            "SpanKind": "Client",
            "ServiceName": "svc",
            "ResourceAttributes": {"service.name": "svc"},
            "ScopeName": "",
            "ScopeVersion": "",
            "SpanAttributes": {"agentwatch.tenant.id": "t1"},
            "Duration": 5,
            "StatusCode": "Ok",
            "StatusMessage": "",
            "Events.Timestamp": [],
            "Events.Name": [],
            "Events.Attributes": [],
            "Links.TraceId": [],
            "Links.SpanId": [],
            "Links.TraceState": [],
            "Links.Attributes": [],
        }
        payload = json.dumps(row).encode()
        store.insert_json_rows("otel_traces", payload, dedup_token="tok-1")
        store.insert_json_rows("otel_traces", payload, dedup_token="tok-1")  # a replay
        assert store.query("SELECT count() AS n FROM otel_traces") == [{"n": 1}]
        got = store.query("SELECT SpanName FROM otel_traces WHERE TraceId = {t:String}", {"t": "e" * 32})
        assert got == [{"SpanName": "chat"}]
        with pytest.raises(StoreRejected):
            store.insert_json_rows("otel_traces", b'{"NoSuchColumn": 1}', dedup_token="tok-2")
    finally:
        store.close()


def test_store_reports_an_outage_as_unavailable(tmp_path: Path) -> None:
    port = free_port()
    store = ClickHouseStore.open(f"http://default@{chshim.HOST}:{port}/default", connect_timeout=1)
    try:
        assert not store.ping()
        with pytest.raises(StoreUnavailable):
            store.insert_json_rows("t", b'{"a": 1}', dedup_token="tok")
        with chshim.running(port, tmp_path / "data"):
            assert store.ping()
            store.command("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a")
            store.insert_json_rows("t", b'{"a": 1}', dedup_token="tok")
            assert store.query("SELECT a FROM t") == [{"a": 1}]
    finally:
        store.close()
