"""The control state in a real store (chDB): replicas converge, expiry, ETags, tenants, the audit trail.

Two ``ControlPlane`` objects on one store stand for two collector replicas: a change made through
one is what the other reads (once its short cache is past), whatever ClickHouse has merged.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from _chrows import json_rows, new_trace_id, now_ns, span_row

from agentwatch.collectors.control.alertmanager import kill_orders, parse_duration
from agentwatch.collectors.control.audit import audit_entries
from agentwatch.collectors.control.state import Conflict, ControlPlane, visible_to
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.collectors.store.control_schema import APPROVALS_TABLE, AUDIT_TABLE, KILLSWITCH_TABLE
from agentwatch.instrumentation import semconv

pytestmark = pytest.mark.integration  # a real engine
pytest_plugins = ["_chstore"]


def test_replicas_converge_on_the_latest_version_of_each_scope(clickhouse_store: ClickHouseStore) -> None:
    one, two = ControlPlane(clickhouse_store, refresh_s=0.0), ControlPlane(clickhouse_store, refresh_s=0.0)
    empty = two.switch_view(None)
    one.set_switch("agent:support", engaged=True, actor="alice", reason="wave")
    seen = two.switch_view(None)
    assert seen.scopes == ["agent:support"]
    assert seen.etag != empty.etag
    two.set_switch("agent:support", engaged=False, actor="bob", reason="fixed")
    one.set_switch("tenant:acme", engaged=True, actor="alice", reason="asked")
    assert one.switch_view(None).scopes == ["tenant:acme"]
    # the same answer after ClickHouse has merged the versions away
    clickhouse_store.command(f"OPTIMIZE TABLE {KILLSWITCH_TABLE} FINAL")
    assert two.switch_view(None).scopes == ["tenant:acme"]
    assert clickhouse_store.query(f"SELECT count() AS n FROM {KILLSWITCH_TABLE}")[0]["n"] == 2


def test_an_expired_entry_is_released_and_changes_the_etag(clickhouse_store: ClickHouseStore) -> None:
    control = ControlPlane(clickhouse_store, refresh_s=0.0)
    control.set_switch(
        "agent:a", engaged=True, actor="x", reason="r", expires_at=datetime.now(UTC) + timedelta(seconds=1)
    )
    before = control.switch_view(None)
    assert before.scopes == ["agent:a"]
    time.sleep(1.2)
    after = control.switch_view(None)
    assert after.scopes == []
    assert after.etag != before.etag


def test_a_tenant_sees_the_scopes_that_cover_it_and_nothing_of_other_tenants(
    clickhouse_store: ClickHouseStore,
) -> None:
    control = ControlPlane(clickhouse_store, refresh_s=0.0)
    for scope in ("*", "agent:support", "tenant:acme", "agent:support/tenant:acme", "agent:support/tenant:globex"):
        control.set_switch(scope, engaged=True, actor="x", reason="r")
    assert control.switch_view("acme").scopes == ["*", "agent:support", "agent:support/tenant:acme", "tenant:acme"]
    assert control.switch_view("globex").scopes == ["*", "agent:support", "agent:support/tenant:globex"]
    assert control.switch_view("acme").etag != control.switch_view("globex").etag
    assert visible_to("tenant:acme", None)
    assert not visible_to("tenant:acme", "globex")


def test_an_approval_is_decided_once_and_only_within_its_tenant(clickhouse_store: ClickHouseStore) -> None:
    control = ControlPlane(clickhouse_store)
    filed = control.file_approval(
        tenant="acme", agent="support", tool="refund.issue", arguments='{"amount": 5}', rule="r", requested_by="agent"
    )
    assert control.approval(filed.approval_id, "globex") is None
    with pytest.raises(KeyError):
        control.decide(filed.approval_id, "globex", approved=True, actor="mallory", reason="")
    decided = control.decide(filed.approval_id, "acme", approved=True, actor="alice", reason="ok")
    assert decided.status == "approved"
    assert decided.token
    with pytest.raises(Conflict):
        control.decide(filed.approval_id, None, approved=False, actor="bob", reason="late")
    assert [a.status for a in control.approvals("acme", status="approved")] == ["approved"]
    assert control.approvals("acme", status="pending") == []
    assert clickhouse_store.query(f"SELECT count() AS n FROM {APPROVALS_TABLE}")[0]["n"] == 2
    kinds = [row["kind"] for row in audit_entries(clickhouse_store, "acme", kind="approval")]
    assert kinds == ["approval.approved", "approval.requested"]
    assert audit_entries(clickhouse_store, "globex") == []


def test_denied_tool_spans_reach_the_audit_trail_through_the_view(clickhouse_store: ClickHouseStore) -> None:
    now = datetime.now(UTC)
    denied = {
        semconv.GEN_AI_OPERATION_NAME: semconv.OP_EXECUTE_TOOL,
        semconv.GEN_AI_AGENT_NAME: "research",
        semconv.TENANT_ID: "acme",
        semconv.GEN_AI_TOOL_NAME: "db.drop",
        semconv.TOOL_DISPOSITION: "denied",
        semconv.POLICY_RULE: "deny:db.drop*",
        semconv.RUN_ID: "run-1",
    }
    allowed = {**denied, semconv.TOOL_DISPOSITION: "allowed", semconv.POLICY_RULE: "allow:db.*"}
    trace_id = new_trace_id()
    rows = [
        span_row("execute_tool db.drop", trace_id=trace_id, start_ns=now_ns(), attributes=denied),
        span_row("execute_tool db.read", trace_id=trace_id, start_ns=now_ns(), attributes=allowed),
    ]
    clickhouse_store.insert_json_rows("otel_traces", json_rows(rows), dedup_token=trace_id)
    found = audit_entries(clickhouse_store, "acme", kind="policy", since=now - timedelta(minutes=1))
    assert [(r["kind"], r["agent"], r["tool"], r["reason"], r["run_id"]) for r in found] == [
        ("policy.denied", "research", "db.drop", "deny:db.drop*", "run-1")
    ]
    assert clickhouse_store.query(f"SELECT count() AS n FROM {AUDIT_TABLE}")[0]["n"] == 1


def test_alertmanager_payloads_become_kill_orders() -> None:
    labels = {"alertname": "AgentToolDenialSurge", "agent": "research", "agentwatch_kill": "true"}
    alert: dict[str, object] = {"status": "firing", "labels": labels, "annotations": {"summary": "wave"}}
    unlabelled = {**alert, "labels": {"alertname": "X", "agent": "support"}}
    resolved = {**alert, "status": "resolved"}
    (order,) = kill_orders({"alerts": [alert, unlabelled, resolved]}, tenant=None)
    assert (order.scope, order.reason, order.expires_in_s) == ("agent:research", "AgentToolDenialSurge: wave", 3600)
    with_tenant = {**alert, "labels": {**labels, "tenant": "globex", "agentwatch_kill_expires": "30m"}}
    (confined,) = kill_orders({"alerts": [with_tenant]}, tenant="acme")  # the token's tenant wins
    assert (confined.scope, confined.expires_in_s) == ("agent:research/tenant:acme", 1800)
    assert parse_duration("2h") == 7200
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
