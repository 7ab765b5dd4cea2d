"""What agentwatch emits follows the current GenAI conventions (``open-telemetry/semantic-conventions-genai``).

The schema URL of the registry on every span's scope; ``gen_ai.provider.name`` and
``gen_ai.request.model`` on ``invoke_agent``; CLIENT kind for model calls, INTERNAL for the rest;
and ``gen_ai.operation.name`` holds registered GenAI operations only: steps, handoffs and
guardrails name theirs in ``agentwatch.operation.name``.
"""

from __future__ import annotations

from _conventions import assert_current_conventions
from _telemetry import Telemetry, attrs, make_gateway
from opentelemetry.trace import SpanKind

from agentwatch.instrumentation import semconv


def test_schema_url_is_the_genai_registry() -> None:
    assert semconv.SCHEMA_URL == "https://opentelemetry.io/schemas/gen-ai-dev/1.42.0-dev"
    assert semconv.SCHEMA_URL.endswith(semconv.GENAI_SEMCONV_VERSION)


def test_a_custom_loop_run_follows_the_current_conventions(telemetry: Telemetry) -> None:
    with telemetry.run(gateway=make_gateway(), provider="openai", model="gpt-4o") as run:
        with run.step():
            run.record_llm_call(model="gpt-4o", input_tokens=10, output_tokens=2)
            run.call_tool("kb.search", {"q": "refund"})
        with run.step():
            run.record_llm_call(model="gpt-4o-mini", provider="azure.ai.openai", input_tokens=5, output_tokens=1)
    assert_current_conventions(telemetry.spans())

    a = attrs(telemetry.run_span())
    assert (a[semconv.GEN_AI_PROVIDER_NAME], a[semconv.GEN_AI_REQUEST_MODEL]) == ("openai", "gpt-4o")
    assert telemetry.run_span().kind is SpanKind.INTERNAL  # the agent runs in this process
    llm = telemetry.llm()
    assert [s.kind for s in llm] == [SpanKind.CLIENT, SpanKind.CLIENT]
    # the run's provider is the default of its LLM calls; a call's own provider wins
    assert [attrs(s)[semconv.GEN_AI_PROVIDER_NAME] for s in llm] == ["openai", "azure.ai.openai"]
    steps = telemetry.steps()
    assert len(steps) == 2
    for step in steps:
        sa = attrs(step)
        assert sa[semconv.OPERATION_NAME] == semconv.OP_STEP
        assert semconv.GEN_AI_OPERATION_NAME not in sa
        assert semconv.GEN_AI_REQUEST_MODEL not in sa  # a step is never mistaken for an LLM call
    assert [s.kind for s in telemetry.tools()] == [SpanKind.INTERNAL]


def test_the_run_takes_provider_and_model_from_its_first_llm_call(telemetry: Telemetry) -> None:
    with telemetry.run() as run, run.step():
        with run.llm_call(model="claude-sonnet-4", provider="anthropic") as call:
            call.set_usage(input_tokens=3, output_tokens=1)
        run.record_llm_call(model="gpt-4o", provider="openai")
    a = attrs(telemetry.run_span())
    assert (a[semconv.GEN_AI_PROVIDER_NAME], a[semconv.GEN_AI_REQUEST_MODEL]) == ("anthropic", "claude-sonnet-4")
    assert (run.provider, run.model) == ("anthropic", "claude-sonnet-4")
    assert_current_conventions(telemetry.spans())


def test_a_run_without_llm_calls_names_no_model(telemetry: Telemetry) -> None:
    with telemetry.run() as run, run.step():
        pass
    a = attrs(telemetry.run_span())
    assert semconv.GEN_AI_REQUEST_MODEL not in a
    assert semconv.GEN_AI_PROVIDER_NAME not in a
    assert_current_conventions(telemetry.spans())


def test_span_operation_reads_spans_of_every_version() -> None:
    old = {semconv.GEN_AI_OPERATION_NAME: semconv.OP_STEP}
    new = {semconv.OPERATION_NAME: semconv.OP_STEP}
    assert semconv.span_operation(old) == semconv.span_operation(new) == semconv.OP_STEP
    assert semconv.span_operation({semconv.GEN_AI_OPERATION_NAME: "chat"}) == "chat"
    assert semconv.span_operation({}) == ""
    assert semconv.operation_attributes(semconv.OP_HANDOFF) == {semconv.OPERATION_NAME: semconv.OP_HANDOFF}
    assert semconv.operation_attributes(semconv.OP_GUARDRAIL) == {semconv.OPERATION_NAME: semconv.OP_GUARDRAIL}
    assert semconv.operation_attributes("chat") == {semconv.GEN_AI_OPERATION_NAME: "chat"}
