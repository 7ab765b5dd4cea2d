"""What the OTLP → rows conversion promises: its errors, its limits, the row columns and its result.

The leaf of the ``otlp*`` modules: ``otlp`` re-exports these names, and the decoders, the
converter and the row encoder build on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, TypeAlias

__all__ = ["ROW_COLUMNS", "Converted", "Limits", "OtlpDecodeError", "Row", "TooManySpans"]

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
            self._rows = [self.row(index) for index in range(len(self.values))]
        return self._rows

    def row(self, index: int) -> Row:
        """One accepted span's row (made anew from its values, which may have changed since ``rows``)."""
        values = self.values[index]
        row: Row = dict(zip(_FLAT_COLUMNS, values[:_NESTED_AT], strict=True))
        nested = (*values[_NESTED_AT], *values[_NESTED_AT + 1])  # type: ignore[misc]
        for column, items in zip(_NESTED_COLUMNS, nested, strict=True):
            row[column] = list(items)
        return row

    @property
    def spans(self) -> list[tuple[dict[str, str], int]]:
        """``(SpanAttributes, Duration)`` of each accepted span: what ``CollectorMetrics.observe_spans`` reads."""
        return [(values[_ATTRIBUTES_AT], values[_DURATION_AT]) for values in self.values]  # type: ignore[misc]

    def payload(self) -> bytes:
        """The JSONEachRow payload of the accepted spans: ``encode_rows(self.rows)``, byte for byte."""
        return "\n".join(self.lines).encode("utf-8")
