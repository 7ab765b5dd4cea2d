"""The collector's read-only SQL endpoint (``--sql``), driven as Grafana, curl and an attacker would.

One real collector process (embedded store, tokens file, small limits) serves the module; spans
arrive over OTLP while queries run. What is checked:

- refusals before execution, each a ClickHouse-style error: statements that are not reads, table
  functions and functions that reach files, the network, processes or dictionaries, ``INTO OUTFILE``,
  system tables beyond metadata, multi-statements — including hidden ones (in a CTE, a nested
  subquery, a JOIN, a UNION, a DESCRIBE, behind comments or quoted names);
- what must pass: keywords inside strings, comments and identifiers, bound parameters, FORMAT;
- settings: harmless ones pass, limits are lowered but never raised, others refused (code 164);
- limits on every query: result rows, time, memory;
- auth: the ``sql`` scope as Basic password, X-ClickHouse-Key or Bearer; others get 516/403;
  a tenant-bound ``sql`` token is refused at start; loopback only without tokens; only embedded stores;
- a busy ``--sql`` port names the port and the flag, exit 2, before the store exists;
- the clickhouse-go handshake answered at the client's protocol revision; gzip responses.
"""

from __future__ import annotations

import gzip
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _collector_proc import CollectorProcess
from _otlp_clients import run_example_agent
from _ports import free_port
from _sqlclient import basic, sql_request
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from agentwatch.collectors.config.auth import Authenticator, Scope
from agentwatch.collectors.config.settings import CollectorSettings, SettingsError
from agentwatch.collectors.service.sql_guard import Limits, SqlError, check_tokens, query_settings, tokenize

pytestmark = pytest.mark.integration  # a real collector process

SQL_TOKEN = "sql-token-for-grafana"
INGEST_TOKEN = "ingest-token-acme"
METRICS_TOKEN = "metrics-token"
TOKENS = f"""tokens:
  - token: "{INGEST_TOKEN}"
    tenant: acme
    scopes: [ingest, read]
  - token: "{SQL_TOKEN}"
    scopes: [sql]
  - token: "{METRICS_TOKEN}"
    scopes: [metrics]
"""
AUTH = basic("grafana", SQL_TOKEN)


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectorProcess, int]]:
    workdir = tmp_path_factory.mktemp("sql-endpoint")
    (workdir / "tokens.yaml").write_text(TOKENS)
    port = free_port()
    process = CollectorProcess(
        workdir,
        extra_args=[
            *("--sql", f"127.0.0.1:{port}", "--tokens", str(workdir / "tokens.yaml")),
            *("--sql-max-result-rows", "1000", "--sql-max-execution-seconds", "2"),
            *("--sql-max-memory-bytes", str(200 << 20), "--no-drift-enabled"),
        ],
    ).start()
    exporter = OTLPSpanExporter(endpoint=process.traces_url, headers={"Authorization": f"Bearer {INGEST_TOKEN}"})
    run_example_agent(exporter)
    try:
        yield process, port
    finally:
        process.stop()


def _sql(
    port: int,
    sql: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, str]:
    reply = sql_request(port, sql, params=params, headers={**AUTH, **(headers or {})}, method=method)
    return reply.status, reply.text


