"""Fuzzing a running collector's /v1/traces with malformed protobuf and OTLP/JSON, plain and gzipped.

The collector runs as a real child process (its own chDB, its memory measured from /proc). Whatever
Hypothesis throws at it — random bytes, truncated and mutated valid requests, deeply nested
AnyValues, oversized varints, random JSON, wrong types, bad hex, deep nesting, broken gzip — the
answer must be one the OTLP spec allows for a client's mistake (200, 400, 413, 415), never a 5xx,
and the process must keep serving. Known-good "canary" requests are interleaved with the fuzz
cases, and at the end every one of them must be in ClickHouse, exactly once: a fuzz case that
slipped through validation and poisoned a ClickHouse insert would take a canary with it.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _collector_proc import CollectorProcess, query_embedded
from _otlp_clients import JSON, PROTOBUF, json_request, json_span, random_span_id, random_trace_id, rss_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from agentwatch.collectors.store.schema import TRACES_TABLE

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

MiB = 1 << 20
MAX_BODY_BYTES = 256 << 10
MAX_SPANS = 50
ALLOWED = {200, 400, 413, 415}
CANARY_SERVICE = "fuzz-canary"
CANARY_EVERY = 10


# --- wire-level building blocks ------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_varint(number: int, value: bytes) -> bytes:
    """A varint field whose value bytes are given raw (so they can be oversized)."""
    return varint(number << 3) + value


def now_ns() -> int:
    return time.time_ns() - 60_000_000_000


# Fuzz inputs must be a pure function of Hypothesis' draws (it replays and shrinks them), so their
# ids and times are fixed for the test process instead of random per call.
START_NS = now_ns()
TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")


def span_id(index: int) -> bytes:
    return (0x1000 + index).to_bytes(8, "big")


def valid_request(spans: int = 3) -> bytes:
    """A realistic request: resource, scope, attributes of every type, events, links, status."""
    start = START_NS
    trace_id = TRACE_ID
    attributes = [
        KeyValue(key="s", value=AnyValue(string_value="text")),
        KeyValue(key="i", value=AnyValue(int_value=-7)),
        KeyValue(key="d", value=AnyValue(double_value=0.25)),
        KeyValue(key="b", value=AnyValue(bool_value=True)),
        KeyValue(key="y", value=AnyValue(bytes_value=b"\x00\xff")),
        KeyValue(key="a", value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))),
    ]
    built = [
        Span(
            trace_id=trace_id,
            span_id=span_id(2 * i),
            parent_span_id=span_id(2 * i + 1) if i else b"",
            name=f"op {i}",
            kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=start + i,
            end_time_unix_nano=start + i + 1000,
            attributes=attributes,
            events=[Span.Event(time_unix_nano=start + i + 1, name="e", attributes=attributes[:2])],
            links=[Span.Link(trace_id=trace_id, span_id=span_id(9999), attributes=attributes[:1])],
            status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
        )
        for i in range(spans)
    ]
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="fuzz"))]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name="fuzz", version="1"), spans=built)],
            )
        ]
    )
    encoded: bytes = request.SerializeToString()
    return encoded


BASE_PROTOBUF = valid_request()


def nested_any_value(depth: int, leaf: bytes) -> bytes:
    """An AnyValue holding an array holding an AnyValue ... ``depth`` times, around ``leaf``."""
    value = leaf
    for _ in range(depth):
        value = field_bytes(5, field_bytes(1, value))  # AnyValue.array_value(5) → ArrayValue.values(1)
    return value


def span_with_attribute(attribute_value: bytes) -> bytes:
    """A valid request of one span whose single attribute has the given (raw) AnyValue bytes."""
    start = START_NS
    span = (
        field_bytes(1, TRACE_ID)
        + field_bytes(2, span_id(0))
        + field_bytes(5, b"nested")
        + bytes([7 << 3 | 1])
        + start.to_bytes(8, "little")  # start_time_unix_nano is fixed64
        + bytes([8 << 3 | 1])
        + (start + 1).to_bytes(8, "little")
        + field_bytes(9, field_bytes(1, b"deep") + field_bytes(2, attribute_value))
    )
    return field_bytes(1, field_bytes(2, field_bytes(2, span)))


# --- strategies ----------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` truncated, with bytes flipped, inserted, deleted or a chunk duplicated."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "duplicate"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "truncate":
            del data[position:]
        elif operation == "flip" and data:
            data[position] ^= draw(st.integers(1, 255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=12))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        elif operation == "duplicate":
            end = min(len(data), position + draw(st.integers(1, 64)))
            data[position:position] = data[position:end] * draw(st.integers(1, 40))
    return bytes(data)


huge_varints = st.sampled_from(
    [
        b"\xff" * 9 + b"\x01",  # 2**64 - 1
        b"\xff" * 10 + b"\x01",  # more than 64 bits
        b"\x80" * 11,  # never ends
        b"\xff" * 30,
        b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00",  # an over-long zero
    ]
)


@st.composite
def huge_varint_bodies(draw: st.DrawFn) -> bytes:
    raw = draw(huge_varints)
    choice = draw(st.integers(0, 3))
    if choice == 0:  # a length prefix of 2**64 - 1 (or worse) for resource_spans
        return b"\x0a" + raw + draw(st.binary(max_size=32))
    if choice == 1:  # as a span's kind (an enum varint)
        span = field_bytes(1, bytes(range(1, 17))) + field_bytes(2, bytes(range(1, 9))) + field_varint(6, raw)
        return field_bytes(1, field_bytes(2, field_bytes(2, span)))
    if choice == 2:  # as an AnyValue.int_value
        return span_with_attribute(field_varint(3, raw))
    return BASE_PROTOBUF + field_varint(draw(st.integers(2, 2000)), raw)  # an unknown field


protobuf_bodies = st.one_of(
    st.binary(max_size=2048),
    mutated(BASE_PROTOBUF),
    huge_varint_bodies(),
    st.integers(1, 400).map(lambda depth: span_with_attribute(nested_any_value(depth, field_bytes(1, b"leaf")))),
    st.builds(valid_request, st.integers(MAX_SPANS - 2, MAX_SPANS + 2)),
    # over the size limits: the raw body, or only once decompressed (see ``cases``)
    st.integers(MAX_BODY_BYTES - 8, MAX_BODY_BYTES + 8).map(lambda size: BASE_PROTOBUF + b"\x00" * size),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", "NaN", "Infinity", "zz", "0" * 32, "00" * 7, "123", "-1", "1e3", "AAAA"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20,
)
SPAN_FIELDS = [
    "traceId",
    "spanId",
    "parentSpanId",
    "name",
    "kind",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "attributes",
    "events",
    "links",
    "status",
    "flags",
    "droppedAttributesCount",
    "trace_id",
]


def base_json_span() -> dict[str, object]:
    start = START_NS
    return json_span(
        trace_id=TRACE_ID.hex(),
        span_id=span_id(0).hex(),
        start_ns=start,
        end_ns=start + 5,
        attributes={"k": "v", "n": 3, "list": [1, 2]},
        events=[{"timeUnixNano": str(start + 1), "name": "e"}],
        links=[{"traceId": TRACE_ID.hex(), "spanId": span_id(1).hex()}],
        status={"code": 1},
    )


@st.composite
def wrong_types(draw: st.DrawFn) -> bytes:
    """A valid OTLP/JSON request with one span field (or an attribute value) replaced by anything."""
    span = base_json_span()
    key = draw(st.sampled_from(SPAN_FIELDS))
    span[key] = draw(json_values)
    if draw(st.booleans()):
        span["attributes"] = [
            {"key": draw(st.text(max_size=8)), "value": {draw(st.text(max_size=12)): draw(json_values)}}
        ]
    return json_request([span])


@st.composite
def bad_hex(draw: st.DrawFn) -> bytes:
    span = base_json_span()
    key = draw(st.sampled_from(["traceId", "spanId", "parentSpanId"]))
    span[key] = draw(st.text(alphabet="0123456789abcdefABCDEFxyz -", max_size=40))
    return json_request([span])


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 3000))
    if draw(st.booleans()):  # plain JSON nesting, inside the document
        return (
            ("[" * depth + "]" * depth).encode()
            if draw(st.booleans())
            else json.dumps(
                {"resourceSpans": [{"resource": json.loads("[" * min(depth, 900) + "]" * min(depth, 900))}]}
            ).encode()
        )
    value: dict[str, object] = {"stringValue": "leaf"}
    for _ in range(min(depth, 200)):
        value = {"arrayValue": {"values": [value]}}
    span = base_json_span()
    span["attributes"] = [{"key": "deep", "value": value}]
    return json_request([span])


json_bodies = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    wrong_types(),
    bad_hex(),
    deep_json(),
    st.builds(lambda: json_request([base_json_span()])).flatmap(mutated),
    st.binary(max_size=256),
)


@dataclass(frozen=True)
class Case:
    body: bytes
    content_type: str
    encoding: str | None


@st.composite
def cases(draw: st.DrawFn) -> Case:
    if draw(st.booleans()):
        body, content_type = draw(protobuf_bodies), PROTOBUF
    else:
        body, content_type = draw(json_bodies), JSON
    content_type = draw(
        st.sampled_from([content_type] * 6 + ["application/json; charset=utf-8", "application/protobuf", "text/x"])
    )
    encoding = draw(st.sampled_from([None, None, "gzip", "gzip", "gzip-broken", "deflate", "identity", "br"]))
    if encoding == "gzip":
        body = gzip.compress(body, compresslevel=1, mtime=0)
    elif encoding == "gzip-broken":
        body = draw(mutated(gzip.compress(body, compresslevel=1, mtime=0)))
        encoding = "gzip"
    elif encoding == "deflate":
        body = draw(st.binary(max_size=64))  # almost never a valid zlib stream
    return Case(body, content_type, encoding)


# --- the collector ------------------------------------------------------------------------------


def post(url: str, case: Case) -> int:
    request = urllib.request.Request(url, data=case.body, method="POST")
    request.add_header("Content-Type", case.content_type)
    if case.encoding:
        request.add_header("Content-Encoding", case.encoding)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


@dataclass
class Canaries:
    """Known-good requests sent between fuzz cases, each with a distinct span name."""

    url: str
    sent: list[str] = field(default_factory=list)

    def send(self) -> None:
        name = f"canary {len(self.sent)}"
        start = now_ns()
        span = json_span(
            trace_id=random_trace_id(),
            span_id=random_span_id(),
            start_ns=start,
            end_ns=start + 1,
            name=name,
            attributes={"payload": base64.b64encode(name.encode()).decode()},
        )
        case = Case(json_request([span], service=CANARY_SERVICE), JSON, None)
        assert post(self.url, case) == 200
        self.sent.append(name)


@pytest.fixture
def child(tmp_path: Path) -> Iterator[CollectorProcess]:
    collector = CollectorProcess(
        tmp_path,
        extra_args=["--max-body-bytes", str(MAX_BODY_BYTES), "--max-spans-per-request", str(MAX_SPANS)],
    )
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()


@pytest.mark.slow
def test_fuzzed_requests_never_break_the_collector(child: CollectorProcess) -> None:
    assert child.process is not None
    pid = child.process.pid
    canaries = Canaries(child.traces_url)
    statuses: dict[int, int] = {}
    # warm up (first inserts, parser caches) so that the memory baseline is a steady state
    for _ in range(5):
        canaries.send()
    time.sleep(0.5)
    baseline = rss_bytes(pid)

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(case=cases())
    def check(case: Case) -> None:
        status = post(child.traces_url, case)
        assert status in ALLOWED, (status, case)
        statuses[status] = statuses.get(status, 0) + 1
        if sum(statuses.values()) % CANARY_EVERY == 0:
            canaries.send()

    check()

    assert child.get("/healthz")[0] == 200
    assert child.process.poll() is None, child.log()
    grown = rss_bytes(pid) - baseline
    assert grown < 48 * MiB, f"the collector grew by {grown / MiB:.0f} MiB over {sum(statuses.values())} cases"
    # every outcome was exercised, not just the parser's first line of defence
    print(f"fuzz: {statuses}, RSS grew {grown / MiB:.1f} MiB, {len(canaries.sent)} canaries")
    assert {200, 400, 413, 415} <= set(statuses), statuses
    canaries.send()
    assert child.stop() == 0
    assert "Traceback" not in child.log(), child.log()[-3000:]
    assert "dead-letter" not in child.log()
    assert not (child.workdir / "spool" / "dead-letter").exists()
    [names] = query_embedded(
        child.workdir / "clickhouse",
        f"SELECT SpanName FROM {TRACES_TABLE} WHERE ServiceName = '{CANARY_SERVICE}' ORDER BY SpanName",
    )
    assert sorted(row[0] for row in names) == sorted(canaries.sent)
