"""Canary vs baseline: did the version shipped on the canary track change how runs behave (Prometheus).

Side by side per track: the stop-reason mix, and the distributions of cost, steps, tool calls and
duration per run (quantiles from the run histograms). Above them, the drift analyzer's output: the
anytime-valid evidence (``agentwatch_canary_drift_evalue``) and its verdict per metric
(``agentwatch_canary_verdict``: 0 pass, 1 inconclusive, 2 fail), and which version runs on which
track (``agentwatch_agent_info``).
"""

from __future__ import annotations

from typing import Final

from grafana_foundation_sdk.builders import barchart, statetimeline
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models.dashboard import Dashboard, DataTransformerConfig

from agentwatch.collectors import metric_names as names
from agentwatch.dashboards.common import (
    AGENT_SELECTOR,
    agent_variables,
    graph,
    legend_table,
    new_dashboard,
    prometheus_ref,
    promql,
    row,
    stat,
    table,
    tooltip_all,
    value_mappings,
)

UID: Final = "agentwatch-canary"
SLUG: Final = "canary"
TITLE: Final = "agentwatch / Canary vs baseline"

_SEL: Final = AGENT_SELECTOR
_AGENT_ONLY: Final = f'{names.LABEL_AGENT}=~"$agent"'
_RATE: Final = "$__rate_interval"
_RUNS: Final = names.RUNS_TOTAL

_VERDICT_COLORS: Final = {"pass": "green", "inconclusive": "yellow", "fail": "red"}
VERDICT_MAPPINGS: Final = {code: (verdict, _VERDICT_COLORS[verdict]) for verdict, code in names.VERDICT_CODES.items()}
"""Verdict code -> (text, color) of the verdict panels."""


def _by_track(histogram: str) -> list[Dataquery]:
    """p50 and p95 per track of a run histogram: the two distributions side by side."""
    return [
        promql(
            f"histogram_quantile({quantile}, sum by ({names.LABEL_TRACK}, le) "
            f"(rate({histogram}_bucket{{{_SEL}}}[{_RATE}])))",
            legend=f"{{{{track}}}} p{round(quantile * 100)}",
            ref_id=ref_id,
        )
        for quantile, ref_id in ((0.5, "A"), (0.95, "B"))
    ]


def _share_of_track(window: str) -> str:
    """Each stop reason's share of its track's runs over ``window``."""
    track, reason = names.LABEL_TRACK, names.LABEL_STOP_REASON
    runs = f"increase({_RUNS}{{{_SEL}}}[{window}])"
    return f"sum by ({track}, {reason}) ({runs}) / ignoring({reason}) group_left() sum by ({track}) ({runs})"


def build() -> Dashboard:
    """The dashboard model."""
    verdicts = value_mappings(VERDICT_MAPPINGS)
    dashboard = new_dashboard(
        UID,
        TITLE,
        "Canary against baseline (or stable) per agent: drift verdicts and evidence, stop-reason mix and "
        "per-run distributions side by side.",
    )
    for variable in agent_variables():
        dashboard = dashboard.with_variable(variable)
    verdict_timeline = (
        statetimeline.Panel()
        .title("Verdict by metric")
        .description("The drift analyzer's verdict per compared metric over time.")
        .datasource(prometheus_ref())
        .mappings(verdicts)
        .span(16)
        .height(6)
        .show_value(common_models.VisibilityMode.AUTO)
        .merge_values(True)
        .legend(legend_table())
        .tooltip(tooltip_all())
        .with_target(
            promql(
                f"max by ({names.LABEL_AGENT}, {names.LABEL_METRIC}) ({names.CANARY_VERDICT}{{{_AGENT_ONLY}}})",
                legend="{{agent}} {{metric}}",
            )
        )
    )
    stop_reason_mix = (
        barchart.Panel()
        .title("Stop-reason mix by track")
        .description("Share of each track's runs per stop reason in the selected time range.")
        .datasource(prometheus_ref())
        .unit("percentunit")
        .span(12)
        .height(9)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .show_value(common_models.VisibilityMode.AUTO)
        .legend(legend_table())
        .tooltip(tooltip_all())
        .with_target(promql(_share_of_track("$__range"), table=True))
        # one row per stop reason, one column (bar) per track
        .with_transformation(
            DataTransformerConfig(
                id_val="groupingToMatrix",
                options={
                    "columnField": names.LABEL_TRACK,
                    "rowField": names.LABEL_STOP_REASON,
                    "valueField": "Value",
                },
            )
        )
    )
    return (
        dashboard.with_row(row("Verdict"))
        .with_panel(
            stat(
                "Canary verdict",
                "Worst verdict over the compared metrics (pass, inconclusive, fail).",
                promql(
                    f"max by ({names.LABEL_AGENT}) ({names.CANARY_VERDICT}{{{_AGENT_ONLY}}})",
                    instant=True,
                ),
                width=8,
            ).mappings(verdicts)
        )
        .with_panel(verdict_timeline)
        .with_panel(
            graph(
                "Drift evidence (e-value)",
                "Anytime-valid evidence that the canary differs from its baseline, per metric. It can be watched "
                "continuously: an e-value above 1/alpha (20 at alpha = 0.05) is significant.",
                promql(
                    f"max by ({names.LABEL_AGENT}, {names.LABEL_METRIC}) "
                    f"({names.CANARY_DRIFT_EVALUE}{{{_AGENT_ONLY}}})",
                    legend="{{agent}} {{metric}}",
                ),
                width=12,
            )
        )
        .with_panel(
            table(
                "Versions by track",
                "Agent versions seen on each track in the selected time range.",
                promql(
                    f"max by ({names.LABEL_AGENT}, {names.LABEL_TRACK}, {names.LABEL_VERSION}) "
                    f"(max_over_time({names.AGENT_INFO}{{{_SEL}}}[$__range]))",
                    table=True,
                ),
                width=12,
                height=8,
            )
        )
        .with_row(row("Stop reasons"))
        .with_panel(stop_reason_mix)
        .with_panel(
            graph(
                "Stop-reason share over time",
                "Each stop reason's share of its track's runs.",
                promql(_share_of_track(_RATE), legend="{{track}} {{stop_reason}}"),
                unit="percentunit",
                height=9,
            )
        )
        .with_row(row("Distributions per run"))
        .with_panel(
            graph(
                "Cost per run",
                "Median and p95 cost per run, per track.",
                *_by_track(names.RUN_COST_USD),
                unit="currencyUSD",
            )
        )
        .with_panel(graph("Steps per run", "Median and p95 steps per run, per track.", *_by_track(names.RUN_STEPS)))
        .with_panel(
            graph(
                "Tool calls per run",
                "Median and p95 tool calls per run, per track.",
                *_by_track(names.RUN_TOOL_CALLS),
            )
        )
        .with_panel(
            graph(
                "Run duration",
                "Median and p95 wall time per run, per track.",
                *_by_track(names.RUN_DURATION_SECONDS),
                unit="s",
            )
        )
        .build()
    )


__all__ = ["SLUG", "TITLE", "UID", "VERDICT_MAPPINGS", "build"]
