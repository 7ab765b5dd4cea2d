"""End-to-end ingest: real OTLP clients → a running collector → rows in real ClickHouse (chDB).

The official OpenTelemetry exporters (OTLP/HTTP protobuf with and without gzip, OTLP/gRPC with and
without gzip) ship the spans the real agentwatch instrumentation makes for the example agent; the
tests then read ``otel_traces``, ``agent_runs`` and ``agent_tool_calls`` back. Hand-built OTLP/JSON
checks the wire mapping to the nanosecond, and the collector's /metrics scrape is checked for the
derived agent metrics and by ``promtool check metrics``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import grpc
import pytest
from _chrows import engine_url
from _otlp_clients import (
    JSON,
    PROTOBUF,
    Collector,
    SentScenarios,
    gzipped,
    http_request,
    json_request,
    json_span,
    random_span_id,
    random_trace_id,
    run_example_agent,
    running_collector,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from agentwatch.collectors import metric_names as m
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.collectors.store.schema import RUNS_TABLE, TOOL_CALLS_TABLE, TRACES_TABLE
from agentwatch.instrumentation import semconv

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]


@pytest.fixture
def collector(clickhouse_url: str, tmp_path: Path) -> Iterator[Collector]:
    with running_collector(clickhouse_url, tmp_path) as running:
        yield running


@pytest.fixture
def scraped(clickhouse_url: str, tmp_path: Path) -> Iterator[Collector]:
    """A collector that also serves /metrics."""
    with running_collector(clickhouse_url, tmp_path, metrics="127.0.0.1:0") as running:
        yield running


class CheckedExporter(SpanExporter):
    """Wraps a real exporter and remembers every export result (a SimpleSpanProcessor only logs failures)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


ExporterFactory = Callable[[Collector], SpanExporter]

# client → (exporter factory, behind a BatchSpanProcessor?)
EXPORTERS: dict[str, tuple[ExporterFactory, bool]] = {
    "http-protobuf": (lambda c: HttpSpanExporter(endpoint=c.traces_url, timeout=10), False),
    "http-protobuf-batch": (lambda c: HttpSpanExporter(endpoint=c.traces_url, timeout=10), True),
    "http-protobuf-gzip-batch": (
        lambda c: HttpSpanExporter(endpoint=c.traces_url, timeout=10, compression=HttpCompression.Gzip),
        True,
    ),
    "grpc-batch": (lambda c: GrpcSpanExporter(endpoint=c.grpc_target, insecure=True, timeout=10), True),
    "grpc-gzip": (
        lambda c: GrpcSpanExporter(
            endpoint=c.grpc_target, insecure=True, timeout=10, compression=grpc.Compression.Gzip
        ),
        False,
    ),
}


def send_example_agent(collector: Collector, client: str) -> SentScenarios:
    factory, batch = EXPORTERS[client]
    exporter = CheckedExporter(factory(collector))
    sent = run_example_agent(exporter, batch=batch)
    assert exporter.results
    assert set(exporter.results) == {SpanExportResult.SUCCESS}, exporter.results
    # one request per span, or a few requests of many spans each
    assert (len(exporter.results) < len(sent.spans)) == batch
    collector.drain()
    return sent


def span_keys(spans: Sequence[ReadableSpan]) -> set[tuple[str, str]]:
    return {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in spans}


# --- the official exporters -------------------------------------------------------------------


