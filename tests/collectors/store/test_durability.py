"""Durability: 200 means durable. kill -9 mid-stream, ClickHouse outages and a full spool lose nothing acked.

The collector runs as a real child process; the client is the official OTLP/HTTP exporter. A span
counts as acknowledged only when ``export()`` returned SUCCESS for its batch; each acknowledged span
must end up in ClickHouse exactly once, and no span may be stored twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from _collector_proc import CollectorProcess, query_embedded
from _ports import free_port
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.instrumentation import semconv

pytestmark = [
    pytest.mark.integration,  # real engines or processes: not in `make test-fast`
    pytest.mark.slow,
]


def make_batches(batches: int, per_batch: int) -> list[Sequence[ReadableSpan]]:
    """Agent-like spans, ``per_batch`` per export call (each batch is one OTLP request)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("durability-test")
    for index in range(batches * per_batch):
        with tracer.start_as_current_span(f"execute_tool tool.{index % 7}") as span:
            span.set_attribute(semconv.GEN_AI_OPERATION_NAME, semconv.OP_EXECUTE_TOOL)
            span.set_attribute(semconv.RUN_ID, f"run-{index // 10}")
            span.set_attribute(semconv.GEN_AI_AGENT_NAME, "support")
            span.set_attribute(semconv.TRACK, "stable")
            span.set_attribute(semconv.GEN_AI_TOOL_NAME, f"tool.{index % 7}")
            span.set_attribute(semconv.TOOL_DISPOSITION, "allowed")
            span.set_attribute("sequence", index)
    provider.shutdown()
    spans = memory.get_finished_spans()
    return [spans[i : i + per_batch] for i in range(0, len(spans), per_batch)]


def span_keys(batch: Sequence[ReadableSpan]) -> set[tuple[str, str]]:
    keys = set()
    for span in batch:
        context = span.get_span_context()
        assert context is not None
        keys.add((f"{context.trace_id:032x}", f"{context.span_id:016x}"))
    return keys


def stored_keys(store_path: Path) -> tuple[dict[tuple[str, str], int], int]:
    (rows, total) = query_embedded(
        store_path,
        "SELECT TraceId, SpanId, count() FROM otel_traces GROUP BY TraceId, SpanId",
        "SELECT count() FROM otel_traces",
    )
    return {(trace, span): int(n) for trace, span, n in rows}, int(total[0][0])


def test_kill_9_while_the_exporter_sends_loses_no_acknowledged_span(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path / "collector").start()
    batches = make_batches(batches=120, per_batch=50)
    exporter = OTLPSpanExporter(endpoint=collector.traces_url, timeout=15)
    acked: set[tuple[str, str]] = set()
    failed = 0
    kills = 0
    for index, batch in enumerate(batches):
        if index in {30, 75}:
            # kill in the middle of a stream: a request may be half-read, half-spooled or unacknowledged
            killer = threading.Timer(0.005, collector.kill9)
            killer.start()
            result = exporter.export(batch)
            killer.join()
            kills += 1
            restart = threading.Timer(1.0, lambda: collector.start(wait_ready=False))
            restart.start()
        else:
            result = exporter.export(batch)
        if result is SpanExportResult.SUCCESS:
            acked |= span_keys(batch)
        else:
            failed += 1
        if index in {30, 75}:
            restart.join()
    exporter.shutdown()  # type: ignore[no-untyped-call]
    collector.wait_ready()
    assert collector.stop() == 0, collector.log()
    assert kills == 2
    assert collector.log().count("agentwatch collector: OTLP/HTTP") == 3  # started, killed and restarted twice
    stored, total = stored_keys(collector.workdir / "clickhouse")
    missing = acked - stored.keys()
    duplicated = {key: n for key, n in stored.items() if n > 1}
    assert not missing, f"{len(missing)} acknowledged spans lost"
    assert not duplicated, f"{len(duplicated)} spans stored more than once"
    assert total == len(stored)
    # the exporter retries through the restart, so nearly everything is acknowledged
    assert len(acked) >= 50 * (120 - failed)
    assert len(acked) >= 50 * 100


def _server_counts(port: int) -> tuple[dict[tuple[str, str], int], int, int]:
    """(per-span counts, total rows, agent_tool_calls rows) read through the ClickHouse HTTP interface."""
    import clickhouse_connect

    client = clickhouse_connect.get_client(host="127.0.0.1", port=port, username="default", password="pw")
    try:
        rows = client.query("SELECT TraceId, SpanId, count() FROM otel_traces GROUP BY TraceId, SpanId").result_rows
        total = int(str(client.command("SELECT count() FROM otel_traces")))
        tool_calls = int(str(client.command("SELECT count() FROM agent_tool_calls")))
    finally:
        client.close()
    return {(str(t), str(s)): int(n) for t, s, n in rows}, total, tool_calls


