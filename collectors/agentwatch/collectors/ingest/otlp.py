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
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, TypeAlias

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME

from agentwatch.collectors.ingest.inflate import DecodeTimeout
from agentwatch.instrumentation import semconv
from agentwatch.instrumentation.redaction import REDACTED, Redactor

__all__ = [
    "ROW_COLUMNS",
    "Converted",
    "Limits",
    "OtlpDecodeError",
    "TooManySpans",
    "convert",
    "encode_rows",
    "parse_json",
    "parse_protobuf",
    "span_count",
]

Row: TypeAlias = dict[str, object]


class OtlpDecodeError(ValueError):
    """The body is not a valid export request (HTTP 400, gRPC INVALID_ARGUMENT).

    The message names the problem and where it is, never the offending data, so that it can be
    returned to the client as it is.
    """


class TooManySpans(OtlpDecodeError):
    """The request holds more spans than ``Limits.max_spans_per_request`` (HTTP 413)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds applied to every request; values beyond them are truncated or dropped, never rejected."""

    max_spans_per_request: int = 50_000
    max_attribute_length: int = 16_384
    """Characters kept of a string value (after redaction, so that a cut secret cannot leak a prefix)."""
    max_attribute_key_length: int = 256
    """Characters kept of an attribute key; a longer key is cut and counted like a long value."""
    max_attributes_per_span: int = 256
    """Also per event, link and resource; the attributes beyond are dropped and counted."""
    max_events_per_span: int = 128
    max_links_per_span: int = 128
    oldest_start_ns: int = 0
    """Spans that started earlier are rejected: the store's TTL would drop them silently on insert."""

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if name != "oldest_start_ns" and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


ROW_COLUMNS: Final = (
    "Timestamp",
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
)
"""The columns of a row, in the order ``convert`` renders them."""
_ATTRIBUTES_AT: Final = ROW_COLUMNS.index("SpanAttributes")
_DURATION_AT: Final = ROW_COLUMNS.index("Duration")
_NESTED_AT: Final = ROW_COLUMNS.index("Events.Timestamp")
_FLAT_COLUMNS: Final = ROW_COLUMNS[:_NESTED_AT]
_NESTED_COLUMNS: Final = ROW_COLUMNS[_NESTED_AT:]


@dataclass(slots=True)
class Converted:
    """The accepted spans, rendered, and what happened to the rest.

    Each accepted span is kept twice, both made in the one pass over the request: as a tuple of
    its row's values in ``ROW_COLUMNS`` order, and as its JSONEachRow line. The ingest path needs
    the lines (``payload``) and two columns for the metrics (``spans``), so a 22-key dict per span
    is made only when ``rows`` is read.
    """

    values: list[tuple[object, ...]]
    """Each accepted span's row values: the columns before ``Events.Timestamp`` in ``ROW_COLUMNS``
    order, then a tuple of the three ``Events.*`` columns and one of the four ``Links.*`` columns
    (shared by spans without events or links: ``rows`` gives each row lists of its own)."""
    lines: list[str]
    """Each accepted span's row as ``encode_rows`` writes it (a test holds them to that)."""
    accepted: int
    rejected: int
    rejection_reasons: list[str]
    """The first few distinct reasons, for ``partial_success.error_message``."""
    truncated_values: int
    dropped_attributes: int
    dropped_events: int = 0
    dropped_links: int = 0
    """Links beyond the limit, and links whose ids are not a valid trace and span id."""
    _rows: list[Row] | None = field(default=None, repr=False, compare=False)

    @property
    def rows(self) -> list[Row]:
        """One dict per accepted span, keyed by ``ROW_COLUMNS`` (made on first use, then kept)."""
        if self._rows is None:
            rows: list[Row] = []
            for values in self.values:
                row: Row = dict(zip(_FLAT_COLUMNS, values[:_NESTED_AT], strict=True))
                nested = (*values[_NESTED_AT], *values[_NESTED_AT + 1])  # type: ignore[misc]
                for column, items in zip(_NESTED_COLUMNS, nested, strict=True):
                    row[column] = list(items)
                rows.append(row)
            self._rows = rows
        return self._rows

    @property
    def spans(self) -> list[tuple[dict[str, str], int]]:
        """``(SpanAttributes, Duration)`` of each accepted span: what ``CollectorMetrics.observe_spans`` reads."""
        return [(values[_ATTRIBUTES_AT], values[_DURATION_AT]) for values in self.values]  # type: ignore[misc]

    def payload(self) -> bytes:
        """The JSONEachRow payload of the accepted spans: ``encode_rows(self.rows)``, byte for byte."""
        return "\n".join(self.lines).encode("utf-8")


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


# --- OTLP/JSON -------------------------------------------------------------------------------------
_MAX_VALUE_DEPTH: Final = 32  # AnyValue nesting accepted in JSON (protobuf stops at about 50)
_UINT32: Final = (1 << 32) - 1
_UINT64: Final = (1 << 64) - 1
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_INT32_MIN: Final = -(1 << 31)
_INT32_MAX: Final = (1 << 31) - 1
_HEX_RE: Final = re.compile(r"(?:[0-9a-fA-F]{2})*")
_UINT_RE: Final = re.compile(r"[0-9]{1,20}")
_INT_RE: Final = re.compile(r"-?[0-9]{1,19}")
_FLOAT_RE: Final = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL_FLOATS: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_SPAN_KINDS: Final = dict(Span.SpanKind.items())
_STATUS_CODES: Final = dict(Status.StatusCode.items())
_VALUE_FIELDS: Final = (
    ("stringValue", "string_value"),
    ("boolValue", "bool_value"),
    ("intValue", "int_value"),
    ("doubleValue", "double_value"),
    ("arrayValue", "array_value"),
    ("kvlistValue", "kvlist_value"),
    ("bytesValue", "bytes_value"),
)

