"""A light view of an OTLP trace request: its wire bytes read through a schema of our own.

``_LiteRequest`` reads the bytes of an ``ExportTraceServiceRequest`` (same field numbers, same
wire types) but hands back each attribute as the bytes of its KeyValue and skips what the rows
do not need; ``_LITE_SCHEMA`` lists what it reads. The comment below says why the converter
reads this view rather than the real messages.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

__all__: list[str] = []

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
