"""End to end: an anomaly in real agent traffic reaches a pager webhook as a page, and a healthy fleet pages nobody.

The whole path runs for real: agent runs from the instrumentation (``tests/_traffic.py``), exported
over OTLP/HTTP by the official exporter to an ``agentwatch collector`` child process, whose
``/metrics`` a real Prometheus scrapes every second while evaluating the alert rules of
``agentwatch.alerts`` (rendered with ``time_scale`` so an hour of rule window takes a
minute), sending to a real Alertmanager that runs ``deploy/alertmanager/alertmanager.yaml`` with its
receivers pointed at a local webhook (routes, grouping and inhibitions unchanged; its waits scaled
like the rules). Every scenario uses its own agent, so each page is attributable:

- ``support``  stays healthy throughout: it must never page;
- ``billing``  starts ending half its runs on the tool-call budget: ``AgentBudgetBurnFast``;
- ``triage``   ships a canary that gets stuck on one run in ten: ``CanaryStopReasonDrift``;
- ``research`` is hit by a wave of prompt injections whose tool calls the gateway denies:
  ``AgentToolDenialSpike``.

The time from the anomaly's start to the page's arrival is printed and written, with its parts
(condition true in Prometheus, firing after ``for:``, delivered), to ``paging-latency.json`` in the
test's temporary directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from _collector_proc import CollectorProcess
from _promstack import (
    ALERTMANAGER_BIN,
    PROMETHEUS_BIN,
    Alertmanager,
    Prometheus,
    WebhookReceiver,
    alertmanager_config_for,
    write_yaml,
)
from _traffic import Traffic

pytestmark = [
    pytest.mark.integration,  # real engines or processes: not in `make test-fast`
    pytest.mark.slow,
    pytest.mark.skipif(
        not (PROMETHEUS_BIN.exists() and ALERTMANAGER_BIN.exists()),
        reason="Debian's prometheus and prometheus-alertmanager are not installed",
    ),
]

TIME_SCALE = 1 / 60
"""One nominal hour of rule window is one minute here; Alertmanager's waits shrink alike."""
RUNS_PER_SECOND = 4.0
"""Per stream (agent and track): enough for every volume floor of the rules at this time scale."""
BASELINE_SECONDS = 25.0
PAGE_TIMEOUT_S = 100.0
"""Generous: the expected latencies are 10-25 s, but the machine may be loaded."""

# Healthy behaviour: now and then an error, a budget stop or a denied injection attempt, as in any fleet
# (one run in 200 each: budget stops at half the SLO's 1 %).
HEALTHY = {"ok": 197.0, "stuck": 1.0, "injected": 1.0, "error": 1.0}
STREAMS = (
    ("support", "stable"),
    ("billing", "stable"),
    ("triage", "stable"),
    ("triage", "canary"),
    ("research", "stable"),
)


@dataclass(frozen=True)
class PageLatency:
    """How long one anomaly took to page, and where the time went."""

    scenario: str
    alertname: str
    agent: str
    anomaly_start: float
    pending_at: float | None
    """When the rule's condition first held (Prometheus ``activeAt``)."""
    firing_at: float
    """When the rule fired after its ``for:`` (the alert's ``startsAt`` sent to Alertmanager)."""
    received_at: float

    @property
    def total_s(self) -> float:
        return self.received_at - self.anomaly_start

    def summary(self) -> dict[str, Any]:
        parts = {
            "total_s": round(self.total_s, 2),
            "to_condition_s": None if self.pending_at is None else round(self.pending_at - self.anomaly_start, 2),
            "to_firing_s": round(self.firing_at - self.anomaly_start, 2),
            "delivery_s": round(self.received_at - self.firing_at, 2),
        }
        return {**asdict(self), **parts}


def timestamp(text: str) -> float:
    """Unix time of an RFC 3339 timestamp from Prometheus or Alertmanager (nanosecond fractions allowed)."""
    head, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(head + "+00:00").timestamp()
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass
class Stack:
    collector: CollectorProcess
    prometheus: Prometheus
    alertmanager: Alertmanager
    webhook: WebhookReceiver
    traffic: Traffic
    latencies: list[PageLatency]

    def pages(self) -> list[dict[str, Any]]:
        return [n for n in self.webhook.notifications() if n["path"] == "/pager"]

    def paged_alerts(self) -> list[dict[str, str]]:
        """Labels of every firing alert that reached the pager."""
        return [alert["labels"] for n in self.pages() if n["status"] == "firing" for alert in n["alerts"]]

    def wait_for_page(self, scenario: str, alertname: str, agent: str, anomaly_start: float) -> dict[str, Any]:
        def is_the_page(notification: dict[str, Any]) -> bool:
            return bool(
                notification["path"] == "/pager"
                and notification["status"] == "firing"
                and notification["groupLabels"] == {"alertname": alertname, "agent": agent}
            )

        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while True:
            self.traffic.check()
            try:
                page = self.webhook.wait_for(is_the_page, timeout_s=2.0)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{alertname} for {agent} did not page within {PAGE_TIMEOUT_S}s; "
                        f"Prometheus alerts: {self.alert_states()}; pages: {self.paged_alerts()}"
                    ) from None
        (alert,) = page["alerts"]
        pending_at = next(
            (
                timestamp(item["activeAt"])
                for item in self.prometheus.alerts()
                if item["labels"].get("alertname") == alertname and item["labels"].get("agent") == agent
            ),
            None,
        )
        latency = PageLatency(
            scenario=scenario,
            alertname=alertname,
            agent=agent,
            anomaly_start=anomaly_start,
            pending_at=pending_at,
            firing_at=timestamp(alert["startsAt"]),
            received_at=float(page["received_at"]),
        )
        self.latencies.append(latency)
        parts = latency.summary()
        print(
            f"\n{scenario}: {alertname}{{agent={agent}}} paged {parts['total_s']}s after the anomaly began "
            f"(condition true after {parts['to_condition_s']}s, firing after {parts['to_firing_s']}s, "
            f"delivered {parts['delivery_s']}s later)"
        )
        return page

    def alert_states(self) -> list[tuple[str, str, str, str]]:
        """(alertname, agent, severity, state) of every pending or firing alert in Prometheus."""
        return sorted(
            (
                item["labels"]["alertname"],
                item["labels"].get("agent", ""),
                item["labels"].get("severity", ""),
                item["state"],
            )
            for item in self.prometheus.alerts()
        )


