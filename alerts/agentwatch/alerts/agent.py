"""Alerts on agents: budget-stop burn rate, stop-reason and tool-denial spikes, cost, kill switch,
vanished traffic.

The budget alerts are the SRE workbook's multi-window, multi-burn-rate alerts on the budget-stop
SLO; the spikes compare an agent with its own share over the day before, so a fleet of different
agents needs no per-agent thresholds.
"""

from __future__ import annotations

from typing import Final

from agentwatch.alerts.model import SILENCE_AGENT, Alert, Runbook
from agentwatch.alerts.options import (
    BUDGET_STOP_REASONS,
    COMPONENT_AGENT,
    DAY,
    HOUR,
    MINUTE,
    PAGE,
    SLO_PERIOD_DAYS,
    TICKET,
    RuleOptions,
)
from agentwatch.alerts.promql import Clock, counted_events, num, percent, regex, sum_increase, union
from agentwatch.alerts.recording import (
    BASELINE_WINDOW,
    SPIKE_WINDOW,
    TOOL_CALLS_VOLUME,
    budget_ratio_name,
    cost_name,
    denied_name,
    runs_increase_name,
    share_name,
)
from agentwatch.collectors import metric_names
from agentwatch.instrumentation import semconv

_RUNS: Final = metric_names.RUNS_TOTAL
_COST: Final = metric_names.COST_USD_TOTAL
_TOOLS: Final = metric_names.TOOL_CALLS_TOTAL
_AGENT: Final = metric_names.LABEL_AGENT
_STOP: Final = metric_names.LABEL_STOP_REASON
_DISPOSITION: Final = metric_names.LABEL_DISPOSITION

_COST_MIN_HISTORY: Final = 6 * HOUR


def _budget_alerts(options: RuleOptions, clock: Clock) -> tuple[Alert, ...]:
    """The SRE-workbook multi-window, multi-burn-rate alerts on the budget-stop SLO."""
    budget = 1.0 - options.budget_slo
    period_s = SLO_PERIOD_DAYS * DAY
    period = clock.window(period_s)  # the SLO period scales with the windows, so the sentences stay true
    # (name, burn factor, long window, short window, for, severity), as in the SRE workbook
    specs = (
        ("AgentBudgetBurnFast", 14.4, HOUR, 5 * MINUTE, 2 * MINUTE, PAGE),
        ("AgentBudgetBurnSlow", 6.0, 6 * HOUR, 30 * MINUTE, 15 * MINUTE, PAGE),
        ("AgentBudgetBurnTicket", 1.0, 3 * DAY, 6 * HOUR, HOUR, TICKET),
    )
    checks = (
        "Open the runs dashboard for the agent: which budget stops (max_steps, max_tool_calls, max_time, "
        "max_usd) grew, and on which track? A canary rollout that started just before points at the release.",
        "List the stopped runs: `agentwatch runs --agent <agent> --stop-reason max_steps --since 1h` (or the reason "
        "that grew), then `agentwatch trace RUN_ID` for a few of them: a loop of identical tool calls, a "
        "tool that keeps failing, or a model that never answers.",
        "Check the agent's recent changes: prompt, model, tool set or budget values in its configuration.",
        "If a canary is the cause, roll it back; if an upstream tool is failing, fix or disable the tool.",
    )
    alerts = []
    for name, factor, long_s, short_s, hold_s, severity in specs:
        threshold = factor * budget
        long_w, short_w = clock.window(long_s), clock.window(short_s)
        spent = percent(factor * long_s / period_s)  # share of the period's budget one long window burns
        exhaustion = clock.hold(round(period_s / factor))
        expr = (
            f"(\n    {budget_ratio_name(long_s)} > {num(threshold)}\n  and\n"
            f"    {budget_ratio_name(short_s)} > {num(threshold)}\n)\n"
            f"and on ({_AGENT})\n  {runs_increase_name(long_s)} >= {num(options.budget_min_runs)}"
        )
        alerts.append(
            Alert(
                name=name,
                expr=expr,
                hold_seconds=hold_s,
                severity=severity,
                component=COMPONENT_AGENT,
                summary=f"Agent {{{{ $labels.agent }}}} is burning its budget-stop error budget {num(factor)}x "
                f"too fast",
                description=(
                    f"{{{{ $value | humanizePercentage }}}} of the runs of agent {{{{ $labels.agent }}}} ended on "
                    f"a budget stop over the last {long_w} (and over the last {short_w}); the SLO allows "
                    f"{percent(budget)}, so this burns the error budget {num(factor)}x too fast: "
                    f"{spent} of the {period} budget per {long_w}, all of it in {exhaustion}."
                ),
                runbook=Runbook(
                    meaning=(
                        f"The budget SLO says at least {percent(options.budget_slo)} of an agent's runs end "
                        f"without a budget stop (stop reasons {', '.join(BUDGET_STOP_REASONS)}). This alert "
                        f"fires when the share of budget stops is above {num(factor)} times the allowed "
                        f"{percent(budget)} (that is above {percent(threshold)}) over both the last "
                        f"{long_w} and the last {short_w}, with at least {num(options.budget_min_runs)} runs "
                        f"in the {long_w}. The long window proves the problem is significant, the short one "
                        f"that it is still happening (the alert resolves soon after a fix). At this pace "
                        f"{spent} of the {period} error budget goes per {long_w}, all of it in {exhaustion}."
                    ),
                    checks=checks,
                    dashboard="agentwatch-runs",
                    silence=SILENCE_AGENT,
                ),
            )
        )
    return tuple(alerts)


