"""Tools and governance: what the tool gateway let through, stopped or sent to a person (ClickHouse).

Per tool from ``agent_tool_calls``: calls, the gateway's decisions (denied, approved, rejected,
deduplicated, killed), errors and latency (``DurationSeconds``; calls that never ran are left out of
latency), the most denied tools with their policy rules, and the latest blocked calls with a link to
the run's trace; the control plane's audit trail (``agent_audit``: kill-switch changes, approval
requests and decisions with who made them, policy denials).
"""

from __future__ import annotations

from typing import Final

from grafana_foundation_sdk.builders import barchart
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models.dashboard import Dashboard

from agentwatch.dashboards import runs
from agentwatch.dashboards.common import (
    TOOL_CALL_FILTERS,
    TOOL_CALLS_TABLE,
    FieldLinkBuilder,
    clickhouse_ref,
    clickhouse_series,
    clickhouse_table,
    graph,
    in_variable,
    legend_table,
    new_dashboard,
    row,
    run_variables,
    sql_list,
    stat,
    table,
    tooltip_all,
)
from agentwatch.instrumentation import semconv

UID: Final = "agentwatch-tools"
SLUG: Final = "tools"
TITLE: Final = "agentwatch / Tools and governance"

_D: Final = semconv.ToolDisposition
BLOCKED_DISPOSITIONS: Final = (_D.DENIED.value, _D.REJECTED.value, _D.KILLED.value)
"""Decisions that kept a tool call from running (besides deduplication, which returns a prior result)."""
_NEVER_RAN: Final = semconv.ToolOutcome.BLOCKED.value
AUDIT_TABLE: Final = "agent_audit"
_AUDIT_FILTERS: Final = " AND ".join(
    ("$__timeFilter(Timestamp)", in_variable("TenantId", "tenant"), in_variable("AgentName", "agent"))
)


def _disposition_counts() -> str:
    return ", ".join(
        f"countIf(Disposition = '{disposition.value}') AS {disposition.value}"
        for disposition in semconv.ToolDisposition
    )