@pytest.mark.parametrize("client", sorted(EXPORTERS))
def test_official_exporters_store_every_span_and_derive_runs_and_tool_calls(collector: Collector, client: str) -> None:
    sent = send_example_agent(collector, client)
    assert len(sent.spans) > 20
    assert len(sent.runs) == 5

    stored = collector.query(f"SELECT TraceId, SpanId, ServiceName FROM {TRACES_TABLE}")
    assert len(stored) == len(sent.spans)
    assert {(str(r["TraceId"]), str(r["SpanId"])) for r in stored} == span_keys(sent.spans)
    assert {r["ServiceName"] for r in stored} == {"support-bot"}

    runs = {
        str(r["RunId"]): r
        for r in collector.query(
            f"SELECT RunId, TenantId, AgentName, Track, StopReason, Steps, ToolCalls, CostUsd FROM {RUNS_TABLE}"
        )
    }
    assert set(runs) == {run.run_id for run in sent.runs}
    for run in sent.runs:
        row = runs[run.run_id]
        assert (row["TenantId"], row["AgentName"], row["Track"]) == (run.tenant, "support", "stable")
        assert (row["StopReason"], row["Steps"], row["ToolCalls"]) == (run.stop_reason, run.steps, run.tool_calls)
        assert float(str(row["CostUsd"])) == pytest.approx(run.cost_usd, rel=1e-9)
    assert sorted(str(r["StopReason"]) for r in runs.values()) == sorted(
        ["completed", "completed", "max_tool_calls", "policy_denied", "approval_rejected"]
    )

    tool_calls = collector.query(f"SELECT RunId, ToolName, Disposition FROM {TOOL_CALLS_TABLE}")
    stored_calls = sorted((str(r["RunId"]), str(r["ToolName"]), str(r["Disposition"])) for r in tool_calls)
    assert stored_calls == sent.tool_dispositions()
    assert {call[2] for call in stored_calls} == {"allowed", "approved", "denied", "rejected"}


def test_plain_otel_spans_land_in_otel_traces_only(collector: Collector) -> None:
    exporter = CheckedExporter(HttpSpanExporter(endpoint=collector.traces_url, timeout=10))
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("web.framework", "2.0")
    with tracer.start_as_current_span("GET /cart", attributes={"http.request.method": "GET"}):
        with tracer.start_as_current_span("SELECT carts", attributes={"db.system.name": "postgresql"}):
            pass
        # a span of the GenAI conventions that is no LLM, agent or tool call
        with tracer.start_as_current_span("create_agent", attributes={semconv.GEN_AI_OPERATION_NAME: "create_agent"}):
            pass
    provider.shutdown()
    assert set(exporter.results) == {SpanExportResult.SUCCESS}
    collector.drain()

    rows = collector.query(f"SELECT SpanName, ScopeName, ScopeVersion, ParentSpanId FROM {TRACES_TABLE}")
    assert sorted(str(r["SpanName"]) for r in rows) == ["GET /cart", "SELECT carts", "create_agent"]
    assert {(r["ScopeName"], r["ScopeVersion"]) for r in rows} == {("web.framework", "2.0")}
    assert sum(1 for r in rows if r["ParentSpanId"] == "") == 1
    assert collector.count(RUNS_TABLE) == 0
    assert collector.count(TOOL_CALLS_TABLE) == 0


def test_the_database_comes_from_the_url_unless_the_setting_names_one(
    clickhouse_engine: ClickHouseStore, clickhouse_database: str, tmp_path: Path
) -> None:
    url = engine_url(clickhouse_engine, clickhouse_database)
    other = f"{clickhouse_database}_other"
    body = json_request([json_span(trace_id=random_trace_id(), span_id=random_span_id(), start_ns=1, end_ns=2)])
    try:
        with running_collector(url, tmp_path / "a", traces_ttl_days=0) as collector:
            assert collector.post(body, {"Content-Type": JSON}).status == 200
            collector.drain()
        with running_collector(url, tmp_path / "b", traces_ttl_days=0, database=other) as collector:
            assert collector.post(body, {"Content-Type": JSON}).status == 200
            collector.drain()
        for database in (clickhouse_database, other):
            assert clickhouse_engine.command(f"SELECT count() FROM {database}.{TRACES_TABLE}") == 1
    finally:
        clickhouse_engine.command(f"DROP DATABASE IF EXISTS {other} SYNC")


# --- OTLP/JSON, by hand, to the nanosecond --------------------------------------------------------


