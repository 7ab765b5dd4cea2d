"""Test support for replay: the example agents' runs recorded with content capture, as stored rows.

The runs are real (the examples' five tickets on a runtime, or one ticket whose tool fails), their
spans go through the collector's own OTLP decoding and redaction, and inserting the rows into a
store fills ``agent_runs`` and ``agent_tool_calls`` through the materialized views, as in production.
Recording is cached per process; loading into a fresh database per test is cheap.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from _chrows import new_token
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.collectors._examples import load_example
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.collectors.store.schema import TRACES_TABLE
from agentwatch.instrumentation import InstrumentationSettings, load_config, semconv
from agentwatch.instrumentation.redaction import Redactor

Row = dict[str, object]
ORDER_TICKET = "Where is my order 1234?"


@dataclass(frozen=True)
class RecordedFleet:
    """Stored rows of some runs and, per run, (run id, ticket, stop reason) as the runtime reported them."""

    rows: tuple[Row, ...]
    runs: tuple[tuple[str, str, str], ...]

    @property
    def run_ids(self) -> list[str]:
        return [run_id for run_id, _, _ in self.runs]

    def stop_reason(self, run_id: str) -> str:
        return next(reason for rid, _, reason in self.runs if rid == run_id)

    def load(self, store: ClickHouseStore) -> None:
        from agentwatch.collectors.ingest.otlp import encode_rows

        store.insert_json_rows(TRACES_TABLE, encode_rows(list(self.rows)), dedup_token=new_token())


def capture_settings(*, capture: bool = True) -> InstrumentationSettings:
    """Test settings (strict under pytest) with content capture on or off."""
    return replace(InstrumentationSettings.from_env({}), capture_content=capture)


def to_rows(spans: Sequence[ReadableSpan]) -> list[Row]:
    """Spans → stored rows as the collector makes them: protobuf on the wire, then its decoder and redactor."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from agentwatch.collectors.ingest.otlp import Limits, convert, parse_protobuf

    request = parse_protobuf(encode_spans(spans).SerializeToString())
    result = convert(request, tenant=None, limits=Limits(), redactor=Redactor())
    assert result.rejected == 0, result.rejection_reasons
    return result.rows


def _provider() -> tuple[TracerProvider, InstrumentationSettings, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, capture_settings(), exporter


@functools.cache
def recorded_scenarios(example: str, *, capture: bool = True) -> RecordedFleet:
    """The five tickets of ``examples/<example>.py``, recorded with content capture on (or off)."""
    provider, settings, exporter = _provider()
    results = load_example(example).run_scenarios(
        tracer_provider=provider, settings=replace(settings, capture_content=capture)
    )
    provider.shutdown()
    runs = tuple((run.run_id, ticket, str(run.stop_reason)) for ticket, run in results)
    return RecordedFleet(rows=tuple(to_rows(exporter.get_finished_spans())), runs=runs)


@functools.cache
def recorded_tool_error() -> RecordedFleet:
    """The order ticket on the custom loop with no order-service credentials: the tool raises, the run errors."""
    custom = load_example("custom_agent")
    config = load_config(custom.CONFIG_PATH)
    provider, settings, exporter = _provider()
    gateway = config.gateway(custom.TOOLS, approver=custom.on_call_approver)  # no credentials provider
    try:
        custom.handle_ticket(
            ORDER_TICKET, config=config, tenant_id="acme", tracer_provider=provider, gateway=gateway, settings=settings
        )
    except PermissionError:
        pass  # the custom loop re-raises a tool's error after ending the run with `error`
    else:
        raise AssertionError("the order lookup was expected to fail without credentials")
    finally:
        gateway.close()
    provider.shutdown()
    spans = exporter.get_finished_spans()
    [run] = [s for s in spans if (s.attributes or {}).get(semconv.GEN_AI_OPERATION_NAME) == semconv.OP_INVOKE_AGENT]
    attributes = run.attributes or {}
    runs = ((str(attributes[semconv.RUN_ID]), ORDER_TICKET, str(attributes[semconv.STOP_REASON])),)
    return RecordedFleet(rows=tuple(to_rows(spans)), runs=runs)