def build() -> Dashboard:
    """The dashboard model."""
    blocked = sql_list(BLOCKED_DISPOSITIONS)
    dashboard = new_dashboard(
        UID,
        TITLE,
        "Tool calls through the gateway: decisions, denials, approvals, errors and latency per tool.",
        time_from="now-6h",
    )
    for variable in run_variables():
        dashboard = dashboard.with_variable(variable)
    most_denied = (
        barchart.Panel()
        .title("Most denied tools")
        .description("Tools the policy denied most often. A tool nobody allowed showing up here is worth a look.")
        .datasource(clickhouse_ref())
        .span(12)
        .height(9)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .show_value(common_models.VisibilityMode.AUTO)
        .legend(legend_table())
        .tooltip(tooltip_all())
        .with_target(
            clickhouse_table(
                f"""
                SELECT ToolName AS tool, count() AS denials
                FROM {TOOL_CALLS_TABLE}
                WHERE {TOOL_CALL_FILTERS} AND Disposition = '{_D.DENIED.value}'
                GROUP BY tool ORDER BY denials DESC LIMIT 10
                """
            )
        )
    )
    trace_link = FieldLinkBuilder(
        "Open the run's trace",
        f"/d/{runs.UID}?${{__url_time_range}}&var-{runs.TRACE_VARIABLE}=${{__data.fields.TraceId}}",
    )
    return (
        dashboard.with_row(row("Gateway decisions"))
        .with_panel(
            stat(
                "Gateway decisions",
                "Tool calls through the gateway in the time range, by decision.",
                clickhouse_table(
                    f"""
                    SELECT count() AS calls,
                    {_disposition_counts()}
                    FROM {TOOL_CALLS_TABLE} WHERE {TOOL_CALL_FILTERS}
                    """
                ),
                width=24,
            )
        )
        .with_panel(
            graph(
                "Tool calls by decision",
                "Tool calls per interval, stacked by the gateway's decision.",
                clickhouse_series(
                    f"""
                    SELECT $__timeInterval(Timestamp) AS time, Disposition AS disposition, count() AS calls
                    FROM {TOOL_CALLS_TABLE} WHERE {TOOL_CALL_FILTERS}
                    GROUP BY time, disposition ORDER BY time
                    """
                ),
                stacked=True,
                bars=True,
            )
        )
        .with_panel(
            graph(
                "Denied, rejected and killed calls by tool",
                "Calls the policy denied, a person rejected or a kill switch blocked, per tool.",
                clickhouse_series(
                    f"""
                    SELECT $__timeInterval(Timestamp) AS time, concat(ToolName, ' ', Disposition) AS tool_decision,
                        count() AS calls
                    FROM {TOOL_CALLS_TABLE}
                    WHERE {TOOL_CALL_FILTERS} AND Disposition IN ({blocked})
                    GROUP BY time, tool_decision ORDER BY time
                    """
                ),
                bars=True,
            )
        )
        .with_row(row("Per tool"))
        .with_panel(
            table(
                "Calls per tool",
                "Calls, decisions, errors and latency (of calls that ran) per tool.",
                clickhouse_table(
                    f"""
                    SELECT ToolName AS tool, count() AS calls,
                    {_disposition_counts()},
                    countIf(Outcome = '{semconv.ToolOutcome.ERROR.value}') AS errors,
                    quantileIf(0.5)(DurationSeconds, Outcome != '{_NEVER_RAN}') AS p50_s,
                    quantileIf(0.95)(DurationSeconds, Outcome != '{_NEVER_RAN}') AS p95_s
                    FROM {TOOL_CALLS_TABLE} WHERE {TOOL_CALL_FILTERS}
                    GROUP BY tool ORDER BY calls DESC LIMIT 100
                    """
                ),
            )
        )
        .with_panel(
            graph(
                "Tool latency (p95)",
                "95th percentile duration of tool calls that ran, per tool, in buckets of 5 minutes or more.",
                clickhouse_series(
                    # Buckets of at least 5 minutes: a per-minute p95 over a handful of calls is
                    # noise, and over a day of a busy fleet it is ~25k quantile states to compute.
                    f"""
                    SELECT toStartOfInterval(toDateTime(Timestamp), INTERVAL greatest($__interval_s, 300) second)
                            AS time,
                        ToolName AS tool,
                        quantile(0.95)(DurationSeconds) AS p95_s
                    FROM {TOOL_CALLS_TABLE}
                    WHERE {TOOL_CALL_FILTERS} AND Outcome != '{_NEVER_RAN}'
                    GROUP BY time, tool ORDER BY time
                    """
                ),
                unit="s",
            )
        )
        .with_panel(most_denied)
        .with_row(row("Blocked calls"))
        .with_panel(
            table(
                "Denials by tool and policy rule",
                "Which rule denied which tool, and for how many runs.",
                clickhouse_table(
                    f"""
                    SELECT ToolName AS tool, PolicyRule AS policy_rule, Disposition AS decision, count() AS calls,
                        uniqExact(RunId) AS runs, max(Timestamp) AS last_seen
                    FROM {TOOL_CALLS_TABLE}
                    WHERE {TOOL_CALL_FILTERS} AND Disposition IN ({blocked})
                    GROUP BY tool, policy_rule, decision ORDER BY calls DESC LIMIT 100
                    """
                ),
                width=12,
                height=9,
            )
        )
        .with_panel(
            table(
                "Latest blocked calls",
                "The most recent denied, rejected or killed calls. Click a row for the run's trace.",
                clickhouse_table(
                    f"""
                    SELECT Timestamp AS time, AgentName AS agent, Track AS track, TenantId AS tenant,
                        ToolName AS tool, Disposition AS decision, PolicyRule AS policy_rule, Risk AS risk,
                        RunId AS run_id, TraceId
                    FROM {TOOL_CALLS_TABLE}
                    WHERE {TOOL_CALL_FILTERS} AND Disposition IN ({blocked})
                    ORDER BY Timestamp DESC LIMIT 100
                    """
                ),
                width=12,
                height=9,
            ).data_links([trace_link])
        )
        .with_row(row("Control plane"))
        .with_panel(
            table(
                "Audit trail",
                "Kill-switch changes, approval requests and decisions (with who made them) and policy denials, "
                "newest first: what `agentwatch audit` prints. Global and agent-wide kill switches have no tenant; "
                "the trail has no track.",
                clickhouse_table(
                    f"""
                    SELECT Timestamp AS time, Kind AS kind, TenantId AS tenant, AgentName AS agent, Actor AS actor,
                        Scope AS scope, Tool AS tool, Reason AS reason, SubjectId AS subject, RunId AS run_id
                    FROM {AUDIT_TABLE}
                    WHERE {_AUDIT_FILTERS}
                    ORDER BY Timestamp DESC LIMIT 200
                    """
                ),
                width=24,
                height=9,
            )
        )
        .build()
    )


__all__ = ["AUDIT_TABLE", "BLOCKED_DISPOSITIONS", "SLUG", "TITLE", "UID", "build"]
