"""OTLP decoding and conversion: real SDK requests and spec OTLP/JSON in, contract rows out.

Requests are built with the OpenTelemetry SDK and its own OTLP encoder, and by hand as OTLP/JSON
per the spec (hex ids, int64 strings). Covered: values round trip as the ClickHouse exporter
renders them, every validation rule, tenant stamping, redaction equal to the ``Redactor`` on the
secret and benign corpora (and the memos that make it fast never mix redactors or limits),
truncation and limits, fuzzing of both parsers and the converter, and one end-to-end insert of the
encoded rows into real chDB.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from _paths import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.proto.trace.v1.trace_pb2 import Status as StatusProto
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agentwatch.collectors.ingest import otlp, otlp_encoding, otlp_lite
from agentwatch.collectors.ingest.otlp import (
    Converted,
    Limits,
    OtlpDecodeError,
    TooManySpans,
    convert,
    encode_rows,
    format_double,
    parse_json,
    parse_protobuf,
    span_count,
)
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.instrumentation import semconv
from agentwatch.instrumentation.redaction import Redactor

pytest_plugins = ["_chstore"]

CORPUS: list[dict[str, str]] = json.loads((DATA / "secret_corpus.json").read_text(encoding="utf-8"))
BENIGN: list[str] = json.loads((DATA / "benign_corpus.json").read_text(encoding="utf-8"))

T0 = 1_732_431_234_000_000_123  # ns: 2024-11-24T06:53:54.000000123Z
TRACE_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_HEX = "eee19b7ec3c1b174"
PARENT_HEX = "eee19b7ec3c1b173"
MARKER = "[REDACTED:secret]"
ROW_KEYS = [
    "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
    "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode", "StatusMessage",
    "Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId", "Links.SpanId", "Links.TraceState",
    "Links.Attributes",
]  # fmt: skip


# --- helpers -----------------------------------------------------------------------------------------
def sdk_spans(build: Callable[[TracerProvider], None], resource: Mapping[str, Any] | None = None) -> list[ReadableSpan]:
    """Spans made by the real SDK: ``build`` uses the provider, the spans it ends are returned."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(dict(resource or {"service.name": "svc"})))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        build(provider)
    finally:
        provider.shutdown()
    return list(exporter.get_finished_spans())


def one_span(
    attributes: Mapping[str, Any] | None = None,
    *,
    resource: Mapping[str, Any] | None = None,
    events: Sequence[tuple[str, Mapping[str, Any]]] = (),
    status: Status | None = None,
    name: str = "op",
) -> list[ReadableSpan]:
    def build(provider: TracerProvider) -> None:
        span = provider.get_tracer("scope.lib", "1.2.3").start_span(
            name, attributes=dict(attributes or {}), start_time=T0
        )
        for index, (event_name, event_attributes) in enumerate(events):
            span.add_event(event_name, dict(event_attributes), timestamp=T0 + index + 1)
        if status is not None:
            span.set_status(status)
        span.end(end_time=T0 + 5_000)

    return sdk_spans(build, resource)


