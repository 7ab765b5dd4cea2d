"""Status codes, limits and auth of a running collector, over real HTTP and gRPC, checked against ClickHouse.

Every refusal is checked twice: the answer the OTLP spec prescribes (status, a ``google.rpc.Status``
body in the request's encoding, the gRPC code), and that nothing of the refused request reached
``otel_traces``. The gzip bomb test also watches the collector's memory while it answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from _chrows import run_attributes
from _otlp_clients import (
    JSON,
    PROTOBUF,
    Collector,
    Reply,
    gzipped,
    json_request,
    json_span,
    random_span_id,
    random_trace_id,
    rss_bytes,
    running_collector,
)
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from agentwatch.collectors.store.schema import RUNS_TABLE, TRACES_TABLE
from agentwatch.instrumentation import semconv

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

SMALL_LIMIT = 64 << 10
MiB = 1 << 20
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture
def collector(clickhouse_url: str, tmp_path: Path) -> Iterator[Collector]:
    with running_collector(
        clickhouse_url, tmp_path, max_body_bytes=SMALL_LIMIT, max_spans_per_request=10, max_attribute_length=100
    ) as running:
        yield running


def spans_json(count: int, *, attributes: dict[str, object] | None = None, pad: int = 0) -> bytes:
    """``count`` valid spans in one OTLP/JSON request; ``pad`` adds that many characters per span."""
    start = time.time_ns() - 10_000_000_000
    trace_id = random_trace_id()
    extra = {"pad": "x" * pad} if pad else {}
    spans = [
        json_span(
            trace_id=trace_id,
            span_id=random_span_id(),
            start_ns=start + i,
            end_ns=start + i + 10,
            name=f"span {i}",
            attributes={**(attributes or {}), **extra},
        )
        for i in range(count)
    ]
    return json_request(spans)


def spans_protobuf(count: int, *, pad: int = 0) -> bytes:
    """``count`` valid spans in one binary protobuf request; ``pad`` adds that many bytes per span."""
    start = time.time_ns() - 10_000_000_000
    trace_id = bytes.fromhex(random_trace_id())
    attributes = [KeyValue(key="pad", value=AnyValue(string_value="x" * pad))] if pad else []
    spans = [
        Span(
            trace_id=trace_id,
            span_id=bytes.fromhex(random_span_id()),
            name=f"span {i}",
            start_time_unix_nano=start + i,
            end_time_unix_nano=start + i + 10,
            attributes=attributes,
        )
        for i in range(count)
    ]
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])
    encoded: bytes = request.SerializeToString()
    return encoded


def status_of(reply: Reply, kind: str) -> tuple[int, str]:
    """The google.rpc.Status a 4xx/5xx body must carry, decoded from the request's encoding."""
    assert reply.headers["content-type"].startswith(kind), reply.headers
    if kind == JSON:
        body = reply.json()
        return int(body["code"]), str(body["message"])
    status = Status.FromString(reply.body)
    return status.code, status.message


def assert_refused(collector: Collector, reply: Reply, status: int, kind: str) -> str:
    assert reply.status == status, (reply.status, reply.body[:300])
    _, message = status_of(reply, kind)
    assert message, "the Status body must say what is wrong"
    collector.drain()
    assert collector.count(TRACES_TABLE) == 0
    return message


# --- content type, encoding, malformed bodies --------------------------------------------------


def test_unknown_content_type_is_415(collector: Collector) -> None:
    reply = collector.post(spans_json(1), {"Content-Type": "text/plain"})
    assert_refused(collector, reply, 415, PROTOBUF)
    reply = collector.post(spans_json(1), {})
    assert reply.status == 415  # urllib's default form type is not OTLP either


