"""Budgets stop a run before the action that would exceed them, with the matching stop reason."""

from __future__ import annotations

import pytest
from _telemetry import Telemetry, attrs, echo, event_names, make_gateway

from agentwatch.instrumentation import Budget, BudgetExceeded, ConfigError, StopReason, semconv


def _budget_event(telemetry: Telemetry) -> dict[str, object]:
    run_span = telemetry.run_span()
    events = [e for e in run_span.events if e.name == semconv.EVENT_BUDGET_EXHAUSTED]
    assert len(events) == 1, event_names(run_span)
    return dict(events[0].attributes or {})


def test_max_steps_never_starts_the_26th_step(telemetry: Telemetry) -> None:
    started: list[int] = []
    with telemetry.run(budget=Budget(max_steps=25)) as run:
        while True:
            with run.step() as step:
                started.append(step.index)
    assert started == list(range(1, 26))
    assert run.stop_reason is StopReason.MAX_STEPS
    assert len(telemetry.steps()) == 25
    run_attrs = attrs(telemetry.run_span())
    assert run_attrs[semconv.STOP_REASON] == "max_steps"
    assert run_attrs[semconv.BUDGET_EXHAUSTED] == "steps"
    assert run_attrs[semconv.BUDGET_MAX_STEPS] == 25
    assert run_attrs[semconv.RUN_STEPS] == 25
    assert _budget_event(telemetry) == {"budget": "steps", "limit": 25.0, "used": 25.0}


def test_max_tool_calls_refuses_the_13th_call_before_it_runs(telemetry: Telemetry) -> None:
    executed: list[int] = []

    def search(query: str) -> str:
        executed.append(1)
        return query

    gateway = make_gateway({"kb.search": search})
    with telemetry.run(budget=Budget(max_tool_calls=12), gateway=gateway) as run:
        for i in range(100):
            with run.step():
                run.call_tool("kb.search", {"query": str(i)})
    assert len(executed) == 12
    assert run.stop_reason is StopReason.MAX_TOOL_CALLS
    assert len(telemetry.tools()) == 12  # the refused call never got a span: it never started
    assert attrs(telemetry.run_span())[semconv.BUDGET_EXHAUSTED] == "tool_calls"
    assert _budget_event(telemetry)["budget"] == "tool_calls"


def test_wall_time_budget(telemetry: Telemetry) -> None:
    with telemetry.run(budget=Budget(max_seconds=30)) as run:
        for _ in range(10):
            with run.step():
                telemetry.clock.advance(7)
    assert run.stop_reason is StopReason.MAX_TIME
    assert run.steps == 5  # at t=35 s the 6th step is refused
    event = _budget_event(telemetry)
    assert event["budget"] == "seconds"
    assert event["used"] == pytest.approx(35.0)


def test_usd_budget_stops_before_the_next_llm_call(telemetry: Telemetry) -> None:
    with telemetry.run(budget=Budget(max_usd=0.01)) as run:
        for _ in range(100):
            with run.step():
                # gpt-4o: 1000 in + 500 out = $0.0025 + $0.005 = $0.0075 per call
                run.record_llm_call(model="gpt-4o", input_tokens=1000, output_tokens=500)
    assert run.stop_reason is StopReason.MAX_USD
    assert run.llm_calls == 2  # the second call crosses $0.01; the third is refused
    assert run.cost_usd == pytest.approx(0.015)
    assert attrs(telemetry.run_span())[semconv.BUDGET_EXHAUSTED] == "usd"


def test_exhausted_budget_is_terminal_even_when_caught(telemetry: Telemetry) -> None:
    gateway = make_gateway({"kb.search": echo})
    with telemetry.run(budget=Budget(max_tool_calls=1), gateway=gateway) as run:
        run.call_tool("kb.search", {})
        with pytest.raises(BudgetExceeded):
            run.call_tool("kb.search", {})
        # the caller swallowed it; the run is still over and nothing else may start
        with pytest.raises(BudgetExceeded):
            run.step().__enter__()
    assert run.stop_reason is StopReason.MAX_TOOL_CALLS


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_steps": 0}, "budget.max_steps"),
        ({"max_steps": 2.5}, "budget.max_steps"),
        ({"max_tool_calls": True}, "budget.max_tool_calls"),
        ({"max_seconds": -1}, "budget.max_seconds"),
        ({"max_usd": float("nan")}, "budget.max_usd"),
    ],
)
def test_invalid_budgets_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Budget(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_unlimited_budget_has_no_attributes() -> None:
    assert Budget().unlimited
    assert Budget().span_attributes() == {}
    assert Budget(max_usd=1).span_attributes() == {semconv.BUDGET_MAX_USD: 1.0}
