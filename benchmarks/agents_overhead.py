"""Instrumentation overhead on an OpenAI Agents SDK run: the SDK alone against the SDK under agentwatch.

One run is a support agent with a scripted model (no network): 5 turns, 4 tool calls, a final
answer, reported in ``response`` spans as ``OpenAIResponsesModel`` does. Every mode runs in the
same process, in one event loop, with the SDK's own tracing as users have it (its processors
keep receiving every span); agentwatch exports into a batch processor whose exporter drops
spans, so the figures measure the instrumentation, not a network.

- ``sdk``: the Agents SDK, not instrumented (the baseline);
- ``agentwatch``: ``instrument()``ed (run, step, LLM and tool spans; budgets checked);
- ``agentwatch+gateway``: the same with every tool governed by a ``ToolGateway``;
- ``openinference`` / ``openlit``: the other OpenTelemetry instrumentations of the SDK, exporting
  into the same dropping exporter, when installed beside agentwatch (they are not dependencies;
  the script reports them as not installed otherwise).

Run with ``python benchmarks/agents_overhead.py [--runs N] [--repeats N] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import logging
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from agents import Agent, ModelResponse, ModelSettings, Runner, Tool, TResponseInputItem, Usage, function_tool
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseOutputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.tracing import response_span
from openai.types.responses import (
    Response,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from openai.types.responses.response_prompt_param import ResponsePromptParam
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from typing_extensions import override

from agentwatch.instrumentation import Budget, InstrumentationSettings, Policy, ToolGateway
from agentwatch.instrumentation.integrations import openai_agents

TOOL_TURNS = 4
ARTICLES = {f"topic-{i}": f"article text {i} " * 8 for i in range(64)}


class DroppingExporter(SpanExporter):
    """Accepts and forgets spans: measures the instrumentation, not a network."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def search(query: str) -> list[str]:
    """A small, realistic amount of work: a lookup and a little string handling."""
    return [text[:40] for key, text in ARTICLES.items() if key.endswith(query[-1])][:3]


@function_tool
def kb_search(query: str) -> list[str]:
    """Search the help center."""
    return search(query)


def _usage() -> ResponseUsage:
    return ResponseUsage(
        input_tokens=1200,
        output_tokens=80,
        total_tokens=1280,
        input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
    )


class BenchModel(Model):
    """Four turns of one tool call each, then an answer; a ``response`` span per call."""

    def __init__(self) -> None:
        self.turn = 0

    @override
    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        self.turn += 1
        output: list[TResponseOutputItem]
        if self.turn <= TOOL_TURNS:
            call_id = f"call_{self.turn}"
            output = [
                ResponseFunctionToolCall(
                    type="function_call",
                    name="kb_search",
                    arguments=json.dumps({"query": f"refund {self.turn}"}),
                    call_id=call_id,
                    id=f"fc_{call_id}",
                )
            ]
        else:
            text = ResponseOutputText(type="output_text", text="Refunds take 5 days.", annotations=[])
            output = [
                ResponseOutputMessage(id="msg_1", type="message", role="assistant", status="completed", content=[text])
            ]
        with response_span(disabled=tracing.is_disabled()) as span:
            span.span_data.response = Response(
                id=f"resp_{self.turn}",
                created_at=time.time(),
                model="gpt-4o-mini",
                object="response",
                output=output,
                parallel_tool_calls=True,
                tool_choice="auto",
                tools=[],
                usage=_usage(),
            )
        return ModelResponse(
            output=output,
            usage=Usage(requests=1, input_tokens=1200, output_tokens=80, total_tokens=1280),
            response_id=f"resp_{self.turn}",
        )

    @override
    def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError


AgentFactory = Callable[[], Agent[Any]]


def plain_agent() -> Agent[Any]:
    return Agent(name="support", model=BenchModel(), tools=[kb_search])


def governed_agent() -> Agent[Any]:
    agent = plain_agent()
    gateway = ToolGateway(policy=Policy(allow=["kb.*"]), tools={"kb.search": search})
    openai_agents.govern_tools(agent, gateway, names={"kb_search": "kb.search"})
    return agent


async def _timed_runs(factory: AgentFactory, runs: int) -> tuple[float, float]:
    """(wall, CPU) nanoseconds per run; CPU counts every thread of the process (the SDK runs sync tools in one)."""
    agents = [factory() for _ in range(runs)]  # built outside the timed loop
    gc.collect()
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    for agent in agents:
        result = await Runner.run(agent, "How do refunds work?")
        assert result.final_output == "Refunds take 5 days."
    return (time.perf_counter_ns() - wall) / runs, (time.process_time_ns() - cpu) / runs