REFUSED = [
    # (statement, the code in the error body)
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", 497),
    ("SELECT file('/etc/hostname')", 497),
    ("select * from FILE('/etc/passwd')", 497),
    ("SELECT * FROM `file`('/etc/passwd')", 497),
    ("SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a String')", 497),
    ("SELECT * FROM remote('127.0.0.1', system.one)", 497),
    ("SELECT * FROM remoteSecure('127.0.0.1', system.one)", 497),
    ("SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV')", 497),
    ("SELECT * FROM hdfs('hdfs://127.0.0.1:1/x', 'CSV')", 497),
    ("SELECT * FROM executable('id', 'TSV', 'x String')", 497),
    ("SELECT * FROM input('x String')", 497),
    ("SELECT * FROM mysql('127.0.0.1:1', 'db', 't', 'u', 'p')", 497),
    ("SELECT * FROM postgresql('127.0.0.1:1', 'db', 't', 'u', 'p')", 497),
    ("SELECT * FROM jdbc('x', 'y')", 497),
    ("SELECT * FROM odbc('x', 'y', 'z')", 497),
    ("SELECT * FROM merge('default', '.*')", 497),
    ("SELECT * FROM generateRandom('a UInt8')", 497),
    ("SELECT dictGet('d', 'a', toUInt64(1))", 497),
    ("SELECT * FROM dictionary('d')", 497),
    ("WITH t AS (SELECT * FROM url('http://127.0.0.1:1/x', CSV, 'a String')) SELECT * FROM t", 497),
    ("SELECT * FROM (SELECT * FROM (SELECT * FROM file('x')))", 497),
    ("SELECT count() FROM otel_traces WHERE SpanName IN (SELECT * FROM file('x', 'LineAsString'))", 497),
    ("SELECT 1 UNION ALL SELECT * FROM s3('http://127.0.0.1:1/b/k')", 497),
    ("SELECT * FROM numbers(1) AS a JOIN file('x') AS b ON 1", 497),
    ("DESCRIBE TABLE file('/etc/passwd')", 497),
    ("SELECT * FROM system.processes", 497),
    ("SELECT * FROM system.query_log", 497),
    ("SHOW PROCESSLIST", 497),
    ("SELECT /* hidden */ * FROM -- really\n file('x')", 497),
    ("SELECT 1 INTO OUTFILE '/tmp/agentwatch-outfile.txt'", 164),
    ("SELECT 1 into /* x */ outfile '/tmp/agentwatch-outfile.txt'", 164),
    ("INSERT INTO otel_traces SELECT * FROM otel_traces", 164),
    ("CREATE TABLE x (a UInt8) ENGINE = Memory", 164),
    ("DROP TABLE otel_traces", 164),
    ("ALTER TABLE otel_traces DELETE WHERE 1", 164),
    ("TRUNCATE TABLE otel_traces", 164),
    ("SYSTEM FLUSH LOGS", 164),
    ("SET max_result_rows = 0", 164),
    ("KILL QUERY WHERE 1", 164),
    ("ATTACH TABLE x", 164),
    ("DETACH TABLE otel_traces", 164),
    ("OPTIMIZE TABLE otel_traces", 164),
    ("USE system", 164),
    ("EXPLAIN SELECT * FROM file('x')", 164),
    ("SELECT 1; DROP TABLE otel_traces", 62),
    ("SELECT 1 SETTINGS max_result_rows = 0", 164),
    ("SELECT 'unterminated", 62),
]


@pytest.mark.parametrize(("sql", "code"), REFUSED, ids=[f"{i}-{s[:40]}" for i, (s, _) in enumerate(REFUSED)])
def test_refused_before_execution_with_a_clickhouse_error(
    collector: tuple[CollectorProcess, int], sql: str, code: int
) -> None:
    _process, port = collector
    status, text = _sql(port, sql)
    assert status in (400, 403), (status, text)
    assert text.startswith(f"Code: {code}. DB::Exception: "), text
    assert not Path("/tmp/agentwatch-outfile.txt").exists()


ALLOWED = [
    ("SELECT 'INSERT INTO file(x) SYSTEM SHUTDOWN' AS s", "INSERT INTO file(x) SYSTEM SHUTDOWN"),
    ("SELECT 1 AS `file` -- file('x')", "1"),
    ("SELECT /* url('x') ; DROP */ 2", "2"),
    ('SELECT 3 AS "into outfile"', "3"),
    ("SELECT $$file(/etc/passwd)$$", "file(/etc/passwd)"),
    ("SELECT format('{} {}', 'a', 'b')", "a b"),
    ("SELECT count() FROM numbers(10)", "10"),
    ("WITH x AS (SELECT number FROM numbers(3)) SELECT sum(number) FROM x", "3"),
    ("SELECT name FROM system.databases WHERE name = 'default'", "default"),
    ("(SELECT 4)", "4"),
    ("SELECT 5;", "5"),
    ("EXISTS TABLE otel_traces", "1"),
]


