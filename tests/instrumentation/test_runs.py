"""Run, step, LLM and tool spans: names, attributes, parentage, totals, stop reasons, nesting."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from _telemetry import Telemetry, attrs, echo, event_names, make_gateway

from agentwatch.instrumentation import (
    Budget,
    GuardrailTripped,
    Policy,
    RunStopped,
    StopReason,
    ToolGateway,
    semconv,
)


def test_run_step_llm_and_tool_spans_carry_the_contract(telemetry: Telemetry) -> None:
    gateway = make_gateway()
    with telemetry.run(
        "support", tenant_id="acme", version="v7", track="canary", gateway=gateway, conversation_id="conv-1"
    ) as run:
        with run.step():
            run.record_llm_call(model="gpt-4o-mini", provider="openai", input_tokens=1000, output_tokens=100)
            assert run.call_tool("kb.search", {"query": "refund"}, call_id="call_1") == {"query": "refund"}
        with run.step():
            run.record_llm_call(model="gpt-4o-mini", provider="openai", input_tokens=2000, output_tokens=50)

    assert run.stop_reason is StopReason.COMPLETED
    run_span = telemetry.run_span()
    assert run_span.name == "invoke_agent support"
    a = attrs(run_span)
    assert a[semconv.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert a[semconv.RUN_ID] == run.run_id == "run-0001"
    assert a[semconv.TENANT_ID] == "acme"
    assert a[semconv.GEN_AI_AGENT_VERSION] == "v7"
    assert a[semconv.TRACK] == "canary"
    assert a[semconv.RUNTIME] == "custom"
    assert a[semconv.GEN_AI_CONVERSATION_ID] == "conv-1"
    assert a[semconv.STOP_REASON] == "completed"
    assert a[semconv.RUN_STEPS] == 2
    assert a[semconv.RUN_TOOL_CALLS] == 1
    assert a[semconv.RUN_LLM_CALLS] == 2
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 3000
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 150
    # gpt-4o-mini list price: $0.15 input, $0.60 output per million tokens
    expected_cost = 3000 * 0.15 / 1e6 + 150 * 0.60 / 1e6
    assert a[semconv.RUN_COST_USD] == pytest.approx(expected_cost)
    assert run.cost_usd == pytest.approx(expected_cost)
    assert run.usage.input_tokens == 3000

    steps = telemetry.steps()
    assert [attrs(s)[semconv.STEP_INDEX] for s in steps] == [1, 2]
    assert all(s.name == "step support" for s in steps)
    assert all(s.parent is not None and s.parent.span_id == run_span.context.span_id for s in steps)

    llm = telemetry.llm()
    assert [s.name for s in llm] == ["chat gpt-4o-mini", "chat gpt-4o-mini"]
    assert attrs(llm[0])[semconv.GEN_AI_PROVIDER_NAME] == "openai"
    assert attrs(llm[0])[semconv.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert attrs(llm[0])[semconv.COST_USD] == pytest.approx(1000 * 0.15 / 1e6 + 100 * 0.60 / 1e6)
    assert attrs(llm[1])[semconv.STEP_INDEX] == 2

    (tool,) = telemetry.tools()
    assert tool.name == "execute_tool kb.search"
    t = attrs(tool)
    assert t[semconv.GEN_AI_TOOL_NAME] == "kb.search"
    assert t[semconv.GEN_AI_TOOL_CALL_ID] == "call_1"
    assert t[semconv.GEN_AI_TOOL_TYPE] == "function"
    assert t[semconv.TOOL_DISPOSITION] == "allowed"
    assert t[semconv.TOOL_OUTCOME] == "ok"
    assert t[semconv.TOOL_RISK] == "read"
    assert t[semconv.POLICY_RULE] == "allow:kb.*"
    assert t[semconv.STEP_INDEX] == 1
    assert tool.parent is not None
    assert tool.parent.span_id == steps[0].context.span_id

    # every span of the run carries the run id; content is off by default
    for span in telemetry.spans():
        assert attrs(span)[semconv.RUN_ID] == run.run_id
        assert semconv.GEN_AI_TOOL_CALL_ARGUMENTS not in attrs(span)
    assert len({s.context.trace_id for s in telemetry.spans()}) == 1


def test_llm_call_context_manager_and_unpriced_model(telemetry: Telemetry) -> None:
    with telemetry.run() as run, run.step():
        with run.llm_call(model="in-house-llama", provider="self_hosted") as call:
            call.set_usage(input_tokens=500, output_tokens=20)
            call.set_response(model="in-house-llama-2", finish_reasons=["stop"], response_id="r1")
        with run.llm_call(model="gpt-4o") as call:
            call.set_usage(input_tokens=1_000_000, output_tokens=0, cached_input_tokens=1_000_000)

    unpriced, priced = telemetry.llm()
    assert attrs(unpriced)[semconv.COST_UNPRICED] is True
    assert semconv.COST_USD not in attrs(unpriced)
    assert attrs(unpriced)[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs(unpriced)[semconv.GEN_AI_RESPONSE_MODEL] == "in-house-llama-2"
    # a fully cached million input tokens of gpt-4o costs the cached rate
    assert attrs(priced)[semconv.COST_USD] == pytest.approx(1.25)
    assert run.unpriced_llm_calls == 1
    run_attrs = attrs(telemetry.run_span())
    assert run_attrs[semconv.RUN_UNPRICED_LLM_CALLS] == 1
    assert run_attrs[semconv.RUN_COST_USD] == pytest.approx(1.25)
    assert run_attrs[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 1_000_000


def test_explicit_cost_overrides_price_table(telemetry: Telemetry) -> None:
    with telemetry.run() as run:
        run.record_llm_call(model="unknown-model", input_tokens=10, output_tokens=10, cost_usd=0.02)
    assert run.cost_usd == pytest.approx(0.02)
    assert run.unpriced_llm_calls == 0


def test_error_in_block_ends_run_with_error_and_propagates_unchanged(telemetry: Telemetry) -> None:
    class Boom(Exception):
        pass

    original = Boom("model returned garbage")
    with pytest.raises(Boom) as caught, telemetry.run() as run, run.step():
        raise original
    assert caught.value is original
    assert run.stop_reason is StopReason.ERROR
    run_span = telemetry.run_span()
    assert attrs(run_span)[semconv.STOP_REASON] == "error"
    assert attrs(run_span)[semconv.ERROR_TYPE].endswith("Boom")
    assert run_span.status.status_code.name == "ERROR"
    assert telemetry.steps()[0].status.status_code.name == "ERROR"


def test_keyboard_interrupt_ends_run_cancelled(telemetry: Telemetry) -> None:
    with pytest.raises(KeyboardInterrupt), telemetry.run() as run:
        raise KeyboardInterrupt
    assert run.stop_reason is StopReason.CANCELLED
    assert attrs(telemetry.run_span())[semconv.STOP_REASON] == "cancelled"


def test_guardrail_and_explicit_stop(telemetry: Telemetry) -> None:
    with telemetry.run() as run:
        raise GuardrailTripped("output contained a refund promise")
    assert run.stop_reason is StopReason.GUARDRAIL

    with telemetry.run() as second:
        second.stop("guardrail")
        with pytest.raises(RunStopped):
            second.step().__enter__()
    assert second.stop_reason is StopReason.GUARDRAIL
    assert second.steps == 0

    with telemetry.run() as third:
        third.stop(StopReason.CANCELLED)
    assert third.stop_reason is StopReason.CANCELLED
    with pytest.raises(ValueError, match="not_a_reason"):
        third.stop("not_a_reason")


def test_nested_run_gets_own_id_and_records_parent(telemetry: Telemetry) -> None:
    with telemetry.run("planner") as parent, parent.step(), telemetry.run("researcher") as child, child.step():
        child.record_llm_call(model="gpt-4o-mini", input_tokens=10, output_tokens=1)
    assert child.run_id != parent.run_id
    assert child.parent_run_id == parent.run_id
    runs = {attrs(s)[semconv.GEN_AI_AGENT_NAME]: s for s in telemetry.runs()}
    child_span, parent_span = runs["researcher"], runs["planner"]
    assert attrs(child_span)[semconv.RUN_PARENT_ID] == parent.run_id
    assert semconv.RUN_PARENT_ID not in attrs(parent_span)
    assert semconv.STEP_INDEX not in attrs(child_span)  # the parent's step index must not leak in
    parent_step = next(s for s in telemetry.steps() if attrs(s)[semconv.RUN_ID] == parent.run_id)
    assert child_span.parent is not None
    assert child_span.parent.span_id == parent_step.context.span_id
    child_llm = telemetry.llm()[0]
    assert attrs(child_llm)[semconv.RUN_ID] == child.run_id
    # totals stay per run
    assert attrs(parent_span)[semconv.RUN_LLM_CALLS] == 0
    assert attrs(child_span)[semconv.RUN_LLM_CALLS] == 1


def test_foreign_spans_inside_a_run_get_run_and_step(telemetry: Telemetry) -> None:
    tracer = telemetry.provider.get_tracer("some.http.client")
    with telemetry.run() as run, run.step(), tracer.start_as_current_span("GET /orders"):
        pass
    foreign = next(s for s in telemetry.spans() if s.name == "GET /orders")
    assert attrs(foreign)[semconv.RUN_ID] == run.run_id
    assert attrs(foreign)[semconv.STEP_INDEX] == 1
    with tracer.start_as_current_span("outside"):
        pass
    outside = next(s for s in telemetry.spans() if s.name == "outside")
    assert semconv.RUN_ID not in attrs(outside)


def test_call_tool_without_gateway_is_a_clear_error(telemetry: Telemetry) -> None:
    with pytest.raises(TypeError, match="no tool gateway"), telemetry.run() as run:
        run.call_tool("kb.search", {})
    assert run.stop_reason is StopReason.ERROR


def test_agent_run_validates_arguments(telemetry: Telemetry) -> None:
    with pytest.raises(ValueError, match="track"):
        telemetry.run(track="prod")
    with pytest.raises(TypeError, match="agent"):
        telemetry.run("  ")


def test_gateway_shared_by_threads_keeps_runs_apart(telemetry: Telemetry) -> None:
    calls: list[str] = []
    lock = threading.Lock()

    def record(**kwargs: Any) -> str:
        with lock:
            calls.append(str(kwargs["who"]))
        return str(kwargs["who"])

    gateway = ToolGateway(
        policy=Policy(allow=["kb.*"], deny=["kb.admin"]), tools={"kb.search": record, "kb.admin": echo}
    )
    errors: list[BaseException] = []
    threads_runs: dict[int, str] = {}

    def worker(n: int) -> None:
        try:
            with telemetry.run(tenant_id=f"t{n}", gateway=gateway, budget=Budget(max_tool_calls=30)) as run:
                threads_runs[n] = run.run_id
                for i in range(25):
                    with run.step():
                        run.call_tool("kb.search", {"who": f"{n}-{i}"})
                        if i % 5 == 0:
                            with pytest.raises(RunStopped):
                                run.call_tool("kb.admin", {})
            assert run.stop_reason is StopReason.COMPLETED
        except BaseException as exc:  # collected and asserted in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(calls) == 8 * 25
    runs = telemetry.runs()
    assert len(runs) == 8
    for run_span in runs:
        assert attrs(run_span)[semconv.RUN_TOOL_CALLS] == 30  # 25 allowed + 5 denied attempts
    tools = telemetry.tools()
    assert len(tools) == 8 * 30
    by_run: dict[str, int] = {}
    for span in tools:
        run_id = attrs(span)[semconv.RUN_ID]
        by_run[run_id] = by_run.get(run_id, 0) + 1
        tenant = attrs(span)[semconv.TENANT_ID]
        n = int(tenant[1:])
        assert run_id == threads_runs[n]
    assert set(by_run.values()) == {30}
    denied = [s for s in tools if attrs(s)[semconv.TOOL_DISPOSITION] == "denied"]
    assert len(denied) == 8 * 5
    assert all(semconv.EVENT_POLICY_DENIED in event_names(s) for s in denied)
