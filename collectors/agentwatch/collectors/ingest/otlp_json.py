"""OTLP/JSON → ``ExportTraceServiceRequest``: every field checked, then one protobuf message built.

The spec's JSON mapping (lowerCamelCase names, hex ids, 64-bit integers as strings, enums by
number or name) is checked field by field into plain dicts that upb turns into the message in
one call; any error names the field's path, never its value. ``otlp`` re-exports ``parse_json``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from agentwatch.collectors.ingest.otlp_types import OtlpDecodeError

__all__ = ["parse_json"]

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