def test_hand_built_otlp_json_is_stored_exactly(collector: Collector) -> None:
    # an odd nanosecond part: a float anywhere on the way would lose it
    start = (time.time_ns() // 1_000_000_000 - 60) * 1_000_000_000 + 123_456_789
    end = start + 1_000_000_007
    trace_id, span_id, parent_id = random_trace_id(), random_span_id(), random_span_id()
    link_trace, link_span = random_trace_id(), random_span_id()
    attributes = {
        "text": "hello <world> & co",
        "big.int": 9_007_199_254_740_993,  # 2**53 + 1: lost if int64 went through a double
        "negative": -42,
        "ratio": 1.5,
        "whole.double": 2.0,
        "flag": True,
        "raw": b"\x00\x01\xfe",
        "list": [1, "a", False],
        "nested": {"b": 1, "a": "x"},
    }
    span = json_span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_id,
        start_ns=start,
        end_ns=end,
        name="hand built",
        attributes=attributes,
        kind=3,  # enums are integers in OTLP/JSON
        traceState="vendor=1",
        status={"code": 2, "message": "upstream failed"},
        events=[
            {
                "timeUnixNano": str(start + 5),
                "name": "retry",
                "attributes": [{"key": "attempt", "value": {"intValue": "2"}}],
            },
            {"timeUnixNano": str(end), "name": "done"},
        ],
        links=[
            {
                "traceId": link_trace.upper(),  # hex ids are case-insensitive in OTLP/JSON
                "spanId": link_span,
                "traceState": "k=v",
                "attributes": [{"key": "link.kind", "value": {"stringValue": "follows"}}],
            }
        ],
    )
    reply = collector.post(json_request([span], resource={"deployment.environment": "test"}), {"Content-Type": JSON})
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith(JSON)
    assert reply.json() == {}
    collector.drain()

    rows = collector.query(
        f"""SELECT toUnixTimestamp64Nano(Timestamp) AS ts, TraceId, SpanId, ParentSpanId, TraceState, SpanName,
                   SpanKind, ServiceName, ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration,
                   StatusCode, StatusMessage,
                   arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp) AS event_ts,
                   Events.Name AS event_names, Events.Attributes AS event_attributes,
                   Links.TraceId AS link_traces, Links.SpanId AS link_spans, Links.TraceState AS link_states,
                   Links.Attributes AS link_attributes
            FROM {TRACES_TABLE}"""
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["ts"] == start
    assert row["Duration"] == 1_000_000_007
    assert (row["TraceId"], row["SpanId"], row["ParentSpanId"]) == (trace_id, span_id, parent_id)
    assert (row["TraceState"], row["SpanName"], row["SpanKind"]) == ("vendor=1", "hand built", "Client")
    assert (row["StatusCode"], row["StatusMessage"]) == ("Error", "upstream failed")
    assert row["ServiceName"] == "hand-built"
    assert row["ResourceAttributes"] == {"service.name": "hand-built", "deployment.environment": "test"}
    assert (row["ScopeName"], row["ScopeVersion"]) == ("hand.scope", "0.1")
    # every value typed as a string, as the OpenTelemetry Collector's ClickHouse exporter renders it
    assert row["SpanAttributes"] == {
        "text": "hello <world> & co",
        "big.int": "9007199254740993",
        "negative": "-42",
        "ratio": "1.5",
        "whole.double": "2",
        "flag": "true",
        "raw": "AAH+",
        "list": '[1,"a",false]',
        "nested": '{"a":"x","b":1}',
    }
    assert row["event_ts"] == [start + 5, end]
    assert row["event_names"] == ["retry", "done"]
    assert row["event_attributes"] == [{"attempt": "2"}, {}]
    assert (row["link_traces"], row["link_spans"], row["link_states"]) == ([link_trace], [link_span], ["k=v"])
    assert row["link_attributes"] == [{"link.kind": "follows"}]


def test_times_near_the_epoch_are_stored_exactly_with_their_batch(clickhouse_url: str, tmp_path: Path) -> None:
    """A span from 1970 or an event with an unset time (0) is stored exactly, with the rest of its batch."""
    recent = time.time_ns() - 1_000_000_000
    trace_id = random_trace_id()
    ancient = json_span(
        trace_id=trace_id,
        span_id=random_span_id(),
        start_ns=1,
        end_ns=12_345_000_000_007,
        name="ancient",
        events=[{"name": "unset time"}, {"timeUnixNano": "99999999999999999", "name": "1973"}],
    )
    normal = json_span(trace_id=trace_id, span_id=random_span_id(), start_ns=recent, end_ns=recent + 1, name="now")
    # TTL 0 keeps rows forever, so the 1970 row is not expired on arrival
    with running_collector(clickhouse_url, tmp_path, traces_ttl_days=0) as collector:
        reply = collector.post(json_request([ancient, normal]), {"Content-Type": JSON})
        assert reply.status == 200
        assert reply.json() == {}
        collector.drain()
        rows = collector.query(
            f"""SELECT SpanName, toUnixTimestamp64Nano(Timestamp) AS ts, Duration,
                       arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp) AS events
                FROM {TRACES_TABLE} ORDER BY SpanName"""
        )
        assert rows == [
            {"SpanName": "ancient", "ts": 1, "Duration": 12_345_000_000_006, "events": [0, 99_999_999_999_999_999]},
            {"SpanName": "now", "ts": recent, "Duration": 1, "events": []},
        ]
        assert not (tmp_path / "spool" / "dead-letter").exists()


# --- retries and partial success -------------------------------------------------------------------


def _json_batch(count: int) -> bytes:
    start = time.time_ns() - 10_000_000_000
    trace_id = random_trace_id()
    spans = [
        json_span(trace_id=trace_id, span_id=random_span_id(), start_ns=start + i, end_ns=start + i + 1000)
        for i in range(count)
    ]
    return json_request(spans)


def test_a_retried_identical_request_is_stored_once(collector: Collector) -> None:
    body = _json_batch(7)
    headers = {"Content-Type": JSON}
    assert collector.post(body, headers).status == 200
    assert collector.post(body, headers).status == 200  # a retry while the first is still spooled
    collector.drain()
    assert collector.post(body, headers).status == 200  # a retry after the rows reached ClickHouse
    assert collector.post(gzipped(body), {**headers, "Content-Encoding": "gzip"}).status == 200
    collector.drain()
    assert collector.count(TRACES_TABLE) == 7

    # the same spans in another request (different bytes) are another request: stored again
    other = json.loads(body)
    other["resourceSpans"][0]["schemaUrl"] = "https://opentelemetry.io/schemas/1.26.0"
    assert collector.post(json.dumps(other).encode(), headers).status == 200
    collector.drain()
    assert collector.count(TRACES_TABLE) == 14


def _protobuf_with_invalid_spans(valid: int) -> bytes:
    start = time.time_ns() - 5_000_000_000
    trace_id = bytes.fromhex(random_trace_id())

    def span(trace: bytes, span_id: bytes, name: str) -> Span:
        return Span(trace_id=trace, span_id=span_id, name=name, start_time_unix_nano=start, end_time_unix_nano=start)

    spans = [span(trace_id, bytes.fromhex(random_span_id()), f"ok {i}") for i in range(valid)]
    spans.append(span(bytes(16), bytes.fromhex(random_span_id()), "zero trace id"))
    spans.append(span(trace_id, b"\x01" * 7, "short span id"))
    spans.append(span(trace_id, b"\x01" * 9, "long span id"))
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])
    encoded: bytes = request.SerializeToString()
    return encoded


