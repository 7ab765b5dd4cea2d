"""The converter's hot loop: light-view spans → row values and JSONEachRow lines, validated, stamped, redacted.

``_Converter`` holds the state of one ``otlp.convert`` call: the limits, the memos it shares with
other calls (``otlp_memos``) and its counters. The ``REASON_*`` texts say why a span is
rejected; ``otlp`` re-exports them.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME

from agentwatch.collectors.ingest.inflate import DecodeTimeout
from agentwatch.collectors.ingest.otlp_encoding import (
    _NESTED_JSON,
    _double_text,
    _dump_raw,
    _encode_row,
    _json_string,
    _nested_json,
    _NotFinite,
    _raw,
)
from agentwatch.collectors.ingest.otlp_memos import _MEMO_MAX_CHARS, _MEMO_MAX_ENTRIES, _SECRET_MARKER, _memo, _Scrubber
from agentwatch.collectors.ingest.otlp_types import Limits
from agentwatch.instrumentation import semconv

__all__ = [
    "REASON_END_BEFORE_START",
    "REASON_NO_START",
    "REASON_PARENT_ID",
    "REASON_SPAN_ID",
    "REASON_TIME_RANGE",
    "REASON_TOO_OLD",
    "REASON_TRACE_ID",
]

_ZERO_TRACE_ID: Final = bytes(16)
_ZERO_SPAN_ID: Final = bytes(8)
_MAX_TIME_NS: Final = (1 << 63) - 1  # the end of DateTime64(9): 2262-04-11T23:47:16.854775807Z
_MAX_REASONS: Final = 5
_KIND_NAMES: Final = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
_STATUS_NAMES: Final = ("Unset", "Ok", "Error")
_NO_EVENTS: Final[tuple[list[str], list[str], list[dict[str, str]]]] = ([], [], [])
_NO_STATUS: Final = ("", 0)
_TENANT_KEY_JSON: Final = _json_string(semconv.TENANT_ID)
_EMPTY: Final = '""'
_NO_LINKS: Final[tuple[list[str], list[str], list[str], list[dict[str, str]]]] = ([], [], [], [])

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
