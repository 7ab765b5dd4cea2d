"""Test support: a ClickHouse HTTP-interface server backed by the real chDB engine, run as its own process.

There is no ClickHouse server in the test environment, yet the collector must be tested through
clickhouse-connect's real HTTP client and through server outages ("ClickHouse down for a while,
then back"). This module speaks the subset of ClickHouse's HTTP interface that clickhouse-connect
uses, on top of chDB (the ClickHouse engine as a library), so every statement is executed by real
ClickHouse code, and an outage is produced by stopping the process (``stop``/``kill``) and ended
by starting it again on the same data directory.

Run it::

    python tests/chshim.py --port PORT --path DATA_DIR [--user U --password P] [--verbose] [--parent-pid PID]

or, from a test, with the helpers at the end of this module: ``free_port()``,
``start_in_subprocess(port, path, ...)`` (returns once it answers), ``wait_listening(port, timeout)``,
``stop(proc)`` (SIGTERM: a clean shutdown), ``kill(proc)`` (SIGKILL: a crash) and ``running(...)``.

What it speaks (a request outside it is refused with a ClickHouse error, except the client-only
parameters listed below, which a test server can safely ignore):

- ``GET /ping`` (and ``/replicas_status``, and ``GET /`` without a query) -> ``Ok.\\n``.
- ``GET``/``POST /``: the SQL is the ``query`` URL parameter followed by ``"\\n"`` and the body,
  exactly like the server, so an ``INSERT ... FORMAT X`` in the URL or at the head of the body
  takes its data from the rest of the body (chDB parses inline insert data itself). ``GET`` runs
  with ``readonly=2`` as on a server. ``multipart/form-data`` bodies (clickhouse-connect's form
  encoding of long bound parameters) are read for ``query`` and ``param_*`` fields; external data
  files are refused (NOT_IMPLEMENTED).
- ``database`` (parameter or ``X-ClickHouse-Database``), ``default_format`` (or the
  ``X-ClickHouse-Format`` request header; TabSeparated by default), ``param_NAME`` bound values,
  and every other URL parameter as a query setting (applied with ``SET`` on a connection handle
  opened for this request only, so nothing leaks into the next request; an unknown setting fails
  with UNKNOWN_SETTING like a server). Client-only parameters are ignored: ``query_id`` (echoed),
  ``session_id`` and the other session parameters (every request is its own session, so a ``SET``
  statement does not persist), ``wait_end_of_query`` (the response is always buffered),
  ``client_protocol_version`` (Native output carries no block info, so clickhouse-connect's probe
  settles on protocol 0), ``enable_http_compression``, progress-header and ``http_*`` parameters.
  ``compress=1``/``decompress=1`` (ClickHouse's own block compression) are refused.
- Authentication: ``Authorization: Basic``, ``X-ClickHouse-User``/``X-ClickHouse-Key`` or the
  ``user``/``password`` parameters, against the one configured user; anything else is
  ``Code: 516 ... (AUTHENTICATION_FAILED)`` with HTTP 403, as a server answers.
- Request bodies with ``Content-Length`` or ``Transfer-Encoding: chunked`` and a
  ``Content-Encoding`` of lz4 (frame), zstd, gzip, deflate or br (when brotli is installed):
  clickhouse-connect's default ``compress=True`` sends lz4 insert bodies. Responses are never
  compressed (no ``Content-Encoding``), which HTTP allows whatever ``Accept-Encoding`` said and
  clickhouse-connect reads as is, so both ``compress=True`` (the default) and ``compress=False``
  work.
- Response headers: ``X-ClickHouse-Summary`` (read/written rows and bytes from the engine,
  ``elapsed_ns``; ``written_rows`` counts materialized-view rows too, as on a server),
  ``X-ClickHouse-Query-Id``, ``X-ClickHouse-Timezone``, ``X-ClickHouse-Server-Display-Name``, and
  ``X-ClickHouse-Format`` when the statement produces a result set (SELECT, SHOW, DESCRIBE,
  EXISTS, EXPLAIN, ... or any output), which is how clickhouse-connect's ``command()`` tells an
  empty result from a DDL statement.
- Errors: the body ``Code: N. DB::Exception: ... (NAME) (version V)``, the
  ``X-ClickHouse-Exception-Code`` header and the HTTP status ClickHouse maps that code to
  (400 parse/bad-argument errors, 403 authentication, 404 unknown table/setting/..., 500 otherwise).

Not spoken: the native TCP protocol, sessions, progress headers, streaming (results are buffered
in memory), external data, response compression. One process hosts one chDB engine path, and
requests run one at a time under a lock.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import gzip
import hmac
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP as HTTP_POLICY
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from types import FrameType

HOST: Final = "127.0.0.1"
DEFAULT_USER: Final = "default"
DEFAULT_FORMAT: Final = "TabSeparated"
PID_HEADER: Final = "X-Chshim-Pid"

# URL parameters that steer the HTTP exchange rather than the query; they never become SET.
_TRANSPORT_PARAMS: Final = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "compress",
        "decompress",
        "enable_http_compression",
        "send_progress_in_http_headers",
        "cancel_http_readonly_queries_on_client_close",
    }
)
# ClickHouse's own block compression of responses/requests: a client asking for it would get
# bytes it cannot read if the shim ignored it, so it is refused instead.
_REFUSED_FLAGS: Final = ("compress", "decompress")
_SETTING_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# ClickHouse's mapping of exception codes to HTTP statuses (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp),
# by the error name that ends every engine message; anything not listed is a 500.
_STATUS_BY_NAME: Final = {
    "REQUIRED_PASSWORD": 401,
    **dict.fromkeys(
        ("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"), 403
    ),
    **dict.fromkeys(
        (
            "BAD_ARGUMENTS",
            "CANNOT_COMPILE_REGEXP",
            "CANNOT_PARSE_TEXT",
            "CANNOT_PARSE_ESCAPE_SEQUENCE",
            "CANNOT_PARSE_QUOTED_STRING",
            "CANNOT_PARSE_DATE",
            "CANNOT_PARSE_DATETIME",
            "CANNOT_PARSE_NUMBER",
            "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
            "CANNOT_PARSE_IPV4",
            "CANNOT_PARSE_IPV6",
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
            "CANNOT_PARSE_UUID",
            "DUPLICATE_COLUMN",
            "ILLEGAL_COLUMN",
            "UNKNOWN_ELEMENT_IN_AST",
            "UNKNOWN_TYPE_OF_AST_NODE",
            "THERE_IS_NO_COLUMN",
            "TOO_DEEP_AST",
            "TOO_BIG_AST",
            "UNEXPECTED_AST_STRUCTURE",
            "SYNTAX_ERROR",
            "INCORRECT_DATA",
            "TYPE_MISMATCH",
            "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
        ),
        400,
    ),
    **dict.fromkeys(
        (
            "UNKNOWN_TABLE",
            "UNKNOWN_FUNCTION",
            "UNKNOWN_IDENTIFIER",
            "UNKNOWN_TYPE",
            "UNKNOWN_STORAGE",
            "UNKNOWN_DATABASE",
            "UNKNOWN_SETTING",
            "UNKNOWN_DIRECTION_OF_SORTING",
            "UNKNOWN_AGGREGATE_FUNCTION",
            "UNKNOWN_FORMAT",
            "UNKNOWN_DATABASE_ENGINE",
            "UNKNOWN_TYPE_OF_QUERY",
            "UNKNOWN_ROLE",
        ),
        404,
    ),
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "CANNOT_SCHEDULE_TASK": 503,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}

# Statements whose pipeline produces rows: a server announces their output format even when no
# row comes back, and clickhouse-connect's command() relies on that.
_RESULT_KEYWORDS: Final = frozenset(
    {"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK", "KILL", "VALUES", "FROM", "("}
)
_LEADING_NOISE: Final = re.compile(rb"(?:\s+|--[^\n]*(?:\n|\Z)|#[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)
_FIRST_KEYWORD: Final = re.compile(rb"[A-Za-z_]+|\(")
_TRAILING_FORMAT: Final = re.compile(rb"\bFORMAT\s+(\w+)\s*(?:SETTINGS\b[^;]*)?;?\s*\Z", re.I)
_ERROR_CODE: Final = re.compile(r"Code: (\d+)\. DB::Exception: ")
_ERROR_NAME: Final = re.compile(r"\(([A-Z][A-Z0-9_]+)\)[.\s]*\Z")
_VERSION_TRAILER: Final = re.compile(r"\s*\(version [^)]*\)")
_REPEATED_NAME: Final = re.compile(r"(?:\.? \(([A-Z][A-Z0-9_]+)\))+\s*\Z")

_CONTENT_TYPES: Final = {
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Arrow": "application/octet-stream",
    "ArrowStream": "application/octet-stream",
    "Parquet": "application/octet-stream",
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
}


# --- errors -----------------------------------------------------------------------------------


class ClickHouseError(Exception):
    """A ClickHouse exception, rendered the way the HTTP interface reports it."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message

    @classmethod
    def from_engine(cls, text: str) -> ClickHouseError:
        """Parse a chDB exception text (``Code: N. DB::Exception: ... (NAME)``, sometimes nested)."""
        text = _VERSION_TRAILER.sub("", text).strip()
        found = _ERROR_CODE.search(text)
        if found is None:
            return cls(1001, "STD_EXCEPTION", f"{text or 'unknown chDB failure'}. (STD_EXCEPTION)")
        code = int(found.group(1))
        # chDB rethrows some errors wrapped in copies of themselves: keep the message once
        inner = _ERROR_CODE.sub("", text[found.start() :])
        named = _ERROR_NAME.search(inner)
        name = named.group(1) if named else "UNKNOWN_EXCEPTION"
        inner = _REPEATED_NAME.sub("", inner).rstrip(". ")
        return cls(code, name, f"{inner}. ({name})")

    @property
    def status(self) -> int:
        return _STATUS_BY_NAME.get(self.name, 500)

    def body(self, version: str) -> bytes:
        return f"Code: {self.code}. DB::Exception: {self.message} (version {version})\n".encode()


