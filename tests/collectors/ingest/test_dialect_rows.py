"""A foreign run through a real collector: OTLP from the official exporter, rows in ClickHouse, metrics.

The spans have OpenInference's shape (``_dialect_shapes``) and arrive over several requests, the
root last, as a BatchSpanProcessor sends them; the views of migration 5 must turn the stamped root
into one ``agent_runs`` row and its tool list into ``agent_tool_calls`` rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _dialect_shapes import child, openinference_run
from _otlp_clients import Collector, running_collector
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from agentwatch.collectors import metric_names as m
from agentwatch.collectors.drift.analyzer import DriftOptions, analyze
from agentwatch.collectors.store.schema import RUNS_TABLE, TOOL_CALLS_TABLE
from agentwatch.instrumentation import semconv

pytestmark = pytest.mark.integration

pytest_plugins = ["_chstore"]


@pytest.fixture
def collector(clickhouse_url: str, tmp_path: Path) -> Iterator[Collector]:
    with running_collector(clickhouse_url, tmp_path) as running:
        yield running


def provider_for(collector: Collector, **resource: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot", **resource}))
    # one request per span: the root's request comes last, after every other span is stored
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector.traces_url, timeout=10)))
    return provider


def sample(collector: Collector, name: str, labels: dict[str, str]) -> float:
    value = collector.service.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_an_openinference_run_lands_in_agent_runs_and_agent_tool_calls(collector: Collector) -> None:
    provider = provider_for(collector, **{"service.version": "3.0", "deployment.environment.name": "canary"})
    openinference_run(provider.get_tracer("openinference.instrumentation.openai_agents"))
    provider.shutdown()
    collector.drain()

    (run,) = collector.query(
        f"SELECT RunId, TraceId, AgentName, AgentVersion, Track, Runtime, StopReason, Steps, ToolCalls, LlmCalls, "
        f"InputTokens, OutputTokens, CostUsd, UnpricedLlmCalls, ConversationId FROM {RUNS_TABLE}"
    )
    assert run["RunId"] == run["TraceId"]
    assert (run["AgentName"], run["AgentVersion"], run["Track"], run["Runtime"]) == (
        "Assistant",
        "3.0",
        "canary",
        "openai_agents",
    )
    assert (run["StopReason"], run["Steps"], run["ToolCalls"], run["LlmCalls"]) == ("completed", 2, 1, 2)
    assert (run["InputTokens"], run["OutputTokens"], run["UnpricedLlmCalls"]) == (33, 21, 0)
    assert float(str(run["CostUsd"])) > 0
    assert run["ConversationId"] == "conv-1"

    (tool,) = collector.query(
        f"SELECT RunId, AgentName, Track, ToolName, Disposition, Outcome, SpanId FROM {TOOL_CALLS_TABLE}"
    )
    assert (tool["RunId"], tool["AgentName"], tool["Track"], tool["ToolName"]) == (
        run["RunId"],
        "Assistant",
        "canary",
        "lookup_order",
    )
    assert (tool["Disposition"], tool["Outcome"]) == ("ungoverned", "ok")
    stored_tool = collector.query(
        "SELECT SpanId FROM otel_traces WHERE SpanName = 'lookup_order'",
    )
    assert tool["SpanId"] == stored_tool[0]["SpanId"]

    labels = {"agent": "Assistant", "track": "canary"}
    assert sample(collector, m.RUNS_TOTAL, {**labels, "stop_reason": "completed"}) == 1
    assert sample(collector, m.LLM_TOKENS_TOTAL, {**labels, "model": "gpt-4o-mini", "direction": "input"}) == 33
    assert sample(collector, m.LLM_TOKENS_TOTAL, {**labels, "model": "gpt-4o-mini", "direction": "output"}) == 21
    tool_labels = {**labels, "tool": "lookup_order", "disposition": "ungoverned", "outcome": "ok"}
    assert sample(collector, m.TOOL_CALLS_TOTAL, tool_labels) == 1


def test_semconv_tool_spans_make_one_row_each_and_agentwatch_rows_are_unchanged(collector: Collector) -> None:
    provider = provider_for(collector)
    tracer = provider.get_tracer("opentelemetry.instrumentation.genai")
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}
    tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search", "gen_ai.tool.call.id": "call-1"}
    llm = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "unpriced-model",
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 2,
    }
    with child(tracer, "invoke_agent planner", agent):
        with child(tracer, "chat unpriced-model", llm):
            pass
        with child(tracer, "execute_tool search", tool):
            pass
    provider.shutdown()
    collector.drain()
    rows = collector.query(f"SELECT ToolName, ToolCallId, Disposition FROM {TOOL_CALLS_TABLE}")
    assert [(r["ToolName"], r["ToolCallId"], r["Disposition"]) for r in rows] == [("search", "call-1", "ungoverned")]
    (run,) = collector.query(f"SELECT AgentName, CostUsd, UnpricedLlmCalls, ToolCalls FROM {RUNS_TABLE}")
    assert (run["AgentName"], run["UnpricedLlmCalls"], run["ToolCalls"]) == ("planner", 1, 1)
    (root,) = collector.query("SELECT SpanAttributes AS a FROM otel_traces WHERE SpanName = 'invoke_agent planner'")
    attributes = root["a"]
    assert isinstance(attributes, dict)
    assert attributes[semconv.GEN_AI_OPERATION_NAME] == "invoke_agent"  # the span's own value, untouched
    assert json.loads(attributes[semconv.RUN_TOOLS])[0][2] == "search"


def test_dialects_off_leaves_foreign_spans_alone(clickhouse_url: str, tmp_path: Path) -> None:
    with running_collector(clickhouse_url, tmp_path, dialects=False) as running:
        provider = provider_for(running)
        openinference_run(provider.get_tracer("openinference.instrumentation.openai_agents"))
        provider.shutdown()
        running.drain()
        assert running.count("otel_traces") == 5
        assert running.count(RUNS_TABLE) == 0
        assert running.count(TOOL_CALLS_TABLE) == 0


def test_canary_drift_reads_foreign_runs(collector: Collector) -> None:
    """Runs of another dialect on two tracks (from the resource alone) are what the drift analyzer compares."""
    for track, version, failing in (("stable", "1.0", 0), ("canary", "1.1", 40)):
        provider = TracerProvider(
            resource=Resource.create({"service.name": "bot", "service.version": version, "agentwatch.track": track})
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.traces_url, timeout=10)))
        tracer = provider.get_tracer("openinference.instrumentation.openai_agents")
        for index in range(60):
            openinference_run(tracer, error="Max turns (3) exceeded" if index < failing else None)
        provider.shutdown()
    collector.drain()
    drift = analyze(collector.store, "Assistant", DriftOptions(since=datetime.now(UTC) - timedelta(hours=1)))
    assert drift.reference_track == "stable"
    assert drift.canary_version == "1.1"
    assert drift.counts["canary"] == {"max_steps": 40, "completed": 20}
    assert drift.counts["stable"] == {"completed": 60}
    assert drift.verdict == "fail"