def test_partial_success_in_protobuf(collector: Collector) -> None:
    reply = collector.post(_protobuf_with_invalid_spans(4), {"Content-Type": PROTOBUF})
    assert reply.status == 200
    assert reply.headers["content-type"] == PROTOBUF
    response = ExportTraceServiceResponse.FromString(reply.body)
    assert response.partial_success.rejected_spans == 3
    assert "trace_id" in response.partial_success.error_message
    assert "span_id" in response.partial_success.error_message
    collector.drain()
    assert sorted(str(r["SpanName"]) for r in collector.query(f"SELECT SpanName FROM {TRACES_TABLE}")) == [
        "ok 0",
        "ok 1",
        "ok 2",
        "ok 3",
    ]


def test_partial_success_in_json(collector: Collector) -> None:
    start = time.time_ns() - 5_000_000_000
    trace_id = random_trace_id()
    spans = [
        json_span(trace_id=trace_id, span_id=random_span_id(), start_ns=start, end_ns=start + 1, name="good"),
        json_span(trace_id="0" * 32, span_id=random_span_id(), start_ns=start, end_ns=start + 1, name="zero"),
        json_span(trace_id=trace_id, span_id="abcdef", start_ns=start, end_ns=start + 1, name="3-byte id"),
        json_span(trace_id=trace_id, span_id=random_span_id(), start_ns=start, end_ns=start - 1, name="backwards"),
    ]
    reply = collector.post(json_request(spans), {"Content-Type": JSON})
    assert reply.status == 200
    body = reply.json()
    assert body["partialSuccess"]["rejectedSpans"] == "3"  # int64 as a string in OTLP/JSON
    assert "span_id" in body["partialSuccess"]["errorMessage"]
    collector.drain()
    assert [r["SpanName"] for r in collector.query(f"SELECT SpanName FROM {TRACES_TABLE}")] == ["good"]