def test_unknown_content_encoding_is_415(collector: Collector) -> None:
    reply = collector.post(spans_json(1), {"Content-Type": JSON, "Content-Encoding": "br"})
    message = assert_refused(collector, reply, 415, JSON)
    assert "br" in message


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (PROTOBUF, b"\x0a\xff\xff\xff\xff\x0f"),  # a length prefix far beyond the body
        (PROTOBUF, b"not protobuf at all \x00\x01"),
        (JSON, b"{not json"),
        (JSON, b'{"resourceSpans": {"oops": 1}}'),
        (JSON, b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}'),
        (JSON, b"\xff\xfe"),
    ],
)
def test_malformed_bodies_are_400_with_a_status(collector: Collector, kind: str, body: bytes) -> None:
    reply = collector.post(body, {"Content-Type": kind})
    assert_refused(collector, reply, 400, kind)
    code, _ = status_of(reply, kind)
    assert code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_truncated_gzip_is_400(collector: Collector) -> None:
    reply = collector.post(gzipped(spans_json(2))[:-12], {"Content-Type": JSON, "Content-Encoding": "gzip"})
    assert_refused(collector, reply, 400, JSON)


# --- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [PROTOBUF, JSON])
def test_raw_body_over_the_limit_is_413(collector: Collector, kind: str) -> None:
    body = spans_protobuf(5, pad=20_000) if kind == PROTOBUF else spans_json(5, pad=20_000)
    assert len(body) > SMALL_LIMIT
    reply = collector.post(body, {"Content-Type": kind})
    assert_refused(collector, reply, 413, kind)


def test_body_at_the_limit_is_accepted(collector: Collector) -> None:
    body = spans_json(1, pad=100)
    padded = body[:-1] + b" " * (SMALL_LIMIT - len(body)) + b"}"  # whitespace keeps the JSON valid
    assert len(padded) == SMALL_LIMIT
    assert collector.post(padded, {"Content-Type": JSON}).status == 200
    collector.drain()
    assert collector.count(TRACES_TABLE) == 1


@pytest.mark.parametrize("kind", [PROTOBUF, JSON])
def test_gzip_body_over_the_limit_once_decompressed_is_413(collector: Collector, kind: str) -> None:
    body = spans_protobuf(5, pad=20_000) if kind == PROTOBUF else spans_json(5, pad=20_000)
    compressed = gzipped(body)
    assert len(compressed) < SMALL_LIMIT < len(body)
    reply = collector.post(compressed, {"Content-Type": kind, "Content-Encoding": "gzip"})
    assert_refused(collector, reply, 413, kind)


def gzip_bomb(decompressed: int) -> bytes:
    """``decompressed`` zero bytes as one gzip member, built in 4 MiB steps (never held whole)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_RLE)
    zeros = bytes(4 * MiB)
    parts = [deflater.compress(zeros) for _ in range(decompressed // len(zeros))]
    parts.append(deflater.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(1 << 30)


class PeakRss:
    """Samples this process's RSS every few milliseconds while the block runs (the collector is in process)."""

    def __init__(self) -> None:
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


@pytest.mark.parametrize("kind", [PROTOBUF, JSON])
def test_gzip_bomb_is_413_fast_and_in_bounded_memory(
    clickhouse_url: str, tmp_path: Path, bomb: bytes, kind: str
) -> None:
    assert len(bomb) < 2 * MiB  # 1 GiB of zeros
    with running_collector(clickhouse_url, tmp_path, max_body_bytes=4 * MiB) as collector:
        started = time.monotonic()
        with PeakRss() as rss:
            reply = collector.post(bomb, {"Content-Type": kind, "Content-Encoding": "gzip"})
        elapsed = time.monotonic() - started
        assert_refused(collector, reply, 413, kind)
        assert elapsed < 5, f"the bomb took {elapsed:.1f}s to refuse"
        assert rss.peak - rss.baseline < 64 * MiB, f"RSS grew by {(rss.peak - rss.baseline) / MiB:.0f} MiB"
        # the collector is fine afterwards
        assert collector.post(spans_json(2), {"Content-Type": JSON}).status == 200
        collector.drain()
        assert collector.count(TRACES_TABLE) == 2


def test_concatenated_gzip_members_count_towards_the_limit(collector: Collector) -> None:
    member = gzipped(b" " * (16 << 10))
    body = gzipped(spans_json(1)) + member * 8  # 128 KiB of whitespace once decompressed
    assert len(body) < SMALL_LIMIT
    reply = collector.post(body, {"Content-Type": JSON, "Content-Encoding": "gzip"})
    assert_refused(collector, reply, 413, JSON)