def request_of(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    return parse_protobuf(encode_spans(spans).SerializeToString())


def run(
    request: ExportTraceServiceRequest,
    *,
    tenant: str | None = None,
    redactor: Redactor | None = None,
    limits: Limits | None = None,
) -> Converted:
    converted = convert(request, tenant=tenant, limits=limits or Limits(), redactor=redactor)
    # every result must survive encoding, and encoding must round trip
    lines = encode_rows(converted.rows).split(b"\n") if converted.rows else []
    assert [json.loads(line) for line in lines] == converted.rows
    # the lines convert renders itself are exactly what encoding its rows gives
    assert converted.payload() == encode_rows(converted.rows)
    # read from the wire bytes instead of a re-serialization: the same result
    again = convert(
        request, tenant=tenant, limits=limits or Limits(), redactor=redactor, wire=request.SerializeToString()
    )
    assert again.payload() == converted.payload()
    assert again.rows == converted.rows
    return converted


def only_row(request: ExportTraceServiceRequest, **kwargs: Any) -> dict[str, Any]:
    converted = run(request, **kwargs)
    assert converted.accepted == 1, converted.rejection_reasons
    return converted.rows[0]


def json_body(spans: Sequence[Mapping[str, Any]], resource: Mapping[str, Any] | None = None) -> bytes:
    document = {
        "resourceSpans": [
            {
                "resource": resource if resource is not None else {"attributes": [kv("service.name", "svc")]},
                "scopeSpans": [{"scope": {"name": "scope.lib", "version": "1.2.3"}, "spans": list(spans)}],
            }
        ]
    }
    return json.dumps(document).encode()


def kv(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": any_value(value)}


def any_value(value: Any) -> dict[str, Any]:
    """OTLP/JSON AnyValue of a Python value, per the spec (int64 as a decimal string)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(item) for item in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [kv(k, v) for k, v in value.items()]}}
    return {"stringValue": value}


def json_span(**overrides: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": TRACE_HEX,
        "spanId": SPAN_HEX,
        "parentSpanId": PARENT_HEX,
        "name": "op",
        "kind": 2,
        "startTimeUnixNano": str(T0),
        "endTimeUnixNano": str(T0 + 5_000),
        "attributes": [],
    }
    span.update(overrides)
    return span


def first_span(request: ExportTraceServiceRequest) -> Span:
    span: Span = request.resource_spans[0].scope_spans[0].spans[0]
    return span


# --- round trips -------------------------------------------------------------------------------------
def test_sdk_span_round_trip() -> None:
    def build(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("scope.lib", "1.2.3")
        parent = tracer.start_span("parent", start_time=T0)
        linked = SpanContext(int(TRACE_HEX, 16), int(SPAN_HEX, 16), is_remote=True, trace_flags=TraceFlags(1))
        from opentelemetry import trace

        with trace.use_span(parent, end_on_exit=False):
            child = tracer.start_span(
                "chat gpt-4o",
                kind=SpanKind.CLIENT,
                start_time=T0 + 10,
                links=[Link(linked, {"link.attr": "x"})],
                attributes={
                    "s": "text ✓",
                    "i": -42,
                    "f": 0.5,
                    "whole": 2.0,
                    "b": True,
                    "strs": ("stop", "length"),
                    "ints": (1, 2),
                    "floats": (1.0, 0.25),
                    "bools": (True, False),
                },
            )
            child.add_event("agentwatch.budget.exhausted", {"budget": "steps", "limit": 3}, timestamp=T0 + 20)
            child.set_status(Status(StatusCode.ERROR, "boom"))
            child.end(end_time=T0 + 1_010)
        parent.end(end_time=T0 + 2_000)

    spans = sdk_spans(build, {"service.name": "support-agent", "deployment.environment": "prod"})
    converted = run(request_of(spans))
    assert converted.accepted == 2
    assert converted.rejected == 0
    rows: list[dict[str, Any]] = [dict(row) for row in converted.rows]
    child, parent = rows
    assert list(child) == ROW_KEYS
    assert child["Timestamp"] == "1732431234.000000133"
    assert child["Duration"] == 1_000
    assert child["TraceId"] == parent["TraceId"] == format(spans[0].context.trace_id, "032x")
    assert child["SpanId"] == format(spans[0].context.span_id, "016x")
    assert child["ParentSpanId"] == parent["SpanId"]
    assert parent["ParentSpanId"] == ""
    assert child["SpanName"] == "chat gpt-4o"
    assert child["SpanKind"] == "Client"
    assert parent["SpanKind"] == "Internal"
    assert child["ServiceName"] == "support-agent"
    assert child["ResourceAttributes"]["deployment.environment"] == "prod"
    assert (child["ScopeName"], child["ScopeVersion"]) == ("scope.lib", "1.2.3")
    assert child["SpanAttributes"] == {
        "s": "text ✓",
        "i": "-42",
        "f": "0.5",
        "whole": "2",
        "b": "true",
        "strs": '["stop","length"]',
        "ints": "[1,2]",
        "floats": "[1,0.25]",
        "bools": "[true,false]",
    }
    assert (child["StatusCode"], child["StatusMessage"]) == ("Error", "boom")
    assert (parent["StatusCode"], parent["StatusMessage"]) == ("Unset", "")
    assert child["Events.Timestamp"] == ["1732431234.000000143"]
    assert child["Events.Name"] == ["agentwatch.budget.exhausted"]
    assert child["Events.Attributes"] == [{"budget": "steps", "limit": "3"}]
    assert child["Links.TraceId"] == [TRACE_HEX]
    assert child["Links.SpanId"] == [SPAN_HEX]
    assert child["Links.TraceState"] == [""]
    assert child["Links.Attributes"] == [{"link.attr": "x"}]
    # only the resource's attributes are shared between rows; no list is
    assert child["ResourceAttributes"] is parent["ResourceAttributes"]
    assert all(
        parent[key] is not other[key] for other in (child, *run(request_of(spans)).rows) for key in ROW_KEYS[15:]
    )


def test_spec_json_example() -> None:
    # the OTLP/JSON example of the opentelemetry-proto repository (examples/trace.json)
    body = b"""{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
      "value": {"stringValue": "my.service"}}]}, "scopeSpans": [{"scope": {"name": "my.library", "version": "1.0.0",
      "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
      "spans": [{"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
      "parentSpanId": "EEE19B7EC3C1B173", "name": "I'm a server span", "startTimeUnixNano": "1544712660000000000",
      "endTimeUnixNano": "1544712661000000000", "kind": 2, "attributes": [{"key": "my.span.attr",
      "value": {"stringValue": "some value"}}]}]}]}]}"""
    row = only_row(parse_json(body))
    assert row["TraceId"] == TRACE_HEX
    assert row["SpanId"] == SPAN_HEX
    assert row["ParentSpanId"] == PARENT_HEX
    assert row["Timestamp"] == "1544712660.000000000"
    assert row["Duration"] == 1_000_000_000
    assert row["SpanKind"] == "Server"
    assert row["ServiceName"] == "my.service"
    assert (row["ScopeName"], row["ScopeVersion"]) == ("my.library", "1.0.0")
    assert row["SpanAttributes"] == {"my.span.attr": "some value"}


def test_json_and_protobuf_of_the_same_spans_give_the_same_rows() -> None:
    spans = one_span(
        {"s": "x", "i": 7, "f": 1.25, "b": False, "a": ("p", "q")},
        events=[("e", {"k": "v"})],
        status=Status(StatusCode.OK),
    )
    from_protobuf = run(request_of(spans)).rows
    span = spans[0]
    document = json_span(
        traceId=format(span.context.trace_id, "032x"),
        spanId=format(span.context.span_id, "016x"),
        parentSpanId="",
        kind=1,
        attributes=[kv("s", "x"), kv("i", 7), kv("f", 1.25), kv("b", False), kv("a", ["p", "q"])],
        events=[{"timeUnixNano": str(T0 + 1), "name": "e", "attributes": [kv("k", "v")]}],
        status={"code": 1},
    )
    resource = {"attributes": [kv(key, value) for key, value in span.resource.attributes.items()]}
    from_json = run(parse_json(json_body([document], resource))).rows
    assert from_json == from_protobuf


def test_json_accepts_snake_case_numbers_enum_names_and_lower_hex() -> None:
    body = json.dumps(
        {
            "resource_spans": [
                {
                    "scope_spans": [
                        {
                            "spans": [
                                {
                                    "trace_id": TRACE_HEX.upper(),
                                    "span_id": SPAN_HEX,
                                    "parent_span_id": PARENT_HEX,
                                    "name": "n",
                                    "kind": "SPAN_KIND_PRODUCER",
                                    "start_time_unix_nano": T0,
                                    "end_time_unix_nano": T0 + 1,
                                    "attributes": [{"key": "i", "value": {"int_value": 5}}],
                                    "status": {"code": "STATUS_CODE_ERROR", "message": "m"},
                                    "links": [{"trace_id": TRACE_HEX, "span_id": PARENT_HEX}],
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    ).encode()
    row = only_row(parse_json(body))
    assert row["SpanKind"] == "Producer"
    assert row["StatusCode"] == "Error"
    assert row["SpanAttributes"] == {"i": "5"}
    assert row["Links.SpanId"] == [PARENT_HEX]
    assert row["ServiceName"] == ""


def test_json_int64_bounds_and_doubles() -> None:
    attributes = [
        {"key": "min", "value": {"intValue": str(-(2**63))}},
        {"key": "max", "value": {"intValue": 2**63 - 1}},
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "inf", "value": {"doubleValue": "-Infinity"}},
        {"key": "num", "value": {"doubleValue": "2.5"}},
        {"key": "int", "value": {"doubleValue": 3}},
        {"key": "empty", "value": {}},
        {"key": "raw", "value": {"bytesValue": "AAEC/w=="}},
        {"key": "url", "value": {"bytesValue": "AAEC_w"}},
    ]
    row = only_row(parse_json(json_body([json_span(attributes=attributes, startTimeUnixNano=T0)])))
    assert row["SpanAttributes"] == {
        "min": "-9223372036854775808",
        "max": "9223372036854775807",
        "nan": "json: unsupported value: NaN",
        "inf": "json: unsupported value: -Inf",
        "num": "2.5",
        "int": "3",
        "empty": "",
        "raw": "AAEC/w==",
        "url": "AAEC/w==",
    }


# --- value rendering (pdata Value.AsString) ----------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1"),
        (0.5, "0.5"),
        (-0.0, "-0"),
        (0.0, "0"),
        (2.0, "2"),
        (0.1 + 0.2, "0.30000000000000004"),
        (123456789.125, "123456789.125"),
        (1e-5, "0.00001"),
        (1.5e-5, "0.000015"),
        (1e-6, "0.000001"),
        (9.99e-7, "9.99e-7"),
        (1e-7, "1e-7"),
        (1.5e-10, "1.5e-10"),
        (1e-100, "1e-100"),
        (5e-324, "5e-324"),
        (1e16, "10000000000000000"),
        (2.5e16, "25000000000000000"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (-1.5e300, "-1.5e+300"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
    ],
)
def test_format_double_matches_go(value: float, expected: str) -> None:
    # expected strings are what Go's encoding/json float encoder (pdata float64AsString) writes
    assert format_double(value) == expected


def _attribute_value(value: AnyValue) -> str:
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=bytes.fromhex(TRACE_HEX),
            span_id=bytes.fromhex(SPAN_HEX),
            start_time_unix_nano=T0,
            end_time_unix_nano=T0,
        )
    )
    span.attributes.add(key="v", value=value)
    result = only_row(request)["SpanAttributes"]["v"]
    assert isinstance(result, str)
    return result


def _array(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=list(values)))


def _kvlist(**values: AnyValue) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in values.items()]))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (AnyValue(string_value="a<b>&c"), "a<b>&c"),
        (AnyValue(bool_value=False), "false"),
        (AnyValue(int_value=-(2**63)), "-9223372036854775808"),
        (AnyValue(double_value=math.inf), "json: unsupported value: +Inf"),
        (AnyValue(bytes_value=b"\x00\x01\xfe\xff"), "AAH+/w=="),
        (AnyValue(bytes_value=b""), ""),
        (AnyValue(), ""),
        (_array(), "[]"),
        (_kvlist(), "{}"),
        (_array(AnyValue()), "[null]"),
        (
            _array(AnyValue(string_value='q"<\u2028é'), AnyValue(double_value=3.0), AnyValue(bytes_value=b"\xff")),
            '["q\\"\\u003c\\u2028é",3,"/w=="]',
        ),
        (_kvlist(b=AnyValue(int_value=1), a=_array(AnyValue(bool_value=True))), '{"a":[true],"b":1}'),
        (_kvlist(z=_kvlist(y=AnyValue(string_value="&"))), '{"z":{"y":"\\u0026"}}'),
        (_array(AnyValue(double_value=math.nan)), ""),  # Go's json.Marshal fails: the exporter stores ""
        (_array(AnyValue(string_value="\n\t\x01")), '["\\n\\t\\u0001"]'),
    ],
)
def test_values_render_as_the_clickhouse_exporter_does(value: AnyValue, expected: str) -> None:
    assert _attribute_value(value) == expected


# --- validation --------------------------------------------------------------------------------------
def _valid_request(count: int = 3) -> ExportTraceServiceRequest:
    def build(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("t")
        for index in range(count):
            tracer.start_span(f"s{index}", start_time=T0).end(end_time=T0 + 10)

    return request_of(sdk_spans(build))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s: setattr(s, "trace_id", b""), otlp.REASON_TRACE_ID),
        (lambda s: setattr(s, "trace_id", b"\x01" * 15), otlp.REASON_TRACE_ID),
        (lambda s: setattr(s, "trace_id", b"\x01" * 17), otlp.REASON_TRACE_ID),
        (lambda s: setattr(s, "trace_id", bytes(16)), otlp.REASON_TRACE_ID),
        (lambda s: setattr(s, "span_id", b""), otlp.REASON_SPAN_ID),
        (lambda s: setattr(s, "span_id", b"\x01" * 9), otlp.REASON_SPAN_ID),
        (lambda s: setattr(s, "span_id", bytes(8)), otlp.REASON_SPAN_ID),
        (lambda s: setattr(s, "parent_span_id", b"\x01" * 7), otlp.REASON_PARENT_ID),
        (lambda s: setattr(s, "parent_span_id", b"\x01" * 16), otlp.REASON_PARENT_ID),
        (lambda s: setattr(s, "end_time_unix_nano", s.start_time_unix_nano - 1), otlp.REASON_END_BEFORE_START),
        (lambda s: setattr(s, "start_time_unix_nano", 0), otlp.REASON_NO_START),
        (lambda s: setattr(s, "end_time_unix_nano", 2**63), otlp.REASON_TIME_RANGE),
        (lambda s: s.events.add(time_unix_nano=2**64 - 1, name="e"), otlp.REASON_TIME_RANGE),
    ],
)
def test_an_invalid_span_is_rejected_and_the_others_accepted(mutate: Callable[[Span], None], reason: str) -> None:
    request = _valid_request()
    mutate(request.resource_spans[0].scope_spans[0].spans[1])
    converted = run(request)
    assert (converted.accepted, converted.rejected) == (2, 1)
    assert converted.rejection_reasons == [reason]
    assert [row["SpanName"] for row in converted.rows] == ["s0", "s2"]


def test_edge_values_that_are_valid() -> None:
    request = _valid_request(1)
    span = first_span(request)
    span.parent_span_id = bytes(8)  # zeros: "no parent"
    span.end_time_unix_nano = span.start_time_unix_nano  # zero duration
    setattr(span, "kind", 42)  # an enum value from the future  # noqa: B010
    setattr(span.status, "code", 9)  # noqa: B010
    row = only_row(request)
    assert row["ParentSpanId"] == ""
    assert row["Duration"] == 0
    assert row["SpanKind"] == "Unspecified"
    assert row["StatusCode"] == "Unset"
    span.end_time_unix_nano = 2**63 - 1  # the last nanosecond of DateTime64(9)
    assert only_row(request)["Duration"] == 2**63 - 1 - T0


def test_rejection_reasons_are_distinct_and_few() -> None:
    request = _valid_request(40)
    for index, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
        if index % 2:
            span.trace_id = b""
        elif index % 3:
            span.span_id = b""
    converted = run(request)
    assert converted.rejected == 33
    assert converted.rejection_reasons == [otlp.REASON_TRACE_ID, otlp.REASON_SPAN_ID]


def test_links_with_invalid_ids_are_dropped_not_the_span() -> None:
    request = _valid_request(1)
    span = first_span(request)
    span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, trace_state="a=b")
    span.links.add(trace_id=bytes(16), span_id=b"\x02" * 8)
    span.links.add(trace_id=b"\x01" * 16, span_id=b"")
    converted = run(request)
    assert converted.accepted == 1
    assert converted.dropped_links == 2
    assert converted.rows[0]["Links.TraceId"] == ["01" * 16]
    assert converted.rows[0]["Links.TraceState"] == ["a=b"]


# --- parse errors ------------------------------------------------------------------------------------
def _nested_value_wire(depth: int) -> bytes:
    def length_delimited(tag: int, payload: bytes) -> bytes:
        size, out = len(payload), bytearray([tag])
        while True:
            byte, size = size & 0x7F, size >> 7
            out.append(byte | (0x80 if size else 0))
            if not size:
                return bytes(out) + payload

    inner = AnyValue(string_value="x").SerializeToString()
    for _ in range(depth):
        inner = length_delimited(0x2A, length_delimited(0x0A, inner))  # AnyValue.array_value.values
    attribute = length_delimited(0x0A, b"k") + length_delimited(0x12, inner)  # KeyValue
    span = length_delimited(0x4A, attribute)  # Span.attributes
    return length_delimited(0x0A, length_delimited(0x12, length_delimited(0x12, span)))  # request/resource/scope


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff\xff",
        b"\x0a\x05\x01",  # truncated length-delimited field
        b"\x0a\x03\x12\x01\xff",  # invalid UTF-8 is caught by upb in a string field (ScopeSpans.schema_url)
        _nested_value_wire(400),  # deeper than upb allows
    ],
    ids=["garbage", "truncated", "bad-utf8", "too-deep"],
)
def test_bad_protobuf_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError, match="not a valid protobuf"):
        parse_protobuf(body)


def test_bad_utf8_in_a_span_name_is_a_decode_error() -> None:
    request = _valid_request(1)
    wire = request.SerializeToString().replace(b"s0", b"\xc3\x28")
    with pytest.raises(OtlpDecodeError):
        parse_protobuf(wire)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid UTF-8 JSON"),
        (b"\xff{}", "not valid UTF-8 JSON"),
        (b"[]", "body must be an object"),
        (b'"x"', "body must be an object"),
        (b"null", "body must be an object"),
        (b'{"resourceSpans": {}}', "resourceSpans must be an array"),
        (b'{"resourceSpans": [1]}', r"resourceSpans\[0\] must be an object"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "traceId must be a hex string"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc"}]}]}]}', "traceId must be a hex string"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "ab cd"}]}]}]}', "spanId must be a hex string"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 5}]}]}]}', "traceId must be a string"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}', "name must be a string"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "x"}]}]}]}', "kind must be an integer"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": true}]}]}]}', "kind must be an integer"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": 2147483648}]}]}]}', "kind is out of range"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "-1"}]}]}]}',
            "startTimeUnixNano must be an integer",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "18446744073709551616"}]}]}]}',
            "startTimeUnixNano is out of range",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": 1.5}]}]}]}',
            "startTimeUnixNano must be an integer",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "1e3"}]}]}]}',
            "startTimeUnixNano must be an integer",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "k", "value": '
            b'{"intValue": "9223372036854775808"}}]}]}]}]}',
            "intValue is out of range",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "k", "value": '
            b'{"stringValue": "a", "intValue": 1}}]}]}]}]}',
            "must hold exactly one value",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "k", "value": '
            b'{"boolValue": "true"}}]}]}]}]}',
            "boolValue must be true or false",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "k", "value": '
            b'{"doubleValue": "1,5"}}]}]}]}]}',
            "doubleValue must be a number",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "k", "value": '
            b'{"bytesValue": "!!"}}]}]}]}]}',
            "bytesValue must be base64",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": 1}]}]}]}]}',
            "key must be a string",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"links": [{"traceId": "0g"}]}]}]}]}',
            r"links\[0\].traceId must be a hex string",
        ),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "\\ud800"}]}]}]}', "not a valid OTLP/JSON"),
        (b'{"resourceSpans": NaN}', "not valid UTF-8 JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid UTF-8 JSON"),
    ],
)
def test_bad_json_is_a_decode_error(body: bytes, message: str) -> None:
    with pytest.raises(OtlpDecodeError, match=message):
        parse_json(body)


def test_json_value_nesting_is_bounded() -> None:
    def nested(depth: int) -> dict[str, Any]:
        value: dict[str, Any] = {"stringValue": "x"}
        for _ in range(depth):
            value = {"arrayValue": {"values": [value]}}
        return value

    ok = json_body([json_span(attributes=[{"key": "k", "value": nested(32)}])])
    assert only_row(parse_json(ok))["SpanAttributes"]["k"] == "[" * 32 + '"x"' + "]" * 32
    too_deep = json_body([json_span(attributes=[{"key": "k", "value": nested(33)}])])
    with pytest.raises(OtlpDecodeError, match="nested deeper than 32"):
        parse_json(too_deep)


def test_decode_error_messages_do_not_echo_the_body() -> None:
    secret = "sk-proj-Xq7LmN2pR8sT4vW6yZ1aB3cD5eF7gH9jK0lM2nP4qR6sT8"
    with pytest.raises(OtlpDecodeError) as caught:
        parse_json(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": secret}]}]}]}).encode())
    assert secret not in str(caught.value)


# --- tenant ------------------------------------------------------------------------------------------
def test_the_tenant_of_the_token_overwrites_the_span() -> None:
    request = request_of(one_span({semconv.TENANT_ID: "evil"}, resource={"service.name": "s", semconv.TENANT_ID: "x"}))
    stamped = only_row(request, tenant="acme")
    assert stamped["SpanAttributes"][semconv.TENANT_ID] == "acme"
    assert stamped["ResourceAttributes"][semconv.TENANT_ID] == "acme"
    kept = only_row(request, tenant=None)
    assert kept["SpanAttributes"][semconv.TENANT_ID] == "evil"
    assert kept["ResourceAttributes"][semconv.TENANT_ID] == "x"


def test_the_tenant_is_stamped_on_spans_that_claim_none() -> None:
    request = request_of(one_span({"a": "b"}))
    assert only_row(request, tenant="acme", redactor=Redactor())["SpanAttributes"] == {
        "a": "b",
        semconv.TENANT_ID: "acme",
    }
    assert semconv.TENANT_ID not in only_row(request)["SpanAttributes"]


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_a_repeated_attribute_key_keeps_its_first_place_and_last_value(tenant: str | None) -> None:
    request = _valid_request(1)
    span = first_span(request)
    for key, value in (("k", "1"), (semconv.TENANT_ID, "evil"), ("k", "2"), ("z", "3"), (semconv.TENANT_ID, "x")):
        span.attributes.add(key=key, value=AnyValue(string_value=value))
    attributes = run(request, tenant=tenant).rows[0]["SpanAttributes"]  # run() checks the line against encode_rows
    assert isinstance(attributes, dict)
    assert list(attributes.items()) == [("k", "2"), (semconv.TENANT_ID, tenant or "x"), ("z", "3")]


def test_the_tenant_survives_the_attribute_limit() -> None:
    request = request_of(one_span({f"k{i}": i for i in range(10)}))
    row = only_row(request, tenant="acme", limits=Limits(max_attributes_per_span=3))
    assert row["SpanAttributes"][semconv.TENANT_ID] == "acme"


# --- redaction ---------------------------------------------------------------------------------------
def _everywhere(text: str) -> ExportTraceServiceRequest:
    """``text`` as a span, event, link and resource attribute, status message, span and event name."""

    def build(provider: TracerProvider) -> None:
        other = SpanContext(int(TRACE_HEX, 16), int(SPAN_HEX, 16), is_remote=True)
        span = provider.get_tracer("t").start_span(
            text, attributes={"note": text, "notes": (text, "x")}, links=[Link(other, {"why": text})], start_time=T0
        )
        span.add_event(text, {"detail": text}, timestamp=T0 + 1)
        span.set_status(Status(StatusCode.ERROR, text))
        span.end(end_time=T0 + 2)

    return request_of(sdk_spans(build, {"service.name": "svc", "host.note": text}))


def _places(row: Mapping[str, Any]) -> list[str]:
    return [
        row["SpanAttributes"]["note"],
        json.loads(row["SpanAttributes"]["notes"])[0],
        row["Events.Attributes"][0]["detail"],
        row["Links.Attributes"][0]["why"],
        row["ResourceAttributes"]["host.note"],
        row["StatusMessage"],
        row["SpanName"],
        row["Events.Name"][0],
    ]


@pytest.mark.parametrize("entry", CORPUS, ids=[f"{i:02d}-{e['kind']}" for i, e in enumerate(CORPUS)])
def test_corpus_secrets_are_redacted_everywhere(entry: dict[str, str]) -> None:
    redactor = Redactor()
    converted = run(_everywhere(entry["text"]), redactor=redactor)
    expected = redactor.redact_text(entry["text"])
    assert _places(converted.rows[0]) == [expected] * 8  # exactly what the Redactor gives
    # and nowhere in the bytes written to ClickHouse, escaped or not
    payload = encode_rows(converted.rows).decode()
    assert entry["secret"] not in payload
    assert json.dumps(entry["secret"], ensure_ascii=False)[1:-1] not in payload


@pytest.mark.parametrize("text", BENIGN)
def test_benign_text_is_unchanged(text: str) -> None:
    row = only_row(_everywhere(text), redactor=Redactor())
    assert _places(row) == [text] * 8


def test_without_a_redactor_nothing_is_redacted() -> None:
    secret_text = CORPUS[0]["text"]
    row = only_row(_everywhere(secret_text))
    assert _places(row) == [secret_text] * 8


def test_sensitive_keys_hide_any_value() -> None:
    values = {
        "password": "hunter2",
        "http.request.header.authorization": ("Basic dXNlcjpwYXNz",),
        "db.password": 1234,
        "X-Api-Key": True,
        "Cookie": 0.5,
        "gen_ai.usage.input_tokens": 12,
    }
    redactor = Redactor()
    row = only_row(request_of(one_span(values)), redactor=redactor)
    assert row["SpanAttributes"] == {
        "password": MARKER,
        "http.request.header.authorization": MARKER,
        "db.password": MARKER,
        "X-Api-Key": MARKER,
        "Cookie": MARKER,
        "gen_ai.usage.input_tokens": "12",
    }
    # the same decision redact_value makes
    hidden = redactor.redact_value(values)
    assert isinstance(hidden, dict)
    assert {k for k, v in hidden.items() if v == MARKER} == {k for k, v in row["SpanAttributes"].items() if v == MARKER}


def test_keys_are_redacted_like_redact_value_does() -> None:
    attributes = {"user/jane.doe@example.com": "x", "plain": "y"}
    row = only_row(request_of(one_span(attributes)), redactor=Redactor())
    assert row["SpanAttributes"] == {"user/[REDACTED:email]": "x", "plain": "y"}
    assert row["SpanAttributes"] == Redactor().redact_value(attributes)


def test_structured_values_are_redacted_like_redact_value() -> None:
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=bytes.fromhex(TRACE_HEX),
            span_id=bytes.fromhex(SPAN_HEX),
            start_time_unix_nano=T0,
            end_time_unix_nano=T0,
        )
    )
    headers = _array(
        _kvlist(name=AnyValue(string_value="Authorization"), value=AnyValue(string_value="Basic abc")),
        _kvlist(name=AnyValue(string_value="Accept"), value=AnyValue(string_value="mail me: a@b.io")),
    )
    config = _kvlist(
        password=AnyValue(string_value="p"), nested=_kvlist(api_key=AnyValue(int_value=5)), n=AnyValue(int_value=1)
    )
    span.attributes.add(key="headers", value=headers)
    span.attributes.add(key="config", value=config)
    attributes = only_row(request, redactor=Redactor())["SpanAttributes"]
    assert json.loads(attributes["headers"]) == [
        {"name": "Authorization", "value": MARKER},
        {"name": "Accept", "value": "mail me: [REDACTED:email]"},
    ]
    assert json.loads(attributes["config"]) == {"n": 1, "nested": {"api_key": MARKER}, "password": MARKER}


FRAGMENTS = [
    "password", "Authorization: ", "Bearer ", "token=", "sk-", "proj-", "abc123DEF456ghi789JKL0", "AKIA",
    "IOSFODNN7EXAMPLE", "eyJ", "hbGciOiJIUzI1NiJ9", ".", "@", "example.com", "://", "user:", "4111", " 1111",
    "-", "\n", " ", '"', "=", ":", "[REDACTED", "]", "ghp_", "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "é", "ſecret",
]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=10).map("".join), max_size=6))
def test_conversion_equals_the_redactor_on_each_value(texts: list[str]) -> None:
    redactor = Redactor()
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=bytes.fromhex(TRACE_HEX),
            span_id=bytes.fromhex(SPAN_HEX),
            start_time_unix_nano=T0,
            end_time_unix_nano=T0,
        )
    )
    for index, text in enumerate(texts):
        span.attributes.add(key=f"k{index}", value=AnyValue(string_value=text))
    span.status.message = "".join(texts)
    for _ in range(2):  # the second time through, the memos answer
        row = only_row(request, redactor=redactor)
        assert row["SpanAttributes"] == {f"k{i}": redactor.redact_text(t) for i, t in enumerate(texts)}
        assert row["StatusMessage"] == redactor.redact_text("".join(texts))


def test_memos_never_mix_redactors_or_limits() -> None:
    request = request_of(one_span({"ssn": "123-45-6789", "password": "hunter2", "long": "x" * 40}))
    default, custom = Redactor(), Redactor(sensitive_keys=["ssn"])
    for _ in range(2):
        assert only_row(request, redactor=default)["SpanAttributes"]["ssn"] == "123-45-6789"
        assert only_row(request, redactor=default)["SpanAttributes"]["password"] == MARKER
        assert only_row(request, redactor=custom)["SpanAttributes"]["ssn"] == MARKER
        assert only_row(request, redactor=custom)["SpanAttributes"]["password"] == "hunter2"
        assert only_row(request)["SpanAttributes"]["password"] == "hunter2"
        short = only_row(request, limits=Limits(max_attribute_length=10))["SpanAttributes"]
        assert short["long"] == "x" * 10
        assert only_row(request)["SpanAttributes"]["long"] == "x" * 40


# --- limits ------------------------------------------------------------------------------------------
def test_long_values_are_truncated_and_counted_every_time() -> None:
    limits = Limits(max_attribute_length=16)

    def build(provider: TracerProvider) -> None:
        for _ in range(3):
            span = provider.get_tracer("t").start_span("n" * 20, attributes={"a": "y" * 20, "b": "ok"}, start_time=T0)
            span.add_event("e", {"c": ("z" * 20,)}, timestamp=T0)
            span.set_status(Status(StatusCode.ERROR, "m" * 17))
            span.end(end_time=T0)

    request = request_of(sdk_spans(build))
    long_resource_values = [
        kv.value for kv in request.resource_spans[0].resource.attributes if len(kv.value.string_value) > 16
    ]
    converted = run(request, limits=limits, redactor=Redactor())
    # a, c, the name, the status message, in each span; a resource value once (the SDK's instance id)
    assert converted.truncated_values == 3 * 4 + len(long_resource_values)
    row = converted.rows[0]
    assert row["SpanAttributes"] == {"a": "y" * 16, "b": "ok"}
    assert row["Events.Attributes"] == [{"c": '["' + "z" * 14}]
    assert row["SpanName"] == "n" * 16
    assert row["StatusMessage"] == "m" * 16


@pytest.mark.parametrize("offset", range(-12, 4))
def test_a_secret_cut_by_truncation_leaves_no_prefix(offset: int) -> None:
    key = "sk-proj-Xq7LmN2pR8sT4vW6yZ1aB3cD5eF7gH9jK0lM2nP4qR6sT8"
    limit = 64
    text = "a" * (limit + offset) + " " + key + " tail"
    row = only_row(request_of(one_span({"t": text})), redactor=Redactor(), limits=Limits(max_attribute_length=limit))
    assert "sk-p" not in row["SpanAttributes"]["t"]
    assert len(row["SpanAttributes"]["t"]) <= limit


def test_attribute_event_and_link_limits() -> None:
    def build(provider: TracerProvider) -> None:
        other = SpanContext(int(TRACE_HEX, 16), int(SPAN_HEX, 16), is_remote=True)
        span = provider.get_tracer("t").start_span(
            "n",
            attributes={f"k{i:02d}": i for i in range(12)},
            links=[Link(other, {f"l{i}": i for i in range(6)}) for _ in range(7)],
            start_time=T0,
        )
        for index in range(9):
            span.add_event(f"e{index}", {f"a{i}": i for i in range(6)}, timestamp=T0 + index)
        span.end(end_time=T0 + 100)

    limits = Limits(max_attributes_per_span=5, max_events_per_span=4, max_links_per_span=3)
    converted = run(
        request_of(sdk_spans(build, {"service.name": "s", **{f"r{i}": i for i in range(7)}})), limits=limits
    )
    row: dict[str, Any] = converted.rows[0]
    assert list(row["SpanAttributes"]) == [f"k{i:02d}" for i in range(5)]
    assert row["Events.Name"] == ["e0", "e1", "e2", "e3"]
    assert all(len(attributes) == 5 for attributes in row["Events.Attributes"])
    assert len(row["Links.SpanId"]) == 3
    assert all(len(attributes) == 5 for attributes in row["Links.Attributes"])
    assert len(row["ResourceAttributes"]) == 5
    assert converted.dropped_events == 5
    assert converted.dropped_links == 4
    # 7 span + 4 kept events x 1 + 3 kept links x 1 + resource (8 attributes incl. service.name and sdk ones)
    resource_count = len(request_of(sdk_spans(build, {"service.name": "s", **{f"r{i}": i for i in range(7)}}))
                         .resource_spans[0].resource.attributes)  # fmt: skip
    assert converted.dropped_attributes == 7 + 4 + 3 + (resource_count - 5)


def test_too_many_spans() -> None:
    request = _valid_request(5)
    assert span_count(request) == 5
    with pytest.raises(TooManySpans, match="5 spans, more than the limit of 4"):
        convert(request, tenant=None, limits=Limits(max_spans_per_request=4), redactor=None)
    assert convert(request, tenant=None, limits=Limits(max_spans_per_request=5), redactor=None).accepted == 5
    assert issubclass(TooManySpans, OtlpDecodeError)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_links_per_span must be at least 1"):
        Limits(max_links_per_span=0)


def test_empty_requests() -> None:
    for request in (ExportTraceServiceRequest(), parse_json(b"{}"), parse_protobuf(b"")):
        converted = run(request)
        assert (converted.rows, converted.accepted, converted.rejected) == ([], 0, 0)
    assert encode_rows([]) == b""


# --- encoding ----------------------------------------------------------------------------------------
def test_encode_rows_is_compact_utf8_json_each_row() -> None:
    rows: list[dict[str, object]] = [{"a": "ü✓", "n": 1, "m": {"k": "v"}}, {"a": "\n", "l": []}]
    assert encode_rows(rows) == '{"a":"ü✓","n":1,"m":{"k":"v"}}\n{"a":"\\n","l":[]}'.encode()


def test_encode_rows_splices_shared_resources_exactly() -> None:
    def build(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("t")
        names = ["plain", otlp_encoding._PLACEHOLDER, f"x{otlp_encoding._PLACEHOLDER_JSON}y", "ünï"]
        for name in names:
            tracer.start_span(name, attributes={"a": otlp_encoding._PLACEHOLDER}, start_time=T0).end(end_time=T0 + 1)

    resource = {"service.name": "svc", "host.name": "h", "k8s.pod.name": "p", "note": otlp_encoding._PLACEHOLDER}
    converted = run(request_of(sdk_spans(build, resource)))
    rows = converted.rows
    assert len(rows) == 4
    assert all(row["ResourceAttributes"] is rows[0]["ResourceAttributes"] for row in rows)  # shared
    plain = "\n".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows).encode()
    assert encode_rows(rows) == plain
    # rows that share nothing, or have no resource at all, encode as they are
    loose: list[dict[str, object]] = []
    for row in rows:
        copied = dict(row)
        copied["ResourceAttributes"] = copy.copy(row["ResourceAttributes"])
        loose.append(copied)
    loose.append({"x": 1})
    assert encode_rows(loose) == b"\n".join(
        json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() for r in loose
    )


def test_trace_state_is_bounded() -> None:
    request = _valid_request(1)
    span = first_span(request)
    span.trace_state = "k=" + "v" * 100
    span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, trace_state="k=" + "w" * 100)
    converted = run(request, limits=Limits(max_attribute_length=10))
    assert converted.rows[0]["TraceState"] == "k=" + "v" * 8
    assert converted.rows[0]["Links.TraceState"] == ["k=" + "w" * 8]


# --- the light schema --------------------------------------------------------------------------------
def test_the_light_schema_matches_the_real_one_on_the_wire() -> None:
    # descriptor type numbers -> wire types: string, message, bytes -> length-delimited; fixed64 -> I64;
    # int32, enum -> varint
    wire_type = {9: 2, 11: 2, 12: 2, 6: 1, 5: 0, 14: 0}
    lite = otlp_lite._LiteRequest.DESCRIPTOR.file
    checked = 0
    for name, real, fields in otlp_lite._LITE_SCHEMA:
        message = lite.message_types_by_name[name]
        for field_name in fields:
            ours, theirs = message.fields_by_name[field_name], real.fields_by_name[field_name]
            assert ours.number == theirs.number, (name, field_name)
            if (name, field_name) == ("Span", "status"):
                # a singular message read as repeated bytes, so that every occurrence comes back
                assert (ours.is_repeated, theirs.is_repeated, theirs.type) == (True, False, 11)
            else:
                assert ours.is_repeated == theirs.is_repeated, (name, field_name)
            assert wire_type[ours.type] == wire_type[theirs.type], (name, field_name)
            checked += 1
    assert checked == 27


def _length_delimited(number: int, payload: bytes) -> bytes:
    size, length = bytearray(), len(payload)
    while True:
        size.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            return bytes([number << 3 | 2]) + bytes(size) + payload


def test_a_status_sent_twice_merges_as_protobuf_merges_it() -> None:
    span = first_span(_valid_request(1))
    span.status.message = "first"
    span.status.code = StatusProto.STATUS_CODE_UNSET
    # the span's bytes with a second status field (code only): protobuf merges the two
    doubled = (
        span.SerializeToString() + Span(status=StatusProto(code=StatusProto.STATUS_CODE_ERROR)).SerializeToString()
    )
    assert (Span.FromString(doubled).status.message, Span.FromString(doubled).status.code) == ("first", 2)
    # request.resource_spans[0].scope_spans[0].spans[0], by field number
    body = _length_delimited(1, _length_delimited(2, _length_delimited(2, doubled)))
    request = parse_protobuf(body)
    for wire in (body, None):
        row = convert(request, tenant=None, limits=Limits(), redactor=None, wire=wire).rows[0]
        assert (row["StatusMessage"], row["StatusCode"]) == ("first", "Error")


# --- fuzzing -----------------------------------------------------------------------------------------
def _agent_body() -> bytes:
    def build(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("agentwatch")
        other = SpanContext(int(TRACE_HEX, 16), int(SPAN_HEX, 16), is_remote=True)
        span = tracer.start_span(
            "execute_tool kb.search",
            attributes={
                semconv.GEN_AI_OPERATION_NAME: "execute_tool",
                semconv.GEN_AI_TOOL_NAME: "kb.search",
                semconv.RUN_ID: "325a39b35e6f4cae9130f59cbc6da4bf",
                semconv.STEP_INDEX: 2,
                semconv.COST_USD: 0.0012,
                semconv.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
                "password": "hunter2",
            },
            links=[Link(other, {"l": 1})],
            start_time=T0,
        )
        span.add_event(semconv.EVENT_POLICY_DENIED, {semconv.EVENT_ATTR_TOOL: "db.write"}, timestamp=T0 + 1)
        span.set_status(Status(StatusCode.ERROR, "denied"))
        span.end(end_time=T0 + 10)

    body: bytes = encode_spans(sdk_spans(build)).SerializeToString()
    return body


AGENT_BODY = _agent_body()
AGENT_JSON = json_body(
    [
        json_span(
            attributes=[kv("s", "v"), kv("i", 3), kv("a", ["x", 1.5]), kv("m", {"k": b"\x00"})],
            events=[{"timeUnixNano": str(T0), "name": "e", "attributes": [kv("x", True)]}],
            links=[{"traceId": TRACE_HEX, "spanId": SPAN_HEX, "attributes": [kv("y", 2.0)]}],
            status={"code": 2, "message": "m"},
        )
    ]
)


def _convert_all_ways(request: ExportTraceServiceRequest) -> None:
    for redactor in (None, Redactor()):
        for limits in (Limits(), Limits(max_attribute_length=3, max_attributes_per_span=1)):
            converted = convert(request, tenant="t", limits=limits, redactor=redactor)
            assert converted.accepted + converted.rejected == span_count(request)
            assert converted.payload() == encode_rows(converted.rows)
            for line in encode_rows(converted.rows).split(b"\n") if converted.rows else []:
                assert list(json.loads(line.decode("utf-8"))) == ROW_KEYS


def _mutations() -> st.SearchStrategy[Callable[[bytes], bytes]]:
    def flip(data: bytes, position: int, byte: int) -> bytes:
        if not data:
            return bytes([byte])
        position %= len(data)
        return data[:position] + bytes([byte]) + data[position + 1 :]

    def insert(data: bytes, position: int, chunk: bytes) -> bytes:
        position %= len(data) + 1
        return data[:position] + chunk + data[position:]

    def delete(data: bytes, position: int, size: int) -> bytes:
        position %= len(data) + 1
        return data[:position] + data[position + size :]

    position = st.integers(min_value=0, max_value=1 << 16)
    return st.one_of(
        st.builds(lambda p, b: lambda d: flip(d, p, b), position, st.integers(0, 255)),
        st.builds(lambda p, c: lambda d: insert(d, p, c), position, st.binary(max_size=8)),
        st.builds(lambda p, s: lambda d: delete(d, p, s), position, st.integers(1, 16)),
    )


def _parses_or_decode_error(parse: Callable[[bytes], ExportTraceServiceRequest], body: bytes) -> None:
    try:
        request = parse(body)
    except OtlpDecodeError:
        return
    _convert_all_ways(request)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_protobuf_arbitrary_bytes(body: bytes) -> None:
    _parses_or_decode_error(parse_protobuf, body)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mutations(), min_size=1, max_size=6))
def test_fuzz_protobuf_mutated_bodies(mutations: list[Callable[[bytes], bytes]]) -> None:
    body = AGENT_BODY
    for mutate in mutations:
        body = mutate(body)
    _parses_or_decode_error(parse_protobuf, body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256) | st.text(max_size=256).map(str.encode))
def test_fuzz_json_arbitrary_bytes(body: bytes) -> None:
    _parses_or_decode_error(parse_json, body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mutations(), min_size=1, max_size=4))
def test_fuzz_json_mutated_bodies(mutations: list[Callable[[bytes], bytes]]) -> None:
    body = AGENT_JSON
    for mutate in mutations:
        body = mutate(body)
    _parses_or_decode_error(parse_json, body)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_json_wrong_types_anywhere(data: st.DataObject) -> None:
    document = json.loads(AGENT_JSON)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [path for path in _paths(document) if path]  # again: a replacement removes paths
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        target = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = data.draw(JSON_VALUES)
    body = json.dumps(document, allow_nan=True).encode("utf-8", "surrogatepass")
    _parses_or_decode_error(parse_json, body)


def test_fuzz_random_well_formed_requests() -> None:
    # random but well-formed messages built directly (what a gRPC client hands over)
    rng = random.Random(7)
    request = ExportTraceServiceRequest()
    for _ in range(50):
        span = request.resource_spans.add().scope_spans.add().spans.add()
        span.trace_id = rng.randbytes(rng.choice([0, 8, 16, 16, 16]))
        span.span_id = rng.randbytes(rng.choice([0, 8, 8, 8]))
        span.parent_span_id = rng.randbytes(rng.choice([0, 8, 3]))
        span.start_time_unix_nano = rng.choice([0, T0, 2**64 - 1])
        span.end_time_unix_nano = rng.choice([0, T0, T0 + 5, 2**63])
        span.kind = rng.randint(-5, 9)
        for index in range(rng.randint(0, 4)):
            value = rng.choice(
                [
                    AnyValue(string_value="".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 9)))),
                    AnyValue(double_value=rng.choice([math.nan, -math.inf, 1e300, -0.0])),
                    AnyValue(int_value=rng.randint(-(2**63), 2**63 - 1)),
                    _array(_kvlist(x=AnyValue(bytes_value=rng.randbytes(3)))),
                ]
            )
            span.attributes.add(key=f"k{index}", value=value)
    _convert_all_ways(request)
    _convert_all_ways(parse_protobuf(request.SerializeToString()))


# --- end to end: the encoded rows are what ClickHouse takes --------------------------------------
def test_rows_insert_into_otel_traces_exactly(clickhouse_store: ClickHouseStore) -> None:
    # recent enough for the table's TTL, with nanoseconds that a float would lose
    start = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000 + 123

    def build(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("agentwatch")
        other = SpanContext(int(TRACE_HEX, 16), int(SPAN_HEX, 16), is_remote=True)
        span = tracer.start_span(
            "invoke_agent support",
            attributes={
                semconv.GEN_AI_OPERATION_NAME: semconv.OP_INVOKE_AGENT,
                semconv.GEN_AI_AGENT_NAME: "support",
                semconv.RUN_ID: "run-1",
                semconv.STOP_REASON: "completed",
                semconv.RUN_STEPS: 3,
                semconv.RUN_COST_USD: 0.0125,
                semconv.TENANT_ID: "evil",
                "note": "mail jane.doe@example.com ✓",
            },
            links=[Link(other, {"l": "v"})],
            start_time=start,
        )
        span.add_event(semconv.EVENT_BUDGET_EXHAUSTED, {semconv.EVENT_ATTR_BUDGET: "steps"}, timestamp=start + 7)
        span.end(end_time=start + 1_500_000_000)

    converted = run(request_of(sdk_spans(build)), tenant="acme", redactor=Redactor())
    clickhouse_store.insert_json_rows("otel_traces", encode_rows(converted.rows), dedup_token="otlp-test-1")
    rows = clickhouse_store.query(
        "SELECT toUnixTimestamp64Nano(Timestamp) AS ts, TraceId, SpanAttributes, Duration,"
        " toUnixTimestamp64Nano(Events.Timestamp[1]) AS ets,"
        " Events.Name, Links.SpanId, Links.Attributes FROM otel_traces"
    )
    assert len(rows) == 1
    stored = rows[0]
    assert stored["ts"] == start
    assert stored["ets"] == start + 7
    assert stored["Duration"] == 1_500_000_000
    assert stored["TraceId"] == converted.rows[0]["TraceId"]
    attributes = stored["SpanAttributes"]
    assert isinstance(attributes, dict)
    assert attributes[semconv.TENANT_ID] == "acme"
    assert attributes["note"] == "mail [REDACTED:email] ✓"
    assert stored["Events.Name"] == [semconv.EVENT_BUDGET_EXHAUSTED]
    assert stored["Links.SpanId"] == [SPAN_HEX]
    assert stored["Links.Attributes"] == [{"l": "v"}]
    runs = clickhouse_store.query("SELECT TenantId, RunId, StopReason, Steps, CostUsd FROM agent_runs")
    assert runs == [{"TenantId": "acme", "RunId": "run-1", "StopReason": "completed", "Steps": 3, "CostUsd": 0.0125}]


def test_request_objects_are_not_modified() -> None:
    request = request_of(one_span({"password": "x", semconv.TENANT_ID: "evil"}))
    before = copy.deepcopy(request)
    run(request, tenant="acme", redactor=Redactor())
    assert request == before
