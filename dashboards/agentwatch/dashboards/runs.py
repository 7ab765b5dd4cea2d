"""Runs explorer: find the runs that matter and open their traces (ClickHouse).

Recent runs, the most expensive ones, and the ones a budget or the gateway ended (with the tool it
blocked and the policy rule), from ``agent_runs``. Clicking a run opens its trace in the trace panel
at the bottom (the ``trace_id`` variable) or in Explore; both run the same trace-ID query the
ClickHouse plugin generates for OpenTelemetry tables (the ``otel_traces_trace_id_ts`` lookup narrows
the scan to the trace's time window).
"""

from __future__ import annotations

from typing import Final

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import table as table_builders
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models.dashboard import Dashboard, DashboardLink

from agentwatch.dashboards.common import (
    RUN_FILTERS,
    RUNS_TABLE,
    TOOL_CALL_FILTERS,
    TOOL_CALLS_TABLE,
    TRACE_ID_TS_TABLE,
    TRACES_TABLE,
    ClickHouseFormat,
    ClickHouseQuery,
    FieldLinkBuilder,
    clickhouse_ref,
    clickhouse_series,
    clickhouse_table,
    clickhouse_trace,
    graph,
    in_variable,
    new_dashboard,
    row,
    run_variables,
    sql,
    sql_list,
    stat,
    table,
)
from agentwatch.dashboards.datasources import CLICKHOUSE_DATASOURCE_UID
from agentwatch.instrumentation import semconv

UID: Final = "agentwatch-runs"
SLUG: Final = "runs"
TITLE: Final = "agentwatch / Runs explorer"

TRACE_VARIABLE: Final = "trace_id"
"""Textbox variable holding the trace shown by the trace panel (set by the run tables' links)."""

BUDGET_STOP_REASONS: Final = tuple(budget.stop_reason.value for budget in semconv.BudgetName)
POLICY_STOP_REASONS: Final = (
    semconv.StopReason.POLICY_DENIED.value,
    semconv.StopReason.APPROVAL_REJECTED.value,
)
BLOCKING_DISPOSITIONS: Final = (
    semconv.ToolDisposition.DENIED.value,
    semconv.ToolDisposition.REJECTED.value,
)

_RUN_COLUMNS: Final = ", ".join(
    (
        "StartTime AS start",
        "AgentName AS agent",
        "AgentVersion AS version",
        "Track AS track",
        "TenantId AS tenant",
        "StopReason AS stop_reason",
        "BudgetExhausted AS budget",
        "Steps AS steps",
        "ToolCalls AS tool_calls",
        "CostUsd AS cost_usd",
        "DurationSeconds AS duration_s",
        "RunId AS run_id",
        # named TraceId: the ClickHouse plugin adds its "View trace" link to a column of that name
        "TraceId",
    )
)


TRACE_EVENTS: Final = (
    "arrayMap((name, timestamp, attributes) -> tuple(name, toString(toUnixTimestamp64Milli(timestamp)), "
    "arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))"
    "::Tuple(name String, timestamp String, fields Array(Map(String, String))), "
    "Events.Name, Events.Timestamp, Events.Attributes)"
)
"""The span's events as the trace view's ``logs`` (name, time in ms, attributes as key/value fields).

The expression the plugin generates for an OTel table with events prefix ``Events`` (nested columns,
not flattened): budget, policy, approval and kill-switch events show on their span.
"""

TRACE_LINKS: Final = (
    "arrayMap((traceID, spanID, attributes) -> tuple(traceID, spanID, "
    "arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))"
    "::Tuple(traceID String, spanID String, tags Array(Map(String, String))), "
    "Links.TraceId, Links.SpanId, Links.Attributes)"
)
"""The span's links as the trace view's ``references`` (the plugin's expression for links prefix ``Links``)."""