def _bad_arguments(message: str) -> ClickHouseError:
    return ClickHouseError(36, "BAD_ARGUMENTS", f"{message}. (BAD_ARGUMENTS)")


def _not_implemented(message: str) -> ClickHouseError:
    return ClickHouseError(48, "NOT_IMPLEMENTED", f"{message}. (NOT_IMPLEMENTED)")


# --- the engine -------------------------------------------------------------------------------


class _ChdbResult(Protocol):
    def bytes(self) -> bytes: ...
    def rows_read(self) -> int: ...
    def bytes_read(self) -> int: ...
    def rows_written(self) -> int: ...
    def bytes_written(self) -> int: ...
    def elapsed(self) -> float: ...


class _ChdbConnection(Protocol):
    def query(self, query: str | bytes, format: str = ..., params: Mapping[str, str] | None = ...) -> _ChdbResult: ...
    def close(self) -> None: ...


@dataclass
class Statement:
    """One request, ready for the engine."""

    sql: bytes
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    default_format: str = DEFAULT_FORMAT
    readonly: bool = False


@dataclass
class Outcome:
    """What the engine answered: the body, its format when it is a result set, and statistics."""

    body: bytes
    result_format: str | None
    summary: dict[str, str]


def quote_literal(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _first_keyword(sql: bytes) -> str:
    head = sql[:4096]
    noise = _LEADING_NOISE.match(head)  # comments and blanks before the statement
    found = _FIRST_KEYWORD.match(head, noise.end() if noise else 0)
    return found.group(0).decode().upper() if found else ""


def _output_format(sql: bytes, default: str) -> str:
    # only ever called for non-INSERT statements, which are small: no need to bound the search
    found = _TRAILING_FORMAT.search(sql)
    return found.group(1).decode() if found else default


class Engine:
    """The process's one chDB engine. Each request runs on its own connection handle, under a lock.

    A fresh handle per request makes every request its own session, as on a server without
    ``session_id``: its ``USE``/``SET`` vanish with it. The anchor handle keeps the engine up
    between requests (opening a handle to a running engine takes about a millisecond).
    """

    def __init__(self, path: str) -> None:
        from chdb.state.sqlitelike import connect

        self._connect = connect
        self.path = os.path.abspath(path)
        os.makedirs(self.path, exist_ok=True)
        self._lock = threading.Lock()
        self._anchor: _ChdbConnection | None = self._open()
        version, timezone = self._anchor.query("SELECT version(), timezone()", "TabSeparated").bytes().decode().split()
        self.version = version
        self.timezone = timezone

    def _open(self) -> _ChdbConnection:
        try:
            return cast(_ChdbConnection, self._connect(self.path))
        except Exception as exc:
            raise ClickHouseError.from_engine(str(exc)) from exc

    @staticmethod
    def _run(
        conn: _ChdbConnection, sql: str | bytes, fmt: str = DEFAULT_FORMAT, params: Mapping[str, str] | None = None
    ) -> _ChdbResult:
        try:
            return conn.query(sql, fmt, params=dict(params or {}))
        except Exception as exc:  # chDB raises ChdbError/RuntimeError with the server's message
            raise ClickHouseError.from_engine(str(exc)) from exc

    def execute(self, statement: Statement) -> Outcome:
        """Run one request's statement in a session of its own; raises ``ClickHouseError``."""
        settings = dict(statement.settings)
        if statement.readonly and "readonly" not in settings:
            settings["readonly"] = "2"  # a GET request may read and change settings, nothing else
        with self._lock:
            if self._anchor is None:
                raise ClickHouseError(210, "NETWORK_ERROR", "the server is shutting down. (NETWORK_ERROR)")
            conn = self._open()
            try:
                if statement.database:
                    self._run(conn, f"USE `{statement.database}`")  # the name was checked to be an identifier
                if settings:
                    assignments = ", ".join(f"{name} = {quote_literal(value)}" for name, value in settings.items())
                    self._run(conn, f"SET {assignments}")
                result = self._run(conn, statement.sql, self._format_for(statement), statement.params)
                body = result.bytes() or b""
                summary = self._summary(result)
            finally:
                conn.close()
        keyword = _first_keyword(statement.sql)
        if keyword == "INSERT":
            return Outcome(b"", None, summary)
        fmt = self._format_for(statement)
        produces_rows = keyword in _RESULT_KEYWORDS or bool(body) or _TRAILING_FORMAT.search(statement.sql) is not None
        return Outcome(body, fmt if produces_rows else None, summary)

    @staticmethod
    def _format_for(statement: Statement) -> str:
        if _first_keyword(statement.sql) == "INSERT":
            return DEFAULT_FORMAT  # the FORMAT of an INSERT names its input; it has no output
        return _output_format(statement.sql, statement.default_format)

    @staticmethod
    def _summary(result: _ChdbResult) -> dict[str, str]:
        return {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": str(result.rows_written()),
            "written_bytes": str(result.bytes_written()),
            "total_rows_to_read": "0",
            "elapsed_ns": str(int(result.elapsed() * 1e9)),
        }

    def close(self) -> None:
        """Wait for the running request, then shut the engine down (later requests fail)."""
        with self._lock:
            anchor, self._anchor = self._anchor, None
            if anchor is not None:
                anchor.close()


# --- HTTP -------------------------------------------------------------------------------------


@dataclass
class _Credentials:
    user: str
    password: str


class ShimServer(ThreadingHTTPServer):
    """The HTTP server: one engine, one configured user."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine: Engine, credentials: _Credentials, *, verbose: bool) -> None:
        self.engine = engine
        self.credentials = credentials
        self.verbose = verbose
        self.display_name = socket.gethostname()
        super().__init__(address, _Handler)


def _read_chunked(stream: BufferedIOBase) -> bytes:
    parts: list[bytes] = []
    while True:
        line = stream.readline(65537)
        try:
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        except ValueError:
            raise _bad_arguments("Malformed chunked request body") from None
        if size == 0:
            while stream.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        parts.append(stream.read(size))
        stream.readline(3)  # the CRLF after each chunk


def _lz4_decompress(data: bytes) -> bytes:
    import lz4.frame  # type: ignore[import-untyped]

    out: list[bytes] = []
    while data:  # clickhouse-connect sends one lz4 frame per block, back to back
        decompressor = lz4.frame.LZ4FrameDecompressor()
        out.append(decompressor.decompress(data))
        data = decompressor.unused_data
    return b"".join(out)


def _decompress(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return data
        if encoding == "lz4":
            return _lz4_decompress(data)
        if encoding == "zstd":
            from backports import zstd

            return zstd.decompress(data)
        if encoding == "gzip":
            return gzip.decompress(data)
        if encoding == "deflate":
            return zlib.decompress(data)
        if encoding == "br":
            import brotli  # type: ignore[import-not-found,unused-ignore]

            return cast(bytes, brotli.decompress(data))
    except ImportError:
        pass
    except Exception as exc:
        raise ClickHouseError(
            271, "CANNOT_DECOMPRESS", f"Cannot decompress the {encoding} request body: {exc}. (CANNOT_DECOMPRESS)"
        ) from exc
    raise _bad_arguments(f"Unknown HTTP Content-Encoding {encoding!r}")


def _form_fields(content_type: str, body: bytes) -> tuple[dict[str, str], bool]:
    """The text fields of a multipart/form-data body, and whether it also carried files."""
    message = BytesParser(policy=HTTP_POLICY).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    fields: dict[str, str] = {}
    has_files = False
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename() is not None:
            has_files = True
        elif isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = payload.decode() if isinstance(payload, bytes) else ""
    return fields, has_files


class _Handler(BaseHTTPRequestHandler):
    server: ShimServer
    protocol_version = "HTTP/1.1"  # keep-alive, as clickhouse-connect's pool expects
    server_version = "chshim"

    # -- plumbing ------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, error: ClickHouseError, query_id: str) -> None:
        engine = self.server.engine
        self._send(
            error.status,
            error.body(engine.version),
            {
                "Content-Type": "text/plain; charset=UTF-8",
                "X-ClickHouse-Exception-Code": str(error.code),
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Server-Display-Name": self.server.display_name,
                "X-ClickHouse-Timezone": engine.timezone,
            },
        )

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = _read_chunked(self.rfile)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
        return _decompress(body, self.headers.get("Content-Encoding", ""))

    # -- methods -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(readonly=True)

    def do_HEAD(self) -> None:
        self._dispatch(readonly=True)

    def do_POST(self) -> None:
        self._dispatch(readonly=False)

    def _dispatch(self, *, readonly: bool) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            # the body is read before anything can fail, so a keep-alive connection stays in step
            body = self._read_body() if self.command == "POST" else b""
            if url.path in ("/ping", "/replicas_status") or (url.path == "/" and readonly and "query" not in params):
                # the pid lets wait_listening() tell its own process from another one on the port
                self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8", PID_HEADER: str(os.getpid())})
                return
            if url.path != "/":
                self._send(404, f"There is no handle {url.path}\n".encode(), {"Content-Type": "text/plain"})
                return
            self._authenticate(params)
            statement = self._statement(params, body, readonly=readonly)
            outcome = self.server.engine.execute(statement)
        except ClickHouseError as error:
            self._send_error(error, query_id)
            return
        except Exception as exc:  # a shim bug: report it like a server's std::exception
            self.log_error("unexpected failure: %r", exc)
            self._send_error(ClickHouseError(1001, "STD_EXCEPTION", f"{exc!r}. (STD_EXCEPTION)"), query_id)
            return
        self._send(200, outcome.body, self._headers(outcome, query_id))

    def _headers(self, outcome: Outcome, query_id: str) -> dict[str, str]:
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": self.server.display_name,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Summary": json.dumps(outcome.summary, separators=(",", ":")),
        }
        if outcome.result_format is not None:
            fmt = outcome.result_format
            default_type = "application/json; charset=UTF-8" if fmt.startswith("JSON") else "text/plain; charset=UTF-8"
            headers["Content-Type"] = _CONTENT_TYPES.get(fmt, default_type)
            headers["X-ClickHouse-Format"] = fmt
        return headers

    # -- request interpretation ----------------------------------------------------------------

    def _authenticate(self, params: Mapping[str, str]) -> None:
        user, password = DEFAULT_USER, ""
        authorization = self.headers.get("Authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(authorization[6:].strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise _bad_arguments("Malformed Basic authorization header") from None
        elif "X-ClickHouse-User" in self.headers or "X-ClickHouse-Key" in self.headers:
            user = self.headers.get("X-ClickHouse-User", DEFAULT_USER)
            password = self.headers.get("X-ClickHouse-Key", "")
        elif "user" in params or "password" in params:
            user, password = params.get("user", DEFAULT_USER), params.get("password", "")
        expected = self.server.credentials
        same_user = hmac.compare_digest(user.encode(), expected.user.encode())
        if not (same_user and hmac.compare_digest(password.encode(), expected.password.encode())):
            raise ClickHouseError(
                516,
                "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name. "
                "(AUTHENTICATION_FAILED)",
            )

    def _statement(self, params: dict[str, str], body: bytes, *, readonly: bool) -> Statement:
        content_type = self.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            fields, has_files = _form_fields(content_type, body)
            if has_files:
                raise _not_implemented("External data is not supported by chshim")
            params = {**params, **fields}
            body = b""
        for flag in _REFUSED_FLAGS:
            if params.get(flag, "0") not in ("", "0", "false"):
                raise _not_implemented(f"The {flag}=1 HTTP parameter (ClickHouse block compression) is not supported")
        query = params.get("query", "").encode()
        sql = query + b"\n" + body if query and body else query or body
        if not sql.strip():
            raise ClickHouseError(62, "SYNTAX_ERROR", "Empty query. (SYNTAX_ERROR)")
        statement = Statement(
            sql=sql,
            database=params.get("database") or self.headers.get("X-ClickHouse-Database") or None,
            default_format=params.get("default_format") or self.headers.get("X-ClickHouse-Format") or DEFAULT_FORMAT,
            readonly=readonly,
        )
        if statement.database is not None and not _IDENTIFIER.match(statement.database):
            raise _bad_arguments(f"Unsupported database name {statement.database!r}")
        for name, value in params.items():
            if name.startswith("param_"):
                statement.params[name[len("param_") :]] = value
            elif name in _TRANSPORT_PARAMS or name.startswith("http_"):
                continue
            elif _SETTING_NAME.match(name):
                statement.settings[name] = value
            else:
                raise _bad_arguments(f"Invalid setting name {name!r}")
        return statement


# --- the process ------------------------------------------------------------------------------


def _exit_with_parent(server: ShimServer, parent_pid: int) -> None:
    # an orphan is re-parented, so a changed parent pid means the test run that started us is gone
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    server.shutdown()


def serve(
    port: int,
    path: str,
    *,
    user: str = DEFAULT_USER,
    password: str = "",
    verbose: bool = False,
    parent_pid: int | None = None,
) -> None:
    """Open the engine, listen on 127.0.0.1:``port`` and serve until SIGTERM/SIGINT (or ``parent_pid`` exits)."""
    engine = Engine(path)
    server = ShimServer((HOST, port), engine, _Credentials(user, password), verbose=verbose)

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, so it cannot run on the serving thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if parent_pid is not None:
        threading.Thread(target=_exit_with_parent, args=(server, parent_pid), daemon=True).start()
    print(f"chshim: ClickHouse {engine.version} on http://{HOST}:{port}/ data {engine.path}", file=sys.stderr)
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
        engine.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="chDB data directory (created if missing)")
    parser.add_argument("--user", default=DEFAULT_USER)
    parser.add_argument("--password", default="")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument("--parent-pid", type=int, help="exit when this process (the test run) is gone")
    args = parser.parse_args(argv)
    serve(
        args.port, args.path, user=args.user, password=args.password, verbose=args.verbose, parent_pid=args.parent_pid
    )
    return 0


# --- helpers for tests ------------------------------------------------------------------------


def log_path_for(port: int, path: str | os.PathLike[str]) -> Path:
    """Where ``start_in_subprocess`` writes the shim's stderr by default: next to the data directory."""
    data = Path(path).resolve()
    return data.parent / f"chshim-{port}.log"


def start_in_subprocess(
    port: int,
    path: str | os.PathLike[str],
    *,
    user: str = DEFAULT_USER,
    password: str = "",
    log_path: str | os.PathLike[str] | None = None,
    wait: bool = True,
    timeout: float = 30.0,
    verbose: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``chshim.py`` on 127.0.0.1:``port`` over the chDB directory ``path``.

    With ``wait`` (the default) returns once it answers ``/ping``; raises ``RuntimeError`` (with
    the end of its log) if it exits first, ``TimeoutError`` if it is not up within ``timeout``.
    Its stderr goes to ``log_path`` (default: ``log_path_for(port, path)``, appended to). It exits
    by itself if this process dies, so a crashed test run leaves no server behind.
    Stop it with ``stop(proc)`` (clean) or ``kill(proc)`` (abrupt, like a crash).
    """
    Path(path).mkdir(parents=True, exist_ok=True)
    log = Path(log_path) if log_path is not None else log_path_for(port, path)
    command = [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--path", str(Path(path).resolve())]
    command += ["--user", user, "--password", password, "--parent-pid", str(os.getpid())]
    command += ["--verbose"] if verbose else []
    with open(log, "ab") as stderr:  # the child keeps its own descriptor
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    if wait:
        try:
            wait_listening(port, timeout, proc=proc, log_path=log)
        except BaseException:
            kill(proc)
            raise
    return proc


def _answers_ping(port: int, timeout: float, pid: int | None) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        if response.read() != b"Ok.\n" or response.status != 200:
            return False
        return pid is None or response.getheader(PID_HEADER) == str(pid)
    except (OSError, http.client.HTTPException):  # not up yet, or still starting to answer
        return False
    finally:
        conn.close()


def wait_listening(
    port: int,
    timeout: float = 30.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: str | os.PathLike[str] | None = None,
) -> None:
    """Wait until 127.0.0.1:``port`` answers ``GET /ping`` with ``Ok.`` (from ``proc`` when given).

    Raises ``TimeoutError`` after ``timeout`` seconds, or ``RuntimeError`` as soon as ``proc``
    (when given) has exited, quoting the end of ``log_path`` (when given).
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            tail = _tail(log_path)
            raise RuntimeError(f"chshim on port {port} exited with {proc.returncode} before listening{tail}")
        if _answers_ping(port, timeout=1.0, pid=proc.pid if proc is not None else None):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing answered /ping on {HOST}:{port} within {timeout}s{_tail(log_path)}")
        time.sleep(0.02)


def _tail(log_path: str | os.PathLike[str] | None) -> str:
    if log_path is None:
        return ""
    with contextlib.suppress(OSError):
        return ":\n" + Path(log_path).read_bytes()[-2000:].decode(errors="replace")
    return ""


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Stop the shim cleanly (SIGTERM: the running request finishes, the engine shuts down)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def kill(proc: subprocess.Popen[bytes]) -> int:
    """Stop the shim abruptly (SIGKILL), like a crashed server or a pulled cable."""
    if proc.poll() is None:
        proc.kill()
    return int(proc.wait())


@contextlib.contextmanager
def running(
    port: int, path: str | os.PathLike[str], *, user: str = DEFAULT_USER, password: str = ""
) -> Iterator[subprocess.Popen[bytes]]:
    """``start_in_subprocess`` as a context manager that stops the shim on exit."""
    proc = start_in_subprocess(port, path, user=user, password=password)
    try:
        yield proc
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
