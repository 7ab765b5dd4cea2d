"""Test support for the collector's end-to-end tests: a running service, real OTLP clients, raw HTTP.

``running_collector`` starts an in-process ``CollectorService`` on ephemeral ports against a
``chdb://`` URL of the session engine (see ``_chstore``) and always stops it. The example agent's
spans are produced by the real instrumentation and shipped by the official OTel exporters;
hand-built OTLP/JSON and protobuf bodies go out with ``urllib`` so every byte on the wire is the
test's choice. Rows are counted in ClickHouse, never inferred from status codes.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.collectors._examples import load_example
from agentwatch.collectors.config.settings import CollectorSettings
from agentwatch.collectors.service.collector import CollectorService
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.instrumentation import RunAttributesSpanProcessor

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


# --- a running collector ----------------------------------------------------------------------


@dataclass
class Collector:
    """A started in-process collector and a store on its database, for assertions."""

    service: CollectorService
    store_or_none: ClickHouseStore | None

    @property
    def store(self) -> ClickHouseStore:
        assert self.store_or_none is not None, "this collector's store is not an embedded one"
        return self.store_or_none

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"

    @property
    def traces_url(self) -> str:
        return f"{self.base_url}/v1/traces"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.service.grpc_port}"

    def drain(self, timeout_s: float = 20.0) -> None:
        """Wait until every acknowledged span is in ClickHouse."""
        assert self.service.writer.wait_until_drained(timeout_s), "spool did not drain"

    def count(self, table: str, where: str = "1") -> int:
        rows = self.store.query(f"SELECT count() AS n FROM {table} WHERE {where}")
        return int(str(rows[0]["n"]))

    def query(self, sql: str, parameters: Mapping[str, object] | None = None) -> list[dict[str, object]]:
        return self.store.query(sql, parameters)

    def post(self, body: bytes, headers: Mapping[str, str] | None = None, *, path: str = "/v1/traces") -> Reply:
        return http_request(f"{self.base_url}{path}", body, headers)

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return http_request(f"{self.base_url}{path}", None, headers)


def collector_settings(clickhouse_url: str, workdir: Path, **overrides: Any) -> CollectorSettings:
    """Settings for a test collector: ephemeral loopback ports, a spool under ``workdir``, fast batches.

    /metrics is off unless asked for (``metrics="127.0.0.1:0"``): its server takes half a second to stop.
    """
    base = CollectorSettings(
        clickhouse=clickhouse_url,
        spool=str(workdir / "spool"),
        otlp_http="127.0.0.1:0",
        otlp_grpc="127.0.0.1:0",
        metrics="",
        batch_timeout_seconds=0.05,
    )
    return replace(base, **overrides).validate()


@contextlib.contextmanager
def running_collector(
    clickhouse_url: str, workdir: Path, *, wait_ready: bool = True, **overrides: Any
) -> Iterator[Collector]:
    """Start a collector, yield it with a store on the same database, and always stop both."""
    settings = collector_settings(clickhouse_url, workdir, **overrides)
    service = CollectorService(settings)
    store: ClickHouseStore | None = None
    try:
        service.start()
        if wait_ready:
            assert service.wait_ready(60), f"collector not ready: {service.writer.last_error}"
        store = ClickHouseStore.open(clickhouse_url) if clickhouse_url.startswith("chdb://") else None
        yield Collector(service=service, store_or_none=store)
    finally:
        service.stop(drain_timeout_s=5)
        if store is not None:
            store.close()


# --- raw HTTP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    url: str, body: bytes | None, headers: Mapping[str, str] | None = None, *, timeout_s: float = 30.0
) -> Reply:
    """One HTTP request with urllib (POST when there is a body); HTTP errors are replies, not exceptions."""
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Reply(int(response.status), dict(response.headers.items()), bytes(response.read()))
    except urllib.error.HTTPError as exc:
        return Reply(int(exc.code), dict(exc.headers.items()), bytes(exc.read()))


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


# --- spans from the real instrumentation --------------------------------------------------------


@dataclass(frozen=True)
class ExampleRun:
    """What the instrumentation itself reported about one example run."""

    run_id: str
    tenant: str
    stop_reason: str
    steps: int
    tool_calls: int
    cost_usd: float


@dataclass
class SentScenarios:
    """The spans the example agent produced (a copy of what the exporter under test shipped)."""

    spans: list[ReadableSpan] = field(default_factory=list)
    runs: list[ExampleRun] = field(default_factory=list)

    def tool_dispositions(self) -> list[tuple[str, str, str]]:
        """(run id, tool, disposition) of every tool span."""
        from agentwatch.instrumentation import semconv

        out = []
        for span in self.spans:
            attributes = span.attributes or {}
            if attributes.get(semconv.GEN_AI_OPERATION_NAME) == semconv.OP_EXECUTE_TOOL:
                out.append(
                    (
                        str(attributes[semconv.RUN_ID]),
                        str(attributes[semconv.GEN_AI_TOOL_NAME]),
                        str(attributes[semconv.TOOL_DISPOSITION]),
                    )
                )
        return sorted(out)


def run_example_agent(
    exporter: SpanExporter, *, batch: bool = False, track: str = "stable", service: str = "support-bot"
) -> SentScenarios:
    """Run the example agent's five tickets with ``exporter`` behind a Simple- or BatchSpanProcessor.

    A SimpleSpanProcessor sends one span per request as it ends; a BatchSpanProcessor sends many
    spans (of several traces) per request, as production SDKs do. Shutting the provider down
    flushes the batch. The in-memory copy is what was sent.
    """
    copy = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(RunAttributesSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(copy))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    example = load_example("custom_agent")
    try:
        results = example.run_scenarios(tracer_provider=provider, track=track)
    finally:
        provider.shutdown()
    tenants = [tenant for tenant, _ in example.SCENARIOS]
    runs = [
        ExampleRun(run.run_id, tenant, str(run.stop_reason), run.steps, run.tool_calls, float(run.cost_usd))
        for tenant, (_, run) in zip(tenants, results, strict=True)
    ]
    return SentScenarios(spans=list(copy.get_finished_spans()), runs=runs)


# --- hand-built OTLP ----------------------------------------------------------------------------


def json_value(value: object) -> dict[str, object]:
    """A Python value as an OTLP/JSON AnyValue (int64 as a decimal string, as the spec's JSON mapping says)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, bytes):
        import base64

        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [json_value(item) for item in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": json_attributes(value)}}
    return {"stringValue": str(value)}


def json_attributes(attributes: Mapping[str, object]) -> list[dict[str, object]]:
    return [{"key": key, "value": json_value(value)} for key, value in attributes.items()]


def json_span(
    *,
    trace_id: str,
    span_id: str,
    start_ns: int,
    end_ns: int,
    name: str = "work",
    parent_span_id: str = "",
    attributes: Mapping[str, object] | None = None,
    **extra: object,
) -> dict[str, object]:
    span: dict[str, object] = {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent_span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(end_ns),
        "attributes": json_attributes(attributes or {}),
    }
    span.update(extra)
    return span


def json_request(
    spans: Sequence[Mapping[str, object]],
    *,
    service: str = "hand-built",
    resource: Mapping[str, object] | None = None,
    scope: tuple[str, str] = ("hand.scope", "0.1"),
) -> bytes:
    """An OTLP/JSON ExportTraceServiceRequest with one resource and one scope."""
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": json_attributes({"service.name": service, **(resource or {})})},
                "scopeSpans": [{"scope": {"name": scope[0], "version": scope[1]}, "spans": list(spans)}],
            }
        ]
    }
    return json.dumps(document).encode()


def random_trace_id() -> str:
    return os.urandom(16).hex()


def random_span_id() -> str:
    return os.urandom(8).hex()


# --- process memory -----------------------------------------------------------------------------


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of ``pid`` (default: this process) from /proc."""
    path = Path(f"/proc/{pid or 'self'}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in {path}")