@pytest.mark.parametrize(("sql", "expected"), ALLOWED)
def test_reads_pass_even_with_keywords_in_strings_comments_and_names(
    collector: tuple[CollectorProcess, int], sql: str, expected: str
) -> None:
    _process, port = collector
    status, text = _sql(port, sql)
    assert status == 200, text
    assert text.strip() == expected


def test_the_store_tables_read_as_grafana_reads_them(collector: tuple[CollectorProcess, int]) -> None:
    _process, port = collector
    status, text = _sql(port, "SHOW TABLES")
    assert status == 200
    assert "otel_traces" in text.split()
    status, text = _sql(port, "DESCRIBE TABLE otel_traces")
    assert status == 200
    assert "SpanAttributes" in text
    status, text = _sql(port, "SELECT name FROM system.columns WHERE table = 'agent_runs' AND database = 'default'")
    assert status == 200
    assert "StopReason" in text.split()
    status, text = _sql(port, "SELECT {n:UInt8} + 1 FORMAT JSONEachRow", params={"param_n": "41"})
    assert status == 200
    assert text.strip() == "{\"plus(_CAST(41, 'UInt8'), 1)\":42}"
    status, text = _sql(port, "SELECT count() FROM otel_traces", method="GET")
    assert status == 200
    assert int(text) > 0


def test_limits_hold_on_every_query(collector: tuple[CollectorProcess, int]) -> None:
    _process, port = collector
    status, text = _sql(port, "SELECT number FROM numbers(5000)")
    assert status == 500, text
    assert text.startswith("Code: 396."), text  # TOO_MANY_ROWS_OR_BYTES: max 1000
    status, text = _sql(port, "SELECT count() FROM numbers(5000)")
    assert (status, text.strip()) == (200, "5000")  # the limit is on the result, not on what is read
    status, text = _sql(port, "SELECT count() FROM numbers_mt(1000000000000) WHERE NOT ignore(sipHash64(number))")
    assert status in (408, 500), text
    assert text.startswith("Code: 159."), text  # TIMEOUT_EXCEEDED after 2 s
    status, text = _sql(port, "SELECT groupArray(toString(number)) FROM numbers(100000000)")
    assert text.startswith("Code: 241."), text  # MEMORY_LIMIT_EXCEEDED: 200 MiB


def test_settings_from_the_client_lower_limits_but_never_raise_them(collector: tuple[CollectorProcess, int]) -> None:
    _process, port = collector
    for raising in ({"max_result_rows": "0"}, {"max_result_rows": "100000000"}, {"max_execution_time": "600"}):
        status, text = _sql(port, "SELECT number FROM numbers(5000)", params=raising)
        assert text.startswith("Code: 396."), (raising, text)
    status, text = _sql(port, "SELECT number FROM numbers(20)", params={"max_result_rows": "10"})
    assert text.startswith("Code: 396."), text
    status, text = _sql(port, "SELECT number FROM numbers(20)", params={"limit": "3", "readonly": "2"})
    assert (status, text.split()) == (200, ["0", "1", "2"])
    for refused in ({"readonly_and_more": "1"}, {"allow_ddl": "1"}, {"max_threads": "1000"}):
        status, text = _sql(port, "SELECT 1", params=refused)
        assert (status, text.split(".")[0]) == (403, "Code: 164"), (refused, text)
    status, text = _sql(port, "SELECT 1", params={"compress": "1"})
    assert status == 501
    assert "gzip" in text