def _stop_reason_spike(options: RuleOptions, clock: Clock) -> Alert:
    window, baseline = clock.window(SPIKE_WINDOW), clock.window(BASELINE_WINDOW)
    now, before = share_name(SPIKE_WINDOW), share_name(BASELINE_WINDOW)
    reasons = regex(options.spike_stop_reasons)
    # the baseline is the day *before* the spike window (offset), so the spike does not raise its own bar;
    # a stop reason absent from the baseline has a baseline share of 0
    expr = (
        f"(\n"
        f'    {now}{{{_STOP}=~"{reasons}"}} > {num(options.spike_min_share)}\n'
        f"  and\n"
        f"    {now}\n"
        f"  > {num(options.spike_baseline_factor)} * (\n"
        f"      {before} offset {window}\n"
        f"    or\n"
        f"      {now} * 0\n"
        f"    )\n"
        f")\n"
        f"and on ({_AGENT})\n"
        f"  {runs_increase_name(SPIKE_WINDOW)} >= {num(options.spike_min_runs)}"
    )
    return Alert(
        name="AgentStopReasonSpike",
        expr=expr,
        hold_seconds=10 * MINUTE,
        severity=PAGE,
        component=COMPONENT_AGENT,
        summary="Agent {{ $labels.agent }}: runs ending on {{ $labels.stop_reason }} spiked",
        description=(
            f"{{{{ $value | humanizePercentage }}}} of the runs of agent {{{{ $labels.agent }}}} over the last "
            f"{window} ended on {{{{ $labels.stop_reason }}}}: above {percent(options.spike_min_share)} and "
            f"above {num(options.spike_baseline_factor)}x the agent's share over the {baseline} before."
        ),
        runbook=Runbook(
            meaning=(
                f"The share of an agent's runs ending on one of {', '.join(options.spike_stop_reasons)} over the "
                f"last {window} is above {percent(options.spike_min_share)} and above "
                f"{num(options.spike_baseline_factor)} times that agent's own share over the {baseline} before "
                f"the window (a stop reason it never had counts as 0), with at least "
                f"{num(options.spike_min_runs)} runs in the window. `error` means the runs crash (a tool "
                f"or the model provider failing, a bug), `guardrail` that a guardrail trips, `policy_denied` "
                f"that the agent asks for tools its policy forbids (a changed prompt, or prompt injection "
                f"in its inputs). The `stop_reason` label says which."
            ),
            checks=(
                "Open the runs dashboard for the agent and the stop reason: did it start at a deploy, a canary "
                "rollout or a configuration change? Is one track or one version affected?",
                "Look at a few of the runs: `agentwatch runs --agent <agent> --stop-reason <stop_reason>`, then "
                "`agentwatch trace RUN_ID`; for `error` the failing span carries the exception type, for "
                "`policy_denied` the tool span carries the rule that denied it.",
                "For `error`, check the model provider's and the tools' status; for `policy_denied`, check the "
                "tools dashboard for AgentToolDenialSpike on the same agent (possible prompt injection).",
                "Roll back the change that started it, or engage the kill switch for the agent if its "
                "actions are unsafe.",
            ),
            dashboard="agentwatch-runs",
            silence=f"{SILENCE_AGENT} stop_reason=error",
        ),
    )


