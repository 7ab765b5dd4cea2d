"""Test support for the read side: the example agent's real spans, as ``otel_traces`` rows, in a store.

The rows come from the real instrumentation (``examples/custom_agent.py``'s five tickets, once on
the stable track and once on the canary track) converted by the collector's own OTLP code, so the
queries are tested against exactly what the collector writes, and the materialized views fill
``agent_runs`` and ``agent_tool_calls`` from them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from _chrows import new_token
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.collectors._examples import load_example
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.collectors.store.schema import TRACES_TABLE
from agentwatch.instrumentation import semconv

Row = dict[str, object]


@dataclass(frozen=True)
class RunInfo:
    """What the instrumentation reported about one example run (the expected answer)."""

    run_id: str
    tenant: str
    track: str
    stop_reason: str
    ticket: str
    trace_id: str
    spans: int
    steps: int
    tool_calls: int


@dataclass(frozen=True)
class Fleet:
    """Rows of ten example runs (five tickets × stable/canary) and what each run should read back as."""

    rows: tuple[Row, ...]
    runs: tuple[RunInfo, ...]

    def run(self, *, tenant: str, stop_reason: str, track: str = "stable") -> RunInfo:
        found = [r for r in self.runs if (r.tenant, r.stop_reason, r.track) == (tenant, stop_reason, track)]
        assert found, f"no example run {tenant}/{stop_reason}/{track}"
        return found[0]

    def load(self, store: ClickHouseStore) -> None:
        from agentwatch.collectors.ingest.otlp import encode_rows

        store.insert_json_rows(TRACES_TABLE, encode_rows(self.rows), dedup_token=new_token())


def _record(track: str) -> tuple[list[ReadableSpan], list[tuple[str, str, str, str, int, int]]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    example = load_example("custom_agent")
    results = example.run_scenarios(tracer_provider=provider, track=track)
    provider.shutdown()
    tenants = [tenant for tenant, _ in example.SCENARIOS]
    facts = [
        (run.run_id, tenant, str(run.stop_reason), ticket, run.steps, run.tool_calls)
        for tenant, (ticket, run) in zip(tenants, results, strict=True)
    ]
    return list(exporter.get_finished_spans()), facts


def to_rows(spans: Sequence[ReadableSpan]) -> list[Row]:
    """Spans → contract rows through the collector's OTLP decoder (protobuf on the wire, as in production)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from agentwatch.collectors.ingest.otlp import Limits, convert, parse_protobuf

    request = parse_protobuf(encode_spans(spans).SerializeToString())
    result = convert(request, tenant=None, limits=Limits(), redactor=None)
    assert result.rejected == 0, result.rejection_reasons
    return result.rows


@functools.cache
def fleet() -> Fleet:
    """The example fleet, recorded once per test process (timestamps are real, i.e. within the TTL)."""
    rows: list[Row] = []
    runs: list[RunInfo] = []
    for track in ("stable", "canary"):
        spans, facts = _record(track)
        rows.extend(to_rows(spans))
        for run_id, tenant, stop_reason, ticket, steps, tool_calls in facts:
            run_span = next(s for s in spans if (s.attributes or {}).get(semconv.RUN_ID) == run_id)
            trace_id = f"{run_span.context.trace_id:032x}"
            count = sum(1 for s in spans if s.context.trace_id == run_span.context.trace_id)
            runs.append(RunInfo(run_id, tenant, track, stop_reason, ticket, trace_id, count, steps, tool_calls))
    return Fleet(rows=tuple(rows), runs=tuple(runs))