def test_query_settings_unit() -> None:
    limits = Limits(max_execution_time=30, max_memory_usage=100, max_result_rows=10, max_result_bytes=1000)
    chosen = query_settings({"max_result_rows": "5", "max_memory_usage": "0", "limit": "2"}, limits)
    assert chosen["max_result_rows"] == "5"
    assert chosen["max_memory_usage"] == "100"
    assert chosen["limit"] == "2"
    assert chosen["result_overflow_mode"] == "throw"
    with pytest.raises(SqlError, match="readonly mode"):
        query_settings({"allow_introspection_functions": "1"}, limits)


def test_tokenizer_keeps_strings_comments_and_identifiers_apart() -> None:
    tokens = tokenize("SELECT 'it''s \\' file(' AS `a``b`, /* /* nested */ url( */ x -- y\n# z\n FROM t")
    assert [(t.kind, t.text) for t in tokens] == [
        ("word", "SELECT"),
        ("string", "it''s \\' file("),
        ("word", "AS"),
        ("quoted", "a``b"),
        ("punct", ","),
        ("word", "x"),
        ("word", "FROM"),
        ("word", "t"),
    ]
    for broken in ("SELECT 'x", "SELECT /* x", "SELECT `x", "SELECT $$x"):
        with pytest.raises(SqlError):
            check_tokens(broken)


def test_auth_needs_the_sql_scope(collector: tuple[CollectorProcess, int]) -> None:
    _process, port = collector
    for headers in ({}, basic("grafana", "wrong"), basic("grafana", INGEST_TOKEN), {"X-ClickHouse-Key": METRICS_TOKEN}):
        reply = sql_request(port, "SELECT 1", headers=headers)
        assert reply.status == 403, headers
        assert reply.text.startswith("Code: 516. DB::Exception: Authentication failed"), reply.text
        assert reply.headers["x-clickhouse-exception-code"] == "516"
    for headers in (
        AUTH,
        {"X-ClickHouse-User": "x", "X-ClickHouse-Key": SQL_TOKEN},
        {"Authorization": f"Bearer {SQL_TOKEN}"},
    ):
        reply = sql_request(port, "SELECT 1", headers=headers)
        assert (reply.status, reply.text) == (200, "1\n"), headers
    assert sql_request(port, None, method="GET", path="/ping").body == b"Ok.\n"  # no auth, as on a server


def test_response_headers_and_gzip(collector: tuple[CollectorProcess, int]) -> None:
    _process, port = collector
    reply = sql_request(
        port,
        "SELECT number FROM numbers(100) FORMAT JSONCompact",
        params={"enable_http_compression": "1", "query_id": "q-1"},
        headers={**AUTH, "Accept-Encoding": "gzip"},
    )
    assert reply.status == 200
    assert reply.headers["content-encoding"] == "gzip"
    assert b'"rows": 100' in gzip.decompress(reply.body)
    assert reply.headers["x-clickhouse-query-id"] == "q-1"
    assert reply.headers["x-clickhouse-format"] == "JSONCompact"
    assert '"read_rows"' in reply.headers["x-clickhouse-summary"]
    assert reply.headers["x-clickhouse-timezone"]


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def test_clickhouse_go_handshake_is_answered_at_the_clients_revision(collector: tuple[CollectorProcess, int]) -> None:
    """clickhouse-go v2.3x+ reads its hello at its own protocol revision, then every block at ``revision()``."""
    _process, port = collector
    hello = "SELECT displayName(), version(), revision(), timezone()"
    reply = sql_request(
        port, hello, params={"default_format": "Native", "client_protocol_version": "54460"}, headers=AUTH
    )
    assert reply.status == 200
    data = reply.body
    # block info: field 1 (is_overflows) = 0, field 2 (bucket_num) = -1, end
    assert data[:3] == b"\x01\x00\x02"
    assert struct.unpack("<i", data[3:7]) == (-1,)
    assert data[7] == 0
    columns, at = _uvarint(data, 8)
    rows, at = _uvarint(data, at)
    assert (columns, rows) == (4, 1)
    names = []
    for _ in range(columns):
        length, at = _uvarint(data, at)
        names.append(data[at : at + length].decode())
        at += length
        length, at = _uvarint(data, at)
        kind = data[at : at + length].decode()
        at += length
        assert data[at] == 0  # no custom serialization
        at += 1
        if kind == "UInt32":
            assert struct.unpack("<I", data[at : at + 4]) == (0,)  # revision() = 0: later blocks at revision 0
            at += 4
        else:
            length, at = _uvarint(data, at)
            at += length
    assert names == ["displayName()", "version()", "revision()", "timezone()"]
    assert at == len(data)