def trace_sql(trace_id: str) -> str:
    """The trace-ID query of Grafana's trace view for ``trace_id`` (a template expression, quoted by Grafana).

    Column aliases are the trace data frame's field names, span events (``logs``) and links
    (``references``) included; the lookup table gives the trace's time window so only that part of
    ``otel_traces`` is read.
    """
    tenant = in_variable(f"SpanAttributes['{semconv.TENANT_ID}']", "tenant")
    return sql(
        f"""
        WITH {trace_id} AS trace_id,
            (SELECT min(Start) FROM {TRACE_ID_TS_TABLE} WHERE TraceId = trace_id) AS trace_start,
            (SELECT max(End) + 1 FROM {TRACE_ID_TS_TABLE} WHERE TraceId = trace_id) AS trace_end
        SELECT
            TraceId AS traceID,
            SpanId AS spanID,
            ParentSpanId AS parentSpanID,
            ServiceName AS serviceName,
            SpanName AS operationName,
            multiply(toUnixTimestamp64Nano(Timestamp), 0.000001) AS startTime,
            multiply(Duration, 0.000001) AS duration,
            arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), mapKeys(SpanAttributes)) AS tags,
            arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]), mapKeys(ResourceAttributes))
                AS serviceTags,
            {TRACE_EVENTS} AS logs,
            {TRACE_LINKS} AS references,
            lower(SpanKind) AS kind,
            multiIf(StatusCode = 'Error', 2, StatusCode = 'Ok', 1, 0) AS statusCode,
            StatusMessage AS statusMessage,
            ScopeName AS instrumentationLibraryName,
            ScopeVersion AS instrumentationLibraryVersion
        FROM {TRACES_TABLE}
        WHERE TraceId = trace_id
            AND Timestamp >= trace_start AND Timestamp <= trace_end
            AND {tenant}
        ORDER BY Timestamp
        LIMIT 10000
        """
    )


def trace_links() -> list[Builder[DashboardLink]]:
    """Links from a run row to its trace: the trace panel below, and Explore's trace view."""
    trace_of_row = "${__data.fields.TraceId}"
    explore_query = ClickHouseQuery(trace_sql(f"'{trace_of_row}'"), ref_id="trace", format_=ClickHouseFormat.TRACE)
    return [
        FieldLinkBuilder(
            "Show this run's trace below",
            f"/d/{UID}?${{__url_time_range}}&${{tenant:queryparam}}&${{agent:queryparam}}&${{track:queryparam}}"
            f"&var-{TRACE_VARIABLE}={trace_of_row}",
        ),
        FieldLinkBuilder(
            "Open this run's trace in Explore",
            "",
            internal={
                "datasourceUid": CLICKHOUSE_DATASOURCE_UID,
                "datasourceName": "ClickHouse",
                "query": explore_query.to_json(),
            },
        ),
    ]


def _runs_table(title: str, description: str, raw_sql: str) -> table_builders.Panel:
    """A table of runs whose rows link to their traces (the ``TraceId`` column names the trace)."""
    return table(title, description, clickhouse_table(raw_sql)).data_links(trace_links())


