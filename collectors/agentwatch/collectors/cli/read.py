"""``agentwatch runs``, ``agentwatch trace ID`` and ``agentwatch stats``: read from a collector or a store.

``trace`` takes a run id or a trace id (32 hex digits: any stored trace, foreign spans included) and
shows captured content (redacted at ingest) with ``--content``.

An embedded (chDB) store belongs to one process, so while a collector runs the CLI asks its read
API (``--collector URL``, token from ``--token`` or ``AGENTWATCH_TOKEN``); with no collector it opens
the store itself (``--clickhouse URL``). With neither flag it tries the local collector first, then
the default embedded store. Output is a table (``--json`` for machines, the read API's JSON shape).
Exit codes: 0 ok, 1 run or trace not found, 2 usage or connection error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from agentwatch.collectors.config.settings import DEFAULT_CLICKHOUSE
from agentwatch.collectors.read.filters import InvalidQuery, RunFilter, parse_limit, parse_since
from agentwatch.collectors.read.models import RunSummary, Stats, TraceView
from agentwatch.collectors.read.render import render_runs, render_stats, render_trace
from agentwatch.collectors.read.runs import list_runs
from agentwatch.collectors.read.stats import stats
from agentwatch.collectors.read.traces import get_trace, is_trace_id

DEFAULT_COLLECTOR: Final = "http://127.0.0.1:4318"
TOKEN_ENV: Final = "AGENTWATCH_TOKEN"
_TIMEOUT_S: Final = 15.0
EXIT_OK: Final = 0
EXIT_NOT_FOUND: Final = 1
EXIT_USAGE: Final = 2


class ReadError(Exception):
    """A failure reported as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Unreachable(ReadError):
    """Nothing answers at the collector URL (so the default resolution may try the store instead)."""


class _Refused(ReadError):
    """The collector answered with an error status (``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def collector_url(url: str) -> str:
    """``url`` without its trailing slash, checked to be an http(s)://HOST:PORT URL (ReadError otherwise)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ReadError(f"--collector must be an http(s)://HOST:PORT URL, got {url!r}")
    return url.rstrip("/")


