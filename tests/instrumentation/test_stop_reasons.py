"""Every stop reason, read back from the exported run span (the contract a dashboard relies on)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from _telemetry import Telemetry, attrs, make_gateway

from agentwatch.instrumentation import (
    AgentRun,
    Budget,
    GuardrailTripped,
    MemoryKillSwitch,
    StopReason,
    ToolGateway,
)


def _completed(run: AgentRun, telemetry: Telemetry) -> None:
    with run.step():
        run.call_tool("kb.search", {})


def _max_steps(run: AgentRun, telemetry: Telemetry) -> None:
    for _ in range(5):
        with run.step():
            pass


def _max_tool_calls(run: AgentRun, telemetry: Telemetry) -> None:
    for _ in range(5):
        run.call_tool("kb.search", {})


def _max_time(run: AgentRun, telemetry: Telemetry) -> None:
    telemetry.clock.advance(61)
    run.call_tool("kb.search", {})


def _max_usd(run: AgentRun, telemetry: Telemetry) -> None:
    for _ in range(5):
        run.record_llm_call(model="gpt-4o", input_tokens=100_000, output_tokens=10_000)


def _policy_denied(run: AgentRun, telemetry: Telemetry) -> None:
    run.call_tool("db.drop_table", {})


def _approval_rejected(run: AgentRun, telemetry: Telemetry) -> None:
    run.call_tool("ticket.close", {})


def _kill_switch(run: AgentRun, telemetry: Telemetry) -> None:
    KILL.engage("tenant:acme")
    with run.step():
        pass


def _guardrail(run: AgentRun, telemetry: Telemetry) -> None:
    raise GuardrailTripped("the answer promised a refund")


def _error(run: AgentRun, telemetry: Telemetry) -> None:
    raise RuntimeError("model returned malformed JSON")


def _cancelled(run: AgentRun, telemetry: Telemetry) -> None:
    raise asyncio.CancelledError


KILL = MemoryKillSwitch()

SCENARIOS: dict[StopReason, Callable[[AgentRun, Telemetry], None]] = {
    StopReason.COMPLETED: _completed,
    StopReason.MAX_STEPS: _max_steps,
    StopReason.MAX_TOOL_CALLS: _max_tool_calls,
    StopReason.MAX_TIME: _max_time,
    StopReason.MAX_USD: _max_usd,
    StopReason.POLICY_DENIED: _policy_denied,
    StopReason.APPROVAL_REJECTED: _approval_rejected,
    StopReason.KILL_SWITCH: _kill_switch,
    StopReason.GUARDRAIL: _guardrail,
    StopReason.ERROR: _error,
    StopReason.CANCELLED: _cancelled,
}


def test_every_stop_reason_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(StopReason)


@pytest.mark.parametrize("reason", list(StopReason), ids=[r.value for r in StopReason])
def test_stop_reason_reaches_the_run_span(telemetry: Telemetry, reason: StopReason) -> None:
    KILL.release_all()
    gateway: ToolGateway = make_gateway(approver=lambda request: False, kill_switch=KILL)
    budget = Budget(max_steps=3, max_tool_calls=3, max_seconds=60, max_usd=0.5)
    propagates = reason in (StopReason.ERROR, StopReason.CANCELLED)
    try:
        with telemetry.run(tenant_id="acme", gateway=gateway, budget=budget) as run:
            SCENARIOS[reason](run, telemetry)
    except (RuntimeError, asyncio.CancelledError):
        assert propagates
    else:
        assert not propagates
    assert run.stop_reason is reason
    assert attrs(telemetry.run_span())["agentwatch.stop_reason"] == reason.value
