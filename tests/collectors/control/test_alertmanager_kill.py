"""Detect, then stop: a real Alertmanager delivers a labelled alert to the collector, which engages the switch.

The route is opt-in twice: Alertmanager must send to ``/api/v1/control/alertmanager`` with a
``control`` token, and only alerts labelled ``agentwatch_kill="true"`` act. The switch engages with
an expiry and an audit entry; a resolved alert releases nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _collector_proc import CollectorProcess
from _promstack import ALERTMANAGER_BIN, Alertmanager, write_yaml

pytestmark = [
    pytest.mark.integration,  # real collector and Alertmanager processes
    pytest.mark.skipif(not ALERTMANAGER_BIN.exists(), reason="Debian's prometheus-alertmanager is not installed"),
]

TOKENS = """
tokens:
  - {token: alertmanager-secret, scopes: [control], name: alertmanager}
  - {token: reader, tenant: acme, scopes: [ingest]}
"""


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    (tmp_path / "tokens.yaml").write_text(TOKENS)
    process = CollectorProcess(tmp_path / "collector", extra_args=["--tokens", str(tmp_path / "tokens.yaml")])
    process.start()
    yield process
    process.stop()


def switch(collector: CollectorProcess) -> dict[str, Any]:
    status, body = collector.get("/api/v1/control/killswitch", token="reader")
    assert status == 200, body
    document: dict[str, Any] = json.loads(body)
    return document


def test_a_labelled_alert_engages_the_kill_switch_through_alertmanager(
    collector: CollectorProcess, tmp_path: Path
) -> None:
    config = {
        "route": {
            "receiver": "nobody",
            "group_by": ["alertname", "agent"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [{"receiver": "agentwatch-kill", "matchers": ['agentwatch_kill="true"']}],
        },
        "receivers": [
            {"name": "nobody"},
            {
                "name": "agentwatch-kill",
                "webhook_configs": [
                    {
                        "url": f"{collector.base_url}/api/v1/control/alertmanager",
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": "alertmanager-secret"}},
                    }
                ],
            },
        ],
    }
    path = write_yaml(tmp_path / "alertmanager.yaml", config)
    with Alertmanager(tmp_path / "am", path) as alertmanager:
        labels = {"alertname": "AgentToolDenialSurge", "agent": "research", "severity": "page"}
        # the same alert without the label pages people but stops nothing
        alertmanager.post_alerts([{"labels": {**labels, "agent": "support"}}])
        alertmanager.post_alerts(
            [
                {
                    "labels": {**labels, "agentwatch_kill": "true", "agentwatch_kill_expires": "30m"},
                    "annotations": {"summary": "tool denials rose many-fold"},
                }
            ]
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not switch(collector)["scopes"]:
            time.sleep(0.2)
        state = switch(collector)
        assert state["scopes"] == ["agent:research"]
        (entry,) = state["entries"]
        assert entry["reason"] == "AgentToolDenialSurge: tool denials rose many-fold"
        assert entry["actor"] == "alertmanager:AgentToolDenialSurge via alertmanager"
        expires = time.mktime(time.strptime(entry["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        assert 25 * 60 < expires - time.time() < 31 * 60

        # resolving the alert releases nothing: a person does, after looking
        alertmanager.post_alerts(
            [{"labels": {**labels, "agentwatch_kill": "true", "agentwatch_kill_expires": "30m"}, "endsAt": _past()}]
        )
        time.sleep(3)
        assert switch(collector)["scopes"] == ["agent:research"]

    status, body = collector.get("/api/v1/control/audit?kind=killswitch", token="alertmanager-secret")
    assert status == 200, body
    (row,) = json.loads(body)["audit"]
    assert (row["kind"], row["scope"], row["actor"]) == (
        "killswitch.engaged",
        "agent:research",
        "alertmanager:AgentToolDenialSurge via alertmanager",
    )
    assert row["details"]["expires_at"] == entry["expires_at"]


def _past() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))


def test_the_webhook_route_wants_a_control_token(collector: CollectorProcess) -> None:
    import urllib.error
    import urllib.request

    body = json.dumps(
        {"alerts": [{"status": "firing", "labels": {"agentwatch_kill": "true", "agent": "x", "alertname": "A"}}]}
    ).encode()
    request = urllib.request.Request(
        f"{collector.base_url}/api/v1/control/alertmanager",
        data=body,
        headers={"Authorization": "Bearer reader", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 403
    caught.value.close()
    assert switch(collector)["scopes"] == []
