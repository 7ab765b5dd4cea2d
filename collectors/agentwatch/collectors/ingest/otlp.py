"""OTLP trace export requests → rows of the ``otel_traces`` table, safely and fast.

``parse_protobuf`` and ``parse_json`` turn an OTLP/HTTP body (binary protobuf, or OTLP/JSON with
hex ids and int64s as strings) into an ``ExportTraceServiceRequest``; a body that is not one
raises ``OtlpDecodeError`` (HTTP 400, gRPC INVALID_ARGUMENT), whatever went wrong inside.
``convert`` then validates each span (an invalid one is rejected and reported for
``partial_success``; the rest go on), stamps the tenant of the caller's token over whatever the
span claims, scrubs secrets with the instrumentation's ``Redactor``, bounds attribute counts and
lengths, and renders one row per span in the collector's shared row format: the column names
of the OpenTelemetry Collector's ClickHouse exporter, Nested columns flattened, timestamps as
``"SECONDS.NANOS"`` strings. ``encode_rows`` makes the JSONEachRow payload of rows; ``convert``
also writes each row's JSON line itself as it goes (``Converted.payload``), byte for byte what
``encode_rows`` would write, from pieces it escapes once: each distinct attribute's
``"key":"value"``, the span names, and the service, resource and scope columns a scope's rows share.

Attribute values are rendered as the exporter renders them (pdata ``Value.AsString``): a string
as is, a bool ``true``/``false``, an int in decimal, a double as Go's ``encoding/json`` writes it
(shortest round-trip digits, plain notation between 1e-6 and 1e21, so ``1.0`` → ``1`` and
``1e-7`` → ``1e-7``; NaN and ±Inf as the exporter's ``json: unsupported value: NaN``), bytes in
standard base64, arrays and key-value lists as compact JSON with sorted keys and Go's HTML-safe
escaping of ``<``, ``>`` and ``&`` (a container holding NaN or ±Inf becomes ``""``, as there).

Redaction must cost little on the common path (the collector's target is 50k spans/s on two
cores), and most values of agent spans repeat: agent, tenant, model and tool names, run ids
within a run. So each ``Redactor`` gets a bounded memo of strings it has proven clean; a value
not in it is screened with ``Redactor.might_contain_secret`` (a few substring tests) and only a
value that passes the screen pays for ``redact_text``. The result is exactly what calling
``redact_text`` on every value would give.

The work is spread over modules along the data path, each importing only those before it:
``otlp_types`` (errors, ``Limits``, the row columns, ``Converted``), ``otlp_json`` (OTLP/JSON),
``otlp_encoding`` (values and rows as the exporter writes them), ``otlp_lite`` (the light view of
the wire bytes the converter reads), ``otlp_memos`` (what the redaction memos hold),
``otlp_convert`` (the converter's hot loop), and this one, which other packages import.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agentwatch.collectors.ingest.otlp_convert import (
    REASON_END_BEFORE_START,
    REASON_NO_START,
    REASON_PARENT_ID,
    REASON_SPAN_ID,
    REASON_TIME_RANGE,
    REASON_TOO_OLD,
    REASON_TRACE_ID,
    _Converter,
)
from agentwatch.collectors.ingest.otlp_encoding import encode_rows, format_double
from agentwatch.collectors.ingest.otlp_json import parse_json
from agentwatch.collectors.ingest.otlp_lite import _LiteRequest
from agentwatch.collectors.ingest.otlp_memos import _scrubber
from agentwatch.collectors.ingest.otlp_types import ROW_COLUMNS, Converted, Limits, OtlpDecodeError, Row, TooManySpans
from agentwatch.instrumentation.redaction import Redactor

__all__ = [
    "REASON_END_BEFORE_START",
    "REASON_NO_START",
    "REASON_PARENT_ID",
    "REASON_SPAN_ID",
    "REASON_TIME_RANGE",
    "REASON_TOO_OLD",
    "REASON_TRACE_ID",
    "ROW_COLUMNS",
    "Converted",
    "Limits",
    "OtlpDecodeError",
    "Row",
    "TooManySpans",
    "convert",
    "encode_rows",
    "format_double",
    "parse_json",
    "parse_protobuf",
    "span_count",
]


# --- protobuf --------------------------------------------------------------------------------------
def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    """Decode a binary protobuf ``ExportTraceServiceRequest``; anything else raises ``OtlpDecodeError``.

    upb checks the wire format, nesting depth and UTF-8 of every string, so the request that
    comes back is well-formed down to its strings.
    """
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # DecodeError, RuntimeError, RecursionError...: all mean "bad body"
        raise OtlpDecodeError("body is not a valid protobuf ExportTraceServiceRequest") from exc
    return request


def span_count(request: ExportTraceServiceRequest) -> int:
    """Number of spans in ``request``, cheaply (no span is looked into)."""
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


# --- conversion ------------------------------------------------------------------------------------
def convert(
    request: ExportTraceServiceRequest,
    *,
    tenant: str | None,
    limits: Limits,
    redactor: Redactor | None,
    wire: bytes | None = None,
    deadline: float | None = None,
) -> Converted:
    """Validate, stamp, redact and render every span of ``request``.

    A span is rejected (counted, its reason kept) when its trace id is not 16 bytes or all
    zero, its span id not 8 bytes or all zero, its parent span id neither empty nor 8 bytes,
    its start time unset, its end before its start, or a time beyond DateTime64(9). An all-zero
    parent id means "no parent"; links with invalid ids are dropped. With ``tenant`` set,
    ``agentwatch.tenant.id`` is overwritten on every span (and on a resource that carries it):
    the tenant comes from the caller's token. With ``redactor`` set, every string value,
    attribute key, span, event and scope name and status message is redacted exactly as
    ``redactor.redact_text`` would, arrays and key-value lists as by ``redact_value``, and any
    value under a sensitive key becomes ``[REDACTED:secret]``; strings are then cut to
    ``limits.max_attribute_length`` characters. Raises ``TooManySpans`` when the request holds
    more than ``limits.max_spans_per_request`` spans. Rows of one resource share its
    ``ResourceAttributes`` dict: treat rows as read-only.

    ``wire``, when given, must be the protobuf bytes ``request`` was parsed from: the light view
    reads them instead of a re-serialization of ``request`` (its schema has the real one's field
    numbers and wire types, so both read the same bytes alike).

    ``deadline`` (a ``time.monotonic()`` value) bounds the work: past it, ``DecodeTimeout``.
    Attribute keys longer than ``limits.max_attribute_key_length`` are cut to it.
    """
    total = span_count(request)
    if total > limits.max_spans_per_request:
        raise TooManySpans(f"request holds {total} spans, more than the limit of {limits.max_spans_per_request}")
    converter = _Converter(tenant, limits, _scrubber(redactor) if redactor is not None else None, deadline)
    try:
        lite: Any = _LiteRequest.FromString(request.SerializeToString() if wire is None else wire)
    except Exception as exc:  # cannot happen for a message upb built; never let it be a 500 if it does
        raise OtlpDecodeError("request could not be read") from exc
    values: list[tuple[object, ...]] = []
    lines: list[str] = []
    for resource_spans in lite.resource_spans:
        resource, service = converter.resource(resource_spans)
        for scope_spans in resource_spans.scope_spans:
            converter.scope(scope_spans, resource, service, values, lines)
    return Converted(
        values=values,
        lines=lines,
        accepted=len(values),
        rejected=converter.rejected,
        rejection_reasons=converter.reasons,
        truncated_values=converter.truncated,
        dropped_attributes=converter.dropped_attributes,
        dropped_events=converter.dropped_events,
        dropped_links=converter.dropped_links,
    )
