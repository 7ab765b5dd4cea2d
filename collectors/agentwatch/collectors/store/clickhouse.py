"""The collector's ClickHouse store: embedded chDB or a ClickHouse server, through clickhouse-connect.

``ClickHouseStore.open(url)`` accepts ``chdb://PATH`` (embedded, in-process) or
``http(s)://user:password@host:port/database``. A server that is down never makes ``open`` fail:
connections are made on first use, and every failure surfaces as a ``StoreError`` that says
whether retrying can help (``StoreUnavailable``) or not (``StoreRejected``), so the pipeline
can spool and retry the first kind and reject the second.

Threads: one writer thread and several reader threads share a store. Inserts and migrations use
the writer's own client; queries and commands draw from a small pool of clients, so a slow
dashboard query never delays an insert.
chDB serialises calls per connection handle (and a query on a handle with an open stream would
silently return nothing), so a client is only ever used by one thread at a time; handles to the
one engine run concurrently. chDB hosts ONE engine path per process: every store in a process
must use the same ``chdb://`` path until all stores on it are closed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from agentwatch.collectors.store import migrate, schema

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

logger = logging.getLogger(__name__)

DEFAULT_HTTP_PORT: Final = 8123
DEFAULT_HTTPS_PORT: Final = 8443
MEMORY_PATH: Final = ":memory:"
_MAX_MESSAGE: Final = 1000
_EMBEDDED_INSERT_NICE: Final = 10  # measured best of 5, 10 and 19 for end-to-end throughput on two cores

# ClickHouse error codes that mean the statement or the data itself is malformed: sending the
# same thing again fails the same way. Everything else (network, timeouts, memory, too many
# parts, read-only replicas, auth, missing tables while a migration runs...) is treated as
# retryable, because dropping acknowledged data is worse than retrying a poison batch.
_REJECTED_CODES: Final = frozenset(
    {
        1,  # UNSUPPORTED_METHOD
        6,  # CANNOT_PARSE_TEXT
        8,  # THERE_IS_NO_COLUMN
        10,  # NOT_FOUND_COLUMN_IN_BLOCK
        16,  # NO_SUCH_COLUMN_IN_TABLE
        25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        36,  # BAD_ARGUMENTS
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        42,  # NUMBER_OF_ARGUMENTS_DOESNT_MATCH
        43,  # ILLEGAL_TYPE_OF_ARGUMENT
        44,  # ILLEGAL_COLUMN
        46,  # UNKNOWN_FUNCTION
        47,  # UNKNOWN_IDENTIFIER
        48,  # NOT_IMPLEMENTED
        53,  # TYPE_MISMATCH
        62,  # SYNTAX_ERROR
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        73,  # UNKNOWN_FORMAT
        115,  # UNKNOWN_SETTING
        117,  # INCORRECT_DATA
        128,  # TOO_LARGE_ARRAY_SIZE
        130,  # CANNOT_READ_ARRAY_FROM_TEXT
        131,  # TOO_LARGE_STRING_SIZE
        179,  # MULTIPLE_EXPRESSIONS_FOR_ALIAS
        184,  # ILLEGAL_AGGREGATION
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        215,  # NOT_AN_AGGREGATE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        352,  # AMBIGUOUS_COLUMN_NAME
        386,  # NO_COMMON_TYPE
        456,  # UNKNOWN_QUERY_PARAMETER
        457,  # BAD_QUERY_PARAMETER
    }
)


# --- errors -----------------------------------------------------------------------------------


class StoreError(Exception):
    """A store operation failed; ``code`` is the ClickHouse error code when there is one."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class StoreUnavailable(StoreError):
    """The store cannot be reached or cannot take the request now (retryable)."""


class StoreRejected(StoreError):
    """The statement or the data is invalid (retrying the same request fails the same way)."""


# --- URLs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreTarget:
    """A parsed store URL."""

    kind: Literal["chdb", "http", "https"]
    database: str = "default"
    path: str | None = None  # chdb: absolute directory, or ":memory:"
    host: str = ""
    port: int = 0
    username: str = "default"
    password: str = field(default="", repr=False)

    @property
    def embedded(self) -> bool:
        return self.kind == "chdb"