def build() -> Dashboard:
    """The dashboard model."""
    budget_reasons = sql_list(BUDGET_STOP_REASONS)
    policy_reasons = sql_list(POLICY_STOP_REASONS)
    dashboard = new_dashboard(
        UID,
        TITLE,
        "Recent, expensive and stopped runs from ClickHouse, with a click-through to each run's trace.",
        time_from="now-1h",
    )
    for variable in run_variables():
        dashboard = dashboard.with_variable(variable)
    dashboard = dashboard.with_variable(
        dashboard_builders.TextBoxVariable(TRACE_VARIABLE).label("Trace ID").default_value("")
    )
    trace_panel = (
        dashboard_builders.Panel()
        .type("traces")
        .title("Trace of the selected run")
        .description("Pick a run above (its trace link) or paste a trace ID into the Trace ID box.")
        .datasource(clickhouse_ref())
        .span(24)
        .height(16)
        .options({})
        .with_target(clickhouse_trace(trace_sql(f"${{{TRACE_VARIABLE}:singlequote}}")))
    )
    return (
        dashboard.with_row(row("Runs"))
        .with_panel(
            stat(
                "Runs",
                "Finished runs.",
                clickhouse_table(f"SELECT count() AS runs FROM {RUNS_TABLE} WHERE {RUN_FILTERS}"),
            )
        )
        .with_panel(
            stat(
                "Cost",
                "LLM cost of the finished runs.",
                clickhouse_table(f"SELECT sum(CostUsd) AS cost_usd FROM {RUNS_TABLE} WHERE {RUN_FILTERS}"),
                unit="currencyUSD",
            )
        )
        .with_panel(
            stat(
                "Mean cost per run",
                "Average LLM cost of a finished run.",
                clickhouse_table(f"SELECT avg(CostUsd) AS mean_cost_usd FROM {RUNS_TABLE} WHERE {RUN_FILTERS}"),
                unit="currencyUSD",
            )
        )
        .with_panel(
            stat(
                "Stopped by a budget / by policy",
                "Runs a budget ended, and runs a policy denial or a rejected approval ended.",
                clickhouse_table(
                    f"""
                    SELECT countIf(StopReason IN ({budget_reasons})) AS budget,
                        countIf(StopReason IN ({policy_reasons})) AS policy
                    FROM {RUNS_TABLE} WHERE {RUN_FILTERS}
                    """
                ),
            )
        )
        .with_panel(
            graph(
                "Runs by stop reason",
                "Finished runs per interval, stacked by why they ended.",
                clickhouse_series(
                    f"""
                    SELECT $__timeInterval(StartTime) AS time, StopReason AS stop_reason, count() AS runs
                    FROM {RUNS_TABLE} WHERE {RUN_FILTERS}
                    GROUP BY time, stop_reason ORDER BY time
                    """
                ),
                stacked=True,
                bars=True,
            )
        )
        .with_panel(
            graph(
                "Cost by agent and track",
                "LLM cost of the runs finished in each interval.",
                clickhouse_series(
                    f"""
                    SELECT $__timeInterval(StartTime) AS time, concat(AgentName, '/', Track) AS agent_track,
                        sum(CostUsd) AS cost_usd
                    FROM {RUNS_TABLE} WHERE {RUN_FILTERS}
                    GROUP BY time, agent_track ORDER BY time
                    """
                ),
                unit="currencyUSD",
                bars=True,
            )
        )
        .with_panel(
            _runs_table(
                "Recent runs",
                "The latest finished runs. Click a row for its trace.",
                f"""
                SELECT {_RUN_COLUMNS}
                FROM {RUNS_TABLE} WHERE {RUN_FILTERS}
                ORDER BY StartTime DESC LIMIT 100
                """,
            )
        )
        .with_panel(
            _runs_table(
                "Most expensive runs",
                "The costliest runs in the time range.",
                f"""
                SELECT {_RUN_COLUMNS}
                FROM {RUNS_TABLE} WHERE {RUN_FILTERS}
                ORDER BY CostUsd DESC LIMIT 50
                """,
            )
        )
        .with_panel(
            _runs_table(
                "Runs ended by a budget or a denial",
                "Runs a budget stopped (which budget) or the gateway stopped (which tool, which policy rule).",
                f"""
                WITH stopped AS (
                    SELECT StartTime, AgentName, Track, TenantId, StopReason, BudgetExhausted, Steps, ToolCalls,
                        CostUsd, RunId, TraceId
                    FROM {RUNS_TABLE}
                    WHERE {RUN_FILTERS} AND StopReason IN ({budget_reasons}, {policy_reasons})
                    ORDER BY StartTime DESC LIMIT 100
                )
                SELECT s.StartTime AS start, s.AgentName AS agent, s.Track AS track, s.TenantId AS tenant,
                    s.StopReason AS stop_reason, s.BudgetExhausted AS budget, b.tool AS blocked_tool,
                    b.rule AS policy_rule, s.Steps AS steps, s.ToolCalls AS tool_calls, s.CostUsd AS cost_usd,
                    s.RunId AS run_id, s.TraceId AS TraceId
                FROM stopped AS s
                LEFT JOIN (
                    SELECT RunId, any(ToolName) AS tool, any(PolicyRule) AS rule
                    FROM {TOOL_CALLS_TABLE}
                    WHERE {TOOL_CALL_FILTERS} AND Disposition IN ({sql_list(BLOCKING_DISPOSITIONS)})
                        AND RunId IN (SELECT RunId FROM stopped)
                    GROUP BY RunId
                ) AS b ON b.RunId = s.RunId
                ORDER BY start DESC
                """,
            )
        )
        .with_row(row("Trace"))
        .with_panel(trace_panel)
        .build()
    )


__all__ = [
    "BUDGET_STOP_REASONS",
    "POLICY_STOP_REASONS",
    "SLUG",
    "TITLE",
    "TRACE_EVENTS",
    "TRACE_LINKS",
    "TRACE_VARIABLE",
    "UID",
    "build",
    "trace_sql",
]