_Json: TypeAlias = dict[str, object]


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    """Decode an OTLP/JSON ``ExportTraceServiceRequest`` (the OTLP spec's JSON mapping).

    Field names in lowerCamelCase (snake_case accepted too); trace and span ids as hex strings,
    also in links; enums as integers (their proto names accepted too); 64-bit integers as
    decimal strings or numbers; ``bytesValue`` in base64. Unknown fields are ignored, as the
    spec asks. A body that is not UTF-8 JSON, not an object, or has a field of the wrong type, a
    bad id or value, or an attribute value nested deeper than 32 levels raises
    ``OtlpDecodeError``.
    """
    try:
        document = json.loads(bytes(body).decode("utf-8-sig"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OtlpDecodeError("body is not valid UTF-8 JSON") from exc
    if not isinstance(document, dict):
        raise OtlpDecodeError("body must be an object")
    root: _Json = document
    try:
        fields: dict[str, Any] = {
            "resource_spans": [
                _resource_spans(item, f"resourceSpans[{index}]")
                for index, item in enumerate(_list(_get(root, "resourceSpans", "resource_spans"), "", "resourceSpans"))
            ]
        }
        # upb builds the whole tree from plain dicts in one call, much faster than field by field
        return ExportTraceServiceRequest(**fields)
    except OtlpDecodeError:
        raise
    except Exception as exc:  # a value the checks above let through but protobuf refuses (e.g. a lone surrogate)
        raise OtlpDecodeError("body is not a valid OTLP/JSON ExportTraceServiceRequest") from exc


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _fail(where: str, name: str, problem: str) -> OtlpDecodeError:
    path = ".".join(part for part in (where, name) if part)
    return OtlpDecodeError(f"{path} {problem}")


def _get(obj: _Json, camel: str, snake: str) -> object:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _object(value: object, where: str, name: str) -> _Json:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, name, "must be an object")
    return value


def _list(value: object, where: str, name: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(where, name, "must be an array")
    return value


def _string(value: object, where: str, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail(where, name, "must be a string")
    return value


def _hex_id(value: object, where: str, name: str) -> bytes:
    text = _string(value, where, name)
    if not _HEX_RE.fullmatch(text):
        raise _fail(where, name, "must be a hex string")
    return bytes.fromhex(text)


def _integer(value: object, where: str, name: str, low: int, high: int) -> int:
    if value is None:
        return 0
    number: int
    if isinstance(value, bool):
        raise _fail(where, name, "must be an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise _fail(where, name, "must be an integer")
        number = int(value)
    elif isinstance(value, str):
        if not (_INT_RE if low < 0 else _UINT_RE).fullmatch(value):
            raise _fail(where, name, "must be an integer")
        number = int(value)
    else:
        raise _fail(where, name, "must be an integer")
    if not low <= number <= high:
        raise _fail(where, name, "is out of range")
    return number


def _enum(value: object, names: Mapping[str, int], where: str, name: str) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    return _integer(value, where, name, _INT32_MIN, _INT32_MAX)


def _double(value: object, where: str, name: str) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise _fail(where, name, "is out of range") from None
    if isinstance(value, str):
        special = _SPECIAL_FLOATS.get(value)
        if special is not None:
            return special
        if len(value) <= 64 and _FLOAT_RE.fullmatch(value):
            return float(value)
    raise _fail(where, name, "must be a number")


def _bool(value: object, where: str, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(where, name, "must be true or false")
    return value


def _base64(value: object, where: str, name: str) -> bytes:
    text = _string(value, where, name).replace("-", "+").replace("_", "/")  # the URL-safe alphabet too
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _fail(where, name, "must be base64") from None


def _any_value(value: object, where: str, name: str, depth: int) -> dict[str, object]:
    if depth > _MAX_VALUE_DEPTH:
        raise _fail(where, name, f"is nested deeper than {_MAX_VALUE_DEPTH} levels")
    obj = _object(value, where, name)
    found: dict[str, object] = {}
    for camel, snake in _VALUE_FIELDS:
        item = _get(obj, camel, snake)
        if item is None:
            continue
        if found:
            raise _fail(where, name, "must hold exactly one value")
        inner = f"{where}.{name}" if where else name
        if snake == "string_value":
            found[snake] = _string(item, inner, camel)
        elif snake == "bool_value":
            found[snake] = _bool(item, inner, camel)
        elif snake == "int_value":
            found[snake] = _integer(item, inner, camel, _INT64_MIN, _INT64_MAX)
        elif snake == "double_value":
            found[snake] = _double(item, inner, camel)
        elif snake == "bytes_value":
            found[snake] = _base64(item, inner, camel)
        elif snake == "array_value":
            values = _list(_object(item, inner, camel).get("values"), f"{inner}.{camel}", "values")
            found[snake] = {
                "values": [
                    _any_value(element, f"{inner}.{camel}", f"values[{index}]", depth + 1)
                    for index, element in enumerate(values)
                ]
            }
        else:
            values = _list(_object(item, inner, camel).get("values"), f"{inner}.{camel}", "values")
            found[snake] = {
                "values": [
                    _key_value(element, f"{inner}.{camel}.values[{index}]", depth + 1)
                    for index, element in enumerate(values)
                ]
            }
    return found


def _key_value(value: object, where: str, depth: int) -> dict[str, object]:
    obj = _object(value, where, "")
    return {"key": _string(obj.get("key"), where, "key"), "value": _any_value(obj.get("value"), where, "value", depth)}


def _attributes(obj: _Json, where: str) -> list[dict[str, object]]:
    items = _list(obj.get("attributes"), where, "attributes")
    return [_key_value(item, f"{where}.attributes[{index}]", 0) for index, item in enumerate(items)]


def _dropped(obj: _Json, where: str, camel: str, snake: str) -> int:
    return _integer(_get(obj, camel, snake), where, camel, 0, _UINT32)


def _resource_spans(value: object, where: str) -> _Json:
    obj = _object(value, where, "")
    resource = _object(obj.get("resource"), where, "resource")
    scopes = _list(_get(obj, "scopeSpans", "scope_spans"), where, "scopeSpans")
    return {
        "resource": {
            "attributes": _attributes(resource, f"{where}.resource"),
            "dropped_attributes_count": _dropped(
                resource, f"{where}.resource", "droppedAttributesCount", "dropped_attributes_count"
            ),
        },
        "scope_spans": [_scope_spans(item, f"{where}.scopeSpans[{index}]") for index, item in enumerate(scopes)],
        "schema_url": _string(_get(obj, "schemaUrl", "schema_url"), where, "schemaUrl"),
    }


def _scope_spans(value: object, where: str) -> _Json:
    obj = _object(value, where, "")
    scope = _object(obj.get("scope"), where, "scope")
    spans = _list(obj.get("spans"), where, "spans")
    return {
        "scope": {
            "name": _string(scope.get("name"), f"{where}.scope", "name"),
            "version": _string(scope.get("version"), f"{where}.scope", "version"),
            "attributes": _attributes(scope, f"{where}.scope"),
            "dropped_attributes_count": _dropped(
                scope, f"{where}.scope", "droppedAttributesCount", "dropped_attributes_count"
            ),
        },
        "spans": [_span(item, f"{where}.spans[{index}]") for index, item in enumerate(spans)],
        "schema_url": _string(_get(obj, "schemaUrl", "schema_url"), where, "schemaUrl"),
    }


def _span(value: object, where: str) -> _Json:
    obj = _object(value, where, "")
    status = _object(obj.get("status"), where, "status")
    events = _list(obj.get("events"), where, "events")
    links = _list(obj.get("links"), where, "links")
    return {
        "trace_id": _hex_id(_get(obj, "traceId", "trace_id"), where, "traceId"),
        "span_id": _hex_id(_get(obj, "spanId", "span_id"), where, "spanId"),
        "trace_state": _string(_get(obj, "traceState", "trace_state"), where, "traceState"),
        "parent_span_id": _hex_id(_get(obj, "parentSpanId", "parent_span_id"), where, "parentSpanId"),
        "flags": _integer(obj.get("flags"), where, "flags", 0, _UINT32),
        "name": _string(obj.get("name"), where, "name"),
        "kind": _enum(obj.get("kind"), _SPAN_KINDS, where, "kind"),
        "start_time_unix_nano": _integer(
            _get(obj, "startTimeUnixNano", "start_time_unix_nano"), where, "startTimeUnixNano", 0, _UINT64
        ),
        "end_time_unix_nano": _integer(
            _get(obj, "endTimeUnixNano", "end_time_unix_nano"), where, "endTimeUnixNano", 0, _UINT64
        ),
        "attributes": _attributes(obj, where),
        "dropped_attributes_count": _dropped(obj, where, "droppedAttributesCount", "dropped_attributes_count"),
        "events": [_event(item, f"{where}.events[{index}]") for index, item in enumerate(events)],
        "dropped_events_count": _dropped(obj, where, "droppedEventsCount", "dropped_events_count"),
        "links": [_link(item, f"{where}.links[{index}]") for index, item in enumerate(links)],
        "dropped_links_count": _dropped(obj, where, "droppedLinksCount", "dropped_links_count"),
        "status": {
            "message": _string(status.get("message"), f"{where}.status", "message"),
            "code": _enum(status.get("code"), _STATUS_CODES, f"{where}.status", "code"),
        },
    }


def _event(value: object, where: str) -> dict[str, object]:
    obj = _object(value, where, "")
    return {
        "time_unix_nano": _integer(_get(obj, "timeUnixNano", "time_unix_nano"), where, "timeUnixNano", 0, _UINT64),
        "name": _string(obj.get("name"), where, "name"),
        "attributes": _attributes(obj, where),
        "dropped_attributes_count": _dropped(obj, where, "droppedAttributesCount", "dropped_attributes_count"),
    }


def _link(value: object, where: str) -> dict[str, object]:
    obj = _object(value, where, "")
    return {
        "trace_id": _hex_id(_get(obj, "traceId", "trace_id"), where, "traceId"),
        "span_id": _hex_id(_get(obj, "spanId", "span_id"), where, "spanId"),
        "trace_state": _string(_get(obj, "traceState", "trace_state"), where, "traceState"),
        "attributes": _attributes(obj, where),
        "dropped_attributes_count": _dropped(obj, where, "droppedAttributesCount", "dropped_attributes_count"),
        "flags": _integer(obj.get("flags"), where, "flags", 0, _UINT32),
    }


# --- values ----------------------------------------------------------------------------------------
_HTML_ESCAPES: Final = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)
_STRING_JSON: Final = json.JSONEncoder(ensure_ascii=False)
_RAW_DEPTH_LIMIT: Final = 64


class _NotFinite(ValueError):
    """A container holds NaN or ±Inf, which Go's ``json.Marshal`` (and so the exporter) refuses."""


def format_double(value: float) -> str:
    """A finite ``value`` as Go's ``encoding/json`` (and so pdata ``Value.AsString``) writes a float64.

    The shortest digits that round-trip (Python's ``repr`` and Go agree on those), in plain
    notation unless the magnitude is below 1e-6 or at least 1e21, where the exponent form drops
    a leading zero of a negative exponent (``1e-07`` → ``1e-7``). ``1.0`` → ``1``, ``-0.0`` → ``-0``.
    """
    text = repr(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        return text.replace("e-0", "e-")
    if "e" in text:  # repr switches to exponents from 1e16 and below 1e-4; Go does not
        return format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def _double_text(value: float) -> str:
    if math.isfinite(value):
        return format_double(value)
    # what the exporter stores: Go's json error text around strconv.FormatFloat(v, 'g', -1, 64)
    name = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return f"json: unsupported value: {name}"


def _raw(value: AnyValue, depth: int) -> object:
    """pdata ``Value.AsRaw``: the Python value ``json.Marshal`` would see (bytes as base64 text)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        if not math.isfinite(number):
            raise _NotFinite(number)
        return number
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if depth >= _RAW_DEPTH_LIMIT:  # protobuf itself stops at about 50 levels
        return None
    if kind == "array_value":
        return [_raw(item, depth + 1) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _raw(item.value, depth + 1) for item in value.kvlist_value.values}
    return None


def _json_text(raw: object) -> str:
    """``raw`` as Go's ``json.Marshal`` writes it, before its HTML escaping (see ``_dump_raw``)."""
    if isinstance(raw, str):
        return _STRING_JSON.encode(raw)
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        return format_double(raw)
    if isinstance(raw, list):
        return "[" + ",".join(map(_json_text, raw)) + "]"
    if isinstance(raw, dict):
        items = {str(key): item for key, item in raw.items()}  # redact_value keeps string keys strings
        return "{" + ",".join(f"{_STRING_JSON.encode(key)}:{_json_text(items[key])}" for key in sorted(items)) + "}"
    return _STRING_JSON.encode(str(raw))


def _dump_raw(raw: object) -> str:
    text = _json_text(raw)
    for char, escape in _HTML_ESCAPES:  # never structural in JSON, so replacing them in the text is exact
        if char in text:
            text = text.replace(char, escape)
    return text


# --- a light view of the request ------------------------------------------------------------------
# Reading a protobuf message from Python costs about 100 ns per field access and per sub-message
# (each is a new wrapper object), and a typical agent span has a dozen attributes of four
# accesses each: that alone would be half of the time budget. So ``convert`` re-reads the
# request's wire bytes through a light schema, with the same field numbers and wire types, in
# which every attribute list is ``repeated bytes``: each attribute comes back as the bytes of
# its KeyValue, and since most of them repeat from span to span (agent, tenant, model, tool,
# run id...), the rendered (key, value) pair is memoized by those bytes. Only a KeyValue never
# seen before is parsed as a real message.
_BYTES: Final = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
_INT32: Final = descriptor_pb2.FieldDescriptorProto.TYPE_INT32
_SAME: Final = 0
# a singular message read as ``repeated bytes``: every occurrence on the wire comes back, and their
# concatenation parses as protobuf merges them (a status split over two fields stays one status)
_STATUS: Final = -_BYTES
_LITE_PACKAGE: Final = "agentwatch.collectors.otlp_lite"
_LITE_SCHEMA: Final[tuple[tuple[str, Any, dict[str, str | int]], ...]] = (
    ("Request", ExportTraceServiceRequest.DESCRIPTOR, {"resource_spans": "ResourceSpans"}),
    ("ResourceSpans", ResourceSpans.DESCRIPTOR, {"resource": "Resource", "scope_spans": "ScopeSpans"}),
    ("Resource", Resource.DESCRIPTOR, {"attributes": _BYTES}),
    ("ScopeSpans", ScopeSpans.DESCRIPTOR, {"scope": "Scope", "spans": "Span"}),
    ("Scope", InstrumentationScope.DESCRIPTOR, {"name": _SAME, "version": _SAME}),
    (
        "Span",
        Span.DESCRIPTOR,
        {
            "trace_id": _SAME,
            "span_id": _SAME,
            "trace_state": _SAME,
            "parent_span_id": _SAME,
            "name": _SAME,
            "kind": _INT32,  # an enum is an int32 varint on the wire
            "start_time_unix_nano": _SAME,
            "end_time_unix_nano": _SAME,
            "attributes": _BYTES,
            "events": "Event",
            "links": "Link",
            "status": _STATUS,  # mostly empty: bytes cost nothing to read, a message a wrapper
        },
    ),
    ("Event", Span.Event.DESCRIPTOR, {"time_unix_nano": _SAME, "name": _SAME, "attributes": _BYTES}),
    ("Link", Span.Link.DESCRIPTOR, {"trace_id": _SAME, "span_id": _SAME, "trace_state": _SAME, "attributes": _BYTES}),
)


def _lite_request_class() -> Any:
    """The light schema (``_LITE_SCHEMA``): field numbers taken from the real descriptors."""
    file = descriptor_pb2.FileDescriptorProto(
        name="agentwatch/collectors/otlp_lite.proto", package=_LITE_PACKAGE, syntax="proto3"
    )
    for name, real, fields in _LITE_SCHEMA:
        message = file.message_type.add(name=name)
        for field_name, kind in fields.items():
            original = real.fields_by_name[field_name]
            field = message.field.add(name=field_name, number=original.number)
            repeated = original.is_repeated or (isinstance(kind, int) and kind < 0)
            field.label = field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL
            if isinstance(kind, str):
                field.type = field.TYPE_MESSAGE
                field.type_name = f".{_LITE_PACKAGE}.{kind}"
            else:
                field.type = abs(kind) or original.type
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_LITE_PACKAGE}.Request"))


_LiteRequest: Final = _lite_request_class()

# --- redaction and rendering memos -----------------------------------------------------------------
_MEMO_MAX_CHARS: Final = 256  # longer values rarely repeat; hashing them would cost more than it saves
_MEMO_MAX_ENTRIES: Final = 1 << 15  # per memo: tens of MB at worst, a few MB for real workloads
_SECRET_MARKER: Final = f"{REDACTED[:-1]}:secret]"  # what Redactor.redact_value puts under a sensitive key

_Memo: TypeAlias = dict[bytes, tuple[str, str, str]]  # KeyValue bytes -> key, value, '"key":"value"'


class _Scrubber:
    """One redactor and its memos: strings proven clean, and keys already looked at.

    Shared by every conversion that uses the redactor. The memos only hold facts about strings,
    so concurrent use is safe, and a full memo is simply emptied (an attacker sending only
    unique values costs us the memo's benefit, never correctness).
    """

    __slots__ = ("__weakref__", "attributes", "clean", "keys", "redactor")

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.clean: set[str] = set()
        self.keys: dict[str, tuple[str, bool]] = {}
        self.attributes: dict[tuple[int, int], _Memo] = {}  # rendered attributes, per (value, key) length cap

    def text(self, text: str) -> str:
        """``redactor.redact_text(text)``, memoized for short clean text."""
        short = len(text) <= _MEMO_MAX_CHARS
        if short and text in self.clean:
            return text
        redactor = self.redactor
        if redactor.might_contain_secret(text):
            redacted = redactor.redact_text(text)
            if redacted is not text:
                return redacted
        if short:
            if len(self.clean) >= _MEMO_MAX_ENTRIES:
                self.clean.clear()
            self.clean.add(text)
        return text

    def key(self, key: str) -> tuple[str, bool]:
        """The key as stored (redacted, as ``redact_value`` does keys) and whether its value is hidden."""
        info = self.keys.get(key)
        if info is None:
            info = (self.text(key), self.redactor.is_sensitive_key(key))
            if len(key) <= _MEMO_MAX_CHARS:
                if len(self.keys) >= _MEMO_MAX_ENTRIES:
                    self.keys.clear()
                self.keys[key] = info
        return info

    def raw(self, raw: object) -> object:
        """``redactor.redact_value(raw)``; a flat list of scalars is done string by string, memoized."""
        if isinstance(raw, list) and all(item is None or isinstance(item, str | int | float) for item in raw):
            return [self.text(item) if isinstance(item, str) else item for item in raw]
        return self.redactor.redact_value(raw)


_SCRUBBERS: Final[weakref.WeakKeyDictionary[Redactor, _Scrubber]] = weakref.WeakKeyDictionary()
_PLAIN_MEMOS: Final[dict[tuple[int, int], _Memo]] = {}  # rendered attributes without redaction, per length caps
_MEMOS_LOCK: Final = threading.Lock()


def _scrubber(redactor: Redactor) -> _Scrubber:
    with _MEMOS_LOCK:
        scrubber = _SCRUBBERS.get(redactor)
        if scrubber is None:
            scrubber = _SCRUBBERS[redactor] = _Scrubber(redactor)
        return scrubber


def _memo(scrubber: _Scrubber | None, caps: tuple[int, int]) -> _Memo:
    memos = _PLAIN_MEMOS if scrubber is None else scrubber.attributes
    with _MEMOS_LOCK:
        memo = memos.get(caps)
        if memo is None:
            memo = memos[caps] = {}
        return memo


# --- conversion ------------------------------------------------------------------------------------
_ZERO_TRACE_ID: Final = bytes(16)
_ZERO_SPAN_ID: Final = bytes(8)
_MAX_TIME_NS: Final = _INT64_MAX  # the end of DateTime64(9): 2262-04-11T23:47:16.854775807Z
_MAX_REASONS: Final = 5
_KIND_NAMES: Final = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
_STATUS_NAMES: Final = ("Unset", "Ok", "Error")

REASON_TRACE_ID: Final = "invalid trace_id: must be 16 bytes, not all zero"
REASON_SPAN_ID: Final = "invalid span_id: must be 8 bytes, not all zero"
REASON_PARENT_ID: Final = "invalid parent_span_id: must be empty or 8 bytes"
REASON_NO_START: Final = "start_time_unix_nano is not set"
REASON_END_BEFORE_START: Final = "end_time_unix_nano is before start_time_unix_nano"
REASON_TIME_RANGE: Final = "timestamp beyond 2262-04-11T23:47:16Z (the range of DateTime64(9))"
REASON_TOO_OLD: Final = "span started before the store's retention window (its TTL would drop it)"


def _problem(trace_id: bytes, span_id: bytes, parent: bytes, start: int, end: int) -> str | None:
    """Why a span with these ids and times must be rejected, or None."""
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID:
        return REASON_TRACE_ID
    if len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
        return REASON_SPAN_ID
    if parent and len(parent) != 8:
        return REASON_PARENT_ID
    if not start:
        return REASON_NO_START
    if end < start:
        return REASON_END_BEFORE_START
    if end > _MAX_TIME_NS:
        return REASON_TIME_RANGE
    return None


def _timestamp(nanos: int) -> str:
    """``"SECONDS.NANOS"``: ClickHouse reads this exactly into DateTime64(9) (a number would be seconds).

    Seconds are zero-padded to 10 digits: with fewer (times before 1973-03-03, e.g. an unset event
    time) ClickHouse tries to read a date instead and refuses the whole insert batch.
    """
    seconds, fraction = divmod(nanos, 1_000_000_000)
    return f"{seconds:010d}.{fraction:09d}"


class _Converter:
    """State of one ``convert`` call: limits, the scrubber and memo, counters.

    The spans it reads are messages of the light schema (``_LiteRequest``), hence ``Any``.
    """

    __slots__ = (
        "clean",
        "deadline",
        "dropped_attributes",
        "dropped_events",
        "dropped_links",
        "max_attributes",
        "max_events",
        "max_key_length",
        "max_length",
        "max_links",
        "memo",
        "names",
        "oldest",
        "reasons",
        "rejected",
        "scrubber",
        "tenant",
        "tenant_part",
        "truncated",
    )

    def __init__(
        self, tenant: str | None, limits: Limits, scrubber: _Scrubber | None, deadline: float | None = None
    ) -> None:
        self.deadline = deadline
        self.tenant = tenant
        self.tenant_part = f"{_TENANT_KEY_JSON}:{_json_string(tenant)}" if tenant is not None else ""
        self.scrubber = scrubber
        self.names: dict[str, tuple[str, str]] = {}  # span name as received -> as stored, and as JSON
        self.clean: set[str] = scrubber.clean if scrubber is not None else set()
        self.max_length = limits.max_attribute_length
        self.max_attributes = limits.max_attributes_per_span
        self.max_events = limits.max_events_per_span
        self.max_links = limits.max_links_per_span
        self.oldest = limits.oldest_start_ns
        self.max_key_length = limits.max_attribute_key_length
        self.memo = _memo(scrubber, (self.max_length, self.max_key_length))
        self.rejected = 0
        self.reasons: list[str] = []
        self.truncated = 0
        self.dropped_attributes = 0
        self.dropped_events = 0
        self.dropped_links = 0

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < _MAX_REASONS and reason not in self.reasons:
            self.reasons.append(reason)

    def text(self, text: str) -> str:
        """A free-text field (names, status message): redacted, then truncated."""
        scrubber = self.scrubber
        if scrubber is not None and not (len(text) <= _MEMO_MAX_CHARS and text in self.clean):
            text = scrubber.text(text)
        if len(text) > self.max_length:
            self.truncated += 1
            text = text[: self.max_length]
        return text

    def attributes(self, items: Sequence[bytes]) -> dict[str, str]:
        """Attributes (their KeyValue bytes) rendered to strings, redacted and bounded; memoized."""
        if len(items) > self.max_attributes:
            self.dropped_attributes += len(items) - self.max_attributes
            items = items[: self.max_attributes]
        recall = self.memo.get
        out: dict[str, str] = {}
        for item in items:
            known = recall(item)  # not memo[item] in a try: a raised KeyError costs more than a miss's work
            if known is None:
                known = self.attribute(item)
            out[known[0]] = known[1]
        return out

    def span_attributes(self, items: Sequence[bytes]) -> tuple[dict[str, str], str]:
        """``attributes(items)`` stamped with the tenant, and that dict as ``_encode_row`` writes it.

        The JSON is joined from each attribute's memoized ``"key":"value"``; a key that repeats
        (the dict keeps its first place and its last value) falls back to encoding the dict.
        """
        if len(items) > self.max_attributes:
            self.dropped_attributes += len(items) - self.max_attributes
            items = items[: self.max_attributes]
        recall = self.memo.get
        out: dict[str, str] = {}
        parts: list[str] = []
        for item in items:
            known = recall(item)
            if known is None:
                known = self.attribute(item)
            out[known[0]] = known[1]
            parts.append(known[2])
        tenant = self.tenant
        if len(parts) != len(out):
            if tenant is not None:
                out[semconv.TENANT_ID] = tenant
            return out, _encode_row(out)
        if tenant is not None:
            # the token's tenant, whatever the span says; a stamped key keeps its place in the dict
            claimed = out.get(semconv.TENANT_ID)
            if claimed is not None:  # its part is rendered exactly so, whatever memo entry it came from
                parts[parts.index(f"{_TENANT_KEY_JSON}:{_json_string(claimed)}")] = self.tenant_part
            else:
                parts.append(self.tenant_part)
            out[semconv.TENANT_ID] = tenant
        return out, "{" + ",".join(parts) + "}"

    def attribute(self, data: bytes) -> tuple[str, str, str]:
        """One attribute, the slow way: parse it, render it, redact it; memoize the result if short.

        Returns the key and value as stored, and both as the ``"key":"value"`` of the row's JSON.
        """
        item = KeyValue.FromString(data)  # the request parsed as a whole, so this cannot fail
        value = item.value
        key = item.key
        kind = value.WhichOneof("value")
        scrubber = self.scrubber
        sensitive = False
        if scrubber is not None:
            key, sensitive = scrubber.key(key)
        if len(key) > self.max_key_length:
            self.truncated += 1  # like a long value: cut, counted, never memoized
            key = key[: self.max_key_length]
            data = b""
        if sensitive:
            text = _SECRET_MARKER
        elif kind == "string_value":
            text = value.string_value
            if scrubber is not None:
                text = scrubber.text(text)
        elif kind == "int_value":
            text = str(value.int_value)
        elif kind == "bool_value":
            text = "true" if value.bool_value else "false"
        elif kind == "double_value":
            text = _double_text(value.double_value)
        elif kind == "bytes_value":
            text = base64.b64encode(value.bytes_value).decode("ascii")
        elif kind is None:
            text = ""
        else:
            text = self.container(value)
        if len(text) > self.max_length:
            self.truncated += 1  # not memoized, so that every truncation is counted
            text = text[: self.max_length]
            return key, text, f"{_json_string(key)}:{_json_string(text)}"
        rendered = (key, text, f"{_json_string(key)}:{_json_string(text)}")
        if data and len(data) <= _MEMO_MAX_CHARS:
            if len(self.memo) >= _MEMO_MAX_ENTRIES:
                self.memo.clear()
            self.memo[data] = rendered
        return rendered

    def container(self, value: AnyValue) -> str:
        """An array or key-value list as compact JSON, its strings redacted first."""
        try:
            raw = _raw(value, 0)
        except _NotFinite:
            return ""
        if self.scrubber is not None:
            raw = self.scrubber.raw(raw)
        return _dump_raw(raw)

    def resource(self, resource_spans: Any) -> tuple[tuple[dict[str, str], str], str]:
        """The resource's attributes and their JSON (encoded once for all its rows), and its service name."""
        attributes = self.attributes(resource_spans.resource.attributes)
        if self.tenant is not None and semconv.TENANT_ID in attributes:
            attributes[semconv.TENANT_ID] = self.tenant  # never let a resource claim another tenant
        return (attributes, _encode_row(attributes)), attributes.get(SERVICE_NAME, "")

    def events(self, span: Any) -> tuple[list[str], list[str], list[dict[str, str]]] | None:
        """The span's events as the three Events.* columns; None if one has a time beyond DateTime64(9)."""
        events: Sequence[Any] = span.events
        if any(event.time_unix_nano > _MAX_TIME_NS for event in events):
            return None
        if len(events) > self.max_events:
            self.dropped_events += len(events) - self.max_events
            events = events[: self.max_events]
        times = [_timestamp(event.time_unix_nano) for event in events]
        names = [self.text(event.name) for event in events]
        attributes = [self.attributes(event.attributes) for event in events]
        return times, names, attributes

    def links(self, span: Any) -> tuple[list[str], list[str], list[str], list[dict[str, str]]]:
        links: Sequence[Any] = span.links
        if len(links) > self.max_links:
            self.dropped_links += len(links) - self.max_links
            links = links[: self.max_links]
        traces: list[str] = []
        spans: list[str] = []
        states: list[str] = []
        attributes: list[dict[str, str]] = []
        for link in links:
            trace_id = link.trace_id
            span_id = link.span_id
            if len(trace_id) != 16 or trace_id == _ZERO_TRACE_ID or len(span_id) != 8 or span_id == _ZERO_SPAN_ID:
                self.dropped_links += 1  # a link to nothing says nothing; the span itself is fine
                continue
            traces.append(trace_id.hex())
            spans.append(span_id.hex())
            states.append(link.trace_state[: self.max_length])
            attributes.append(self.attributes(link.attributes))
        return traces, spans, states, attributes

    def status(self, pieces: Sequence[bytes]) -> tuple[str, int]:
        """The status message (redacted, cut) and code; the light schema reads a status given more
        than once as pieces, and joined they merge as protobuf merges a repeated message field."""
        parsed = Status.FromString(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        return (self.text(parsed.message) if parsed.message else ""), parsed.code

    def name(self, raw_name: str) -> tuple[str, str]:
        """A span name as stored (redacted, cut) and as JSON; memoized for this request unless cut."""
        truncated = self.truncated
        name = self.text(raw_name)
        known = (name, _json_string(name))
        if self.truncated == truncated and len(raw_name) <= _MEMO_MAX_CHARS:  # every truncation is counted
            if len(self.names) >= _MEMO_MAX_ENTRIES:
                self.names.clear()
            self.names[raw_name] = known
        return known

    def scope(
        self,
        scope_spans: Any,
        resource: tuple[dict[str, str], str],
        service: str,
        values: list[tuple[object, ...]],
        lines: list[str],
    ) -> None:
        """Append the row values and JSON line of every valid span of one scope.

        The hot loop: each field of a span is read once (a read costs a wrapper object), the
        checks are inline, and the JSON line is one f-string of pieces that need no escaping (hex
        ids, timestamps, kinds, status codes, integers) or were escaped once and memoized: the
        attributes, the span name, and the service, resource and scope columns every row of the
        scope shares. ``encode_rows`` of the same values writes the same bytes (tested).
        """
        scope = scope_spans.scope
        scope_name = self.text(scope.name)
        scope_version = self.text(scope.version)
        attributes_of = self.span_attributes
        names = self.names
        max_length = self.max_length
        oldest = self.oldest
        resource_attributes, resource_json = resource
        shared = (
            f'"ServiceName":{_json_string(service)},"ResourceAttributes":{resource_json},'
            f'"ScopeName":{_json_string(scope_name)},"ScopeVersion":{_json_string(scope_version)},"SpanAttributes":'
        )
        deadline = self.deadline
        for index, span in enumerate(scope_spans.spans):
            if deadline is not None and not index & 255 and time.monotonic() > deadline:
                raise DecodeTimeout("converting the request took too long")
            trace_id = span.trace_id
            span_id = span.span_id
            parent = span.parent_span_id
            start = span.start_time_unix_nano
            end = span.end_time_unix_nano
            # the checks of _problem inline, cheapest first; it names the reason of a span that fails them
            if (
                len(trace_id) != 16
                or len(span_id) != 8
                or (parent and len(parent) != 8)
                or not oldest <= start <= end <= _MAX_TIME_NS
                or not start
                or trace_id == _ZERO_TRACE_ID
                or span_id == _ZERO_SPAN_ID
            ):
                self.reject(_problem(trace_id, span_id, parent, start, end) or REASON_TOO_OLD)
                continue
            events = self.events(span) if span.events else _NO_EVENTS
            if events is None:
                self.reject(REASON_TIME_RANGE)
                continue
            links = self.links(span) if span.links else _NO_LINKS
            attributes, attributes_json = attributes_of(span.attributes)
            status = span.status  # an SDK sends an empty one (b"") for "unset"
            message, code = self.status(status) if status and (status[0] or len(status) > 1) else _NO_STATUS
            raw_name = span.name
            name, name_json = names.get(raw_name) or self.name(raw_name)
            trace_state = span.trace_state
            if len(trace_state) > max_length:  # W3C caps it at 512; a client may not
                self.truncated += 1
                trace_state = trace_state[:max_length]
            kind = span.kind
            kind_name = _KIND_NAMES[kind] if 0 <= kind < len(_KIND_NAMES) else _KIND_NAMES[0]
            status_name = _STATUS_NAMES[code] if 0 <= code < len(_STATUS_NAMES) else _STATUS_NAMES[0]
            seconds, fraction = divmod(start, 1_000_000_000)
            timestamp = f"{seconds:010d}.{fraction:09d}"  # padded: see _timestamp
            trace_hex = trace_id.hex()
            span_hex = span_id.hex()
            # all zeros is how some SDKs say "no parent"
            parent_hex = parent.hex() if parent and parent != _ZERO_SPAN_ID else ""
            duration = end - start
            values.append(
                (
                    timestamp,
                    trace_hex,
                    span_hex,
                    parent_hex,
                    trace_state,
                    name,
                    kind_name,
                    service,
                    resource_attributes,
                    scope_name,
                    scope_version,
                    attributes,
                    duration,
                    status_name,
                    message,
                    events,
                    links,
                )
            )
            lines.append(
                f'{{"Timestamp":"{timestamp}","TraceId":"{trace_hex}","SpanId":"{span_hex}",'
                f'"ParentSpanId":"{parent_hex}","TraceState":{_json_string(trace_state) if trace_state else _EMPTY},'
                f'"SpanName":{name_json},"SpanKind":"{kind_name}",{shared}{attributes_json},"Duration":{duration},'
                f'"StatusCode":"{status_name}","StatusMessage":{_json_string(message) if message else _EMPTY},'
                f"{_NESTED_JSON if events is _NO_EVENTS and links is _NO_LINKS else _nested_json(events, links)}}}"
            )


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


# --- encoding --------------------------------------------------------------------------------------
_ROW_JSON: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def _row_encoder() -> Callable[[Mapping[str, object]], str]:
    """``_ROW_JSON.encode``, minus the encoder it builds on every call when the C accelerator is there.

    ``json.JSONEncoder.encode`` makes a new C encoder per call, about a tenth of the cost of a
    row; one made up front with the same settings writes the same text.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return _ROW_JSON.encode
    try:
        encoder = make(None, _ROW_JSON.default, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    except TypeError:  # pragma: no cover - another signature in another Python
        return _ROW_JSON.encode

    def encode(row: Mapping[str, object]) -> str:
        return "".join(encoder(row, 0))

    return encode


_encode_row: Final = _row_encoder()
_json_string: Final[Callable[[str], str]] = json.encoder.encode_basestring  # the one _encode_row uses
_NO_EVENTS: Final[tuple[list[str], list[str], list[dict[str, str]]]] = ([], [], [])
_NO_STATUS: Final = ("", 0)
_TENANT_KEY_JSON: Final = _json_string(semconv.TENANT_ID)
_EMPTY: Final = '""'
_NO_LINKS: Final[tuple[list[str], list[str], list[str], list[dict[str, str]]]] = ([], [], [], [])
_NESTED_JSON: Final = ",".join(f'"{column}":[]' for column in _NESTED_COLUMNS)  # a span without events or links


def _nested_json(events: tuple[object, ...], links: tuple[object, ...]) -> str:
    """The Events.* and Links.* columns of a row, as ``_encode_row`` writes them inside the row."""
    return _encode_row(dict(zip(_NESTED_COLUMNS, (*events, *links), strict=True)))[1:-1]


_RESOURCE_COLUMN: Final = "ResourceAttributes"
# Stands in for a shared resource while a row is encoded; its JSON is then replaced by the
# resource's, encoded once. Should a row hold the same text elsewhere, the count check sees it.
_PLACEHOLDER: Final = "\x00agentwatch:resource\x00"
_PLACEHOLDER_JSON: Final = json.dumps(_PLACEHOLDER)
_SPLICE_MIN_ATTRIBUTES: Final = 3  # below this, copying the row costs more than it saves


def encode_rows(rows: Sequence[Row]) -> bytes:
    """JSONEachRow: one compact JSON object per row (non-ASCII kept as is), joined by newlines, UTF-8.

    ``convert`` gives all rows of a resource the same ``ResourceAttributes`` dict, often the
    biggest part of a row (SDK, host, process, Kubernetes attributes); it is encoded once per
    call and spliced into each row, which makes the same bytes as encoding every row whole.
    """
    resources: dict[int, str] = {}
    lines: list[str] = []
    for row in rows:
        resource = row.get(_RESOURCE_COLUMN)
        if type(resource) is not dict or len(resource) < _SPLICE_MIN_ATTRIBUTES:
            lines.append(_encode_row(row))
            continue
        fragment = resources.get(id(resource))  # the rows keep every resource alive: ids are unique
        if fragment is None:
            fragment = resources[id(resource)] = _encode_row(resource)
        text = _encode_row({**row, _RESOURCE_COLUMN: _PLACEHOLDER})
        if text.count(_PLACEHOLDER_JSON) == 1:
            lines.append(text.replace(_PLACEHOLDER_JSON, fragment))
        else:
            lines.append(_encode_row(row))
    return "\n".join(lines).encode("utf-8")