def parse_url(url: str) -> StoreTarget:
    """Parse ``chdb://PATH[?database=NAME]`` or ``http(s)://user:password@host:port/database``.

    A relative chDB path is taken from the current directory; ``chdb://:memory:`` keeps the data
    in memory. Raises ``ValueError`` (with the password redacted) for anything else.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("chdb", "http", "https"):
        raise ValueError(f"unsupported ClickHouse URL {redacted_url(url)!r}: use chdb://PATH or http(s)://...")
    if scheme == "chdb":
        return _parse_chdb(rest, url)
    return _parse_http(scheme, url)


def _parse_chdb(rest: str, url: str) -> StoreTarget:
    location, _, query = rest.partition("?")
    options = parse_qs(query, keep_blank_values=True)
    unknown = set(options) - {"database"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} in {url!r}")
    if not location:
        raise ValueError(f"missing path in {url!r}")
    path = location if location == MEMORY_PATH else os.path.abspath(os.path.expanduser(unquote(location)))
    database = options.get("database", ["default"])[-1] or "default"
    return StoreTarget(kind="chdb", path=path, database=_checked_database(database, url))


def _parse_http(scheme: str, url: str) -> StoreTarget:
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError(f"unexpected query or fragment in {redacted_url(url)!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid port in {redacted_url(url)!r}") from exc
    if not parts.hostname:
        raise ValueError(f"missing host in {redacted_url(url)!r}")
    database = unquote(parts.path.strip("/")) or "default"
    return StoreTarget(
        kind="https" if scheme == "https" else "http",
        database=_checked_database(database, redacted_url(url)),
        host=parts.hostname,
        port=port or (DEFAULT_HTTPS_PORT if scheme == "https" else DEFAULT_HTTP_PORT),
        username=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
    )


def _checked_database(database: str, shown_url: str) -> str:
    try:
        schema.SchemaOptions(database=database)
    except ValueError as exc:
        raise ValueError(f"invalid database in {shown_url!r}: {exc}") from None
    return database


def redacted_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``; safe for logs and messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{tail}"


# --- error classification ---------------------------------------------------------------------


def _scrub(message: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    if len(message) > _MAX_MESSAGE:
        # ClickHouse quotes the offending input in parse errors: keep logs bounded
        message = message[:_MAX_MESSAGE] + "…"
    return message


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (``__cause__``, ``__context__``, urllib3's ``reason``), outermost first."""
    found: list[BaseException] = []
    queue: list[BaseException] = [exc]
    while queue and len(found) < 16:
        current = queue.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        reason = getattr(current, "reason", None)
        for inner in (current.__cause__, current.__context__, reason):
            if isinstance(inner, BaseException):
                queue.append(inner)
    return found


