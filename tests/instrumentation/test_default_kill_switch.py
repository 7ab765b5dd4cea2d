"""Every gateway honours AGENTWATCH_KILL_SWITCH unless it opts out; denial hints point the right way."""

from __future__ import annotations

import pytest
from _telemetry import Telemetry, attrs, echo, make_gateway

from agentwatch.instrumentation import (
    KillSwitchEngaged,
    MemoryKillSwitch,
    Policy,
    StopReason,
    ToolDenied,
    ToolGateway,
    load_config,
    semconv,
)
from agentwatch.instrumentation.killswitch import EnvKillSwitch

VARIABLE = "AGENTWATCH_KILL_SWITCH"


def test_gateway_without_kill_switch_honours_the_environment(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed: list[str] = []

    def search(query: str) -> str:
        executed.append(query)
        return query

    gateway = make_gateway({"kb.search": search})
    assert gateway.kill_switch is not None
    assert [type(s) for s in gateway.kill_switch.sources] == [EnvKillSwitch]
    with telemetry.run(gateway=gateway) as run:
        run.call_tool("kb.search", {"query": "before"})
        monkeypatch.setenv(VARIABLE, "1")
        with run.step():
            run.call_tool("kb.search", {"query": "after"})
    assert executed == ["before"]
    assert run.stop_reason is StopReason.KILL_SWITCH
    assert attrs(telemetry.run_span())[semconv.STOP_REASON] == "kill_switch"


def test_standalone_gateway_call_is_killed_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = ToolGateway(policy=Policy(allow=["kb.*"]), tools={"kb.search": echo})
    monkeypatch.setenv(VARIABLE, "1")
    with pytest.raises(KillSwitchEngaged):
        gateway.call("kb.search", {"q": 1})
    monkeypatch.setenv(VARIABLE, "0")
    assert gateway.call("kb.search", {"q": 1}) == {"q": 1}


def test_scoped_environment_switch(telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, "tenant:acme")
    gateway = make_gateway()
    with telemetry.run(gateway=gateway, tenant_id="globex") as other:
        other.call_tool("kb.search", {"q": 1})
    assert other.stop_reason is StopReason.COMPLETED
    with telemetry.run(gateway=gateway, tenant_id="acme") as killed:
        killed.call_tool("kb.search", {"q": 1})
    assert killed.stop_reason is StopReason.KILL_SWITCH


def test_opt_out_with_false(telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, "1")
    gateway = make_gateway(kill_switch=False)
    assert gateway.kill_switch is None
    with telemetry.run(gateway=gateway) as run, run.step():
        assert run.call_tool("kb.search", {"q": 1}) == {"q": 1}
    assert run.stop_reason is StopReason.COMPLETED


def test_an_explicit_switch_is_used_as_given(telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VARIABLE, "1")
    memory = MemoryKillSwitch()
    gateway = make_gateway(kill_switch=memory)
    assert gateway.kill_switch is not None
    assert gateway.kill_switch.sources == (memory,)
    with telemetry.run(gateway=gateway) as run:
        run.call_tool("kb.search", {"q": 1})
    assert run.stop_reason is StopReason.COMPLETED
    both = make_gateway(kill_switch=[memory, EnvKillSwitch()])
    with telemetry.run(gateway=both) as run:
        run.call_tool("kb.search", {"q": 1})
    assert run.stop_reason is StopReason.KILL_SWITCH


def test_config_gateway_without_kill_switch_section_honours_the_environment(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config({"budgets": {"max_steps": 5}, "tools": {"allow": ["kb.*"]}})
    gateway = config.gateway({"kb.search": echo})
    monkeypatch.setenv(VARIABLE, "true")
    with telemetry.run(gateway=gateway) as run:
        run.call_tool("kb.search", {"q": 1})
    assert run.stop_reason is StopReason.KILL_SWITCH


def test_denial_hint_for_a_deny_rule_does_not_suggest_allow(telemetry: Telemetry) -> None:
    gateway = make_gateway(policy=Policy(allow=["kb.*"], deny=["kb.admin"]))
    with telemetry.run(gateway=gateway) as run, pytest.raises(ToolDenied) as raised:
        run.call_tool("kb.admin", {})
    assert raised.value.rule == "deny:kb.admin"
    message = str(raised.value)
    assert "allow" not in message.lower()
    assert "deny" in message
    assert "kb.admin" in message


def test_denial_hint_for_default_deny_still_suggests_allow(telemetry: Telemetry) -> None:
    gateway = make_gateway(policy=Policy(allow=["kb.*"]))
    with telemetry.run(gateway=gateway) as run, pytest.raises(ToolDenied) as raised:
        run.call_tool("db.write", {})
    assert raised.value.rule == "default_deny"
    assert "Policy(allow=...)" in str(raised.value)