def test_spans_per_request_over_the_limit_is_413(collector: Collector) -> None:
    reply = collector.post(spans_json(11), {"Content-Type": JSON})
    message = assert_refused(collector, reply, 413, JSON)
    assert "11" in message
    assert collector.post(spans_json(10), {"Content-Type": JSON}).status == 200
    collector.drain()
    assert collector.count(TRACES_TABLE) == 10


def test_long_attribute_values_are_truncated_not_rejected(collector: Collector) -> None:
    long_value = "".join(chr(ord("a") + i % 26) for i in range(1000))
    reply = collector.post(spans_json(1, attributes={"long": long_value, "short": "ok"}), {"Content-Type": JSON})
    assert reply.status == 200
    assert reply.json() == {}
    collector.drain()
    rows = collector.query(
        f"SELECT SpanAttributes['long'] AS long, SpanAttributes['short'] AS short FROM {TRACES_TABLE}"
    )
    assert rows == [{"long": long_value[:100], "short": "ok"}]


# --- auth ---------------------------------------------------------------------------------------

TOKENS = {
    "acme": "acme-token-4b1c9e",
    "acme_reader": "acme-reader-77d0aa",
    "globex": "globex-token-0f3e21",
}


@pytest.fixture
def authed(clickhouse_url: str, tmp_path: Path) -> Iterator[Collector]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {"token": TOKENS["acme"], "tenant": "acme", "scopes": ["ingest", "read"]},
                    {"token": TOKENS["acme_reader"], "tenant": "acme", "scopes": ["read"]},
                    {"token": TOKENS["globex"], "tenant": "globex", "scopes": ["ingest"]},
                ]
            }
        )
    )
    with running_collector(clickhouse_url, tmp_path, tokens=str(tokens)) as running:
        yield running


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not-a-token"}, 401),
        ({"Authorization": f"Basic {TOKENS['acme']}"}, 401),
        ({"Authorization": "Bearer "}, 401),
        (bearer("acme_reader"), 403),
    ],
)
def test_ingest_needs_a_token_with_the_ingest_scope(authed: Collector, headers: dict[str, str], status: int) -> None:
    reply = authed.post(spans_json(2), {"Content-Type": JSON, **headers})
    assert_refused(authed, reply, status, JSON)


def _run_span(run_id: str, claimed_tenant: str) -> bytes:
    start = time.time_ns() - 10_000_000_000
    attributes = run_attributes(run_id, tenant=claimed_tenant, stop_reason="completed")
    span = json_span(
        trace_id=random_trace_id(), span_id=random_span_id(), start_ns=start, end_ns=start + 5, attributes=attributes
    )
    return json_request([span], service="support-bot", resource={semconv.TENANT_ID: claimed_tenant})


def test_the_tenant_comes_from_the_token_not_the_span(authed: Collector) -> None:
    assert authed.post(_run_span("run-from-acme", "evil"), {"Content-Type": JSON, **bearer("acme")}).status == 200
    assert authed.post(_run_span("run-from-globex", "acme"), {"Content-Type": JSON, **bearer("globex")}).status == 200
    authed.drain()
    rows = authed.query(
        f"""SELECT SpanAttributes['{semconv.RUN_ID}'] AS run, SpanAttributes['{semconv.TENANT_ID}'] AS tenant,
                   ResourceAttributes['{semconv.TENANT_ID}'] AS resource_tenant
            FROM {TRACES_TABLE} ORDER BY run"""
    )
    assert rows == [
        {"run": "run-from-acme", "tenant": "acme", "resource_tenant": "acme"},
        {"run": "run-from-globex", "tenant": "globex", "resource_tenant": "globex"},
    ]
    runs = authed.query(f"SELECT RunId, TenantId FROM {RUNS_TABLE} ORDER BY RunId")
    assert runs == [{"RunId": "run-from-acme", "TenantId": "acme"}, {"RunId": "run-from-globex", "TenantId": "globex"}]


