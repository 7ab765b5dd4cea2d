"""The ingest pipeline shared by the OTLP/HTTP and OTLP/gRPC receivers.

auth → decompress (bounded) → parse → validate → tenant stamp → redact → encode → fsynced spool →
acknowledge → derive metrics. ``200`` therefore means durable: the spans are in the spool, and the
writer (``writer.py``) moves them to ClickHouse. Status codes follow the OTLP/HTTP spec: 400 for bad
data (never retried), 401/403 auth, 413 too large (checked after decompression), 415 unknown content
type or encoding, 429/503 with ``Retry-After`` for backpressure; rejected spans of an otherwise good
request are reported in ``partial_success``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field

from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from agentwatch.collectors.config.auth import Authenticator, AuthError, Scope
from agentwatch.collectors.config.settings import CollectorSettings
from agentwatch.collectors.ingest.assembly import Observation, RunAssembler, Staged
from agentwatch.collectors.ingest.inflate import (
    BadEncoding,
    DecodeTimeout,
    InvalidCompressedBody,
    PayloadTooLarge,
    decompress,
)
from agentwatch.collectors.ingest.otlp import (
    Converted,
    Limits,
    OtlpDecodeError,
    TooManySpans,
    convert,
    parse_json,
    parse_protobuf,
)
from agentwatch.collectors.metrics import CollectorMetrics
from agentwatch.collectors.store.spool import Spool, SpoolError, SpoolFull
from agentwatch.instrumentation.pricing import PriceTable, load_price_file
from agentwatch.instrumentation.redaction import Redactor

log = logging.getLogger("agentwatch.collector")

_SATURATED_AFTER_S = 1.0

# How a request refused while decoding is answered: status, rejection reason counted (none for an
# encoding we do not speak), and whether the client should retry. Looked up along the exception's MRO,
# so TooManySpans is found before its base OtlpDecodeError.
_REFUSALS: dict[type[Exception], tuple[int, str, bool]] = {
    PayloadTooLarge: (413, "limit", False),
    TooManySpans: (413, "limit", False),
    BadEncoding: (415, "", False),
    InvalidCompressedBody: (400, "invalid", False),
    OtlpDecodeError: (400, "invalid", False),
    DecodeTimeout: (503, "busy", True),
}
_REFUSED = tuple(_REFUSALS)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """What a receiver sends back; the gRPC receiver maps ``status`` onto a gRPC code."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    accepted: int = 0
    rejected: int = 0
    message: str = ""


