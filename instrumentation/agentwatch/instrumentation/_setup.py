"""``configure()``: a tracer provider with an OTLP exporter, and the settings runs use by default.

Arguments win over a config file, which wins over the standard ``OTEL_*`` variables (the OTLP
exporter reads ``OTEL_EXPORTER_OTLP_*`` itself when no endpoint is given). An existing
``tracer_provider`` can be passed instead, for applications that already set up OpenTelemetry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from agentwatch.instrumentation._config import AgentWatchConfig
from agentwatch.instrumentation._installed import install
from agentwatch.instrumentation._processor import RunAttributesSpanProcessor
from agentwatch.instrumentation._settings import InstrumentationSettings
from agentwatch.instrumentation.pricing import PriceTable
from agentwatch.instrumentation.redaction import Redactor


def configure(
    *,
    service_name: str | None = None,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    tracer_provider: TracerProvider | None = None,
    exporter: SpanExporter | None = None,
    span_processor: SpanProcessor | None = None,
    config: AgentWatchConfig | None = None,
    capture_content: bool | None = None,
    price_table: PriceTable | None = None,
    set_global: bool = True,
    environ: Mapping[str, str] | None = None,
) -> TracerProvider:
    """Set up tracing for agentwatch and return the tracer provider in use.

    With no ``tracer_provider``, a new one is created with ``service_name`` (or
    ``OTEL_SERVICE_NAME``) and a batch processor exporting over OTLP/HTTP to ``endpoint`` (or the
    ``OTEL_EXPORTER_OTLP_*`` variables); ``exporter`` or ``span_processor`` replace that export.
    The run-attributes processor is added either way, so spans of other instrumentations inside
    a run carry its run id. ``set_global`` also installs the new provider as OpenTelemetry's
    global one (when none is set yet).
    """
    env = os.environ if environ is None else environ
    overrides: dict[str, object] = {}
    if config is not None:
        overrides.update(
            capture_content=config.logging.capture_content,
            max_content_length=config.logging.max_content_length,
            redactor=Redactor(max_length=config.logging.max_content_length),
            audit_tool_calls=config.logging.tool_calls,
            audit_stop_reasons=config.logging.stop_reasons,
        )
        if config.pricing:
            overrides["price_table"] = PriceTable.default().with_overrides(config.pricing)
    if capture_content is not None:
        overrides["capture_content"] = capture_content
    if price_table is not None:
        overrides["price_table"] = price_table
    settings = InstrumentationSettings.from_env(env)
    settings = replace(settings, **overrides) if overrides else settings  # type: ignore[arg-type]

    if tracer_provider is None:
        name = service_name or env.get("OTEL_SERVICE_NAME") or "agentwatch-agent"
        tracer_provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
        if span_processor is None:
            if exporter is None:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                traces_endpoint = None if endpoint is None else _traces_endpoint(endpoint)
                exporter = OTLPSpanExporter(endpoint=traces_endpoint, headers=dict(headers) if headers else None)
            span_processor = BatchSpanProcessor(exporter)
        tracer_provider.add_span_processor(RunAttributesSpanProcessor())
        tracer_provider.add_span_processor(span_processor)
        if set_global and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(tracer_provider)
    else:
        tracer_provider.add_span_processor(RunAttributesSpanProcessor())
        if span_processor is not None:
            tracer_provider.add_span_processor(span_processor)
        elif exporter is not None:
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    install(settings, tracer_provider)
    return tracer_provider


def _traces_endpoint(endpoint: str) -> str:
    # The signal path is appended like the exporter does for OTEL_EXPORTER_OTLP_ENDPOINT.
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def reset_configuration() -> None:
    """Forget what ``configure()`` installed (for tests and for re-configuring a process)."""
    install(None, None)