def prime(traffic: Traffic, collector: CollectorProcess) -> None:
    """One run of every kind on every stream before Prometheus first scrapes.

    A counter series that first appears with a value hides that increase from ``rate()``; priming
    makes every series the scenarios touch exist beforehand, so an anomaly counts from its first run.
    """
    for agent, track in STREAMS:
        for kind in HEALTHY:
            traffic.run_once(agent, kind, track=track)
    traffic.flush()
    expected = len(STREAMS) * len(HEALTHY)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in collector.metrics_text().splitlines()
            if line.startswith("agentwatch_runs_total{")
        )
        if total >= expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"the collector did not count the {expected} priming runs:\n{collector.log()[-3000:]}")


@dataclass
class Report:
    """What the module measured, written to ``paging-latency.json`` at the end."""

    latencies: list[PageLatency] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    """Every notification the webhook received (receiver, status, alert labels), for the record."""
    final_alerts: list[tuple[str, str, str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    measured = Report()
    yield measured
    path = tmp_path_factory.mktemp("e2e-paging") / "paging-latency.json"
    document = {
        "time_scale": TIME_SCALE,
        "scrape_interval_s": 1,
        "evaluation_interval_s": 1,
        "runs_per_second_per_stream": RUNS_PER_SECOND,
        "pages": [latency.summary() for latency in measured.latencies],
        "notifications": measured.notifications,
        "alerts_at_end": measured.final_alerts,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    figures = ", ".join(f"{item.alertname} {item.total_s:.1f}s" for item in measured.latencies) or "no pages measured"
    print(f"\nanomaly-to-page (time_scale 1/{round(1 / TIME_SCALE)}): {figures} -> {path}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, report: Report) -> Iterator[Stack]:
    from agentwatch.alerts.options import RuleOptions
    from agentwatch.alerts.rules import render_rule_files

    workdir = tmp_path_factory.mktemp("e2e-stack")
    rule_files = [
        write_text(workdir / "rules" / name, text)
        for name, text in render_rule_files(RuleOptions(time_scale=TIME_SCALE)).items()
    ]
    with WebhookReceiver() as webhook:
        config = alertmanager_config_for(webhook, time_scale=TIME_SCALE)
        with Alertmanager(workdir / "alertmanager", write_yaml(workdir / "alertmanager.yaml", config)) as manager:
            collector = CollectorProcess(workdir / "collector").start()
            traffic = Traffic(collector.traces_url, runs_per_second=RUNS_PER_SECOND)
            try:
                prime(traffic, collector)
                prometheus = Prometheus(
                    workdir / "prometheus",
                    scrape_targets=[f"127.0.0.1:{collector.metrics_port}"],
                    alertmanager_url=manager.url,
                )
                with prometheus:
                    prometheus.wait_scraped(timeout_s=60)
                    for agent, track in STREAMS:
                        traffic.set_mix(agent, HEALTHY, track=track)
                    traffic.start()
                    # Rules only once the collector is scraped: before its first scrape the target does not
                    # exist yet, which AgentwatchCollectorDown rightly reports (absent(up)) and would page.
                    prometheus.rule_files = rule_files
                    prometheus.reload()
                    started = time.time()
                    stack = Stack(collector, prometheus, manager, webhook, traffic, report.latencies)
                    yield stack
                    report.final_alerts = stack.alert_states()
                    report.notifications = [
                        {
                            "at": round(n["received_at"] - started, 2),
                            "receiver": n.get("receiver"),
                            "status": n.get("status"),
                            "alerts": [alert["labels"] for alert in n.get("alerts", [])],
                        }
                        for n in webhook.notifications()
                    ]
            finally:
                traffic.stop()
                collector.stop()


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rule_health(prometheus: Prometheus) -> dict[str, str]:
    """Rule name -> health, for every rule that is not ``ok`` (evaluation errors never page, so look)."""
    return {
        rule["name"]: f"{rule['health']}: {rule.get('lastError', '')}"
        for group in prometheus.rule_groups()
        for rule in group["rules"]
        if rule["health"] not in {"ok", "unknown"}
    }


def test_healthy_fleet_does_not_page(stack: Stack) -> None:
    prometheus = stack.prometheus
    rule_count = sum(len(group["rules"]) for group in prometheus.rule_groups())
    assert rule_count >= 30, f"rules not loaded: {prometheus.rule_groups()}"

    started = time.monotonic()
    while time.monotonic() - started < BASELINE_SECONDS:
        stack.traffic.check()
        assert stack.pages() == [], f"a healthy fleet paged: {stack.paged_alerts()}"
        time.sleep(1.0)

    assert rule_health(prometheus) == {}
    # the rules see the traffic: every stream is counted, and the canary comparison has its volume
    runs = prometheus.query("agent_track:agentwatch_runs:rate5m")["result"]
    assert {(s["metric"]["agent"], s["metric"]["track"]) for s in runs if float(s["value"][1]) > 0} == set(STREAMS)
    canary_volume = prometheus.query("agent:agentwatch_canary_runs:increase1h")["result"]
    assert [s["metric"]["agent"] for s in canary_volume if float(s["value"][1]) >= 30] == ["triage"]
    states = stack.alert_states()
    assert [state for state in states if state[3] == "firing"] == [], f"alerts fire on a healthy fleet: {states}"
    # not even about to page (a ticket may be pending: one budget stop in the first hundred runs is 1 %)
    assert [state for state in states if state[2] == "page"] == [], f"a page is pending on a healthy fleet: {states}"
    assert stack.webhook.notifications() == [], "a healthy fleet sent notifications"


def induce(stack: Stack, agent: str, mix: Mapping[str, float], *, track: str = "stable") -> float:
    assert not [labels for labels in stack.paged_alerts() if labels.get("agent") == agent], f"{agent} paged already"
    return stack.traffic.set_mix(agent, mix, track=track)


def test_a_burst_of_budget_stops_pages_budget_burn_fast(stack: Stack) -> None:
    # half the runs now loop until the tool-call budget stops them
    start = induce(stack, "billing", {"ok": 1.0, "stuck": 1.0})
    page = stack.wait_for_page("budget burst", "AgentBudgetBurnFast", "billing", start)
    stack.traffic.set_mix("billing", HEALTHY)
    (alert,) = page["alerts"]
    assert alert["labels"]["severity"] == "page"
    assert alert["labels"]["component"] == "agent"
    assert page["receiver"] == "pager"
    assert alert["annotations"]["runbook_url"].endswith("#agentbudgetburnfast")
    assert "billing" in alert["annotations"]["summary"]
    assert not [labels for labels in stack.paged_alerts() if labels.get("agent") == "support"]


def test_a_canary_with_a_worse_stop_reason_mix_pages_canary_stop_reason_drift(stack: Stack) -> None:
    # the canary gets stuck on one run in ten; the stable track of the same agent stays healthy
    start = induce(stack, "triage", {"ok": 9.0, "stuck": 1.0}, track="canary")
    page = stack.wait_for_page("canary drift", "CanaryStopReasonDrift", "triage", start)
    stack.traffic.set_mix("triage", HEALTHY, track="canary")
    (alert,) = page["alerts"]
    assert alert["labels"]["stop_reason"] == "max_tool_calls"
    assert alert["labels"]["component"] == "canary"
    assert alert["labels"]["severity"] == "page"
    # the agent as a whole (about 5 % budget stops) stays below every burn-rate page (6x = 6 %): the canary
    # comparison catches what the agent's burn rate does not
    assert not [
        labels
        for labels in stack.paged_alerts()
        if labels["alertname"].startswith("AgentBudgetBurn") and labels.get("agent") == "triage"
    ]
    assert not [labels for labels in stack.paged_alerts() if labels.get("agent") == "support"]


def test_a_wave_of_tool_denials_pages_tool_denial_spike(stack: Stack) -> None:
    # three runs in four now carry an injection that steers the agent into a denied tool
    start = induce(stack, "research", {"ok": 1.0, "injected": 3.0})
    page = stack.wait_for_page("tool denials", "AgentToolDenialSpike", "research", start)
    stack.traffic.set_mix("research", HEALTHY)
    (alert,) = page["alerts"]
    assert alert["labels"]["severity"] == "page"
    assert alert["labels"]["component"] == "agent"
    assert "prompt injection" in alert["annotations"]["summary"]
    # injected runs still complete: no stop-reason page, only the denial spike
    research_pages = {labels["alertname"] for labels in stack.paged_alerts() if labels.get("agent") == "research"}
    # on the way up the denied share passes the minority band, where AgentToolDenialSurge may page first
    assert "AgentToolDenialSpike" in research_pages
    assert research_pages <= {"AgentToolDenialSpike", "AgentToolDenialSurge"}
    assert not [labels for labels in stack.paged_alerts() if labels.get("agent") == "support"]
