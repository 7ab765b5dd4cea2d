"""Attribute values and rows as text, exactly as the OpenTelemetry Collector's ClickHouse exporter writes them.

Values as pdata ``Value.AsString`` renders them (``format_double`` for Go's float64 text,
``_dump_raw`` for arrays and key-value lists), and rows as JSONEachRow (``encode_rows``, and
``_encode_row`` and ``_json_string``, the encoders the converter writes its lines with, so that
both make the same bytes). ``otlp`` re-exports the public names.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from agentwatch.collectors.ingest.otlp_types import _NESTED_COLUMNS, Row

__all__ = ["encode_rows", "format_double"]


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


# --- rows ------------------------------------------------------------------------------------------
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
