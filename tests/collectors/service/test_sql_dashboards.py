"""Every shipped dashboard's SQL through the collector's SQL endpoint, with real ClickHouse drivers.

A real collector (embedded store, ``--sql``) receives the example agent's spans over OTLP, stable
and canary. Then every SQL query of every dashboard in deploy/grafana/dashboards, with the Grafana
ClickHouse plugin's macros and the variables expanded, and the trace query the plugin's trace
view builds, run through:

- clickhouse-go v2 over HTTP (``go_sqlclient``), the driver inside Grafana's ClickHouse plugin.
  Built once per session where ``go`` and the Go module proxy are both reachable; otherwise it skips
  with the reason (the machines this project is built on reach PyPI, Debian and npm only, so the
  driver's modules cannot be fetched there, and Debian's Go is too old for the plugin's driver version).
- clickhouse-connect over HTTP (Native format, ClickHouse's official Python driver), always.

Each query must succeed; the panels that show runs and the trace must return rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _collector_proc import CollectorProcess
from _otlp_clients import run_example_agent
from _ports import free_port
from _sqlclient import dashboard_sql, go_sqlclient, plugin_trace_query, run_go, sql_request
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

pytestmark = pytest.mark.integration  # a real collector process and real drivers

# panels that must show something with the example traffic (the rest may be legitimately empty)
MUST_HAVE_ROWS = ("agentwatch-runs/", "agentwatch-tools/")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """(SQL port, a trace id of a stored run) of a collector holding the example fleet."""
    workdir: Path = tmp_path_factory.mktemp("sql-dashboards")
    port = free_port()
    process = CollectorProcess(workdir, extra_args=["--sql", f"127.0.0.1:{port}", "--no-drift-enabled"]).start()
    try:
        sent = run_example_agent(OTLPSpanExporter(endpoint=process.traces_url))
        run_example_agent(OTLPSpanExporter(endpoint=process.traces_url), track="canary")
        run_span = next(span for span in sent.spans if span.name.startswith("invoke_agent"))
        trace_id = f"{run_span.context.trace_id:032x}"
        for _ in range(300):  # until the runs are in agent_runs (the writer batches every 0.5 s)
            reply = sql_request(port, "SELECT count() FROM agent_runs FINAL")
            if reply.status == 200 and int(reply.text) >= 2 * len(sent.runs):
                break
            time.sleep(0.1)
        yield port, trace_id
    finally:
        process.stop()


def _queries(trace_id: str) -> list[tuple[str, str]]:
    queries = dashboard_sql(trace_id)
    assert len(queries) >= 20
    return [*queries, ("plugin trace view", plugin_trace_query(trace_id))]


def test_every_dashboard_query_through_clickhouse_go(served: tuple[int, str]) -> None:
    client = go_sqlclient()
    if client.binary is None:
        pytest.skip(client.reason)
    port, trace_id = served
    queries = _queries(trace_id)
    results = run_go(client.binary, port, [sql for _, sql in queries])
    failures = [
        f"{name}: {result['error']}" for (name, _), result in zip(queries, results, strict=True) if result.get("error")
    ]
    assert not failures, "\n".join(failures)
    for (name, _), result in zip(queries, results, strict=True):
        if name.startswith(MUST_HAVE_ROWS) or name == "plugin trace view":
            assert result["rows"] > 0, f"{name} returned no rows"


def test_every_dashboard_query_through_clickhouse_connect(served: tuple[int, str]) -> None:
    import clickhouse_connect

    port, trace_id = served
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port, username="grafana", compress="gzip")
    try:
        for name, sql in _queries(trace_id):
            try:
                result = client.query(sql)
            except Exception as exc:
                raise AssertionError(f"{name} failed:\n{sql}\n{exc}") from exc
            if name.startswith(MUST_HAVE_ROWS) or name == "plugin trace view":
                assert result.result_rows, f"{name} returned no rows:\n{sql}"
            if name in ("agentwatch-runs/Trace of the selected run", "plugin trace view"):
                assert {row[0] for row in result.result_rows} == {trace_id}
    finally:
        client.close()
