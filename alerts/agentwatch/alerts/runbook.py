"""The runbook (``alerts/runbook.md``): one section per alert, with what it means, first checks, a
working ``amtool`` silence and the alert's expression. Alert ``runbook_url`` annotations link here.
"""

from __future__ import annotations

from agentwatch.alerts.model import GENERATED_NOTE, Alert
from agentwatch.alerts.options import DEFAULT_OPTIONS, RuleOptions
from agentwatch.alerts.promql import Clock
from agentwatch.alerts.rules import all_alerts


def _silence_command(alert: Alert) -> str:
    return (
        "amtool silence add --alertmanager.url=http://localhost:9093 --duration=2h \\\n"
        f'  --author="$USER" --comment="investigating, see the incident channel" \\\n'
        f"  alertname={alert.name} {alert.runbook.silence}"
    )


def render_runbook(options: RuleOptions = DEFAULT_OPTIONS) -> str:
    """``alerts/runbook.md``: one section per alert, anchored by the lower-case alert name."""
    alerts = all_alerts(options)
    lines = [
        "# agentwatch alert runbook",
        "",
        f"<!-- {GENERATED_NOTE} -->",
        "",
        "Every alert carries `severity` (`page` wakes a person through the `pager` receiver, `ticket` goes",
        "to the `chat` receiver) and `component` (`agent`, `canary` or `collector`); per-agent alerts keep",
        "the `agent` label. Alertmanager groups by alert name and agent, suppresses agent alerts while a",
        "collector alert pages, and suppresses canary tickets while CanaryDriftDetected fires for the same",
        "agent (`deploy/alertmanager/alertmanager.yaml`). The rules are in `alerts/agentwatch-rules.yaml`.",
        "",
        "Dashboards are addressed by uid: open `/d/<uid>` on Grafana, with `?var-agent=<agent>` to focus",
        "on one agent.",
        "",
        "| alert | severity | component | dashboard |",
        "|---|---|---|---|",
    ]
    lines.extend(
        f"| [{alert.name}](#{alert.name.lower()}) | {alert.severity} | {alert.component} | "
        f"`{alert.runbook.dashboard}` |"
        for alert in alerts
    )
    lines += [
        "",
        "Silencing: `amtool` needs the Alertmanager address (`--alertmanager.url`, or `alertmanager.url` in",
        "`~/.config/amtool/config.yml`). Silence the narrowest set of labels that covers the work, for a",
        "bounded time, with a comment that says why; `amtool silence query` lists silences and",
        "`amtool silence expire ID` ends one early.",
        "",
        "**The 3 a.m. path: page, stop, audit.** When an agent is doing harm (a prompt-injection wave, a",
        "runaway loop spending money, a bad release), stop it first and investigate second. With a token",
        "holding the `control` scope (`AGENTWATCH_TOKEN`), against any collector replica:",
        "",
        "```sh",
        'agentwatch kill --agent <agent> --reason "<alert>, <ticket>" --expires 2h  # every replica, within seconds',
        'agentwatch kill --agent <agent> --tenant <tenant> --reason "..."          # one tenant only',
        'agentwatch kill --all --reason "..."                                      # the whole fleet',
        "agentwatch kill --list",
        "agentwatch audit --since 24h --agent <agent>   # who stopped what, approvals, denied calls",
        'agentwatch unkill --agent <agent> --reason "..."  # once the cause is gone',
        "```",
        "",
        "Agents with a `RemoteKillSwitch` refuse their next step and tool call; an agent that cannot reach",
        "the collector for its staleness bound refuses write and approval tools on its own. Rules you",
        'trust enough can stop an agent without a person: label them `agentwatch_kill="true"` (and',
        '`agentwatch_kill_expires="2h"`) and route them to the collector\'s Alertmanager receiver',
        "(`/api/v1/control/alertmanager`, README: Detect, then stop); the stop expires by itself and a",
        "resolved alert releases nothing. Every stop and release is in `agentwatch audit`.",
    ]
    clock = Clock(options)
    for alert in alerts:
        hold = f", for {clock.hold(alert.hold_seconds)}" if alert.hold_seconds else ""
        lines += [
            "",
            f"## {alert.name}",
            "",
            f"Severity `{alert.severity}`, component `{alert.component}`{hold}. "
            f"Dashboard: `{alert.runbook.dashboard}` (`/d/{alert.runbook.dashboard}`).",
            "",
            f"**What it means.** {alert.runbook.meaning}",
            "",
            "**First checks.**",
            "",
        ]
        lines.extend(f"{number}. {check}" for number, check in enumerate(alert.runbook.checks, start=1))
        lines += [
            "",
            "**Silence it** (while you work on it, or for a planned change):",
            "",
            "```sh",
            _silence_command(alert),
            "```",
            "",
            "**Expression.**",
            "",
            "```promql",
            alert.expr,
            "```",
        ]
    return "\n".join(lines) + "\n"


__all__ = ["render_runbook"]
