"""Test support for the collector's SQL endpoint: raw HTTP requests, the Go driver, dashboard queries.

- ``sql_request``: one request as curl or a driver would send it (a reply, never an exception).
- ``go_sqlclient``: builds ``tests/collectors/service/go_sqlclient`` (clickhouse-go v2 over HTTP,
  the driver of Grafana's ClickHouse data source) once per session into a temporary directory,
  and ``run_go`` runs a list of queries through it.
- ``dashboard_sql``: every SQL query of every shipped dashboard, with the Grafana ClickHouse
  plugin's macros and the template variables expanded (``agentwatch.dashboards.macros`` follows the
  plugin's documented semantics: ``$__timeFilter``, ``$__timeInterval``, ``$__conditionalAll``...),
  plus the trace query the plugin's trace view generates for OpenTelemetry tables.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from _paths import REPO

GO_SOURCE = REPO / "tests" / "collectors" / "service" / "go_sqlclient"


@dataclass(frozen=True)
class SqlReply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def sql_request(
    port: int,
    sql: str | None,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
    path: str = "/",
    body: bytes | None = None,
    timeout_s: float = 60.0,
) -> SqlReply:
    """POST ``sql`` as the body (or GET it as ``query``) to the SQL endpoint on 127.0.0.1:``port``."""
    query = dict(params or {})
    payload = body
    if sql is not None and method == "GET":
        query["query"] = sql
    elif sql is not None and payload is None:
        payload = sql.encode()
    target = path + ("?" + urlencode(query) if query else "")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, target, body=payload, headers=dict(headers or {}))
        response = conn.getresponse()
        return SqlReply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


# --- the Go driver ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GoClient:
    """The built client, or why there is none (``binary`` None)."""

    binary: Path | None
    reason: str = ""


@functools.cache
def go_sqlclient() -> GoClient:
    """Build the Go client once per test process (``GOFLAGS=-mod=mod``, ``GOPROXY`` from the environment).

    No ``go``: ``binary`` is None with the reason (the caller skips outside CI, fails in CI, where
    the Makefile installs Debian's golang). A failed build says what go printed; when the module
    download itself failed (no route to the Go module proxy), the reason says so.
    """
    go = shutil.which("go")
    if go is None:
        return GoClient(None, "go is not installed (Debian package golang; `make` installs it with the system deps)")
    workdir = Path(tempfile.mkdtemp(prefix="agentwatch-go-sqlclient-"))
    source = workdir / "src"
    shutil.copytree(GO_SOURCE, source)  # go may update go.mod/go.sum: never in the repository
    binary = workdir / "go_sqlclient"
    env = {
        **os.environ,
        "GOFLAGS": "-mod=mod",
        "GOCACHE": os.environ.get("GOCACHE", str(Path.home() / ".cache" / "go-build")),
        "CGO_ENABLED": "0",
    }
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        unreachable = any(
            marker in output for marker in ("no such host", "dial tcp", "connection refused", "i/o timeout")
        )
        prefix = (
            "the Go module proxy is unreachable, clickhouse-go cannot be downloaded"
            if unreachable
            else "go build failed"
        )
        return GoClient(None, f"{prefix}:\n{output}")
    return GoClient(binary)


def run_go(binary: Path, port: int, queries: list[str], *, password: str = "") -> list[dict[str, Any]]:
    """Run ``queries`` through the Go client; one result dict per query (columns, rows, sample, error)."""
    done = subprocess.run(
        [str(binary), "-addr", f"127.0.0.1:{port}", "-user", "grafana", "-password", password],
        input=json.dumps(queries),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise AssertionError(f"go_sqlclient failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    result: list[dict[str, Any]] = json.loads(lines[-1])
    return result


# --- dashboard queries ------------------------------------------------------------------------

ALL_SELECTED = {"tenant": "$__all", "agent": "$__all", "track": "$__all"}


def dashboard_sql(trace_id: str, *, hours: float = 1.0) -> list[tuple[str, str]]:
    """(``dashboard/panel``, expanded SQL) for every SQL query of every shipped dashboard."""
    from agentwatch.dashboards import runs
    from agentwatch.dashboards.macros import expand_sql
    from agentwatch.dashboards.panels import panel_queries

    end = datetime.now(UTC) + timedelta(minutes=5)
    variables = {**ALL_SELECTED, runs.TRACE_VARIABLE: trace_id}
    out = []
    for query in panel_queries():
        if query.language != "sql":
            continue
        sql = expand_sql(query.expr, start=end - timedelta(hours=hours), end=end, variables=variables, interval_s=60)
        out.append((f"{query.dashboard_uid}/{query.panel_title}", sql))
    return out


def plugin_trace_query(trace_id: str, database: str = "default") -> str:
    """The query the Grafana ClickHouse plugin's trace view builds for an OTel table and one trace id.

    Its shape (the ``_trace_id_ts`` lookup bounding the time range, the renamed columns, tags as
    arrays of maps, nested Events/Links) is the plugin's query builder output with ``otelEnabled``.
    """
    table = f'"{database}"."otel_traces"'
    lookup = f'"{database}"."otel_traces_trace_id_ts"'
    return f"""WITH '{trace_id}' as trace_id,
  (SELECT min(Start) FROM {lookup} WHERE TraceId = trace_id) as trace_start,
  (SELECT max(End) + 1 FROM {lookup} WHERE TraceId = trace_id) as trace_end
SELECT "TraceId" as traceID, "SpanId" as spanID, "ParentSpanId" as parentSpanID,
  "ServiceName" as serviceName, "SpanName" as operationName, "Timestamp" as startTime,
  multiply("Duration", 0.000001) as duration,
  arrayMap(key -> map('key', key, 'value', "SpanAttributes"[key]), mapKeys("SpanAttributes")) as tags,
  arrayMap(key -> map('key', key, 'value', "ResourceAttributes"[key]), mapKeys("ResourceAttributes")) as serviceTags,
  arrayMap((name, timestamp, attributes) -> tuple(name, toString(toUnixTimestamp64Milli(timestamp)),
    arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))::Tuple(name String,
    timestamp String, fields Array(Map(String, String))),
    "Events.Name", "Events.Timestamp", "Events.Attributes") AS logs,
  arrayMap((traceID, spanID, attributes) -> tuple(traceID, spanID,
    arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))::Tuple(traceID String,
    spanID String, tags Array(Map(String, String))), "Links.TraceId", "Links.SpanId", "Links.Attributes") AS references
FROM {table}
WHERE traceID = trace_id AND startTime >= trace_start AND startTime <= trace_end AND ( Duration > 0 )
ORDER BY startTime ASC LIMIT 1000"""
