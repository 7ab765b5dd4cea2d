"""A read-only ClickHouse HTTP interface over the collector's embedded store, for Grafana.

Grafana's ClickHouse data source (clickhouse-go v2 over HTTP) cannot open a chDB directory, and an
embedded store belongs to the collector's process anyway. So ``agentwatch collector --sql HOST:PORT``
(and ``agentwatch demo --serve``, on 127.0.0.1:8124) answers the subset of ClickHouse's HTTP
interface that the driver, the plugin and curl use, on its own listener, off unless asked for:

- ``GET /ping`` -> ``Ok.``; ``GET``/``POST /`` with the SQL in ``query`` and/or the body (joined
  by a newline, as the server does), ``database`` (parameter or ``X-ClickHouse-Database``),
  ``default_format`` (or ``X-ClickHouse-Format``; a ``FORMAT`` clause wins), ``param_NAME`` bound
  values, settings as URL parameters (see ``sql_guard.query_settings``), ``query_id`` echoed.
- Output in any ClickHouse format (Native for the driver, JSON or TabSeparated for curl);
  gzip or deflate response bodies when ``enable_http_compression=1`` and ``Accept-Encoding`` ask
  for them, request bodies in gzip or deflate. ClickHouse's own block compression
  (``compress=1``, the driver's LZ4/ZSTD) is refused: the plugin uses gzip over HTTP.
- Headers ``X-ClickHouse-Summary``, ``-Query-Id``, ``-Timezone``, ``-Server-Display-Name``,
  ``-Format``, and on errors ``-Exception-Code`` with ClickHouse's error body and HTTP status.
- Native is written at protocol revision 0 (chDB's only one). clickhouse-go from v2.3x on opens
  with ``SELECT displayName(), version(), revision(), timezone()`` read at its own revision; that
  query is answered here at the revision the client asked for, with ``revision()`` = 0, so the
  driver reads every later block at revision 0, which is what this endpoint writes.

Security (the reasons are in README "Grafana on the embedded store"): every statement passes
``sql_guard``'s token and ``EXPLAIN AST`` checks, then runs on a chDB handle of its own (one
session per request: nothing a request sets survives it) with the limits set first and
``readonly=1`` last, so nothing in the query can change them. With a tokens file every request
needs a token with the ``sql`` scope (Basic auth password, ``X-ClickHouse-Key`` or Bearer), even
on loopback; the scope reads every tenant, so only tokens without a tenant may hold it
(``config/auth.py``). Without tokens the listener must be on loopback (``check_exposure``).

Only embedded (``chdb://``) stores are served: with a ClickHouse server, Grafana should use the
server itself with a read-only user (``deploy/docker-compose.yaml`` does).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import logging
import os
import re
import struct
import threading
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from agentwatch.collectors.config.auth import Authenticator, AuthError, Scope
from agentwatch.collectors.service.sql_guard import (
    Limits,
    SqlError,
    check_ast,
    check_tokens,
    output_format,
    query_settings,
)
from agentwatch.collectors.store.clickhouse import MEMORY_PATH, ClickHouseStore

log = logging.getLogger("agentwatch.collector.sql")

DEFAULT_FORMAT: Final = "TabSeparated"
MAX_REQUEST_BYTES: Final = 1 << 20  # a dashboard query is a few KiB; ClickHouse's max_query_size is 256 KiB
SLOT_WAIT_S: Final = 10.0
HELLO_QUERY: Final = "SELECT displayName(), version(), revision(), timezone()"
CUSTOM_SERIALIZATION_REVISION: Final = 54454
DISPLAY_NAME: Final = "agentwatch"
# URL parameters that steer the HTTP exchange, not the query
_TRANSPORT_PARAMS: Final = frozenset(
    {
        "query", "database", "default_format", "query_id", "quota_key", "session_id", "session_timeout",
        "session_check", "buffer_size", "wait_end_of_query", "client_protocol_version", "compress", "decompress",
        "enable_http_compression", "http_zlib_compression_level", "send_progress_in_http_headers",
        "cancel_http_readonly_queries_on_client_close", "add_http_cors_header", "user", "role",
    }
)  # fmt: skip
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ERROR_CODE: Final = re.compile(r"Code: (\d+)\. DB::Exception: ")
_ERROR_NAME: Final = re.compile(r"\(([A-Z][A-Z0-9_]+)\)[.\s]*\Z")
_TRAILER: Final = re.compile(r"(?:\s*\(version [^)]*\))|(?:\.? \([A-Z][A-Z0-9_]+\))+\s*$")
_STATUS_BY_NAME: Final = {
    **dict.fromkeys(("READONLY", "ACCESS_DENIED", "AUTHENTICATION_FAILED"), 403),
    **dict.fromkeys(
        ("SYNTAX_ERROR", "BAD_ARGUMENTS", "ILLEGAL_TYPE_OF_ARGUMENT", "TYPE_MISMATCH", "UNKNOWN_QUERY_PARAMETER"),
        400,
    ),
    **dict.fromkeys(
        ("UNKNOWN_TABLE", "UNKNOWN_IDENTIFIER", "UNKNOWN_FUNCTION", "UNKNOWN_DATABASE", "UNKNOWN_SETTING"), 404
    ),
    "TIMEOUT_EXCEEDED": 408,
}
_CONTENT_TYPES: Final = {
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
}


class _ChdbResult(Protocol):
    def bytes(self) -> bytes: ...
    def rows_read(self) -> int: ...
    def bytes_read(self) -> int: ...
    def elapsed(self) -> float: ...


class _ChdbConnection(Protocol):
    def query(self, query: str, format: str = ..., params: Mapping[str, str] | None = ...) -> _ChdbResult: ...
    def close(self) -> None: ...


@dataclass
class SqlRequest:
    """One request, parsed: the SQL and everything that steers it."""

    sql: str
    database: str
    default_format: str = DEFAULT_FORMAT
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    client_revision: int = 0


@dataclass
class Outcome:
    body: bytes
    fmt: str
    summary: dict[str, str]


def engine_error(text: str) -> SqlError:
    """A chDB exception text (``Code: N. DB::Exception: ... (NAME)``, sometimes nested) as a ``SqlError``."""
    found = _ERROR_CODE.search(text)
    if found is None:
        return SqlError(1001, "STD_EXCEPTION", text.strip() or "unknown engine failure", 500)
    inner = _ERROR_CODE.sub("", text[found.start() :])
    named = _ERROR_NAME.search(inner)
    name = named.group(1) if named else "UNKNOWN_EXCEPTION"
    message = _TRAILER.sub("", inner).strip().rstrip(".")
    return SqlError(int(found.group(1)), name, message, _STATUS_BY_NAME.get(name, 500))


# --- Native encoding of the driver's hello ----------------------------------------------------


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    raw = text.encode()
    return _uvarint(len(raw)) + raw


def hello_block(revision: int, version: str, timezone: str) -> bytes:
    """The answer to ``HELLO_QUERY`` in Native at ``revision``, saying ``revision()`` = 0 (see the module docstring)."""
    out = bytearray()
    if revision > 0:  # block info: field 1 is_overflows=false, field 2 bucket_num=-1, end marker
        out += _uvarint(1) + b"\x00" + _uvarint(2) + struct.pack("<i", -1) + _uvarint(0)
    columns = (
        ("displayName()", "String", _string(DISPLAY_NAME)),
        ("version()", "String", _string(version)),
        ("revision()", "UInt32", struct.pack("<I", 0)),
        ("timezone()", "String", _string(timezone)),
    )
    out += _uvarint(len(columns)) + _uvarint(1)
    for name, kind, data in columns:
        out += _string(name) + _string(kind)
        if revision >= CUSTOM_SERIALIZATION_REVISION:
            out += b"\x00"  # no custom serialization
        out += data
    return bytes(out)


# --- the engine side --------------------------------------------------------------------------


class EmbeddedSql:
    """Runs checked statements on the collector's chDB engine, one fresh handle (session) per request.

    chDB hosts one engine per process and any number of handles to it, each its own session; the
    store's own handles (writer, readers) are never used here, so a query can neither change their
    settings nor queue behind an insert. ``max_concurrent`` bounds the queries running at once.
    """

    def __init__(self, path: str, limits: Limits, *, max_concurrent: int = 4) -> None:
        self.path = path if path == MEMORY_PATH else os.path.realpath(path)  # spelt as clickhouse-connect does
        self.limits = limits
        self._slots = threading.BoundedSemaphore(max_concurrent)
        conn = self._open()
        try:
            row = self._run(conn, "SELECT version(), timezone()", "TabSeparated").bytes().decode().split()
        finally:
            conn.close()
        self.version, self.timezone = row[0], row[1]

    @classmethod
    def for_store(cls, store: ClickHouseStore, limits: Limits) -> EmbeddedSql:
        if not store.embedded or store.target.path is None:
            raise ValueError("the SQL endpoint serves embedded (chdb://) stores only")
        return cls(store.target.path, limits)

    def _open(self) -> _ChdbConnection:
        import chdb

        try:
            return cast(_ChdbConnection, chdb.connect(self.path))  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise engine_error(str(exc)) from exc

    @staticmethod
    def _run(
        conn: _ChdbConnection, sql: str, fmt: str = DEFAULT_FORMAT, params: Mapping[str, str] | None = None
    ) -> _ChdbResult:
        try:
            return conn.query(sql, fmt, params=dict(params or {}))
        except Exception as exc:  # chDB raises with the engine's "Code: N. DB::Exception: ..." text
            raise engine_error(str(exc)) from exc

    def execute(self, request: SqlRequest) -> Outcome:
        """Check and run one statement; raises ``SqlError`` (refused, invalid, over a limit, busy)."""
        tokens = check_tokens(request.sql)
        fmt = output_format(tokens) or request.default_format
        settings = query_settings(request.settings, self.limits)
        if request.database == "system":
            raise SqlError(497, "ACCESS_DENIED", "database=system is not allowed: name system tables explicitly", 403)
        if " ".join(request.sql.split()).rstrip(";").strip() == HELLO_QUERY and fmt == "Native":
            body = hello_block(request.client_revision, self.version, self.timezone)
            return Outcome(body, fmt, _summary(0, 0, 0.0))
        if not self._slots.acquire(timeout=SLOT_WAIT_S):
            raise SqlError(202, "TOO_MANY_SIMULTANEOUS_QUERIES", "Too many simultaneous queries, try again", 503)
        try:
            conn = self._open()
            try:
                self._run(conn, f"USE `{request.database}`")  # checked to be an identifier
                explained = self._run(conn, "EXPLAIN AST " + request.sql, "TabSeparated", request.params)
                check_ast(explained.bytes().decode(errors="replace"))
                assignments = ", ".join(f"{name} = {_literal(value)}" for name, value in settings.items())
                self._run(conn, f"SET {assignments}")
                self._run(conn, "SET readonly = 1")  # last: from here on no setting can change
                result = self._run(conn, request.sql, fmt, request.params)
                body = result.bytes() or b""
                return Outcome(body, fmt, _summary(result.rows_read(), result.bytes_read(), result.elapsed()))
            finally:
                conn.close()
        finally:
            self._slots.release()


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _summary(rows: int, size: int, elapsed_s: float) -> dict[str, str]:
    return {
        "read_rows": str(rows),
        "read_bytes": str(size),
        "written_rows": "0",
        "written_bytes": "0",
        "total_rows_to_read": "0",
        "elapsed_ns": str(int(elapsed_s * 1e9)),
    }


# --- the HTTP side ----------------------------------------------------------------------------


def _credential(request: Request) -> str | None:
    """The token a client presented: Basic auth password (what Grafana sends), X-ClickHouse-Key or Bearer."""
    authorization = request.headers.get("authorization", "").strip()
    kind, _, value = authorization.partition(" ")
    if kind.lower() == "basic":
        try:
            _user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return password or None
    if kind.lower() == "bearer":
        return value.strip() or None
    return request.headers.get("x-clickhouse-key") or None


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return body
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, EOFError, zlib.error) as exc:
        raise SqlError(271, "CANNOT_DECOMPRESS", f"Cannot decompress the {encoding} request body: {exc}", 400) from exc
    raise SqlError(48, "NOT_IMPLEMENTED", f"Content-Encoding {encoding!r} is not supported (use gzip or deflate)", 501)


class SqlEndpoint:
    """The ASGI app of the SQL listener (see the module docstring)."""

    def __init__(self, engine: EmbeddedSql, authenticator: Authenticator, *, database: str) -> None:
        self.engine = engine
        self.authenticator = authenticator
        self.database = database

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._respond(request)
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        params = dict(request.query_params)
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            body = await self._body(request)
            path = request.url.path
            if path in ("/ping", "/replicas_status") or (path == "/" and request.method == "GET" and not params):
                return Response(b"Ok.\n", media_type="text/html; charset=UTF-8")
            if path != "/":
                return Response(f"There is no handle {path}\n".encode(), status_code=404, media_type="text/plain")
            if request.method not in ("GET", "POST"):
                raise SqlError(1, "UNSUPPORTED_METHOD", f"HTTP method {request.method} is not supported", 405)
            self._authenticate(request)
            sql_request = self._parse(request, params, body)
            outcome = await run_in_threadpool(self.engine.execute, sql_request)
        except SqlError as error:
            if error.status >= 500 or error.code in (62, 164, 497):
                log.info("SQL endpoint refused or failed a query: %s (%s)", error.message, error.name)
            return self._error(error, query_id)
        return self._success(request, params, outcome, query_id)

    async def _body(self, request: Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_REQUEST_BYTES:
                raise SqlError(229, "QUERY_IS_TOO_LARGE", f"the request body exceeds {MAX_REQUEST_BYTES} bytes", 413)
            chunks.append(chunk)
        return _decompress(b"".join(chunks), request.headers.get("content-encoding", ""))

    def _authenticate(self, request: Request) -> None:
        if not self.authenticator.enabled:
            return
        token = _credential(request)
        try:
            self.authenticator.authenticate(f"Bearer {token}" if token else None, Scope.SQL)
        except AuthError as exc:
            raise SqlError(
                516,
                "AUTHENTICATION_FAILED",
                f"Authentication failed: {exc.message} (give a token with the 'sql' scope as the password)",
                403,
            ) from None

    def _parse(self, request: Request, params: dict[str, str], body: bytes) -> SqlRequest:
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise SqlError(48, "NOT_IMPLEMENTED", "External data (multipart/form-data) is not supported", 501)
        for flag in ("compress", "decompress"):
            if params.get(flag, "0") not in ("", "0", "false"):
                raise SqlError(
                    48,
                    "NOT_IMPLEMENTED",
                    f"{flag}=1 (ClickHouse block compression, LZ4/ZSTD) is not supported: use gzip HTTP compression",
                    501,
                )
        query = params.get("query", "")
        text = body.decode("utf-8", errors="replace")
        sql = f"{query}\n{text}" if query and text else query or text
        database = params.get("database") or request.headers.get("x-clickhouse-database") or self.database
        if not _IDENTIFIER.match(database):
            raise SqlError(36, "BAD_ARGUMENTS", f"Unsupported database name {database!r}", 400)
        revision_text = params.get("client_protocol_version", "0")
        parsed = SqlRequest(
            sql=sql,
            database=database,
            default_format=params.get("default_format") or request.headers.get("x-clickhouse-format") or DEFAULT_FORMAT,
            client_revision=int(revision_text) if revision_text.isdigit() else 0,
        )
        for name, value in params.items():
            if name.startswith("param_"):
                parsed.params[name.removeprefix("param_")] = value
            elif name not in _TRANSPORT_PARAMS and not name.startswith("http_"):
                parsed.settings[name] = value
        return parsed

    def _headers(self, query_id: str) -> dict[str, str]:
        return {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
            "X-ClickHouse-Timezone": self.engine.timezone,
        }

    def _error(self, error: SqlError, query_id: str) -> Response:
        headers = {**self._headers(query_id), "X-ClickHouse-Exception-Code": str(error.code)}
        return Response(
            error.body(self.engine.version), status_code=error.status, headers=headers, media_type="text/plain"
        )

    def _success(self, request: Request, params: Mapping[str, str], outcome: Outcome, query_id: str) -> Response:
        headers = {
            **self._headers(query_id),
            "X-ClickHouse-Format": outcome.fmt,
            "X-ClickHouse-Summary": json.dumps(outcome.summary, separators=(",", ":")),
        }
        body = outcome.body
        accepted = request.headers.get("accept-encoding", "").lower()
        if params.get("enable_http_compression") == "1" and body:
            if "gzip" in accepted:
                body, headers["Content-Encoding"] = gzip.compress(body, compresslevel=3), "gzip"
            elif "deflate" in accepted:
                body, headers["Content-Encoding"] = zlib.compress(body, 3), "deflate"
        fmt = outcome.fmt
        default_type = "application/json; charset=UTF-8" if fmt.startswith("JSON") else "text/plain; charset=UTF-8"
        return Response(body, headers=headers, media_type=_CONTENT_TYPES.get(fmt, default_type))


def create_sql_app(store: ClickHouseStore, authenticator: Authenticator, limits: Limits) -> SqlEndpoint:
    """The SQL listener's app over ``store`` (embedded only; ``ValueError`` otherwise)."""
    return SqlEndpoint(EmbeddedSql.for_store(store, limits), authenticator, database=store.database)


__all__ = ["EmbeddedSql", "Limits", "SqlEndpoint", "SqlError", "create_sql_app", "hello_block"]
