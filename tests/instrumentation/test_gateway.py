"""The tool gateway: every disposition, approvals, credentials, kill switch, idempotency."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _telemetry import Telemetry, attrs, echo, event_names, make_gateway

from agentwatch.instrumentation import (
    ApprovalDecision,
    ApprovalRejected,
    ApprovalRequest,
    FileKillSwitch,
    KillSwitch,
    KillSwitchEngaged,
    MemoryKillSwitch,
    Policy,
    StopReason,
    ToolDenied,
    ToolGateway,
    UnknownTool,
    semconv,
)


def _tool(telemetry: Telemetry) -> dict[str, Any]:
    (span,) = telemetry.tools()
    return dict(attrs(span))


# --- policy ---------------------------------------------------------------------------------


def test_policy_default_deny_deny_beats_allow_and_wildcards() -> None:
    policy = Policy(
        allow=["kb.*", "orders.lookup", "db.*"], require_approval=["db.write"], deny=["db.drop*", "kb.admin"]
    )
    assert policy.decide("kb.search").verdict == "allow"
    assert policy.decide("kb.search").rule == "allow:kb.*"
    assert policy.decide("kb.admin").verdict == "deny"  # deny beats the kb.* allow
    assert policy.decide("kb.admin").rule == "deny:kb.admin"
    assert policy.decide("db.write").verdict == "approval"
    assert policy.decide("db.write").risk.value == "approval"
    assert policy.decide("db.drop_table").verdict == "deny"
    assert policy.decide("db.read").verdict == "allow"
    assert policy.decide("email.send").verdict == "deny"
    assert policy.decide("email.send").rule == "default_deny"
    assert policy.decide("kbsearch").verdict == "deny"  # the dot in the pattern is literal
    assert Policy().decide("anything").verdict == "deny"


def test_uncaught_denial_ends_run_with_policy_denied(telemetry: Telemetry) -> None:
    ran: list[str] = []
    gateway = make_gateway({"kb.search": echo, "db.drop_table": lambda **_: ran.append("dropped")})
    with telemetry.run(gateway=gateway) as run, run.step():
        run.call_tool("db.drop_table", {"table": "customers"})
    assert ran == []
    assert run.stop_reason is StopReason.POLICY_DENIED
    tool = _tool(telemetry)
    assert tool[semconv.TOOL_DISPOSITION] == "denied"
    assert tool[semconv.TOOL_OUTCOME] == "blocked"
    assert tool[semconv.POLICY_RULE] == "default_deny"
    (tool_span,) = telemetry.tools()
    (event,) = [e for e in tool_span.events if e.name == semconv.EVENT_POLICY_DENIED]
    assert dict(event.attributes or {}) == {"tool": "db.drop_table", "rule": "default_deny"}
    assert attrs(telemetry.run_span())[semconv.STOP_REASON] == "policy_denied"


def test_caught_denial_lets_the_run_continue(telemetry: Telemetry) -> None:
    gateway = make_gateway()
    with telemetry.run(gateway=gateway) as run:
        with run.step():
            with pytest.raises(ToolDenied) as caught:
                run.call_tool("kb.admin", {})
            assert caught.value.rule == "deny:kb.admin"
        with run.step():
            run.call_tool("kb.search", {"q": 1})
    assert run.stop_reason is StopReason.COMPLETED
    assert run.tool_dispositions == {"denied": 1, "allowed": 1}


def test_unknown_tool_is_denied_with_the_registered_names(telemetry: Telemetry) -> None:
    gateway = make_gateway({"kb.search": echo})
    with telemetry.run(gateway=gateway) as run, pytest.raises(UnknownTool, match=r"not registered.*kb\.search"):
        run.call_tool("kb.summarize", {})
    assert _tool(telemetry)[semconv.POLICY_RULE] == "unknown_tool"
    assert _tool(telemetry)[semconv.TOOL_DISPOSITION] == "denied"


def test_tool_error_is_recorded_and_propagates_unchanged(telemetry: Telemetry) -> None:
    failure = ConnectionError("orders service down")

    def broken(**_: Any) -> None:
        raise failure

    gateway = make_gateway({"kb.search": broken})
    with pytest.raises(ConnectionError) as caught, telemetry.run(gateway=gateway) as run:
        run.call_tool("kb.search", {})
    assert caught.value is failure
    assert run.stop_reason is StopReason.ERROR
    tool = _tool(telemetry)
    assert tool[semconv.TOOL_DISPOSITION] == "allowed"
    assert tool[semconv.TOOL_OUTCOME] == "error"
    assert tool[semconv.ERROR_TYPE] == "ConnectionError"


def test_bad_tool_arguments_are_rejected_clearly(telemetry: Telemetry) -> None:
    gateway = make_gateway()
    with telemetry.run(gateway=gateway) as run:
        with pytest.raises(TypeError, match="mapping"):
            run.call_tool("kb.search", ["not", "a", "mapping"])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="non-empty"):
            run.call_tool("", {})
    assert run.stop_reason is StopReason.COMPLETED


# --- approvals --------------------------------------------------------------------------------


def test_approved_call_runs_with_the_approval_token(telemetry: Telemetry) -> None:
    seen: list[ApprovalRequest] = []

    def approver(request: ApprovalRequest) -> ApprovalDecision:
        seen.append(request)
        return ApprovalDecision(True, approver="alice", token="tok-1")

    def close(ticket_id: str, approval_token: str) -> str:
        return f"{ticket_id}:{approval_token}"

    gateway = make_gateway({"ticket.close": close}, approver=approver)
    with telemetry.run(tenant_id="acme", gateway=gateway) as run:
        assert run.call_tool("ticket.close", {"ticket_id": "T-1"}, call_id="c1") == "T-1:tok-1"
    assert seen[0].tool == "ticket.close"
    assert seen[0].args == {"ticket_id": "T-1"}
    assert seen[0].tenant_id == "acme"
    assert seen[0].run_id == run.run_id
    tool = _tool(telemetry)
    assert tool[semconv.TOOL_DISPOSITION] == "approved"
    assert tool[semconv.TOOL_OUTCOME] == "ok"
    assert tool[semconv.TOOL_RISK] == "approval"
    (span,) = telemetry.tools()
    assert event_names(span) == [semconv.EVENT_APPROVAL_REQUESTED, semconv.EVENT_APPROVAL_GRANTED]
    assert dict(span.events[1].attributes or {})["approver"] == "alice"


class _Rejecting:
    """An approver object (protocol form) that says no."""

    def approve(self, request: ApprovalRequest) -> bool:
        return False


def _slow(request: ApprovalRequest) -> bool:
    time.sleep(2)
    return True


def _failing(request: ApprovalRequest) -> bool:
    raise RuntimeError("approval service unreachable")


@pytest.mark.parametrize(
    ("approver", "reason"),
    [
        (_Rejecting(), "rejected by approver"),
        (_slow, "timed out"),
        (_failing, "approval service unreachable"),
        (None, "no approver configured"),
        (lambda request: "yes", "expected bool"),
    ],
    ids=["rejected", "timeout", "approver-error", "no-approver", "wrong-answer-type"],
)
def test_rejection_timeout_and_errors_count_as_rejected(telemetry: Telemetry, approver: Any, reason: str) -> None:
    executed: list[int] = []
    gateway = make_gateway({"ticket.close": lambda **_: executed.append(1)}, approver=approver, approval_timeout=0.2)
    with telemetry.run(gateway=gateway) as run:
        run.call_tool("ticket.close", {"ticket_id": "T-9"})
    assert executed == []
    assert run.stop_reason is StopReason.APPROVAL_REJECTED
    tool = _tool(telemetry)
    assert tool[semconv.TOOL_DISPOSITION] == "rejected"
    assert tool[semconv.TOOL_OUTCOME] == "blocked"
    (span,) = telemetry.tools()
    rejected = [e for e in span.events if e.name == semconv.EVENT_APPROVAL_REJECTED]
    assert reason in str(dict(rejected[0].attributes or {})["reason"])
    gateway.close()


def test_caught_rejection_lets_the_run_continue(telemetry: Telemetry) -> None:
    gateway = make_gateway(approver=lambda request: False)
    with telemetry.run(gateway=gateway) as run:
        with pytest.raises(ApprovalRejected):
            run.call_tool("ticket.close", {})
        run.call_tool("kb.search", {})
    assert run.stop_reason is StopReason.COMPLETED


# --- credentials ------------------------------------------------------------------------------


def test_scoped_credentials_reach_the_tool_but_never_a_span(telemetry: Telemetry) -> None:
    telemetry.with_settings(capture_content=True)
    asked: list[tuple[str, str | None]] = []
    secret = "orders-key-acme-Zx81Qp0L3mN7"

    def credentials(tool: str, tenant_id: str | None) -> dict[str, str]:
        asked.append((tool, tenant_id))
        return {"api_key": secret} if tenant_id == "acme" else {}

    def lookup(order_id: str, credentials: dict[str, str]) -> str:
        # a careless tool that echoes its key back: the capture must still scrub it
        return f"order {order_id} fetched with {credentials.get('api_key')}"

    gateway = make_gateway({"kb.search": lookup}, credentials=credentials)
    with telemetry.run(tenant_id="acme", gateway=gateway) as run:
        assert secret in run.call_tool("kb.search", {"order_id": "1"})
    with telemetry.run(tenant_id="globex", gateway=gateway) as other:
        assert "None" in other.call_tool("kb.search", {"order_id": "2"})
    assert asked == [("kb.search", "acme"), ("kb.search", "globex")]
    for span in telemetry.spans():
        blob = repr(dict(attrs(span))) + repr([e.attributes for e in span.events])
        assert secret not in blob
    assert "order 1 fetched with" in attrs(telemetry.tools()[0])[semconv.GEN_AI_TOOL_CALL_RESULT]


# --- kill switch ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "stopped"),
    [("*", True), ("agent:support", True), ("tenant:acme", True), ("agent:other", False), ("tenant:globex", False)],
)
def test_kill_switch_scopes_stop_steps(telemetry: Telemetry, scope: str, stopped: bool) -> None:
    switch = MemoryKillSwitch()
    switch.engage(scope)
    with telemetry.run("support", tenant_id="acme", kill_switch=switch) as run, run.step():
        pass
    expected = StopReason.KILL_SWITCH if stopped else StopReason.COMPLETED
    assert run.stop_reason is expected
    assert run.steps == (0 if stopped else 1)
    if stopped:
        assert semconv.EVENT_KILL_SWITCH_ENGAGED in event_names(telemetry.run_span())


def test_kill_switch_engaged_mid_run_blocks_the_next_tool_call(telemetry: Telemetry) -> None:
    switch = MemoryKillSwitch()
    executed: list[int] = []
    gateway = make_gateway({"kb.search": lambda **_: executed.append(1)}, kill_switch=switch)
    with telemetry.run(gateway=gateway) as run, run.step():
        run.call_tool("kb.search", {})
        switch.engage("*")
        run.call_tool("kb.search", {})
    assert executed == [1]
    assert run.stop_reason is StopReason.KILL_SWITCH
    killed = telemetry.tools()[1]
    assert attrs(killed)[semconv.TOOL_DISPOSITION] == "killed"
    assert attrs(killed)[semconv.TOOL_OUTCOME] == "blocked"
    assert semconv.EVENT_KILL_SWITCH_ENGAGED in event_names(killed)


def test_kill_switch_file_is_reread(tmp_path: Path, telemetry: Telemetry) -> None:
    path = tmp_path / "kill"
    source = FileKillSwitch(path, min_interval=0.0)
    gateway = make_gateway(kill_switch=source)
    with telemetry.run(tenant_id="acme", gateway=gateway) as first:
        first.call_tool("kb.search", {})
    assert first.stop_reason is StopReason.COMPLETED
    path.write_text("# engaged during the incident\ntenant:acme\n")
    with telemetry.run(tenant_id="acme", gateway=gateway) as second:
        second.call_tool("kb.search", {})
    assert second.stop_reason is StopReason.KILL_SWITCH
    with telemetry.run(tenant_id="globex", gateway=gateway) as third:
        third.call_tool("kb.search", {})
    assert third.stop_reason is StopReason.COMPLETED


def test_kill_switch_from_environment(telemetry: Telemetry) -> None:
    from agentwatch.instrumentation import EnvKillSwitch

    environ = {"AGENTWATCH_KILL_SWITCH": "agent:support"}
    gateway = make_gateway(kill_switch=EnvKillSwitch(environ=environ))
    with telemetry.run("support", gateway=gateway) as run, run.step():
        pass
    assert run.stop_reason is StopReason.KILL_SWITCH


def test_unreadable_kill_switch_fails_closed_for_writes_open_for_reads(tmp_path: Path, telemetry: Telemetry) -> None:
    path = tmp_path / "kill"
    path.mkdir()  # exists but cannot be read as a file
    written: list[int] = []
    policy = Policy(allow=["kb.*", "ticket.create"], writes=["ticket.*"])
    gateway = ToolGateway(
        policy=policy,
        tools={"kb.search": echo, "ticket.create": lambda **_: written.append(1)},
        kill_switch=KillSwitch(FileKillSwitch(path, min_interval=0.0)),
    )
    with telemetry.run(gateway=gateway) as run, run.step():  # steps fail open
        assert run.call_tool("kb.search", {"q": "x"}) == {"q": "x"}  # reads fail open
        with pytest.raises(ToolDenied) as caught:
            run.call_tool("ticket.create", {})
    assert caught.value.rule == "kill_switch_unavailable"
    assert written == []
    assert run.stop_reason is StopReason.COMPLETED
    blocked = telemetry.tools()[1]
    assert attrs(blocked)[semconv.TOOL_DISPOSITION] == "killed"
    assert attrs(blocked)[semconv.TOOL_RISK] == "write"


# --- idempotency ------------------------------------------------------------------------------


def test_same_idempotency_key_returns_first_result(telemetry: Telemetry) -> None:
    created: list[str] = []

    def create(title: str) -> str:
        created.append(title)
        return f"T-{len(created)}"

    gateway = ToolGateway(policy=Policy(allow=["ticket.create"]), tools={"ticket.create": create})
    with telemetry.run(gateway=gateway) as run:
        first = run.call_tool("ticket.create", {"title": "a"}, idempotency_key="k1")
        again = run.call_tool("ticket.create", {"title": "a"}, idempotency_key="k1")
        other = run.call_tool("ticket.create", {"title": "b"}, idempotency_key="k2")
    with telemetry.run(gateway=gateway) as second_run:
        fresh = second_run.call_tool("ticket.create", {"title": "a"}, idempotency_key="k1")  # keys are per run
    assert (first, again, other, fresh) == ("T-1", "T-1", "T-2", "T-3")
    assert created == ["a", "b", "a"]
    dispositions = [attrs(s)[semconv.TOOL_DISPOSITION] for s in telemetry.tools()]
    assert dispositions == ["allowed", "deduplicated", "allowed", "allowed"]
    assert attrs(telemetry.tools()[1])[semconv.TOOL_IDEMPOTENCY_KEY] == "k1"


def test_failed_call_is_not_remembered_so_it_can_be_retried(telemetry: Telemetry) -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise TimeoutError("upstream timeout")
        return "ok"

    gateway = ToolGateway(policy=Policy(allow=["ticket.create"]), tools={"ticket.create": flaky})
    with telemetry.run(gateway=gateway) as run:
        with pytest.raises(TimeoutError):
            run.call_tool("ticket.create", {}, idempotency_key="k")
        assert run.call_tool("ticket.create", {}, idempotency_key="k") == "ok"
    assert len(attempts) == 2


def test_concurrent_duplicates_execute_once(telemetry: Telemetry) -> None:
    gate = threading.Event()
    executions: list[int] = []

    def create() -> str:
        executions.append(1)
        gate.wait(2)
        return "T-1"

    gateway = ToolGateway(policy=Policy(allow=["ticket.create"]), tools={"ticket.create": create})
    results: list[str] = []
    with telemetry.run(gateway=gateway) as run:

        def call() -> None:
            results.append(gateway.call("ticket.create", {}, run=run, idempotency_key="same"))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.1)
        gate.set()
        for thread in threads:
            thread.join()
    assert executions == [1]
    assert results == ["T-1"] * 4


def test_gateway_outside_a_run_still_enforces_and_traces(telemetry: Telemetry) -> None:
    gateway = make_gateway(tracer_provider=telemetry.provider, settings=telemetry.settings)
    assert gateway.call("kb.search", {"a": 1}) == {"a": 1}
    with pytest.raises(ToolDenied):
        gateway.call("email.send", {})
    dispositions = [attrs(s)[semconv.TOOL_DISPOSITION] for s in telemetry.tools()]
    assert dispositions == ["allowed", "denied"]
    assert all(semconv.RUN_ID not in attrs(s) for s in telemetry.tools())


def test_kill_switch_engaged_error_is_terminal(telemetry: Telemetry) -> None:
    switch = MemoryKillSwitch()
    gateway = make_gateway(kill_switch=switch)
    with telemetry.run(gateway=gateway) as run:
        switch.engage("*")
        with pytest.raises(KillSwitchEngaged):
            run.call_tool("kb.search", {})
        switch.release("*")
        with pytest.raises(KillSwitchEngaged):  # caught once, still over
            run.call_tool("kb.search", {})
    assert run.stop_reason is StopReason.KILL_SWITCH


# --- replay -----------------------------------------------------------------------------------


def test_replay_answers_from_the_recording_and_never_executes(telemetry: Telemetry) -> None:
    from agentwatch.instrumentation import RecordedCall, Recording, ReplayedToolError

    executed: list[str] = []
    recording = Recording(
        [
            RecordedCall("kb.search", {"query": "refund", "limit": 3}, result=["5 business days"]),
            RecordedCall("kb.search", {"query": "refund", "limit": 3}, result=["second answer"]),
            RecordedCall("ticket.close", {"ticket_id": "T-1"}, error="ticket already closed"),
        ]
    )
    gateway = make_gateway(
        {"kb.search": lambda **_: executed.append("search"), "ticket.close": lambda **_: executed.append("close")},
        approver=lambda request: True,
        replay=recording,
    )
    with telemetry.run(gateway=gateway) as run:
        # argument order does not matter; repeated calls are served in recorded order
        assert run.call_tool("kb.search", {"limit": 3, "query": "refund"}) == ["5 business days"]
        assert run.call_tool("kb.search", {"query": "refund", "limit": 3}) == ["second answer"]
        with pytest.raises(ReplayedToolError, match="already closed"):
            run.call_tool("ticket.close", {"ticket_id": "T-1"})
        with pytest.raises(ToolDenied) as caught:
            run.call_tool("kb.search", {"query": "something new"})
        with pytest.raises(ToolDenied):
            run.call_tool("db.drop_table", {})  # the policy still applies during replay
    assert executed == []
    assert caught.value.rule == "replay_unrecorded"
    assert recording.unrecorded == [("kb.search", {"query": "something new"})]
    assert recording.remaining() == 0
    outcomes = [(attrs(s)[semconv.TOOL_DISPOSITION], attrs(s)[semconv.TOOL_OUTCOME]) for s in telemetry.tools()]
    assert outcomes == [
        ("replayed", "ok"),
        ("replayed", "ok"),
        ("replayed", "error"),
        ("denied", "blocked"),
        ("denied", "blocked"),
    ]
