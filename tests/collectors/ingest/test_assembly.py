"""The run assembler's rules on spans shaped like each dialect's, built with the OTel SDK and encoded as OTLP.

What makes a run, counted once, stop reasons, arrival over several requests, rollback and expiry.
The real instrumentations drive the same code end to end in ``test_dialects_e2e``; here each rule
is pinned on a trace small enough to read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from _dialect_shapes import OI, child, openinference_run
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from agentwatch.collectors import metric_names as m
from agentwatch.collectors.config.settings import CollectorSettings, SettingsError
from agentwatch.collectors.ingest.assembly import Observation, RunAssembler
from agentwatch.collectors.ingest.otlp import Converted, Limits, convert, parse_protobuf
from agentwatch.collectors.metrics import CollectorMetrics
from agentwatch.instrumentation import semconv
from agentwatch.instrumentation.pricing import load_price_file


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def spans() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot", "service.version": "2.1"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("openinference.instrumentation.openai_agents"), exporter
    provider.shutdown()


def converted(finished: Sequence[ReadableSpan], tenant: str | None = None) -> Converted:
    request = parse_protobuf(encode_spans(finished).SerializeToString())
    return convert(request, tenant=tenant, limits=Limits(), redactor=None)


def attributes_of(batch: Converted, name: str) -> dict[str, str]:
    for values in batch.values:
        if values[5] == name:
            return values[11]  # type: ignore[return-value]
    raise AssertionError(f"no span {name!r}")


def by_operation(observations: list[Observation], operation: str) -> list[dict[str, str]]:
    return [attrs for attrs, _ in observations if attrs.get(semconv.GEN_AI_OPERATION_NAME) == operation]


def test_an_openinference_trace_becomes_one_run_stamped_on_its_root(spans: Any) -> None:
    tracer, exporter = spans
    openinference_run(tracer)
    batch = converted(exporter.get_finished_spans())
    assembler = RunAssembler()
    staged = assembler.stage(batch)
    assert staged.runs == 1
    root = attributes_of(batch, "Agent workflow")
    trace_id = str(batch.values[0][1])
    assert root[semconv.RUN_ID] == trace_id
    assert root[semconv.DIALECT] == "openinference"
    assert root[semconv.GEN_AI_AGENT_NAME] == "Assistant"  # the agent, not the workflow
    assert root[semconv.GEN_AI_AGENT_VERSION] == "2.1"  # service.version
    assert root[semconv.STOP_REASON] == "completed"
    assert root[semconv.TRACK] == "stable"
    assert root[semconv.RUNTIME] == "openai_agents"
    assert root[semconv.GEN_AI_CONVERSATION_ID] == "conv-1"
    assert (root[semconv.RUN_INPUT_TOKENS], root[semconv.RUN_OUTPUT_TOKENS]) == ("33", "21")
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in root  # added attributes are agentwatch.* ones
    assert (root[semconv.RUN_LLM_CALLS], root[semconv.RUN_STEPS], root[semconv.RUN_TOOL_CALLS]) == ("2", "2", "1")
    assert float(root[semconv.RUN_COST_USD]) > 0
    assert root[semconv.RUN_UNPRICED_LLM_CALLS] == "0"
    tools = json.loads(root[semconv.RUN_TOOLS])
    assert [(tool[2], tool[7]) for tool in tools] == [("lookup_order", 0)]
    # the line written to the spool carries the stamps too
    line = json.loads(batch.lines[[v[5] for v in batch.values].index("Agent workflow")])
    assert line["SpanAttributes"][semconv.RUN_ID] == trace_id
    # the metrics get one run, two LLM calls and one ungoverned tool call, all under the agent
    runs = by_operation(staged.observations, semconv.OP_INVOKE_AGENT)
    assert len(runs) == 1
    assert runs[0][semconv.STOP_REASON] == "completed"
    assert semconv.DIALECT not in runs[0]
    llm = by_operation(staged.observations, semconv.OP_CHAT)
    assert sum(int(a[semconv.GEN_AI_USAGE_INPUT_TOKENS]) for a in llm) == 33
    assert {a[semconv.GEN_AI_AGENT_NAME] for a in llm} == {"Assistant"}
    (tool,) = by_operation(staged.observations, semconv.OP_EXECUTE_TOOL)
    assert tool[semconv.TOOL_DISPOSITION] == "ungoverned"
    assert tool[semconv.TOOL_OUTCOME] == "ok"
    assert assembler.open_traces == 0


def test_spans_over_several_requests_make_one_run_when_the_root_arrives(spans: Any) -> None:
    tracer, exporter = spans
    openinference_run(tracer)
    finished = exporter.get_finished_spans()
    assembler = RunAssembler()
    first = assembler.stage(converted(finished[:3]))
    assert first.runs == 0
    assert first.observations == []
    assert assembler.open_traces == 1
    last = converted(finished[3:])
    assert assembler.stage(last).runs == 1
    assert attributes_of(last, "Agent workflow")[semconv.RUN_TOOL_CALLS] == "1"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Max turns (3) exceeded", "max_steps"),
        ("Guardrail tripwire triggered", "guardrail"),
        ("GraphRecursionError: Recursion limit of 25 reached", "max_steps"),
        ("ValueError: boom", "error"),
    ],
    ids=["max-turns", "guardrail", "recursion", "other-error"],
)
def test_the_stop_reason_is_read_from_the_frameworks_errors(spans: Any, message: str, reason: str) -> None:
    tracer, exporter = spans
    openinference_run(tracer, error=message)
    batch = converted(exporter.get_finished_spans())
    RunAssembler().stage(batch)
    assert attributes_of(batch, "Agent workflow")[semconv.STOP_REASON] == reason


def test_an_exception_event_names_the_stop_reason(spans: Any) -> None:
    tracer, exporter = spans
    with child(
        tracer, "invoke_agent planner", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}
    ) as root:
        root.record_exception(
            RuntimeError("stopped"), attributes={"exception.type": "agents.exceptions.MaxTurnsExceeded"}
        )
        root.set_status(Status(StatusCode.ERROR))
    batch = converted(exporter.get_finished_spans())
    RunAssembler().stage(batch)
    stamped = attributes_of(batch, "invoke_agent planner")
    assert (stamped[semconv.STOP_REASON], stamped[semconv.DIALECT]) == ("max_steps", "otel_genai")


def test_nested_llm_spans_of_two_instrumentations_count_once(spans: Any) -> None:
    """A framework's LLM span with the client library's span inside: one call, the outer one."""
    tracer, exporter = spans
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}
    framework = {OI: "LLM", "llm.model_name": "gpt-4o", "llm.token_count.prompt": 100, "llm.token_count.completion": 10}
    client = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 10,
    }
    with (
        child(tracer, "invoke_agent triage", agent),
        child(tracer, "response", framework),
        child(tracer, "chat gpt-4o", client, kind=SpanKind.CLIENT),
    ):
        pass
    batch = converted(exporter.get_finished_spans())
    staged = RunAssembler().stage(batch)
    root = attributes_of(batch, "invoke_agent triage")
    assert (root[semconv.RUN_LLM_CALLS], root[semconv.RUN_INPUT_TOKENS]) == ("1", "100")
    assert [a[semconv.GEN_AI_USAGE_INPUT_TOKENS] for a in by_operation(staged.observations, "chat")] == ["100"]


def own_span(tracer: Tracer, name: str, run_id: str, operation: str, **extra: Any) -> Any:
    attributes = {
        semconv.RUN_ID: run_id,
        semconv.GEN_AI_AGENT_NAME: "billing",
        semconv.TRACK: "canary",
        semconv.GEN_AI_OPERATION_NAME: operation,
        **extra,
    }
    return child(tracer, name, attributes)


def test_in_a_trace_agentwatch_instruments_its_own_spans_count_and_foreign_ones_fill_the_gaps(spans: Any) -> None:
    tracer, exporter = spans
    own = TracerProvider()
    own_exporter = InMemorySpanExporter()
    own.add_span_processor(SimpleSpanProcessor(own_exporter))
    own_tracer = own.get_tracer("agentwatch")
    with own_span(own_tracer, "invoke_agent billing", "run-1", "invoke_agent", **{semconv.STOP_REASON: "completed"}):
        # agentwatch's LLM span with the client library's inside: counted by agentwatch alone
        with (
            own_span(
                own_tracer,
                "chat gpt-4o",
                "run-1",
                "chat",
                **{"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 50},
            ),
            child(
                tracer,
                "chat gpt-4o",
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 50,
                    "gen_ai.usage.output_tokens": 5,
                },
            ),
        ):
            pass
        # a call agentwatch did not record: counted under agentwatch's run labels
        with child(
            tracer,
            "chat gpt-4o-mini",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 7,
                "gen_ai.usage.output_tokens": 3,
            },
        ):
            pass
        # the gateway's tool span inside a framework's tool span: the framework's never counts
        with (
            child(tracer, "lookup", {OI: "TOOL", "tool.name": "lookup"}),
            own_span(
                own_tracer, "execute_tool lookup", "run-1", "execute_tool", **{semconv.TOOL_DISPOSITION: "allowed"}
            ),
        ):
            pass
    finished = sorted(
        [*exporter.get_finished_spans(), *own_exporter.get_finished_spans()], key=lambda s: s.end_time or 0
    )
    batch = converted(finished)
    staged = RunAssembler().stage(batch)
    assert staged.runs == 0  # agentwatch's run span says everything about the run
    assert semconv.DIALECT not in attributes_of(batch, "invoke_agent billing")
    llm = by_operation(staged.observations, "chat")
    assert [(a[semconv.GEN_AI_RESPONSE_MODEL], a[semconv.GEN_AI_AGENT_NAME], a[semconv.TRACK]) for a in llm] == [
        ("gpt-4o-mini", "billing", "canary")
    ]
    assert by_operation(staged.observations, "execute_tool") == []
    own.shutdown()


def test_a_bare_llm_call_is_counted_but_is_no_run(spans: Any) -> None:
    tracer, exporter = spans
    with child(
        tracer,
        "chat gpt-4o",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 9,
            "gen_ai.usage.output_tokens": 1,
        },
    ):
        pass
    batch = converted(exporter.get_finished_spans())
    staged = RunAssembler().stage(batch)
    assert staged.runs == 0
    assert semconv.RUN_ID not in attributes_of(batch, "chat gpt-4o")
    (llm,) = by_operation(staged.observations, "chat")
    assert (llm[semconv.GEN_AI_AGENT_NAME], llm[semconv.GEN_AI_USAGE_INPUT_TOKENS]) == ("support-bot", "9")


def test_a_plain_root_holding_llm_calls_is_a_run_named_after_the_service(spans: Any) -> None:
    tracer, exporter = spans
    with (
        child(tracer, "POST /answer", {"http.request.method": "POST"}, kind=SpanKind.SERVER),
        child(
            tracer,
            "chat gpt-4o",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 9,
                "gen_ai.usage.output_tokens": 1,
            },
        ),
    ):
        pass
    batch = converted(exporter.get_finished_spans(), tenant="acme")
    assert RunAssembler().stage(batch).runs == 1
    root = attributes_of(batch, "POST /answer")
    assert (root[semconv.GEN_AI_AGENT_NAME], root[semconv.TENANT_ID], root[semconv.DIALECT]) == (
        "support-bot",
        "acme",
        "otel_genai",
    )
    assert semconv.GEN_AI_OPERATION_NAME not in root  # added attributes only: the span stays an HTTP span


def test_the_track_comes_from_the_resource(spans: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "bot", "deployment.environment.name": "canary"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    openinference_run(provider.get_tracer("x"))
    batch = converted(exporter.get_finished_spans())
    RunAssembler().stage(batch)
    assert attributes_of(batch, "Agent workflow")[semconv.TRACK] == "canary"


def test_rollback_makes_a_retried_request_read_anew(spans: Any) -> None:
    tracer, exporter = spans
    openinference_run(tracer)
    finished = exporter.get_finished_spans()
    assembler = RunAssembler()
    batch = converted(finished)
    staged = assembler.stage(batch)
    assembler.rollback(staged)  # the spool refused the request
    assert semconv.RUN_ID not in attributes_of(batch, "Agent workflow")
    assert semconv.RUN_ID not in json.loads(batch.lines[-1])["SpanAttributes"]
    retried = converted(finished)
    assert assembler.stage(retried).runs == 1
    # and once read, the same root sent again is not a second run
    assert assembler.stage(converted(finished)).runs == 0


def test_a_trace_whose_root_never_arrives_is_counted_without_a_run_when_it_expires(spans: Any) -> None:
    tracer, exporter = spans
    openinference_run(tracer)
    clock = Clock()
    assembler = RunAssembler(idle_seconds=60, clock=clock)
    assembler.stage(converted(exporter.get_finished_spans()[:-1]))  # everything but the root
    assert assembler.expire() == []
    clock.now += 61
    expired = assembler.expire()
    assert sum(int(a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]) for a in by_operation(expired, "chat")) == 21
    assert len(by_operation(expired, "execute_tool")) == 1
    assert by_operation(expired, "invoke_agent") == []
    assert assembler.open_traces == 0


def test_openllmetry_and_openlit_shapes(spans: Any) -> None:
    _, exporter = spans
    provider = TracerProvider(resource=Resource.create({"service.name": "svc", "telemetry.sdk.name": "openlit"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    openlit = provider.get_tracer("openlit.otel.tracing")
    with (
        child(openlit, "invoke_agent writer", {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "writer"}),
        child(
            openlit,
            "chat gpt-4o",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 4,
                "gen_ai.usage.output_tokens": 2,
                "gen_ai.usage.cost": 0.5,
            },
        ),
    ):
        pass
    traceloop = provider.get_tracer("traceloop.sdk")
    with child(traceloop, "planner.agent", {"traceloop.span.kind": "agent", "traceloop.entity.name": "planner"}):
        with child(
            traceloop,
            "openai.chat",
            {
                "llm.request.type": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.prompt_tokens": 8,
                "gen_ai.usage.completion_tokens": 3,
            },
        ):
            pass
        with child(traceloop, "search.tool", {"traceloop.span.kind": "tool", "traceloop.entity.name": "search"}):
            pass
    batch = converted(exporter.get_finished_spans())
    assert RunAssembler().stage(batch).runs == 2
    writer = attributes_of(batch, "invoke_agent writer")
    assert (writer[semconv.DIALECT], writer[semconv.RUN_INPUT_TOKENS]) == ("openlit", "4")
    planner = attributes_of(batch, "planner.agent")
    assert (planner[semconv.DIALECT], planner[semconv.GEN_AI_AGENT_NAME]) == ("openllmetry", "planner")
    assert (planner[semconv.RUN_INPUT_TOKENS], planner[semconv.RUN_TOOL_CALLS]) == ("8", "1")
    assert json.loads(planner[semconv.RUN_TOOLS])[0][2] == "search"


def test_agentwatch_run_with_the_client_instrumentation_counts_each_call_once(telemetry: Any) -> None:
    """agentwatch's processor stamps its run id on the client library's spans: they must not count twice."""
    client = telemetry.provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    chat = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    with telemetry.run() as run:
        with run.llm_call(model="gpt-4o") as call:
            with child(
                client, "chat gpt-4o", {**chat, "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 4}
            ):
                pass
            call.set_usage(input_tokens=40, output_tokens=4)
        # a call agentwatch did not record
        with child(client, "chat gpt-4o", {**chat, "gen_ai.usage.input_tokens": 5, "gen_ai.usage.output_tokens": 1}):
            pass
    batch = converted(telemetry.spans())
    foreign: list[dict[str, str]] = [
        v[11]  # type: ignore[misc]
        for v in batch.values
        if v[9] == "opentelemetry.instrumentation.openai_v2"
    ]
    assert all(a[semconv.RUN_ID] == run.run_id for a in foreign)  # what made them count twice before
    staged = RunAssembler().stage(batch)
    assert all(a[semconv.DIALECT] == "otel_genai" for a in foreign)  # marked: the rows' metrics skip them
    metrics = CollectorMetrics()
    metrics.observe_spans([*batch.spans, *staged.observations])
    tokens = {
        (sample.labels["agent"], sample.labels["direction"]): sample.value
        for family in metrics.registry.collect()
        if family.name == m.LLM_TOKENS_TOTAL.removesuffix("_total")
        for sample in family.samples
        if sample.name == m.LLM_TOKENS_TOTAL
    }
    assert tokens == {("support", "input"): 45, ("support", "output"): 5}


def test_a_price_file_prices_foreign_runs_and_a_bad_one_is_refused_at_start(spans: Any, tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"models": {"gpt-4o-mini": {"input": 1000.0, "output": 0.0}}}), encoding="utf-8")
    settings = CollectorSettings(pricing_file=str(prices)).validate()
    tracer, exporter = spans
    openinference_run(tracer)
    batch = converted(exporter.get_finished_spans())
    RunAssembler(load_price_file(settings.pricing_file)).stage(batch)
    assert float(attributes_of(batch, "Agent workflow")[semconv.RUN_COST_USD]) == pytest.approx(33 * 1000 / 1e6)
    prices.write_text("{not json", encoding="utf-8")
    with pytest.raises(SettingsError, match="pricing_file"):
        CollectorSettings(pricing_file=str(prices)).validate()
