"""The deployed Alertmanager configuration: valid for amtool, routes pages and tickets, groups, inhibits.

Routing is checked with the installed ``amtool config routes test``; grouping, inhibition and
delivery are checked against a real Alertmanager (``prometheus-alertmanager``) running the same
file with its receivers pointed at a local webhook. The last test drives the whole helper stack
(Prometheus scraping and evaluating a rule, Alertmanager, webhook) that the end-to-end test uses.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from _promstack import (
    ALERTMANAGER_CONFIG,
    AMTOOL_BIN,
    Alertmanager,
    Prometheus,
    WebhookReceiver,
    alertmanager_config_for,
    load_alertmanager_config,
    parse_duration,
    write_yaml,
)

pytestmark = [
    pytest.mark.integration,  # real engines or processes: not in `make test-fast`
    pytest.mark.skipif(not AMTOOL_BIN.exists(), reason="Debian's prometheus-alertmanager is not installed"),
]


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(AMTOOL_BIN), *args], capture_output=True, text=True, timeout=60, check=False)


def route_receivers(labels: Mapping[str, str], *, verify: str | None = None) -> subprocess.CompletedProcess[str]:
    args = ["config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}"]
    if verify is not None:
        args.append(f"--verify.receivers={verify}")
    return amtool(*args, *(f"{name}={value}" for name, value in labels.items()))


# --- the file itself ------------------------------------------------------------------------------


def test_amtool_accepts_the_deployed_config() -> None:
    done = amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    assert "2 inhibit rules" in done.stdout
    assert "2 receivers" in done.stdout


def test_amtool_rejects_a_broken_config(tmp_path: Path) -> None:
    """The check above can fail: a route to a receiver that does not exist is refused."""
    config = load_alertmanager_config()
    config["route"]["routes"][0]["receiver"] = "nobody"
    done = amtool("check-config", str(write_yaml(tmp_path / "broken.yaml", config)))
    assert done.returncode != 0
    assert "nobody" in done.stdout + done.stderr


PAGE = {"severity": "page"}
TICKET = {"severity": "ticket"}


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "AgentBudgetBurnFast", "component": "agent", "agent": "support", **PAGE}, "pager"),
        ({"alertname": "AgentBudgetBurnSlow", "component": "agent", "agent": "support", **PAGE}, "pager"),
        ({"alertname": "CanaryStopReasonDrift", "component": "canary", "agent": "support", **PAGE}, "pager"),
        ({"alertname": "AgentwatchCollectorDown", "component": "collector", **PAGE}, "pager"),
        ({"alertname": "AgentBudgetBurnTicket", "component": "agent", "agent": "support", **TICKET}, "chat"),
        ({"alertname": "CanaryDriftSuspected", "component": "canary", "agent": "support", **TICKET}, "chat"),
        ({"alertname": "AgentwatchCollectorSpoolFilling", "component": "collector", **TICKET}, "chat"),
        # anything without a known severity must still reach a person who reads it, never vanish
        ({"alertname": "SomethingElse"}, "chat"),
        ({"alertname": "Typo", "severity": "Page"}, "chat"),
    ],
)
def test_routing(labels: dict[str, str], receiver: str) -> None:
    done = route_receivers(labels, verify=receiver)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [receiver]


def test_route_verification_reports_a_mismatch() -> None:
    """``--verify.receivers`` fails when the route differs, so the routing test above can fail."""
    done = route_receivers({"alertname": "AgentBudgetBurnFast", **PAGE}, verify="chat")
    assert done.returncode != 0
    assert "did not match" in done.stdout + done.stderr


def test_every_route_groups_by_alertname_and_agent_with_sensible_timings() -> None:
    config = load_alertmanager_config()
    root = config["route"]
    assert root["group_by"] == ["alertname", "agent"]
    routes = [root, *root["routes"]]
    for route in root["routes"]:
        assert route.get("group_by", root["group_by"]) == ["alertname", "agent"], route
        assert "continue" not in route, "a page must not also go to chat"
    for route in routes:
        group_wait = parse_duration(route.get("group_wait", root["group_wait"]))
        group_interval = parse_duration(route.get("group_interval", root["group_interval"]))
        repeat_interval = parse_duration(route.get("repeat_interval", root["repeat_interval"]))
        assert 0 < group_wait <= 60
        assert group_wait < group_interval <= repeat_interval
    (page_route,) = root["routes"]
    assert parse_duration(page_route["group_wait"]) <= 15, "a page must not wait long for company"
    assert parse_duration(page_route["repeat_interval"]) <= 4 * 3600, "an unresolved page must be repeated"


_EXAMPLE = re.compile(r"^\s*# --- begin (\w+) example\n(.*?)^\s*# --- end \1 example", re.MULTILINE | re.DOTALL)


def documented_examples() -> dict[str, Any]:
    """The receiver snippets documented in comments of the deployed file, uncommented."""
    examples: dict[str, Any] = {}
    for name, block in _EXAMPLE.findall(ALERTMANAGER_CONFIG.read_text()):
        text = "\n".join(line.split("#", 1)[1][1:] if "#" in line else line for line in block.splitlines())
        examples[name] = yaml.safe_load(text)
    return examples


def test_documented_receiver_swaps_are_valid(tmp_path: Path) -> None:
    """The PagerDuty, Opsgenie and Slack snippets in the comments are configuration amtool accepts."""
    examples = documented_examples()
    assert set(examples) == {"pagerduty", "opsgenie", "slack"}
    for name, snippet in examples.items():
        config = load_alertmanager_config()
        receiver = "chat" if name == "slack" else "pager"
        (entry,) = [entry for entry in config["receivers"] if entry["name"] == receiver]
        del entry["webhook_configs"]
        entry.update(snippet)
        done = amtool("check-config", str(write_yaml(tmp_path / f"{name}.yaml", config)))
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
        assert f"{name}_configs" in entry


# --- a running Alertmanager with the deployed routing tree -------------------------------------------


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: WebhookReceiver) -> Iterator[Alertmanager]:
    # timings shrunk so notifications arrive within seconds; routes, grouping and inhibitions as deployed
    config = alertmanager_config_for(webhook, time_scale=1 / 60, min_seconds=0.2)
    with Alertmanager(tmp_path / "alertmanager", write_yaml(tmp_path / "alertmanager.yaml", config)) as manager:
        yield manager


def alert(alertname: str, severity: str, component: str, **labels: str) -> dict[str, Any]:
    return {
        "labels": {"alertname": alertname, "severity": severity, "component": component, **labels},
        "annotations": {"summary": f"{alertname} test"},
    }


def states(manager: Alertmanager) -> dict[tuple[str, str], str]:
    """(alertname, agent) -> state ("active" or "suppressed") of every alert Alertmanager holds."""
    return {
        (item["labels"]["alertname"], item["labels"].get("agent", "")): item["status"]["state"]
        for item in manager.alerts()
    }


def wait_states(
    manager: Alertmanager, expected: Mapping[tuple[str, str], str], timeout_s: float = 30.0
) -> dict[tuple[str, str], str]:
    deadline = time.monotonic() + timeout_s
    seen = states(manager)
    while time.monotonic() < deadline:
        seen = states(manager)
        if all(seen.get(key) == state for key, state in expected.items()):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"expected {dict(expected)}, Alertmanager holds {seen}")


def test_grouping_by_alertname_and_agent(alertmanager: Alertmanager) -> None:
    alertmanager.post_alerts(
        [
            alert("AgentBudgetBurnFast", "page", "agent", agent="support", track="stable"),
            alert("AgentBudgetBurnFast", "page", "agent", agent="support", track="canary"),
            alert("AgentBudgetBurnFast", "page", "agent", agent="billing", track="stable"),
            alert("AgentStopReasonSpike", "ticket", "agent", agent="support", stop_reason="error"),
            alert("AgentStopReasonSpike", "ticket", "agent", agent="support", stop_reason="guardrail"),
        ]
    )
    expected = {
        ("AgentBudgetBurnFast", "support"): ("pager", 2),
        ("AgentBudgetBurnFast", "billing"): ("pager", 1),
        ("AgentStopReasonSpike", "support"): ("chat", 2),
    }
    # the dispatcher groups posted alerts asynchronously: poll until it has seen all five
    deadline = time.monotonic() + 30
    while True:
        groups = alertmanager.get_json("/api/v2/alerts/groups")
        by_key = {
            (group["labels"]["alertname"], group["labels"]["agent"]): (group["receiver"]["name"], len(group["alerts"]))
            for group in groups
        }
        if sum(count for _, count in by_key.values()) >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert by_key == expected
    assert all(set(group["labels"]) == {"alertname", "agent"} for group in groups)


def test_pages_reach_the_pager_and_tickets_reach_chat_one_notification_per_group(
    alertmanager: Alertmanager, webhook: WebhookReceiver
) -> None:
    alertmanager.post_alerts(
        [
            alert("AgentBudgetBurnFast", "page", "agent", agent="support", track="stable"),
            alert("AgentBudgetBurnFast", "page", "agent", agent="support", track="canary"),
            alert("AgentBudgetBurnTicket", "ticket", "agent", agent="support"),
        ]
    )
    page = webhook.wait_for(lambda n: n["path"] == "/pager", timeout_s=30)
    ticket = webhook.wait_for(lambda n: n["path"] == "/chat", timeout_s=30)
    assert page["receiver"] == "pager"
    assert page["status"] == "firing"
    assert page["groupLabels"] == {"alertname": "AgentBudgetBurnFast", "agent": "support"}
    assert sorted(item["labels"]["track"] for item in page["alerts"]) == ["canary", "stable"]
    assert ticket["receiver"] == "chat"
    assert ticket["groupLabels"] == {"alertname": "AgentBudgetBurnTicket", "agent": "support"}
    pager_alertnames = {
        item["labels"]["alertname"] for n in webhook.notifications() if n["path"] == "/pager" for item in n["alerts"]
    }
    assert pager_alertnames == {"AgentBudgetBurnFast"}, "a ticket reached the pager"


def test_collector_pages_inhibit_agent_alerts_but_collector_tickets_do_not(
    alertmanager: Alertmanager, webhook: WebhookReceiver
) -> None:
    spool_ticket = alert("AgentwatchCollectorSpoolFilling", "ticket", "collector")
    alertmanager.post_alerts([spool_ticket, alert("AgentBudgetBurnFast", "page", "agent", agent="billing")])
    wait_states(
        alertmanager,
        {("AgentBudgetBurnFast", "billing"): "active", ("AgentwatchCollectorSpoolFilling", ""): "active"},
    )

    alertmanager.post_alerts([alert("AgentwatchCollectorDown", "page", "collector")])
    wait_states(
        alertmanager, {("AgentwatchCollectorDown", ""): "active", ("AgentBudgetBurnFast", "billing"): "suppressed"}
    )

    # agent alerts raised while the collector is down are stale from the start and never notified
    alertmanager.post_alerts(
        [
            alert("AgentRunsVanished", "page", "agent", agent="support"),
            alert("CanaryDriftSuspected", "ticket", "canary", agent="support"),
        ]
    )
    seen = wait_states(
        alertmanager,
        {("AgentRunsVanished", "support"): "suppressed", ("CanaryDriftSuspected", "support"): "active"},
    )
    # only agent alerts are stale when the collector is down; canary and collector alerts stay
    assert seen[("AgentwatchCollectorSpoolFilling", "")] == "active"
    inhibited_by = {item["labels"]["alertname"] for item in alertmanager.alerts() if item["status"]["inhibitedBy"]}
    assert inhibited_by == {"AgentRunsVanished", "AgentBudgetBurnFast"}

    webhook.wait_for(lambda n: n["groupLabels"].get("alertname") == "AgentwatchCollectorDown", timeout_s=30)
    # the canary ticket was posted after the agent page, so once it is delivered the page had its chance too
    webhook.wait_for(lambda n: n["groupLabels"].get("alertname") == "CanaryDriftSuspected", timeout_s=30)
    notified = {item["labels"]["alertname"] for n in webhook.notifications() for item in n["alerts"]}
    assert "AgentRunsVanished" not in notified
    assert {"AgentwatchCollectorDown", "CanaryDriftSuspected", "AgentwatchCollectorSpoolFilling"} <= notified


def test_a_decided_canary_drift_inhibits_suspected_drift_tickets_of_the_same_agent(alertmanager: Alertmanager) -> None:
    alertmanager.post_alerts(
        [
            alert("CanaryDriftSuspected", "ticket", "canary", agent="support", metric="stop_reason"),
            alert("CanaryDriftSuspected", "ticket", "canary", agent="billing", metric="stop_reason"),
            alert("CanaryStopReasonDrift", "page", "canary", agent="support"),
        ]
    )
    wait_states(alertmanager, {("CanaryDriftSuspected", "support"): "active"})
    alertmanager.post_alerts([alert("CanaryDriftDetected", "page", "canary", agent="support", metric="stop_reason")])
    wait_states(
        alertmanager,
        {
            ("CanaryDriftSuspected", "support"): "suppressed",
            # another agent's suspicion is untouched (equal: [agent]), and pages are never inhibited by it
            ("CanaryDriftSuspected", "billing"): "active",
            ("CanaryStopReasonDrift", "support"): "active",
            ("CanaryDriftDetected", "support"): "active",
        },
    )


# --- the full helper stack: Prometheus rule -> Alertmanager -> webhook ----------------------------------


def always_firing_rules(path: Path, alerts: Sequence[tuple[str, str]]) -> Path:
    rules = [
        {"alert": name, "expr": "vector(1)", "labels": {"severity": severity, "component": "agent", "agent": "smoke"}}
        for name, severity in alerts
    ]
    return write_yaml(path, {"groups": [{"name": "smoke", "rules": rules}]})


@pytest.mark.slow
def test_prometheus_alert_reaches_the_pager_through_the_helper_stack(
    tmp_path: Path, alertmanager: Alertmanager, webhook: WebhookReceiver
) -> None:
    rules = always_firing_rules(tmp_path / "rules.yaml", [("SmokePage", "page"), ("SmokeTicket", "ticket")])
    # Alertmanager's own /metrics is a convenient real scrape target
    target = alertmanager.url.removeprefix("http://")
    with Prometheus(tmp_path / "prometheus", scrape_targets=[target], alertmanager_url=alertmanager.url) as prometheus:
        prometheus.wait_scraped(timeout_s=60)
        # the targets API can report a scrape a moment before its samples are queryable
        deadline = time.monotonic() + 10
        up = prometheus.query('up{job="agentwatch-collector"}')
        while not up["result"] and time.monotonic() < deadline:
            time.sleep(0.2)
            up = prometheus.query('up{job="agentwatch-collector"}')
        assert [sample["value"][1] for sample in up["result"]] == ["1"]
        with pytest.raises(RuntimeError, match="parse error"):
            prometheus.query("sum(")
        assert prometheus.rule_groups() == []
        # rules added to a running server, as the end-to-end test does once every target is scraped
        prometheus.rule_files = [rules]
        prometheus.reload()
        assert [group["name"] for group in prometheus.rule_groups()] == ["smoke"]
        page = webhook.wait_for(lambda n: n["path"] == "/pager", timeout_s=60)
        assert page["commonLabels"]["alertname"] == "SmokePage"
        webhook.wait_for(lambda n: n["path"] == "/chat" and n["commonLabels"]["alertname"] == "SmokeTicket", 60)
        assert {item["labels"]["alertname"] for item in prometheus.alerts() if item["state"] == "firing"} == {
            "SmokePage",
            "SmokeTicket",
        }


def test_a_server_started_on_a_taken_port_moves_to_a_free_one(tmp_path: Path, alertmanager: Alertmanager) -> None:
    """A picked port can be taken before the child binds it; the holder answers /-/ready too, so check who listens.

    The helper must not mistake the holder for its child, and must retry on another port.
    """
    second = Alertmanager(tmp_path / "second", alertmanager.config_path)
    second.port = alertmanager.port
    with second:
        assert second.port != alertmanager.port
        assert second.process is not None
        assert second.process.poll() is None
        assert second.status()["config"]["original"]
    assert "address already in use" in second.log_tail()