def media_type(content_type: str | None) -> str | None:
    """``application/json; charset=utf-8`` → ``application/json``; None for types OTLP does not define."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in {PROTOBUF, "application/protobuf"}:
        return PROTOBUF
    if base == JSON:
        return JSON
    return None


def _status_body(code: int, message: str, kind: str) -> bytes:
    if kind == JSON:
        return json.dumps({"code": code, "message": message}).encode()
    encoded: bytes = Status(code=code, message=message).SerializeToString()
    return encoded


class Pipeline:
    """Turns one export request into a durable spool record and a spec-conformant reply."""

    def __init__(
        self,
        *,
        settings: CollectorSettings,
        spool: Spool,
        metrics: CollectorMetrics,
        authenticator: Authenticator,
        redactor: Redactor | None,
    ) -> None:
        self._settings = settings
        self._spool = spool
        self._metrics = metrics
        self._auth = authenticator
        self._redactor = redactor
        self._limits = Limits(
            max_spans_per_request=settings.max_spans_per_request,
            max_attribute_length=settings.max_attribute_length,
            max_attribute_key_length=settings.max_attribute_key_length,
            max_attributes_per_span=settings.max_attributes_per_span,
        )
        self._inflight_bytes = 0
        self._inflight_lock = threading.Lock()
        self._decode_slots = threading.BoundedSemaphore(settings.max_concurrent_decodes)
        self._busy_slots = 0
        self._saturated_since: float | None = None
        self.assembler: RunAssembler | None = None
        if settings.dialects:
            # a price file replaces the shipped list (validated with the settings)
            prices = load_price_file(settings.pricing_file) if settings.pricing_file else PriceTable.default()
            self.assembler = RunAssembler(prices, idle_seconds=settings.dialect_trace_idle_seconds)

    def refusal(self) -> str | None:
        """Why the pipeline cannot take work now, else None: what /readyz reports.

        Every decode slot busy for over a second (requests are queueing), or a spool too full for
        one more request of the largest size.
        """
        with self._inflight_lock:
            since = self._saturated_since
        if since is not None and (busy := time.monotonic() - since) > _SATURATED_AFTER_S:
            return f"all {self._settings.max_concurrent_decodes} decode slots busy for {busy:.1f} s"
        free = self._spool.capacity_bytes - self._spool.pending_bytes
        if free < min(self._settings.max_body_bytes, self._spool.capacity_bytes // 20):
            return f"spool nearly full ({free} of {self._spool.capacity_bytes} bytes free)"
        return None

    def _take_slot(self) -> bool:
        """A decode slot, waiting up to the decode timeout: CPU work per request is bounded in count and time."""
        if not self._decode_slots.acquire(timeout=self._settings.decode_timeout_seconds):
            return False
        with self._inflight_lock:
            self._busy_slots += 1
            if self._busy_slots == self._settings.max_concurrent_decodes:
                self._saturated_since = time.monotonic()
        return True

    def _give_slot(self) -> None:
        with self._inflight_lock:
            self._busy_slots -= 1
            self._saturated_since = None
        self._decode_slots.release()

    def _error(self, status: int, message: str, kind: str, transport: str, *, retry: bool = False) -> Reply:
        # google.rpc.Code values carried in the Status body, as the OTLP spec asks
        grpc_code = {400: 3, 401: 16, 403: 7, 413: 3, 415: 3, 429: 8, 503: 14}.get(status, 13)
        headers = {"Retry-After": str(self._settings.retry_after_seconds)} if retry else {}
        self._metrics.record_request(transport, status)
        return Reply(status, _status_body(grpc_code, message, kind), kind, headers, message=message)

    def _reserve(self, size: int) -> bool:
        with self._inflight_lock:
            if self._inflight_bytes and self._inflight_bytes + size > self._settings.max_inflight_bytes:
                return False
            self._inflight_bytes += size
            return True

    def _release(self, size: int) -> None:
        with self._inflight_lock:
            self._inflight_bytes -= size

    def export(
        self,
        *,
        body: bytes,
        content_type: str | None,
        content_encoding: str | None,
        authorization: str | None,
        transport: str,
    ) -> Reply:
        kind = media_type(content_type)
        reply_kind = kind or PROTOBUF
        try:
            principal = self._auth.authenticate(authorization, Scope.INGEST)
        except AuthError as exc:
            self._metrics.record_rejected("auth", 0)
            return self._error(exc.status, exc.message, reply_kind, transport)
        if kind is None:
            return self._error(415, f"unsupported Content-Type {content_type!r}", reply_kind, transport)
        reserved = len(body)
        if not self._reserve(reserved):
            return self._error(429, "too many bytes in flight, retry later", kind, transport, retry=True)
        try:
            if not self._take_slot():
                self._metrics.record_rejected("busy", 0)
                return self._error(
                    503, "collector is busy decoding other requests, retry later", kind, transport, retry=True
                )
            deadline = time.monotonic() + self._settings.decode_timeout_seconds
            try:
                raw = decompress(body, content_encoding, self._settings.max_body_bytes, deadline=deadline)
                if raw is not body:
                    if not self._reserve(len(raw)):
                        return self._error(429, "too many bytes in flight, retry later", kind, transport, retry=True)
                    reserved += len(raw)
                converted = self._convert(raw, kind, principal.tenant, deadline)
            except _REFUSED as exc:
                return self._refuse(exc, kind, transport)
            finally:
                self._give_slot()
            return self._store(raw, converted, kind, principal.tenant, transport)
        finally:
            self._release(reserved)

    def _convert(self, raw: bytes, kind: str, tenant: str | None, deadline: float) -> Converted:
        """Parse and convert the decompressed body under the request's deadline."""
        limits = self._limits
        if self._settings.traces_ttl_days:
            # a span older than the TTL would be dropped by ClickHouse on insert after we said 200:
            # refuse it in partial_success instead (one hour of slack for the TTL's day rounding)
            retention_ns = (self._settings.traces_ttl_days * 86_400 - 3_600) * 1_000_000_000
            limits = dataclasses.replace(limits, oldest_start_ns=time.time_ns() - retention_ns)
        request = parse_protobuf(raw) if kind == PROTOBUF else parse_json(raw)
        # protobuf: the converter reads the body again rather than a re-serialization of the request
        wire = raw if kind == PROTOBUF else None
        return convert(request, tenant=tenant, limits=limits, redactor=self._redactor, wire=wire, deadline=deadline)

    def _refuse(self, exc: Exception, kind: str, transport: str) -> Reply:
        """The answer to a request refused while decoding, from the first class of ``exc`` in ``_REFUSALS``."""
        status, reason, retry = next(_REFUSALS[cls] for cls in type(exc).__mro__ if cls in _REFUSALS)
        if reason:
            self._metrics.record_rejected(reason, 0)
        message = f"{exc}, retry later" if retry else str(exc)
        return self._error(status, message, kind, transport, retry=retry)

    def _store(self, raw: bytes, converted: Converted, kind: str, tenant: str | None, transport: str) -> Reply:
        """Spool the accepted rows (the request's durability point) and build the reply."""
        total = converted.accepted + converted.rejected
        self._metrics.record_received(transport, total)
        if converted.rejected:
            self._metrics.record_rejected("invalid", converted.rejected)
        message = "; ".join(converted.rejection_reasons)
        if converted.accepted:
            # the digest covers the tenant too: the same body from two tenants is two requests
            digest = hashlib.sha256((tenant or "").encode() + b"\x00" + raw).digest()
            if self._spool.seen(digest):
                # a client retry of a request we already made durable: acknowledge, store nothing twice
                log.debug("request already spooled (%d spans): acknowledged again", converted.accepted)
            else:
                observations: list[Observation] = []
                try:
                    self._spool_assembled(converted, digest, observations)
                except SpoolFull:
                    self._metrics.record_rejected("spool_full", converted.accepted)
                    return self._error(503, "spool is full, retry later", kind, transport, retry=True)
                except SpoolError as exc:
                    log.error("spool write failed: %s", exc)
                    self._metrics.record_rejected("spool_error", converted.accepted)
                    return self._error(503, "spool unavailable, retry later", kind, transport, retry=True)
                finally:
                    if observations:
                        self._metrics.observe_spans(observations)
                self._metrics.observe_spans(converted.spans)
        self._metrics.record_request(transport, 200, body_bytes=len(raw))
        return Reply(
            200,
            _success_body(converted.rejected, message, kind),
            kind,
            accepted=converted.accepted,
            rejected=converted.rejected,
            message=message,
        )

    def _spool_assembled(self, converted: Converted, digest: bytes, observations: list[Observation]) -> None:
        """Spool the rows, with the runs of foreign traces whose roots they hold read and stamped first.

        The assembler's lock spans the spool write, so the spans of one trace are read in the order
        they were stored, and a request the spool refused is unread again (its retry is read anew).
        ``observations`` receives what the metrics should count beyond the rows' own spans.
        """
        assembler = self.assembler
        if assembler is None:
            self._spool.append(converted.payload(), spans=converted.accepted, digest=digest)
            return
        with assembler.lock:
            observations.extend(assembler.expire())
            staged: Staged = assembler.stage(converted)
            try:
                self._spool.append(converted.payload(), spans=converted.accepted, digest=digest)
            except BaseException:
                assembler.rollback(staged)
                raise
        observations.extend(staged.observations)


def _success_body(rejected: int, message: str, kind: str) -> bytes:
    if kind == JSON:
        if not rejected:
            return b"{}"
        return json.dumps({"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}}).encode()
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected, error_message=message))
    encoded: bytes = response.SerializeToString()
    return encoded