def _network_failure(exc: BaseException, url: str) -> str | None:
    """``cannot connect to HOST:PORT: connection refused`` when ``exc`` comes from the socket, else None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    try:
        address = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    except ValueError:
        address = str(parts.hostname)
    causes = _causes(exc)
    for kind, what in (
        (ConnectionRefusedError, "connection refused"),
        (socket.gaierror, "the host name does not resolve"),
        (ConnectionResetError, "connection reset"),
        (TimeoutError, "timed out"),
    ):
        if any(isinstance(cause, kind) for cause in causes):
            return f"cannot connect to {address}: {what}"
    if any(type(cause).__name__ == "ConnectTimeoutError" for cause in causes):
        return f"cannot connect to {address}: timed out"
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
            return f"cannot connect to {address}: {cause.strerror}"
    return None


def classify(exc: BaseException, *, action: str, url: str, secrets: tuple[str, ...] = ()) -> StoreError:
    """Map a clickhouse-connect (or OS) exception to ``StoreUnavailable`` or ``StoreRejected``."""
    from clickhouse_connect.driver.exceptions import OperationalError, ProgrammingError

    code = getattr(exc, "code", None)
    code = code if isinstance(code, int) else None
    network = _network_failure(exc, url)
    if network is not None:
        # a short message that stays the same from one retry to the next (no query ids or pool
        # reprs): the writer logs a reason once, and again only when it changes
        return StoreUnavailable(_scrub(f"{action} on {url} failed: {network}", secrets), code=code)
    message = _scrub(f"{action} on {url} failed: {exc}", secrets)
    if isinstance(exc, OperationalError | OSError):
        return StoreUnavailable(message, code=code)
    if code in _REJECTED_CODES:
        return StoreRejected(message, code=code)
    if isinstance(exc, ProgrammingError) and code is None:
        # raised by the client library itself before anything was sent: a bug on our side
        return StoreRejected(message, code=code)
    return StoreUnavailable(message, code=code)


# --- the store --------------------------------------------------------------------------------


class _ClientPool:
    """Up to ``size`` clients, each lent to one thread at a time, created on first need."""

    def __init__(self, factory: Callable[[], Client], size: int) -> None:
        self._factory = factory
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[Client] = []
        self._closed = False

    @contextlib.contextmanager
    def lend(self) -> Iterator[Client]:
        with self._slots:
            with self._lock:
                if self._closed:
                    raise StoreUnavailable("the store is closed")
                client = self._idle.pop() if self._idle else None
            if client is None:
                client = self._factory()
            try:
                yield client
            finally:
                self._give_back(client)

    def _give_back(self, client: Client) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(client)
                return
        client.close()

    def add(self, client: Client) -> None:
        self._give_back(client)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                client.close()


class ClickHouseStore:
    """ClickHouse access for the collector: inserts, queries, schema; thread-safe."""

    def __init__(
        self,
        target: StoreTarget,
        *,
        connect_timeout: float = 5.0,
        query_timeout: float = 60.0,
        settings: Mapping[str, object] | None = None,
        readers: int = 4,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.query_timeout = query_timeout
        self._settings = dict(settings or {})
        self._secrets = (target.password, quote(target.password, safe="")) if target.password else ()
        self._writer = _ClientPool(self._connect, 1)
        self._readers = _ClientPool(self._connect, max(1, readers))

    @classmethod
    def open(
        cls,
        url: str,
        *,
        connect_timeout: float = 5.0,
        query_timeout: float = 60.0,
        settings: Mapping[str, object] | None = None,
        readers: int = 4,
        database: str | None = None,
    ) -> ClickHouseStore:
        """Open a store; raises ``ValueError`` for a bad URL, ``StoreError`` if chDB cannot start.

        ``database`` (when given) overrides the URL's database. A server is contacted lazily, so
        a ClickHouse server that is down does not fail here: ``ping()`` reports it, and operations
        raise ``StoreUnavailable`` until it is back. An embedded store starts its engine now
        (creating the directory), to fail fast.
        """
        target = parse_url(url)
        if database is not None and database != target.database:
            target = replace(target, database=_checked_database(database, redacted_url(url)))
        store = cls(
            target, connect_timeout=connect_timeout, query_timeout=query_timeout, settings=settings, readers=readers
        )
        if target.embedded:
            store._start_engine()
        return store

    def _start_engine(self) -> None:
        # A local engine that cannot start (another path already open in this process, no
        # permission...) is a configuration problem, neither an outage nor bad data.
        path = self.target.path
        assert path is not None
        try:
            if path != MEMORY_PATH:
                os.makedirs(path, exist_ok=True)
            self._writer.add(self._connect())
        except (OSError, StoreError) as exc:
            raise StoreError(f"cannot start the embedded ClickHouse at {path}: {exc}") from exc

    # -- properties ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The store URL with the password redacted."""
        target = self.target
        if target.embedded:
            suffix = f"?database={target.database}" if target.database != "default" else ""
            return f"chdb://{target.path}{suffix}"
        auth = f"{quote(target.username, safe='')}:***@" if target.password else f"{quote(target.username, safe='')}@"
        return f"{target.kind}://{auth}{target.host}:{target.port}/{target.database}"

    @property
    def embedded(self) -> bool:
        """True for an in-process chDB store."""
        return self.target.embedded

    @property
    def database(self) -> str:
        """The default database of queries and of ``ensure_schema()``."""
        return self.target.database

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> Client:
        import clickhouse_connect

        target = self.target
        try:
            if target.embedded:
                client = clickhouse_connect.get_client(interface="chdb", path=target.path, settings=self._settings)
            else:
                client = self._connect_http()
        except Exception as exc:
            raise self._classify(exc, "connect") from exc
        # Set after the handshake so a database that ensure_schema() is about to create does
        # not fail the connection; queries then default to it.
        client.database = target.database
        return client

    def _connect_http(self) -> Client:
        import clickhouse_connect
        from clickhouse_connect.driver.httpclient import HttpClient
        from urllib3 import Timeout

        target = self.target
        # clickhouse-connect truncates timeouts to whole seconds, and its handshake queries use the
        # read timeout: bound the handshake by the connect timeout, then set the real timeouts
        handshake = max(1, math.ceil(self.connect_timeout))
        client = clickhouse_connect.get_client(
            interface=target.kind,
            host=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            connect_timeout=handshake,
            send_receive_timeout=handshake,
            # a session would forbid concurrent queries on one client and pin server-side state
            autogenerate_session_id=False,
            settings=self._settings,
        )
        if isinstance(client, HttpClient):
            client.timeout = Timeout(connect=self.connect_timeout, read=self.query_timeout)
        return client

    def _classify(self, exc: BaseException, action: str) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        return classify(exc, action=action, url=self.url, secrets=self._secrets)

    @contextlib.contextmanager
    def _call(self, pool: _ClientPool, action: str) -> Iterator[Client]:
        try:
            with pool.lend() as client:
                yield client
        except StoreError:
            raise
        except Exception as exc:
            from clickhouse_connect.driver.exceptions import ClickHouseError

            if not isinstance(exc, ClickHouseError | OSError):
                raise  # a bug, not a store failure
            raise self._classify(exc, action) from exc

    # -- operations ----------------------------------------------------------------------------

    def ping(self) -> bool:
        """True when the store answers (connecting first if needed); never raises."""
        try:
            with self._call(self._readers, "ping") as client:
                return bool(client.ping(timeout=self.connect_timeout) if not self.embedded else client.ping())
        except StoreError as exc:
            logger.debug("ping failed: %s", exc)
            return False

    def ensure_schema(self, options: schema.SchemaOptions | None = None) -> list[int]:
        """Apply pending migrations (default: this store's database); returns the versions applied."""
        options = options or schema.SchemaOptions(database=self.database)
        with self._call(self._writer, "schema migration") as client:
            return migrate.apply(client, options)

    def pending_migrations(self, options: schema.SchemaOptions | None = None) -> list[schema.Migration]:
        """Migrations not applied yet."""
        options = options or schema.SchemaOptions(database=self.database)
        with self._call(self._readers, "schema check") as client:
            return migrate.pending(client, options)

    def insert_json_rows(self, table: str, payload: bytes, *, dedup_token: str) -> None:
        """Insert JSONEachRow ``payload`` into ``table`` (``name`` or ``database.name``), exactly once.

        Re-inserting the same payload with the same ``dedup_token`` is a no-op in the table and in
        every materialized-view target, so a replay after an unknown outcome is safe. A token must
        never be reused for different data: the second batch would be silently dropped.
        """
        if not dedup_token:
            raise ValueError("dedup_token must not be empty")
        settings: dict[str, object] = {
            "insert_deduplicate": 1,
            "insert_deduplication_token": dedup_token,
            "deduplicate_blocks_in_dependent_materialized_views": 1,
            # we batch ourselves; a server-side async insert would change the dedup semantics
            "async_insert": 0,
            # on a cluster, return only once the shards have the rows (and report their errors)
            "distributed_foreground_insert": 1,
            # a key outside the schema is a bug upstream: fail loudly instead of dropping it
            "input_format_skip_unknown_fields": 0,
            # one parsing thread per insert: the extra threads cost CPU (about 15% of the insert) that
            # the receivers need on a small host, and the writer batches are too small to gain from them
            "input_format_parallel_parsing": 0,
        }
        if self.embedded:
            # the embedded engine shares the host's cores with the receivers, whose spans are durable
            # in the spool already: its insert threads yield to them (nice 10; not below, or the
            # writer falls behind and the spool grows)
            settings["os_thread_priority"] = _EMBEDDED_INSERT_NICE
        with self._call(self._writer, f"insert into {table}") as client:
            client.raw_insert(table, None, payload, settings=settings, fmt="JSONEachRow")

    def query(
        self, sql: str, parameters: Mapping[str, object] | None = None, *, settings: Mapping[str, object] | None = None
    ) -> list[dict[str, object]]:
        """Run a SELECT; bind values server-side with ``{name:Type}`` placeholders in ``sql``."""
        with self._call(self._readers, "query") as client:
            result = client.query(
                sql, parameters=dict(parameters) if parameters else None, settings=dict(settings) if settings else None
            )
            return [dict(row) for row in result.named_results()]

    def command(self, sql: str, parameters: Mapping[str, object] | None = None) -> Any:
        """Run a statement (DDL, ``INSERT ... SELECT``, a one-value SELECT) and return its value."""
        # on a pooled client: an admin statement from another thread never queues behind inserts
        with self._call(self._readers, "command") as client:
            return client.command(sql, parameters=dict(parameters) if parameters else None)

    def close(self) -> None:
        """Close every connection (for chDB, releasing the engine once no other store uses it)."""
        self._writer.close()
        self._readers.close()

    def __enter__(self) -> ClickHouseStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClickHouseStore({self.url!r})"


__all__ = [
    "ClickHouseStore",
    "StoreError",
    "StoreRejected",
    "StoreTarget",
    "StoreUnavailable",
    "classify",
    "parse_url",
    "redacted_url",
]