def exchange_json(
    url: str, token: str | None, description: str, *, method: str = "GET", body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One request to a collector's API and its JSON object answer.

    An error status raises ``_Refused`` (with the collector's own error message), no answer
    ``_Unreachable``, an answer that is no JSON object ``ReadError``.
    """
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Accept": "application/json"})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        raise _Refused(f"{description} answered {exc.code}: {_error_message(exc)}", exc.code) from None
    except urllib.error.URLError as exc:
        raise _Unreachable(f"cannot reach {description}: {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise _Unreachable(f"cannot reach {description}: {exc}") from None
    try:
        document = json.loads(payload)
    except ValueError:
        raise ReadError(f"{description} did not answer JSON (is it an agentwatch collector?)") from None
    if not isinstance(document, dict):
        raise ReadError(f"{description} answered an unexpected document")
    return document


class Source(Protocol):
    """Where runs and traces come from: a collector's read API or a store opened here."""

    description: str

    def runs(self, params: dict[str, str], flt: RunFilter) -> list[RunSummary]: ...

    def trace(self, run_id: str, tenant: str | None, content: bool = False) -> TraceView | None: ...

    def stats(self, params: dict[str, str], flt: RunFilter) -> Stats: ...

    def close(self) -> None: ...


class CollectorSource:
    """The read API of a running collector, over urllib."""

    def __init__(self, url: str, token: str | None) -> None:
        self.base = collector_url(url)
        self.token = token
        self.description = f"collector {self.base}"

    def get_document(self, path: str, params: dict[str, str]) -> dict[str, Any] | None:
        """GET a JSON document; None on 404; ReadError (or _Unreachable) otherwise."""
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        try:
            return exchange_json(self.base + path + query, self.token, self.description)
        except _Refused as exc:
            if exc.status == 404:
                return None
            raise

    def runs(self, params: dict[str, str], flt: RunFilter) -> list[RunSummary]:
        # the raw strings go to the server, which applies the same parsing ("15m" is relative to its clock)
        document = self.get_document("/api/v1/runs", params)
        if document is None:
            raise ReadError(f"{self.description} has no read API (/api/v1/runs answered 404)")
        return [RunSummary.from_dict(row) for row in document.get("runs", [])]

    def trace(self, run_id: str, tenant: str | None, content: bool = False) -> TraceView | None:
        """By run id or trace id (the read API's trace route takes either)."""
        params = {"tenant": tenant} if tenant else {}
        if content:
            params["content"] = "true"
        document = self.get_document(f"/api/v1/runs/{urllib.parse.quote(run_id, safe='')}/trace", params)
        return TraceView.from_dict(document["trace"]) if document is not None else None

    def stats(self, params: dict[str, str], flt: RunFilter) -> Stats:
        document = self.get_document("/api/v1/stats", params)
        if document is None or not isinstance(document.get("stats"), dict):
            raise ReadError(f"{self.description} has no fleet statistics (/api/v1/stats answered 404)")
        return _stats_from_dict(document["stats"])

    def close(self) -> None:
        return None


def _stats_from_dict(data: dict[str, Any]) -> Stats:
    """The read API's ``stats`` document back into a ``Stats`` (the inverse of ``Stats.to_dict``)."""
    from datetime import datetime

    def when(value: Any) -> datetime | None:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None

    def rows(key: str) -> list[dict[str, Any]]:
        value = data.get(key)
        return [dict(row) for row in value if isinstance(row, dict)] if isinstance(value, list) else []

    tenant = data.get("tenant")
    return Stats(
        since=when(data.get("since")),
        until=when(data.get("until")),
        tenant=str(tenant) if tenant else None,
        stop_reasons=rows("stop_reasons"),
        budgets=rows("budgets"),
        denials=rows("denials"),
        cost=rows("cost"),
        top_tools=rows("top_tools"),
    )


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        document = json.loads(exc.read())
    except (ValueError, OSError):
        return str(exc.reason)
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return str(exc.reason)


class StoreSource:
    """A ClickHouse store opened by this process (embedded chDB or a server)."""

    def __init__(self, url: str) -> None:
        from agentwatch.collectors.store.clickhouse import ClickHouseStore, StoreError, redacted_url

        self.description = f"store {redacted_url(url)}"
        self._store_error: type[Exception] = StoreError
        try:
            self.store = ClickHouseStore.open(url)
        except (StoreError, ValueError, OSError) as exc:
            path = _embedded_path(url)
            if path is not None and _held_by_another_process(path):
                raise ReadError(
                    f"{self.description} is in use by another process (a running collector?); an embedded store "
                    f"has one owner: read through it with --collector URL (e.g. --collector {DEFAULT_COLLECTOR})"
                ) from None
            raise ReadError(f"cannot open {self.description}: {exc}") from None

    def run_query(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` (a query over ``self.store``); a store failure becomes a ReadError."""
        try:
            return function()
        except self._store_error as exc:
            raise ReadError(f"{self.description}: {_first_line(exc)}") from None

    def runs(self, params: dict[str, str], flt: RunFilter) -> list[RunSummary]:
        result: list[RunSummary] = self.run_query(lambda: list_runs(self.store, flt))
        return result

    def trace(self, run_id: str, tenant: str | None, content: bool = False) -> TraceView | None:
        result: TraceView | None = self.run_query(lambda: get_trace(self.store, run_id, tenant=tenant, content=content))
        return result

    def stats(self, params: dict[str, str], flt: RunFilter) -> Stats:
        result: Stats = self.run_query(lambda: stats(self.store, flt))
        return result

    def close(self) -> None:
        self.store.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _held_by_another_process(path: Path) -> bool:
    """True when another process holds the embedded engine's lock on ``path`` (its ``status`` file)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: cannot tell
        return False
    try:
        descriptor = os.open(path / "status", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return False
    finally:
        os.close(descriptor)


def _embedded_path(url: str) -> Path | None:
    """The directory of a ``chdb://`` store (None for a server or an in-memory store)."""
    from agentwatch.collectors.store.clickhouse import MEMORY_PATH, parse_url

    try:
        target = parse_url(url)
    except ValueError:
        return None
    return Path(target.path) if target.path and target.path != MEMORY_PATH else None


def open_source(args: argparse.Namespace) -> Source:
    """The source the flags name, or the local collector, or the default embedded store if it exists."""
    return choose_source(args, CollectorSource, StoreSource)


_CollectorT = TypeVar("_CollectorT", bound=CollectorSource)
_StoreT = TypeVar("_StoreT", bound=StoreSource)


def choose_source(
    args: argparse.Namespace, collector_type: type[_CollectorT], store_type: type[_StoreT]
) -> _CollectorT | _StoreT:
    """``--collector`` or ``--clickhouse`` as the given source types; else the local collector, or the default store."""
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if args.collector:
        return collector_type(args.collector, token)
    if args.clickhouse:
        return store_type(args.clickhouse)
    collector = collector_type(DEFAULT_COLLECTOR, token)
    try:
        collector.get_document("/readyz", {})
    except _Unreachable:
        path = _embedded_path(DEFAULT_CLICKHOUSE)
        if path is not None and not path.exists():
            raise ReadError(
                f"no collector at {DEFAULT_COLLECTOR} and no store at {path}: pass --collector URL or --clickhouse URL"
            ) from None
        return store_type(DEFAULT_CLICKHOUSE)
    except ReadError:
        pass  # something answers (maybe 503 while starting): let the real request report it
    return collector


# --- commands -----------------------------------------------------------------------------------


def _fail(command: str, message: str, code: int) -> int:
    print(f"agentwatch {command}: {message}", file=sys.stderr)
    return code


def _runs_params(args: argparse.Namespace) -> tuple[dict[str, str], RunFilter]:
    """The filter (validated here, so a typo fails before any I/O) and its raw strings for the read API."""
    raw = {
        "agent": args.agent,
        "track": args.track,
        "stop_reason": args.stop_reason,
        "tenant": args.tenant,
        "since": args.since,
        "until": args.until,
        "limit": args.limit,
    }
    params = {name: str(value) for name, value in raw.items() if value is not None}
    flt = RunFilter(
        agent=args.agent,
        track=args.track,
        stop_reason=args.stop_reason,
        tenant=args.tenant,
        since=parse_since(args.since) if args.since is not None else None,
        until=parse_since(args.until) if args.until is not None else None,
        limit=parse_limit(args.limit) if args.limit is not None else 50,
    )
    return params, flt


def _run_command(command: str, args: argparse.Namespace, body: Callable[[Source], int]) -> int:
    """Open the source, run ``body``, and turn every expected failure into one line and an exit code."""
    try:
        source = open_source(args)
    except ReadError as exc:
        return _fail(command, str(exc), exc.code)
    try:
        return body(source)
    except InvalidQuery as exc:
        return _fail(command, str(exc), EXIT_USAGE)
    except ReadError as exc:
        return _fail(command, str(exc), exc.code)
    finally:
        source.close()


def runs_command(args: argparse.Namespace) -> int:
    """``agentwatch runs``: newest runs first, filtered."""
    try:
        params, flt = _runs_params(args)
    except InvalidQuery as exc:
        return _fail("runs", str(exc), EXIT_USAGE)

    def body(source: Source) -> int:
        rows = source.runs(params, flt)
        if args.json:
            print(json.dumps({"runs": [row.to_dict() for row in rows]}, indent=2))
        else:
            print(render_runs(rows))
        return EXIT_OK

    return _run_command("runs", args, body)


_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


def id_problem(text: str) -> str | None:
    """Why ``text`` cannot be a run id or a trace id, or None when it may be one.

    Run ids are ``uuid4().hex`` by default (32 hex digits, like trace ids), but an application may
    choose its own, so only what is plainly a mangled hex id (or no id at all) is refused.
    """
    if not text.strip() or any(char.isspace() or not char.isprintable() for char in text):
        return "it is empty or contains spaces"
    hex_only = all(char in _HEX_DIGITS for char in text)
    if hex_only and len(text) != 32 and len(text) >= 16:
        return f"it has {len(text)} hex digits, a trace id has 32"
    if len(text) == 32 and not hex_only and text.isalnum():
        wrong = sorted({char for char in text if char not in _HEX_DIGITS})
        return f"it has 32 characters but {', '.join(map(repr, wrong))} is not a hex digit"
    if hex_only and len(text) == 32 and not is_trace_id(text):
        return "the all-zero trace id is invalid"
    return None


def trace_command(args: argparse.Namespace) -> int:
    """``agentwatch trace ID``: a run's (or any trace's) spans as a tree; ``--content`` adds captured content."""
    problem = id_problem(args.run_id)
    if problem is not None:  # before any I/O: a copy-paste slip is not "no such run"
        return _fail(
            "trace",
            f"ID must be a run id or a trace id (32 hex digits); {args.run_id!r} is neither: {problem}",
            EXIT_USAGE,
        )

    def body(source: Source) -> int:
        view = source.trace(args.run_id, args.tenant, content=args.content)
        if view is None:
            what = "run or trace" if is_trace_id(args.run_id) else "run"
            return _fail("trace", f"no {what} {args.run_id!r} in {source.description}", EXIT_NOT_FOUND)
        if args.json:
            print(json.dumps({"trace": view.to_dict()}, indent=2))
        else:
            print(render_trace(view, content=args.content))
        return EXIT_OK

    return _run_command("trace", args, body)


def stats_command(args: argparse.Namespace) -> int:
    """``agentwatch stats``: the fleet report (stop reasons, budgets, denials, cost, top tools) for a window."""
    raw = {"agent": args.agent, "track": args.track, "tenant": args.tenant, "since": args.since, "until": args.until}
    params = {name: str(value) for name, value in raw.items() if value is not None}
    try:
        flt = RunFilter(
            agent=args.agent,
            track=args.track,
            tenant=args.tenant,
            since=parse_since(args.since) if args.since is not None else None,
            until=parse_since(args.until) if args.until is not None else None,
        )
    except InvalidQuery as exc:
        return _fail("stats", str(exc), EXIT_USAGE)

    def body(source: Source) -> int:
        view = source.stats(params, flt)
        if args.json:
            print(json.dumps({"stats": view.to_dict()}, indent=2))
        else:
            print(render_stats(view))
        return EXIT_OK

    return _run_command("stats", args, body)


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """``--collector URL`` or ``--clickhouse URL``, and ``--token``: where a read command reads from."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--collector", metavar="URL", help=f"a running collector's read API (e.g. {DEFAULT_COLLECTOR})")
    where.add_argument("--clickhouse", metavar="URL", help=f"open the store directly (e.g. {DEFAULT_CLICKHOUSE})")
    parser.add_argument("--token", help=f"bearer token for --collector (default: ${TOKEN_ENV})")


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    add_source_flags(parser)
    parser.add_argument("--tenant", help="only this tenant (a tenant-scoped token is always confined to its own)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_read_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``runs``, ``trace`` and ``stats`` to ``agentwatch``; each sets ``handler`` to a fn(args) -> int."""
    source_note = (
        "Reads from --collector URL or --clickhouse URL; with neither, the collector at "
        f"{DEFAULT_COLLECTOR}, else the store {DEFAULT_CLICKHOUSE}."
    )
    runs = subparsers.add_parser("runs", help="list recent runs (newest first)", description=source_note)
    runs.add_argument("--agent", help="only this agent")
    runs.add_argument("--track", help="only this track (stable, canary, baseline)")
    runs.add_argument("--stop-reason", dest="stop_reason", help="only runs that stopped for this reason")
    runs.add_argument("--since", help="started at or after: 15m, 2h, 7d or ISO-8601")
    runs.add_argument("--until", help="started at or before: 15m, 2h, 7d or ISO-8601")
    runs.add_argument("--limit", help="at most this many runs (default 50)")
    _add_source_flags(runs)
    runs.set_defaults(handler=runs_command)

    trace = subparsers.add_parser(
        "trace",
        help="show a run's trace (or any trace by its trace id) as a tree",
        description="ID is a run id or a trace id (32 hex digits; any stored trace, foreign spans too). " + source_note,
    )
    trace.add_argument("run_id", metavar="ID", help="a run id or a trace id")
    trace.add_argument(
        "--content",
        action="store_true",
        help="show captured content (inputs, outputs, tool arguments and results; redacted at ingest)",
    )
    _add_source_flags(trace)
    trace.set_defaults(handler=trace_command)

    fleet = subparsers.add_parser(
        "stats",
        help="the fleet report: stop reasons, budgets hit, denials, cost per run, top tools",
        description="What `agentwatch demo` prints and GET /api/v1/stats answers, for a window. " + source_note,
    )
    fleet.add_argument("--since", help="runs started at or after: 15m, 24h, 7d or ISO-8601 (default: all)")
    fleet.add_argument("--until", help="runs started at or before: 15m, 2h, 7d or ISO-8601")
    fleet.add_argument("--agent", help="only this agent")
    fleet.add_argument("--track", help="only this track (stable, canary, baseline)")
    _add_source_flags(fleet)
    fleet.set_defaults(handler=stats_command)


__all__ = [
    "DEFAULT_COLLECTOR",
    "TOKEN_ENV",
    "add_read_commands",
    "add_source_flags",
    "id_problem",
    "open_source",
    "runs_command",
    "stats_command",
    "trace_command",
]