def _tool_denial_spike(options: RuleOptions, clock: Clock) -> Alert:
    window, baseline = clock.window(SPIKE_WINDOW), clock.window(BASELINE_WINDOW)
    now, before = denied_name(SPIKE_WINDOW), denied_name(BASELINE_WINDOW)
    expr = (
        f"(\n"
        f"    {now} > {num(options.denial_min_share)}\n"
        f"  and\n"
        f"    {now}\n"
        f"  > {num(options.denial_baseline_factor)} * (\n"
        f"      {before} offset {window}\n"
        f"    or\n"
        f"      {now} * 0\n"
        f"    )\n"
        f")\n"
        f"and on ({_AGENT})\n"
        f"  {TOOL_CALLS_VOLUME} >= {num(options.denial_min_calls)}"
    )
    return Alert(
        name="AgentToolDenialSpike",
        expr=expr,
        hold_seconds=5 * MINUTE,
        severity=PAGE,
        component=COMPONENT_AGENT,
        summary="Agent {{ $labels.agent }}: tool calls denied by policy spiked (possible prompt injection)",
        description=(
            f"{{{{ $value | humanizePercentage }}}} of the tool calls of agent {{{{ $labels.agent }}}} over the "
            f"last {window} were denied by the gateway's policy: above {percent(options.denial_min_share)} and "
            f"above {num(options.denial_baseline_factor)}x the denied share over the {baseline} before. An agent "
            f"that suddenly asks for forbidden tools may be following injected instructions."
        ),
        runbook=Runbook(
            meaning=(
                f"The share of an agent's tool calls with disposition `denied` "
                f'(`{_TOOLS}{{disposition="denied"}}`) over the last {window} is above '
                f"{percent(options.denial_min_share)} and above {num(options.denial_baseline_factor)} times "
                f"its share over the {baseline} before the window, with at least "
                f"{num(options.denial_min_calls)} tool calls in the window. The gateway denies by default, so "
                f"a model that starts asking for tools nobody allowed shows up here first: a prompt injection "
                f"in a document, ticket or web page the agent read, a prompt change, or a new tool the policy "
                f"does not know yet. The gateway held (nothing forbidden ran), but the agent is not doing its job."
            ),
            checks=(
                "Open the tools dashboard for the agent: which tools are denied, since when, on which track?",
                "Trace a few of the denied calls (`agentwatch runs --agent <agent>`, then `agentwatch trace "
                "RUN_ID`): the tool span names the rule (`default_deny`, `deny:...`). With content capture on, "
                "the inputs show whether text from outside asked for the tool.",
                "A denied write tool the agent never used before, requested right after reading external "
                "content, is treated as prompt injection: engage the kill switch for the agent (or the tenant) "
                "and keep the traces.",
                "If it is a legitimate new tool, update the policy deliberately; do not widen `allow` wildcards "
                "to make the alert go away.",
            ),
            dashboard="agentwatch-tools",
            silence=SILENCE_AGENT,
        ),
    )


def _tool_denial_surge(options: RuleOptions, clock: Clock) -> Alert:
    """A many-fold rise in denials that stays a minority of the calls (what the spike's share floor misses)."""
    window, baseline = clock.window(SPIKE_WINDOW), clock.window(BASELINE_WINDOW)
    now, before = denied_name(SPIKE_WINDOW), denied_name(BASELINE_WINDOW)
    expr = (
        f"(\n"
        f"    {now}\n"
        f"  > {num(options.denial_surge_factor)} * clamp_min({before} offset {window}, "
        f"{num(options.denial_surge_floor)})\n"
        f"  unless\n"
        f"    {now} > {num(options.denial_min_share)}\n"
        f")\n"
        f"and on ({_AGENT})\n"
        f"  {now} * {TOOL_CALLS_VOLUME} >= {num(options.denial_surge_min_denied)}"
    )
    factor, floor = num(options.denial_surge_factor), percent(options.denial_surge_floor)
    return Alert(
        name="AgentToolDenialSurge",
        expr=expr,
        hold_seconds=5 * MINUTE,
        severity=PAGE,
        component=COMPONENT_AGENT,
        summary="Agent {{ $labels.agent }}: tool denials rose many-fold (possible prompt-injection wave)",
        description=(
            f"{{{{ $value | humanizePercentage }}}} of the tool calls of agent {{{{ $labels.agent }}}} over the "
            f"last {window} were denied: over {factor}x the denied share of the {baseline} before, with at least "
            f"{num(options.denial_surge_min_denied)} denied calls. Still a minority of the calls, but a wave."
        ),
        runbook=Runbook(
            meaning=(
                f"The agent's denied share over the last {window} is more than {factor} times its share over the "
                f"{baseline} before (a share under {floor} counts as {floor}), with at least "
                f"{num(options.denial_surge_min_denied)} denied calls in the window, while denials are still under "
                f"{percent(options.denial_min_share)} of its calls (above that AgentToolDenialSpike pages instead). "
                f"An injection that reaches a few percent of the documents an agent reads shows up this way: most "
                f"runs are fine, a steady stream of them ask for tools nobody allowed."
            ),
            checks=(
                "Which tools are denied, for which tenants? `agentwatch audit --kind policy --agent <agent> "
                "--since 1h` lists every denied call with its rule, run and tenant.",
                "Trace a few (`agentwatch trace RUN_ID`): did text from outside (a ticket, a web page) ask for the "
                "tool?",
                "If so, stop the agent everywhere or for the affected tenant: `agentwatch kill --agent <agent> "
                '[--tenant T] --reason ...` (or label the rule `agentwatch_kill="true"` to let Alertmanager do '
                "it), then find and remove the poisoned content before `agentwatch unkill`.",
            ),
            dashboard="agentwatch-tools",
            silence=SILENCE_AGENT,
        ),
    )