def test_spans_older_than_the_retention_are_refused_not_silently_lost(collector: Collector) -> None:
    """ClickHouse drops rows past the TTL on insert: such spans get partial_success, never a bare 200."""
    now = time.time_ns()
    forty_days = 40 * 86_400 * 1_000_000_000  # the default TTL is 30 days
    trace_id = random_trace_id()
    spans = [
        json_span(trace_id=trace_id, span_id=random_span_id(), start_ns=now - 1000, end_ns=now, name="fresh"),
        json_span(trace_id=trace_id, span_id=random_span_id(), start_ns=now - forty_days, end_ns=now, name="old"),
    ]
    reply = collector.post(json_request(spans), {"Content-Type": JSON})
    assert reply.status == 200
    body = reply.json()
    assert body["partialSuccess"]["rejectedSpans"] == "1"
    assert "retention" in body["partialSuccess"]["errorMessage"]
    collector.drain()
    assert [r["SpanName"] for r in collector.query(f"SELECT SpanName FROM {TRACES_TABLE}")] == ["fresh"]


def test_grpc_and_http_share_the_request_digest(collector: Collector) -> None:
    """The same protobuf request over both transports (an exporter that switched) is stored once."""
    sent = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(sent))
    with provider.get_tracer("t").start_as_current_span("once"):
        pass
    provider.shutdown()
    body = encode_spans(sent.get_finished_spans()).SerializeToString()
    assert collector.post(body, {"Content-Type": PROTOBUF}).status == 200
    with grpc.insecure_channel(collector.grpc_target) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda data: data,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        response = export(body, timeout=10)
    assert not response.HasField("partial_success")
    collector.drain()
    assert collector.count(TRACES_TABLE) == 1


# --- /metrics ------------------------------------------------------------------------------------


def scrape(collector: Collector) -> str:
    reply = http_request(f"http://127.0.0.1:{collector.service.metrics_port}/metrics", None)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    return reply.body.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_metrics_scrape_shows_the_agents_and_the_collector(scraped: Collector) -> None:
    collector = scraped
    sent = send_example_agent(collector, "http-protobuf-batch")
    text = scrape(collector)
    found = samples(text)
    labels = {"agent": "support", "track": "stable"}
    assert value(found, m.RUNS_TOTAL, **labels, stop_reason="max_tool_calls") == 1
    assert value(found, m.RUNS_TOTAL, **labels, stop_reason="completed") == 2
    assert value(found, m.RUNS_TOTAL, **labels, stop_reason="policy_denied") == 1
    assert value(found, m.RUNS_TOTAL, **labels, stop_reason="approval_rejected") == 1
    assert value(found, m.BUDGET_EXHAUSTED_TOTAL, **labels, budget="tool_calls") == 1
    denied = value(found, m.TOOL_CALLS_TOTAL, **labels, tool="db.drop_table", disposition="denied", outcome="blocked")
    assert denied == 1
    assert value(found, m.COST_USD_TOTAL, **labels) == pytest.approx(sum(run.cost_usd for run in sent.runs))
    assert value(found, m.RUN_STEPS + "_count", **labels) == 5

    # the collector's own counters agree with the rows
    assert value(found, m.COLLECTOR_SPANS_RECEIVED_TOTAL, transport="http") == len(sent.spans)
    assert value(found, m.COLLECTOR_SPANS_WRITTEN_TOTAL) == len(sent.spans)
    assert value(found, m.COLLECTOR_STORE_UP) == 1
    assert collector.count(TRACES_TABLE) == len(sent.spans)

    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rejected_requests_are_counted_not_derived(scraped: Collector) -> None:
    collector = scraped
    assert collector.post(b"\xff\xff", {"Content-Type": PROTOBUF}).status == 400
    assert collector.post(_protobuf_with_invalid_spans(2), {"Content-Type": PROTOBUF}).status == 200
    collector.drain()
    found = samples(scrape(collector))
    assert value(found, m.COLLECTOR_SPANS_REJECTED_TOTAL, reason="invalid") == 3
    assert value(found, m.COLLECTOR_REQUESTS_TOTAL, transport="http", code="400") == 1
    assert value(found, m.COLLECTOR_REQUESTS_TOTAL, transport="http", code="200") == 1
    assert value(found, m.COLLECTOR_SPANS_WRITTEN_TOTAL) == 2
    assert collector.count(TRACES_TABLE) == 2