def _wait_written(collector: CollectorProcess, spans: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in collector.metrics_text().splitlines():
            if line.startswith("agentwatch_collector_spans_written_total ") and float(line.split()[1]) >= spans:
                return
        time.sleep(0.1)
    raise TimeoutError(f"the collector did not write {spans} spans:\n{collector.log()[-3000:]}")


def test_clickhouse_outage_spools_then_drains_exactly_once(tmp_path: Path) -> None:
    import chshim

    port = free_port()
    data = tmp_path / "server"
    collector = CollectorProcess(
        tmp_path / "collector", clickhouse=f"http://default:pw@127.0.0.1:{port}/default"
    ).start(wait_ready=False)
    batches = make_batches(batches=40, per_batch=25)
    exporter = OTLPSpanExporter(endpoint=collector.traces_url, timeout=10)
    acked: set[tuple[str, str]] = set()

    def send(part: Sequence[Sequence[ReadableSpan]]) -> None:
        for batch in part:
            assert exporter.export(batch) is SpanExportResult.SUCCESS  # durable in the spool: acknowledged
            acked.update(span_keys(batch))

    # 1. ClickHouse has never been up: not ready, yet every request is acknowledged from the spool
    send(batches[:10])
    assert collector.get("/readyz")[0] == 503
    assert "agentwatch_collector_store_up 0.0" in collector.metrics_text()
    # 2. the server comes up: the collector applies the schema and drains the spool
    server = chshim.start_in_subprocess(port, data, password="pw")
    try:
        collector.wait_ready()
        send(batches[10:20])
        _wait_written(collector, 20 * 25)
        # 3. the server dies mid-stream (kill -9), traffic goes on, then it comes back
        chshim.kill(server)
        # an idle collector notices the outage by itself (it pings the store), so /readyz tells the truth
        deadline = time.monotonic() + 30
        while collector.get("/readyz")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert collector.get("/readyz")[0] == 503
        send(batches[20:30])
        server = chshim.start_in_subprocess(port, data, password="pw")
        send(batches[30:])
        collector.wait_ready()
        _wait_written(collector, 40 * 25)
        stored, total, tool_calls = _server_counts(port)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
        collector.stop()
        chshim.stop(server)
    assert acked == stored.keys(), f"lost {len(acked - stored.keys())} acknowledged spans"
    assert max(stored.values()) == 1
    assert total == tool_calls == 40 * 25  # the materialized views saw every span exactly once too


def test_full_spool_answers_503_with_retry_after_and_recovers(tmp_path: Path) -> None:
    import urllib.request

    import chshim
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    port = free_port()
    collector = CollectorProcess(
        tmp_path / "collector",
        clickhouse=f"http://default:pw@127.0.0.1:{port}/default",
        extra_args=["--spool-max-bytes", str(256 * 1024)],
    ).start(wait_ready=False)
    bodies = [encode_spans(batch).SerializeToString() for batch in make_batches(batches=60, per_batch=25)]

    def post(body: bytes) -> tuple[int, str | None]:
        request = urllib.request.Request(
            collector.traces_url, data=body, headers={"Content-Type": "application/x-protobuf"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status), None
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.headers.get("Retry-After")

    accepted: list[bytes] = []
    refused: list[bytes] = []
    for body in bodies:
        status, retry_after = post(body)
        if status == 200:
            accepted.append(body)
        else:
            assert status == 503
            assert retry_after is not None
            assert int(retry_after) > 0
            refused.append(body)
    assert accepted, "a 256 KiB spool takes the first requests"
    assert refused, "a 256 KiB spool refuses the rest while ClickHouse is down"
    server = chshim.start_in_subprocess(port, tmp_path / "server", password="pw")
    try:
        collector.wait_ready()
        _wait_written(collector, 25 * len(accepted))
        for body in refused:  # what the client retries after Retry-After now goes through
            deadline = time.monotonic() + 60
            while (status := post(body)[0]) == 503 and time.monotonic() < deadline:
                time.sleep(0.1)  # the spool is still draining: back off as Retry-After asks
            assert status == 200
        _wait_written(collector, 25 * len(bodies))
        stored, total, _ = _server_counts(port)
    finally:
        collector.stop()
        chshim.stop(server)
    assert total == len(stored) == 25 * len(bodies)