def _cost_burn(options: RuleOptions, clock: Clock) -> Alert:
    window, baseline = clock.window(SPIKE_WINDOW), clock.window(BASELINE_WINDOW)
    history = clock.window(_COST_MIN_HISTORY)
    now = cost_name(SPIKE_WINDOW)
    # The baseline is the average of the recorded 30-minute rate over the day before the window.
    # rate(...[1d]) would divide by a full day even when the agent has only run for an hour, making
    # every new agent look like a spike; the average of recorded rates normalises by what exists.
    # The history guard keeps the baseline branch off until the agent has recorded for 6 hours
    # (the ceiling still applies from the first minute). Both branches yield USD per hour.
    expr = (
        f"  {now} * 3600 > {num(options.cost_usd_per_hour)}\n"
        f"or\n"
        f"  (\n"
        f"      {now} * 3600\n"
        f"    > {num(options.cost_baseline_factor)} * avg_over_time({now}[{baseline}] offset {window}) * 3600\n"
        f"  and\n"
        f"      {now} * 3600 > {num(options.cost_baseline_min_usd_per_hour)}\n"
        f"  and on ({_AGENT})\n"
        f"      {now} offset {history}\n"
        f"  )"
    )
    return Alert(
        name="AgentCostBurnHigh",
        expr=expr,
        hold_seconds=15 * MINUTE,
        severity=PAGE,
        component=COMPONENT_AGENT,
        summary='Agent {{ $labels.agent }} is spending {{ $value | printf "%.2f" }} USD per hour',
        description=(
            f'Agent {{{{ $labels.agent }}}} spent at a rate of {{{{ $value | printf "%.2f" }}}} USD per hour '
            f"over the last {window}: above the ceiling of {num(options.cost_usd_per_hour)} USD/hour, or above "
            f"{num(options.cost_baseline_factor)}x its own average rate over the {baseline} before (and above "
            f"{num(options.cost_baseline_min_usd_per_hour)} USD/hour)."
        ),
        runbook=Runbook(
            meaning=(
                f"The agent's LLM spend (`{_COST}`, priced per call from the price table) averaged over the last "
                f"{window} is above the ceiling of {num(options.cost_usd_per_hour)} USD per hour, or above "
                f"{num(options.cost_baseline_factor)} times its own average over the {baseline} before the "
                f"window while above {num(options.cost_baseline_min_usd_per_hour)} USD per hour (this "
                f"comparison starts once the agent has {history} of history). Usual causes: "
                f"a traffic surge, runs that loop until `max_steps` or `max_usd`, a switch to a pricier model, "
                f"or longer prompts (retrieval returning much more context)."
            ),
            checks=(
                "Open the overview dashboard: did the run rate grow (traffic), or the cost per run (behaviour)?",
                "On the runs dashboard, compare cost per run and steps per run by track and version; a canary "
                "that costs more per run is a release problem.",
                "Check the token panels: which model and which direction (input or output) grew?",
                "Lower `budgets.max_usd` for the agent, roll back, or engage the kill switch if the spend is "
                "unbounded.",
            ),
            dashboard="agentwatch-overview",
            silence=SILENCE_AGENT,
        ),
    )


