"""The real third-party GenAI instrumentations, through the official OTLP exporter, into a real collector.

Each case runs a scripted agent (``_dialects``: the Agents SDK, LangGraph or the ``openai`` client
against the local OpenAI stub) under OpenInference, the OpenTelemetry GenAI instrumentation or
OpenLLMetry, exports with a ``BatchSpanProcessor`` as a team would, and asserts what a user sees:
one ``agent_runs`` row with the stub's exact token sums, LLM and tool calls, the stop reason the
framework raised; ``agent_tool_calls`` rows; the token and tool metrics counted once; and the run
in ``agentwatch runs`` and ``agentwatch trace``. The double-count cases run agentwatch's own
instrumentation beside another one and assert every token is counted once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import _dialects
import pytest
from _dialects import DialectRun
from _otlp_clients import Collector, running_collector
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agentwatch.collectors import metric_names as m
from agentwatch.collectors.cli.read import add_read_commands
from agentwatch.collectors.store.schema import RUNS_TABLE, TOOL_CALLS_TABLE

pytestmark = pytest.mark.integration

pytest_plugins = ["_chstore"]

SERVICE = "support-service"


@dataclass(frozen=True)
class Case:
    run: Callable[[TracerProvider], DialectRun]
    agent: str
    runtime: str
    stop_reason: str
    dialect: str
    failed_llm_calls: int = 0
    """LLM calls the model answered with an error: calls all the same, with no tokens."""


CASES = {
    "openinference-agents": Case(
        _dialects.openinference_agents, "support", "openai_agents", "completed", "openinference"
    ),
    "openinference-agents-max-turns": Case(
        lambda p: _dialects.openinference_agents(p, variant="max_turns"),
        "support",
        "openai_agents",
        "max_steps",
        "openinference",
    ),
    "openinference-agents-guardrail": Case(
        lambda p: _dialects.openinference_agents(p, variant="guardrail"),
        "support",
        "openai_agents",
        "guardrail",
        "openinference",
    ),
    "openinference-agents-model-error": Case(
        lambda p: _dialects.openinference_agents(p, variant="model_error"),
        "support",
        "openai_agents",
        "error",
        "openinference",
        failed_llm_calls=1,
    ),
    "openinference-langgraph": Case(
        _dialects.openinference_langgraph, "support", "langgraph", "completed", "openinference"
    ),
    "otel-genai-agent-helpers": Case(_dialects.otel_genai_agent_helpers, "support", "other", "completed", "otel_genai"),
    "openllmetry-agents": Case(
        lambda p: _dialects.openllmetry(p, variant="agents"), "support", "openai_agents", "completed", "openllmetry"
    ),
    "openllmetry-agents-max-turns": Case(
        lambda p: _dialects.openllmetry(p, variant="agents-max_turns"),
        "support",
        "openai_agents",
        "max_steps",
        "openllmetry",
    ),
    "openllmetry-langgraph": Case(
        lambda p: _dialects.openllmetry(p, variant="langgraph"), "support", "langgraph", "completed", "otel_genai"
    ),
}


@pytest.fixture
def collector(clickhouse_url: str, tmp_path: Path) -> Iterator[Collector]:
    with running_collector(clickhouse_url, tmp_path) as running:
        yield running


def export_to(collector: Collector) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE, "service.version": "4.2"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.traces_url, timeout=10)))
    return provider


def run_and_store(collector: Collector, run: Callable[[TracerProvider], DialectRun]) -> DialectRun:
    provider = export_to(collector)
    try:
        done = run(provider)
    finally:
        provider.shutdown()  # flushes the batch processor: every span is exported
    collector.drain()
    return done


def sample(collector: Collector, name: str, **labels: str) -> float:
    return collector.service.metrics.registry.get_sample_value(name, labels) or 0.0


def tokens(collector: Collector, direction: str) -> float:
    """The token counter summed over every series of one direction (whatever the agent and model labels)."""
    total = 0.0
    for family in collector.service.metrics.registry.collect():
        for metric_sample in family.samples:
            if metric_sample.name == m.LLM_TOKENS_TOTAL and metric_sample.labels.get("direction") == direction:
                total += metric_sample.value
    return total


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="agentwatch")
    add_read_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.handler(args)
    out, _ = capsys.readouterr()
    return code, out


@pytest.mark.parametrize("case_name", sorted(CASES))
def test_a_real_instrumentation_gives_one_run_with_its_exact_numbers(
    collector: Collector, case_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES[case_name]
    done = run_and_store(collector, case.run)
    (run,) = collector.query(
        f"SELECT RunId, TraceId, AgentName, AgentVersion, Runtime, StopReason, LlmCalls, ToolCalls, InputTokens, "
        f"OutputTokens, UnpricedLlmCalls, ServiceName FROM {RUNS_TABLE} FINAL"
    )
    assert (run["AgentName"], run["Runtime"], run["StopReason"]) == (case.agent, case.runtime, case.stop_reason)
    assert (run["LlmCalls"], run["ToolCalls"]) == (done.llm_calls + case.failed_llm_calls, done.tool_calls)
    assert (run["InputTokens"], run["OutputTokens"]) == (done.usage.input_tokens, done.usage.output_tokens)
    assert run["RunId"] == run["TraceId"]
    assert run["UnpricedLlmCalls"] == 0  # gpt-4o-mini and its dated snapshot are priced
    (stamped,) = collector.query(
        "SELECT SpanAttributes['agentwatch.dialect'] AS dialect FROM otel_traces "
        "WHERE SpanAttributes['agentwatch.run.id'] = {run:String}",
        {"run": run["RunId"]},
    )
    assert stamped["dialect"] == case.dialect

    tools = collector.query(f"SELECT ToolName, Disposition, RunId, AgentName FROM {TOOL_CALLS_TABLE}")
    assert len(tools) == done.tool_calls
    assert {(t["ToolName"], t["Disposition"], t["RunId"], t["AgentName"]) for t in tools} <= {
        (_dialects.TOOL, "ungoverned", run["RunId"], case.agent)
    }

    # metrics: counted once, under the run's agent
    assert tokens(collector, "input") == done.usage.input_tokens
    assert tokens(collector, "output") == done.usage.output_tokens
    assert sample(collector, m.RUNS_TOTAL, agent=case.agent, track="stable", stop_reason=case.stop_reason) == 1
    ungoverned = sample(
        collector,
        m.TOOL_CALLS_TOTAL,
        agent=case.agent,
        track="stable",
        tool=_dialects.TOOL,
        disposition="ungoverned",
        outcome="ok",
    )
    assert ungoverned == done.tool_calls

    # what the user reads
    code, out = cli(["runs", "--collector", collector.base_url], capsys)
    assert code == 0
    assert str(run["RunId"])[:8] in out
    assert case.agent in out
    code, out = cli(["trace", str(run["RunId"]), "--collector", collector.base_url], capsys)
    assert code == 0
    assert out.startswith(f"run {run['RunId']}")
    assert f"stop={case.stop_reason}" in out


def test_plain_client_calls_count_their_tokens_without_a_run(collector: Collector) -> None:
    done = run_and_store(collector, _dialects.otel_genai_openai)
    assert collector.count(RUNS_TABLE) == 0  # each call is its own trace: no agent, no run
    assert tokens(collector, "input") == done.usage.input_tokens
    assert tokens(collector, "output") == done.usage.output_tokens
    by_service = sample(
        collector, m.LLM_TOKENS_TOTAL, agent=SERVICE, track="stable", model=_dialects.RESPONSE_MODEL, direction="input"
    )
    assert by_service == done.usage.input_tokens


@pytest.mark.parametrize(
    "combo",
    ["agentwatch+otel-genai-manual", "agentwatch+otel-genai-agents", "agentwatch+openinference"],
)
def test_agentwatch_beside_another_instrumentation_counts_every_call_once(collector: Collector, combo: str) -> None:
    runs: dict[str, Callable[[TracerProvider], DialectRun]] = {
        "agentwatch+otel-genai-manual": lambda p: _dialects.agentwatch_with_otel_genai(p, variant="manual"),
        "agentwatch+otel-genai-agents": lambda p: _dialects.agentwatch_with_otel_genai(p, variant="agents"),
        "agentwatch+openinference": _dialects.agentwatch_with_openinference,
    }
    done = run_and_store(collector, runs[combo])
    (run,) = collector.query(f"SELECT AgentName, InputTokens, OutputTokens, ToolCalls FROM {RUNS_TABLE} FINAL")
    assert (run["InputTokens"], run["OutputTokens"], run["ToolCalls"]) == (
        done.usage.input_tokens,
        done.usage.output_tokens,
        done.tool_calls,
    )
    assert tokens(collector, "input") == done.usage.input_tokens  # not twice
    assert tokens(collector, "output") == done.usage.output_tokens
    tools = collector.query(f"SELECT Disposition FROM {TOOL_CALLS_TABLE}")
    assert [t["Disposition"] for t in tools] == ["allowed"] * done.tool_calls  # the gateway's rows only
    assert (
        sample(collector, m.LLM_TOKENS_TOTAL, agent="unknown", track="other", model=_dialects.MODEL, direction="input")
        == 0
    )
