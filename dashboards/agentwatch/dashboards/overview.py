"""Agent overview: how the fleet's runs end, what they cost, and what the gateway stopped (Prometheus).

The first dashboard an on-call engineer opens: runs per second by stop reason, the share of runs a
budget ended, cost per hour and per run, effort per run (steps and tool calls, from the
histograms), and the governance side (tool calls by gateway decision, denials, kill-switch stops).
"""

from __future__ import annotations

from typing import Final

from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.models.dashboard import Dashboard

from agentwatch.collectors import metric_names as names
from agentwatch.dashboards.common import (
    AGENT_SELECTOR,
    agent_variables,
    graph,
    new_dashboard,
    promql,
    row,
    stat,
    table,
)
from agentwatch.instrumentation import semconv

UID: Final = "agentwatch-overview"
SLUG: Final = "overview"
TITLE: Final = "agentwatch / Agent overview"

_SEL: Final = AGENT_SELECTOR
_RATE: Final = "$__rate_interval"
_RUNS: Final = names.RUNS_TOTAL
_TOOLS: Final = names.TOOL_CALLS_TOTAL


def _quantiles(histogram: str) -> list[Dataquery]:
    """p50 and p95 per agent and track from a run histogram's buckets."""
    return [
        promql(
            f"histogram_quantile({quantile}, sum by ({names.LABEL_AGENT}, {names.LABEL_TRACK}, le) "
            f"(rate({histogram}_bucket{{{_SEL}}}[{_RATE}])))",
            legend=f"{{{{agent}}}}/{{{{track}}}} p{round(quantile * 100)}",
            ref_id=ref_id,
        )
        for quantile, ref_id in ((0.5, "A"), (0.95, "B"))
    ]