def _kill_switch(clock: Clock) -> Alert:
    window_s = 10 * MINUTE
    window = clock.window(window_s)
    killed_runs = f'{_RUNS}{{{_STOP}="{semconv.StopReason.KILL_SWITCH.value}"}}'
    killed_calls = f'{_TOOLS}{{{_DISPOSITION}="{semconv.ToolDisposition.KILLED.value}"}}'
    operands = (*counted_events(killed_runs, window), *counted_events(killed_calls, window))
    expr = f"sum by ({_AGENT}) (\n{union(operands)}\n) > 0"
    return Alert(
        name="AgentKillSwitchEngaged",
        expr=expr,
        hold_seconds=0,
        severity=PAGE,
        component=COMPONENT_AGENT,
        summary="Kill switch engaged for agent {{ $labels.agent }}",
        description=(
            f'{{{{ $value | printf "%.0f" }}}} runs or tool calls of agent {{{{ $labels.agent }}}} were stopped '
            f"by the kill switch in the last {window}."
        ),
        runbook=Runbook(
            meaning=(
                f"Runs of the agent ended with stop reason `kill_switch`, or tool calls got disposition "
                f"`killed`, in the last {window} (the first one counts: a counter series born in the window "
                f"counts in full). Someone (or an automation) engaged the kill switch for this agent, a tenant, "
                f"or everything (`*`), or a kill-switch source cannot be read and the gateway fails closed for "
                f"write and approval tools (rule `kill_switch_unavailable`). Either way the agent is not "
                f"serving: the people it serves are affected."
            ),
            checks=(
                "Find out who engaged it and why (the incident channel, the kill-switch file or the "
                "`AGENTWATCH_KILL_SWITCH` variable). If it is deliberate, silence this alert for the duration.",
                "If nobody engaged it, trace a killed run (`agentwatch runs --agent <agent> --stop-reason "
                "kill_switch`, then `agentwatch trace RUN_ID`): the `agentwatch.kill_switch.engaged` event "
                "names the scope; rule `kill_switch_unavailable` means the file exists but cannot be read.",
                "Fix the source (permissions, an invalid entry) or release the switch once the cause of the "
                "stop is resolved.",
            ),
            dashboard="agentwatch-runs",
            silence=SILENCE_AGENT,
        ),
    )


def _runs_vanished(options: RuleOptions, clock: Clock) -> Alert:
    quiet_s, history_s = 30 * MINUTE, HOUR
    quiet, history = clock.window(quiet_s), clock.window(history_s)
    # traffic in the hour that ended when the quiet window began (offset), none since: a series
    # that went away entirely makes the right side empty, which `unless` treats as no traffic
    expr = (
        f"  sum by ({_AGENT}) (increase({_RUNS}[{history}] offset {quiet})) >= {num(options.vanished_min_runs)}\n"
        f"unless on ({_AGENT})\n"
        f"  {sum_increase(_RUNS, quiet)} > 0"
    )
    return Alert(
        name="AgentRunsVanished",
        expr=expr,
        hold_seconds=5 * MINUTE,
        severity=PAGE,
        component=COMPONENT_AGENT,
        summary="Agent {{ $labels.agent }} stopped finishing runs",
        description=(
            f'Agent {{{{ $labels.agent }}}} finished {{{{ $value | printf "%.0f" }}}} runs in the {history} '
            f"before the last {quiet} and none since."
        ),
        runbook=Runbook(
            meaning=(
                f"The agent finished at least {num(options.vanished_min_runs)} runs in the {history} before the "
                f"last {quiet}, and not a single one since. Either the agent is down or stuck (runs start but "
                f"never end), its traffic was routed away, or its telemetry no longer reaches the collector "
                f"(exporter misconfigured, tokens rotated, network). A collector outage pages as "
                f"AgentwatchCollectorDown instead and suppresses this alert in Alertmanager."
            ),
            checks=(
                "Check the agent's own health (deployment, process, queue of work) and whether traffic was "
                "moved on purpose (a decommission, a rename: the agent label is the `gen_ai.agent.name`).",
                "Check AgentwatchCollectorRejectingSpans: rejected spans with reason `auth` point at rotated "
                "tokens, `limit` at oversized batches.",
                "Check the agent's OTLP exporter logs for export failures, and that `OTEL_EXPORTER_OTLP_ENDPOINT` "
                "points at the collector.",
                "On the overview dashboard, check whether other agents stopped too (a shared cause).",
            ),
            dashboard="agentwatch-overview",
            silence=SILENCE_AGENT,
        ),
    )


def agent_alerts(options: RuleOptions, clock: Clock) -> tuple[Alert, ...]:
    """Every per-agent alert, in rule-file order."""
    return (
        *_budget_alerts(options, clock),
        _stop_reason_spike(options, clock),
        _tool_denial_spike(options, clock),
        _tool_denial_surge(options, clock),
        _cost_burn(options, clock),
        _kill_switch(clock),
        _runs_vanished(options, clock),
    )


__all__ = ["agent_alerts"]