def per_run_us(factory: AgentFactory, runs: int, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) microseconds per run over ``repeats``."""

    async def measure() -> list[tuple[float, float]]:
        await _timed_runs(factory, max(5, runs // 10))  # warm up (imports, caches, the SDK's worker thread)
        return [await _timed_runs(factory, runs) for _ in range(repeats)]

    samples = asyncio.run(measure())
    # the median of repeats is robust to one noisy repeat on a shared machine
    return statistics.median(s[0] for s in samples) / 1e3, statistics.median(s[1] for s in samples) / 1e3


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def measure_openinference(runs: int, repeats: int) -> tuple[float, float, float] | None:
    """OpenInference's Agents SDK instrumentor on the same run: (wall, CPU) us per run and spans per run."""
    if not _installed("openinference.instrumentation.openai_agents"):
        return None
    from openinference.instrumentation.openai_agents import (  # type: ignore[import-not-found,unused-ignore]
        OpenAIAgentsInstrumentor,
    )

    exporter = DroppingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=4096))
    instrumentor = OpenAIAgentsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        wall, cpu = per_run_us(plain_agent, runs, repeats)
        provider.force_flush()
        spans = exporter.exported / (max(5, runs // 10) + runs * repeats)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    return wall, cpu, spans


def measure_openlit(runs: int, repeats: int) -> tuple[float, float, float] | None:
    """OpenLIT on the same run, when installed (its ``init`` instruments the Agents SDK among others)."""
    if not _installed("openlit"):
        return None
    import openlit  # type: ignore[import-not-found,unused-ignore]

    exporter = DroppingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=4096))
    openlit.init(tracer=provider.get_tracer("openlit"), disable_metrics=True, collect_gpu_stats=False)
    try:
        wall, cpu = per_run_us(plain_agent, runs, repeats)
        provider.force_flush()
        spans = exporter.exported / (max(5, runs // 10) + runs * repeats)
    finally:
        provider.shutdown()
    return wall, cpu, spans


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="agent runs per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    # The SDK's own exporter has no key here and says so on every batch; it still receives every span.
    logging.getLogger("openai.agents").setLevel(logging.ERROR)

    exporter = DroppingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=4096))
    settings = InstrumentationSettings(strict=False)
    budget = Budget(max_steps=25, max_tool_calls=12, max_seconds=120, max_usd=0.5)

    baseline = per_run_us(plain_agent, args.runs, args.repeats)
    openai_agents.instrument(tracer_provider=provider, settings=settings, budget=budget)
    try:
        before = exporter.exported
        instrumented = per_run_us(plain_agent, args.runs, args.repeats)
        governed = per_run_us(governed_agent, args.runs, args.repeats)
        provider.force_flush()
        measured_runs = 2 * (max(5, args.runs // 10) + args.runs * args.repeats)
        spans_per_run = (exporter.exported - before) / measured_runs
    finally:
        openai_agents.uninstrument()
        provider.shutdown()

    report: dict[str, Any] = {
        "run": f"{TOOL_TURNS + 1} turns, {TOOL_TURNS} tool calls, scripted model",
        "sdk_run_us": {"wall": baseline[0], "cpu": baseline[1]},
        "agentwatch_run_us": {"wall": instrumented[0], "cpu": instrumented[1]},
        "agentwatch_gateway_run_us": {"wall": governed[0], "cpu": governed[1]},
        "agentwatch_ratio": {"wall": instrumented[0] / baseline[0], "cpu": instrumented[1] / baseline[1]},
        "agentwatch_gateway_ratio": {"wall": governed[0] / baseline[0], "cpu": governed[1] / baseline[1]},
        "agentwatch_overhead_cpu_us": instrumented[1] - baseline[1],
        "agentwatch_spans_per_run": spans_per_run,
    }
    # The others last: they add their own processors to the SDK, and OpenLIT cannot be undone.
    others: dict[str, Any] = {}
    for name, measure in (("openinference", measure_openinference), ("openlit", measure_openlit)):
        measured = measure(args.runs, args.repeats)
        if measured is None:
            others[name] = "not installed"
            continue
        wall, cpu, spans = measured
        others[name] = {
            "run_us": {"wall": wall, "cpu": cpu},
            "ratio": {"wall": wall / baseline[0], "cpu": cpu / baseline[1]},
            "spans_per_run": spans,
        }
    report["others"] = others
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Agents SDK run overhead ({report['run']}; median of {args.repeats} x {args.runs} runs)")
    print(f"  {'':<22} {'wall us/run':>12} {'ratio':>6} {'CPU us/run':>12} {'ratio':>6}")
    for label, (wall, cpu) in (
        ("sdk alone", baseline),
        ("agentwatch", instrumented),
        ("agentwatch + gateway", governed),
    ):
        print(f"  {label:<22} {wall:12.1f} {wall / baseline[0]:5.2f}x {cpu:12.1f} {cpu / baseline[1]:5.2f}x")
    print(f"  agentwatch spans per run: {spans_per_run:.1f}")
    for name, other in others.items():
        if isinstance(other, str):
            print(f"  {name}: {other} (measured when installed beside agentwatch)")
            continue
        wall, cpu = other["run_us"]["wall"], other["run_us"]["cpu"]
        print(f"  {name:<22} {wall:12.1f} {wall / baseline[0]:5.2f}x {cpu:12.1f} {cpu / baseline[1]:5.2f}x")
        print(f"  {name} spans per run: {other['spans_per_run']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
