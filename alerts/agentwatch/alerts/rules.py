"""The rule file: every group in order, and its YAML rendering (``alerts/agentwatch-rules.yaml``)."""

from __future__ import annotations

from typing import Any, Final

import yaml

from agentwatch.alerts.agent import agent_alerts
from agentwatch.alerts.canary import canary_alerts, canary_recordings
from agentwatch.alerts.collector import collector_alerts
from agentwatch.alerts.model import GENERATED_NOTE, RULE_FILE, RUNBOOK_URL, Alert, Group, Recording, runbook_url
from agentwatch.alerts.options import DEFAULT_OPTIONS, RuleOptions
from agentwatch.alerts.promql import Clock, num
from agentwatch.alerts.recording import agent_recordings, budget_recordings, overview_recordings


def groups(options: RuleOptions) -> tuple[Group, ...]:
    """The rule groups, recording rules first: the rules of one group run in order, every cycle."""
    clock = Clock(options)
    return (
        Group("agentwatch-overview.rules", overview_recordings(clock)),
        Group("agentwatch-budget.rules", budget_recordings(clock)),
        Group("agentwatch-agent.rules", agent_recordings(clock)),
        Group("agentwatch-canary.rules", canary_recordings(options, clock)),
        Group("agentwatch-agent.alerts", agent_alerts(options, clock)),
        Group("agentwatch-canary.alerts", canary_alerts(options, clock)),
        Group("agentwatch-collector.alerts", collector_alerts(options, clock)),
    )


def all_alerts(options: RuleOptions) -> list[Alert]:
    """Every alert, in rule-file order."""
    return [rule for group in groups(options) for rule in group.rules if isinstance(rule, Alert)]


ALERT_NAMES: Final = tuple(alert.name for alert in all_alerts(DEFAULT_OPTIONS))
"""Every alert, in rule-file order; the names are a contract with Alertmanager routes and runbooks."""


class _RuleDumper(yaml.SafeDumper):
    """A YAML dumper that writes multi-line strings (PromQL) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_RuleDumper.add_representer(str, _represent_str)


def _rule_mapping(rule: Recording | Alert, clock: Clock) -> dict[str, Any]:
    if isinstance(rule, Recording):
        return {"record": rule.record, "expr": rule.expr}
    mapping: dict[str, Any] = {"alert": rule.name, "expr": rule.expr}
    if rule.hold_seconds:
        mapping["for"] = clock.hold(rule.hold_seconds)
    mapping["labels"] = {"severity": rule.severity, "component": rule.component}
    mapping["annotations"] = {
        "summary": rule.summary,
        "description": rule.description,
        "runbook_url": runbook_url(rule.name),
    }
    return mapping


def render_rule_files(options: RuleOptions = DEFAULT_OPTIONS) -> dict[str, str]:
    """The Prometheus rule files: file name -> YAML text (recording and alerting rules)."""
    clock = Clock(options)
    document = {
        "groups": [
            {"name": group.name, "rules": [_rule_mapping(rule, clock) for rule in group.rules]}
            for group in groups(options)
        ]
    }
    scale_note = "" if options.time_scale == 1.0 else f"# time_scale {num(options.time_scale)}: windows are scaled\n"
    body = yaml.dump(document, Dumper=_RuleDumper, sort_keys=False, width=120, allow_unicode=True)
    return {RULE_FILE: f"# {GENERATED_NOTE}\n# Runbook: {RUNBOOK_URL}\n{scale_note}{body}"}


__all__ = ["ALERT_NAMES", "all_alerts", "groups", "render_rule_files"]