def test_the_read_api_needs_the_read_scope_and_confines_the_tenant(authed: Collector) -> None:
    assert authed.post(_run_span("run-a", "acme"), {"Content-Type": JSON, **bearer("acme")}).status == 200
    assert authed.post(_run_span("run-g", "globex"), {"Content-Type": JSON, **bearer("globex")}).status == 200
    authed.drain()
    assert authed.get("/api/v1/runs").status == 401
    assert authed.get("/api/v1/runs", {"Authorization": "Bearer nope"}).status == 401
    assert authed.get("/api/v1/runs", bearer("globex")).status == 403  # ingest-only token
    for reader in ("acme", "acme_reader"):
        reply = authed.get("/api/v1/runs", bearer(reader))
        assert reply.status == 200
        assert [(r["run_id"], r["tenant"]) for r in reply.json()["runs"]] == [("run-a", "acme")]
        assert authed.get("/api/v1/runs/run-g", bearer(reader)).status == 404  # another tenant's run
        assert authed.get("/api/v1/runs?tenant=globex", bearer(reader)).status == 403


# --- gRPC ---------------------------------------------------------------------------------------


def grpc_export(target: str, body: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    """Export raw request bytes over gRPC; OK only for a full success (no span rejected)."""
    with grpc.insecure_channel(target) as channel:
        export = channel.unary_unary(
            EXPORT_METHOD, request_serializer=lambda b: b, response_deserializer=ExportTraceServiceResponse.FromString
        )
        try:
            response = export(body, metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
    assert not response.HasField("partial_success"), response
    return grpc.StatusCode.OK


def test_grpc_bad_data_is_invalid_argument(collector: Collector) -> None:
    assert grpc_export(collector.grpc_target, b"\x0a\xff\xff\xff\xff\x0f") == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_export(collector.grpc_target, spans_protobuf(11)) == grpc.StatusCode.INVALID_ARGUMENT  # too many
    assert grpc_export(collector.grpc_target, spans_protobuf(3)) == grpc.StatusCode.OK
    collector.drain()
    assert collector.count(TRACES_TABLE) == 3


def test_grpc_auth(authed: Collector) -> None:
    target = authed.grpc_target
    assert grpc_export(target, spans_protobuf(1)) == grpc.StatusCode.UNAUTHENTICATED
    assert (
        grpc_export(target, spans_protobuf(1), (("authorization", "Bearer nope"),)) == grpc.StatusCode.UNAUTHENTICATED
    )
    reader = (("authorization", f"Bearer {TOKENS['acme_reader']}"),)
    assert grpc_export(target, spans_protobuf(1), reader) == grpc.StatusCode.PERMISSION_DENIED
    authed.drain()
    assert authed.count(TRACES_TABLE) == 0
    ingest = (("authorization", f"Bearer {TOKENS['globex']}"),)
    assert grpc_export(target, spans_protobuf(2), ingest) == grpc.StatusCode.OK
    authed.drain()
    assert authed.query(f"SELECT DISTINCT SpanAttributes['{semconv.TENANT_ID}'] AS t FROM {TRACES_TABLE}") == [
        {"t": "globex"}
    ]


# --- health -------------------------------------------------------------------------------------


def test_healthz_and_readyz(collector: Collector) -> None:
    assert collector.get("/healthz").status == 200
    ready = collector.get("/readyz")
    assert ready.status == 200
    assert ready.json()["ready"] is True


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: connections are refused


def test_store_down_is_not_ready_but_ingest_still_spools(tmp_path: Path, closed_port: int) -> None:
    url = f"http://default:secret@127.0.0.1:{closed_port}/agentwatch"
    with running_collector(url, tmp_path, wait_ready=False) as collector:
        deadline = time.monotonic() + 10
        while collector.service.writer.last_error == "" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert collector.get("/healthz").status == 200
        ready = collector.get("/readyz")
        assert ready.status == 503
        assert ready.json()["ready"] is False
        assert "secret" not in ready.body.decode()
        reply = collector.post(spans_json(4), {"Content-Type": JSON})
        assert reply.status == 200  # durable in the spool, written when ClickHouse is back
        assert collector.service.spool.pending_spans == 4
        assert collector.get("/api/v1/runs").status == 503
    assert list((tmp_path / "spool").iterdir())
