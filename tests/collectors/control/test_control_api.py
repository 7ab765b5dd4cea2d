"""The control API over real HTTP on an in-process collector: ETag long-polls, approvals with a webhook,
RemoteKillSwitch and RemoteApprover against it, and the checks every request goes through."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _otlp_clients import Collector, http_request, running_collector
from _promstack import WebhookReceiver

from agentwatch.instrumentation import ApprovalDecision, ApprovalRequest, KillSwitch, RemoteApprover, RemoteKillSwitch
from agentwatch.instrumentation.killswitch import KillSwitchUnavailable

pytestmark = pytest.mark.integration  # a real engine and HTTP listener
pytest_plugins = ["_chstore"]

SWITCH = "/api/v1/control/killswitch"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as started:
        yield started


@pytest.fixture
def collector(clickhouse_url: str, tmp_path: Path, receiver: WebhookReceiver) -> Iterator[Collector]:
    with running_collector(clickhouse_url, tmp_path, approval_webhooks=receiver.url) as running:
        yield running


def request(collector: Collector, method: str, path: str, body: object | None = None, **headers: str) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(collector.base_url + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read())


def test_the_switch_answers_304_until_it_changes_and_a_long_poll_wakes_at_once(collector: Collector) -> None:
    first = http_request(collector.base_url + SWITCH, None)
    assert first.status == 200
    etag = {k.lower(): v for k, v in first.headers.items()}["etag"]
    unchanged = http_request(collector.base_url + SWITCH, None, {"If-None-Match": etag})
    assert unchanged.status == 304

    def engage() -> None:
        time.sleep(0.5)
        request(
            collector, "POST", SWITCH, {"agent": "support", "reason": "test"}, **{"Content-Type": "application/json"}
        )

    threading.Thread(target=engage).start()
    started = time.monotonic()
    woke = http_request(collector.base_url + SWITCH + "?wait=20", None, {"If-None-Match": etag})
    assert woke.status == 200
    assert time.monotonic() - started < 3  # woken by the change, not by the 20 s wait
    assert woke.json()["scopes"] == ["agent:support"]
    assert {k.lower(): v for k, v in woke.headers.items()}["etag"] != etag


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"agent": "support"}, 400),  # no reason
        ({"reason": "x"}, 400),  # nothing named
        ({"all": True, "agent": "a", "reason": "x"}, 400),
        ({"scope": "agent:a,b", "reason": "x"}, 400),  # the scope syntax of the SDK
        ({"agent": "a", "reason": "x", "expires_in_seconds": -1}, 400),
    ],
)
def test_bad_changes_are_refused(collector: Collector, body: dict[str, object], status: int) -> None:
    reply = http_request(collector.base_url + SWITCH, json.dumps(body).encode())
    assert reply.status == status, reply.body


def test_remote_kill_switch_follows_the_collector_and_goes_stale_without_it(collector: Collector) -> None:
    remote = RemoteKillSwitch(collector.base_url, stale_after=1.5, wait=5)
    try:
        switch = KillSwitch(remote)
        assert not switch.check(agent="support", tenant_id="acme").engaged
        request(collector, "POST", SWITCH, {"agent": "support", "tenant": "acme", "reason": "r"})
        deadline = time.monotonic() + 5
        while not switch.check(agent="support", tenant_id="acme").engaged and time.monotonic() < deadline:
            time.sleep(0.02)
        state = switch.check(agent="support", tenant_id="acme")
        assert state.engaged
        assert state.scope == "agent:support/tenant:acme"
        assert not switch.check(agent="support", tenant_id="globex").engaged
    finally:
        remote.close()
    # a source nobody refreshes goes stale: unavailable, so the gateway fails closed for writes
    time.sleep(2.0)
    with pytest.raises(KillSwitchUnavailable, match="stale after"):
        remote.engaged_scopes()


def test_unreachable_collector_is_unavailable_from_the_start() -> None:
    remote = RemoteKillSwitch("http://127.0.0.1:9", initial_wait=0.2)
    try:
        with pytest.raises(KillSwitchUnavailable, match="unavailable"):
            remote.engaged_scopes()
        assert KillSwitch(remote).check(agent="a", tenant_id=None).unavailable
    finally:
        remote.close()


def test_an_approval_notifies_the_webhook_and_its_decision_reaches_the_approver(
    collector: Collector, receiver: WebhookReceiver
) -> None:
    approver = RemoteApprover(collector.base_url, webhook=receiver.url, timeout=20, poll_wait=5)
    request_ = ApprovalRequest(
        "refund.issue", {"amount": 5, "card": "4111 1111 1111 1111"}, "support", "r1", "acme", "c1", "require_approval"
    )
    decisions: list[ApprovalDecision] = []
    worker = threading.Thread(target=lambda: decisions.append(approver.approve(request_)))
    worker.start()
    body = receiver.wait_for(lambda record: "approval" in record, timeout_s=10)
    approval = body["approval"]
    assert approval["tool"] == "refund.issue"
    assert "4111" not in json.dumps(approval)  # arguments are redacted before they are stored or sent
    assert body["approve_url"].endswith(f"/api/v1/control/approvals/{approval['id']}/approve")
    request(collector, "POST", f"/api/v1/control/approvals/{approval['id']}/approve", {"by": "alice"})
    worker.join(timeout=20)
    (decision,) = decisions
    assert decision.approved
    assert decision.approver == "alice via anonymous"
    assert decision.token


def test_a_webhook_outside_the_allowed_prefixes_is_refused(collector: Collector) -> None:
    body = {"agent": "a", "tool": "t", "webhook": "http://169.254.169.254/latest"}
    reply = http_request(collector.base_url + "/api/v1/control/approvals", json.dumps(body).encode())
    assert reply.status == 403