def build() -> Dashboard:
    """The dashboard model."""
    kill_switch = semconv.StopReason.KILL_SWITCH.value
    completed = semconv.StopReason.COMPLETED.value
    killed = semconv.ToolDisposition.KILLED.value
    denied = semconv.ToolDisposition.DENIED.value
    rejected = semconv.ToolDisposition.REJECTED.value
    runs_in_range = f"sum(increase({_RUNS}{{{_SEL}}}[$__range]))"
    dashboard = new_dashboard(
        UID,
        TITLE,
        "How agent runs end, what they cost and what the tool gateway stopped, per agent and track.",
    )
    for variable in agent_variables():
        dashboard = dashboard.with_variable(variable)
    return (
        dashboard.with_row(row("Runs"))
        .with_panel(
            stat(
                "Runs",
                "Finished runs in the selected time range.",
                promql(f"round({runs_in_range})", instant=True),
            )
        )
        .with_panel(
            stat(
                "Completed",
                "Share of runs that ended with stop reason completed.",
                promql(
                    f'sum(increase({_RUNS}{{{_SEL}, stop_reason="{completed}"}}[$__range])) / {runs_in_range}',
                    instant=True,
                ),
                unit="percentunit",
            )
        )
        .with_panel(
            stat(
                "Cost",
                "LLM cost of the runs finished in the selected time range.",
                promql(f"sum(increase({names.COST_USD_TOTAL}{{{_SEL}}}[$__range]))", instant=True),
                unit="currencyUSD",
            )
        )
        .with_panel(
            stat(
                "Kill-switch stops",
                "Runs stopped by an engaged kill switch in the selected time range.",
                promql(f'round(sum(increase({_RUNS}{{{_SEL}, stop_reason="{kill_switch}"}}[$__range])))', instant=True),
            )
        )
        .with_panel(
            graph(
                "Runs/s by stop reason",
                "Finished runs per second, stacked by why they ended.",
                promql(
                    f"sum by ({names.LABEL_STOP_REASON}) (rate({_RUNS}{{{_SEL}}}[{_RATE}]))",
                    legend="{{stop_reason}}",
                ),
                unit="reqps",
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Runs/s by agent and track",
                "Finished runs per second per agent and deployment track.",
                promql(
                    f"sum by ({names.LABEL_AGENT}, {names.LABEL_TRACK}) (rate({_RUNS}{{{_SEL}}}[{_RATE}]))",
                    legend="{{agent}}/{{track}}",
                ),
                unit="reqps",
            )
        )
        .with_row(row("Budgets"))
        .with_panel(
            graph(
                "Budget exhaustion ratio by budget",
                "Share of finished runs that a budget stopped, by budget (steps, tool_calls, seconds, usd).",
                promql(
                    f"sum by ({names.LABEL_BUDGET}) (rate({names.BUDGET_EXHAUSTED_TOTAL}{{{_SEL}}}[{_RATE}]))"
                    f" / ignoring({names.LABEL_BUDGET}) group_left() sum(rate({_RUNS}{{{_SEL}}}[{_RATE}]))",
                    legend="{{budget}}",
                ),
                unit="percentunit",
            )
        )
        .with_panel(
            graph(
                "Budget exhaustion ratio by agent",
                "Share of each agent's finished runs that any budget stopped.",
                promql(
                    f"sum by ({names.LABEL_AGENT}, {names.LABEL_TRACK}) "
                    f"(rate({names.BUDGET_EXHAUSTED_TOTAL}{{{_SEL}}}[{_RATE}]))"
                    f" / sum by ({names.LABEL_AGENT}, {names.LABEL_TRACK}) (rate({_RUNS}{{{_SEL}}}[{_RATE}]))",
                    legend="{{agent}}/{{track}}",
                ),
                unit="percentunit",
            )
        )
        .with_row(row("Cost"))
        .with_panel(
            graph(
                "Cost per hour",
                "LLM spend rate per agent and track, in USD per hour.",
                promql(
                    f"sum by ({names.LABEL_AGENT}, {names.LABEL_TRACK}) "
                    f"(rate({names.COST_USD_TOTAL}{{{_SEL}}}[{_RATE}])) * 3600",
                    legend="{{agent}}/{{track}}",
                ),
                unit="currencyUSD",
            )
        )
        .with_panel(
            graph(
                "Cost per run",
                "Mean and 95th percentile cost of a finished run.",
                promql(
                    f"sum by ({names.LABEL_AGENT}, {names.LABEL_TRACK}) "
                    f"(rate({names.RUN_COST_USD}_sum{{{_SEL}}}[{_RATE}]))"
                    f" / sum by ({names.LABEL_AGENT}, {names.LABEL_TRACK}) "
                    f"(rate({names.RUN_COST_USD}_count{{{_SEL}}}[{_RATE}]))",
                    legend="{{agent}}/{{track}} mean",
                ),
                promql(
                    f"histogram_quantile(0.95, sum by ({names.LABEL_AGENT}, {names.LABEL_TRACK}, le) "
                    f"(rate({names.RUN_COST_USD}_bucket{{{_SEL}}}[{_RATE}])))",
                    legend="{{agent}}/{{track}} p95",
                    ref_id="B",
                ),
                unit="currencyUSD",
            )
        )
        .with_panel(
            graph(
                "LLM tokens/s by model",
                "Token throughput per model and direction (input, output).",
                promql(
                    f"sum by ({names.LABEL_MODEL}, {names.LABEL_DIRECTION}) "
                    f"(rate({names.LLM_TOKENS_TOTAL}{{{_SEL}}}[{_RATE}]))",
                    legend="{{model}} {{direction}}",
                ),
                width=24,
            )
        )
        .with_row(row("Effort per run"))
        .with_panel(
            graph(
                "Steps per run (p50, p95)",
                "Loop iterations a run took, from the agentwatch_run_steps histogram.",
                *_quantiles(names.RUN_STEPS),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Tool calls per run (p50, p95)",
                "Tool calls a run made, from the agentwatch_run_tool_calls histogram.",
                *_quantiles(names.RUN_TOOL_CALLS),
                width=8,
            )
        )
        .with_panel(
            graph(
                "Run duration (p50, p95)",
                "Wall time of a run, from the agentwatch_run_duration_seconds histogram.",
                *_quantiles(names.RUN_DURATION_SECONDS),
                unit="s",
                width=8,
            )
        )
        .with_row(row("Governance"))
        .with_panel(
            graph(
                "Tool calls/s by disposition",
                "What the tool gateway decided: allowed, denied, approved, rejected, killed, deduplicated, replayed.",
                promql(
                    f"sum by ({names.LABEL_DISPOSITION}) (rate({_TOOLS}{{{_SEL}}}[{_RATE}]))",
                    legend="{{disposition}}",
                ),
                unit="reqps",
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Denials and rejected approvals/s",
                "Tool calls the policy denied or a person refused, per agent. A spike can mean prompt injection.",
                promql(
                    f"sum by ({names.LABEL_AGENT}, {names.LABEL_DISPOSITION}) "
                    f'(rate({_TOOLS}{{{_SEL}, disposition=~"{denied}|{rejected}"}}[{_RATE}]))',
                    legend="{{agent}} {{disposition}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            table(
                "Denied tools",
                "Tool calls denied by policy in the selected time range, per agent and tool.",
                promql(
                    f"sort_desc(round(sum by ({names.LABEL_AGENT}, {names.LABEL_TOOL}) "
                    f'(increase({_TOOLS}{{{_SEL}, disposition="{denied}"}}[$__range]))))',
                    table=True,
                ),
                width=12,
                height=8,
            )
        )
        .with_panel(
            graph(
                "Kill-switch events",
                "Runs stopped and tool calls blocked by an engaged kill switch, per agent.",
                promql(
                    f'sum by ({names.LABEL_AGENT}) (increase({_RUNS}{{{_SEL}, stop_reason="{kill_switch}"}}[{_RATE}]))',
                    legend="{{agent}} runs stopped",
                ),
                promql(
                    f'sum by ({names.LABEL_AGENT}) (increase({_TOOLS}{{{_SEL}, disposition="{killed}"}}[{_RATE}]))',
                    legend="{{agent}} tool calls blocked",
                    ref_id="B",
                ),
                bars=True,
            )
        )
        .build()
    )


__all__ = ["SLUG", "TITLE", "UID", "build"]