def test_queries_run_while_spans_arrive(collector: tuple[CollectorProcess, int]) -> None:
    process, port = collector
    failures: list[str] = []

    def query_loop() -> None:
        for _ in range(15):
            status, text = _sql(port, "SELECT count() FROM otel_traces")
            if status != 200 or not text.strip().isdigit():
                failures.append(text)

    before = int(_sql(port, "SELECT count() FROM agent_runs FINAL")[1])
    threads = [threading.Thread(target=query_loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    exporter = OTLPSpanExporter(endpoint=process.traces_url, headers={"Authorization": f"Bearer {INGEST_TOKEN}"})
    run_example_agent(exporter, track="canary")
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures[:3]
    for _ in range(100):
        after = int(_sql(port, "SELECT count() FROM agent_runs FINAL")[1])
        if after > before:
            break
        threading.Event().wait(0.1)
    assert after > before


# --- configuration --------------------------------------------------------------------------------


def test_off_by_default_and_loopback_only_without_tokens() -> None:
    assert CollectorSettings().sql == ""
    with pytest.raises(SettingsError, match=r"sql=0\.0\.0\.0:8124 listens beyond loopback"):
        CollectorSettings(sql="0.0.0.0:8124").validate().check_exposure()
    CollectorSettings(sql="127.0.0.1:8124").validate().check_exposure()
    CollectorSettings(sql="0.0.0.0:8124", tokens="tokens.yaml").validate().check_exposure()
    with pytest.raises(SettingsError, match="embedded store"):
        CollectorSettings(sql="127.0.0.1:8124", clickhouse="http://ch:8123/default").validate()


def test_a_tenant_bound_sql_token_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text('tokens:\n  - token: "t"\n    tenant: acme\n    scopes: [read, sql]\n')
    with pytest.raises(SettingsError, match="sql scope reads every tenant's rows"):
        Authenticator.from_file(path)
    path.write_text('tokens:\n  - token: "t"\n    scopes: [ingest]\n')
    with pytest.raises(SettingsError, match="tenant must be a non-empty string"):
        Authenticator.from_file(path)
    path.write_text('tokens:\n  - token: "t"\n    scopes: [sql, metrics]\n')
    principal = Authenticator.from_file(path).authenticate("Bearer t", Scope.SQL)
    assert principal.tenant is None


def _collector_command(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "agentwatch.collectors.cli.main", "collector"),
            *("--clickhouse", f"chdb://{tmp_path / 'data'}", "--spool", str(tmp_path / "spool")),
            *("--otlp-http", "127.0.0.1:0", "--otlp-grpc", "127.0.0.1:0", "--metrics", "127.0.0.1:0"),
            *args,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_start_refusals_name_the_problem_before_the_store_exists(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = _collector_command(tmp_path, "--sql", f"127.0.0.1:{port}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"agentwatch collector: --sql 127.0.0.1:{port} is in use by another process; "
        "choose another port with --sql HOST:PORT"
    )
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text('tokens:\n  - token: "t"\n    tenant: acme\n    scopes: [sql]\n')
    done = _collector_command(tmp_path, "--sql", "127.0.0.1:0", "--tokens", str(tokens))
    assert done.returncode == 2, done.stderr
    assert "needs a token without a tenant" in done.stderr, done.stderr
    done = _collector_command(tmp_path, "--sql", "0.0.0.0:0")
    assert done.returncode == 2, done.stderr
    assert "sql=0.0.0.0:0 listens beyond loopback" in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "spool").exists()
