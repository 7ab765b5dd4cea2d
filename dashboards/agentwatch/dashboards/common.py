"""Building blocks shared by the agentwatch dashboards.

The dashboards are built with grafana-foundation-sdk's typed builders. The SDK has no typed query
for the ClickHouse plugin (``grafana-clickhouse-datasource``), so ``ClickHouseQuery`` is a small
``Dataquery`` of our own that serialises to the plugin's v4 query model (the one its bundled
dashboards save: ``editorType`` ``sql``, ``queryType``, numeric ``format``, ``rawSql``). Field data
links (Grafana's ``DataLink``: ``title``, ``url``, optional ``internal`` query) likewise get a
small model, because the SDK types them as dashboard links, whose JSON shape is different.

The SQL filter fragments here are the contract between the dashboards and the ClickHouse sort
keys: every panel filters on the key prefix (``TenantId``, ``AgentName``, ``Track``) and on time,
and "All" removes a condition instead of listing every value (``$__conditionalAll``).
"""

from __future__ import annotations

import enum
import textwrap
from collections.abc import Mapping, Sequence
from typing import Final

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus as prometheus_builders
from grafana_foundation_sdk.builders import stat as stat_builders
from grafana_foundation_sdk.builders import table as table_builders
from grafana_foundation_sdk.builders import timeseries as timeseries_builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

from agentwatch.collectors import metric_names as names
from agentwatch.dashboards.datasources import (
    CLICKHOUSE_DATASOURCE_TYPE,
    CLICKHOUSE_DATASOURCE_UID,
    PROMETHEUS_DATASOURCE_TYPE,
    PROMETHEUS_DATASOURCE_UID,
)

TAG: Final = "agentwatch"
"""Tag of every agentwatch dashboard (the dashboards' cross-links list dashboards by it)."""

ALL: Final = "$__all"
"""Grafana's value of a variable's "All" option."""

CLICKHOUSE_QUERY_MODEL_VERSION: Final = "4.0.0"
"""``pluginVersion`` of the ClickHouse queries: v4 query model, so the plugin does not migrate them as v3."""

# Tables of the agentwatch ClickHouse schema (unqualified: the datasource's default database holds them).
RUNS_TABLE: Final = "agent_runs"
TOOL_CALLS_TABLE: Final = "agent_tool_calls"
TRACES_TABLE: Final = "otel_traces"
TRACE_ID_TS_TABLE: Final = "otel_traces_trace_id_ts"

COLLECTOR_JOB: Final = "agentwatch-collector"
"""Prometheus job scraping the collector (the alert rules select the same job)."""


def prometheus_ref() -> dashboard_models.DataSourceRef:
    """A reference to the agentwatch Prometheus datasource."""
    return dashboard_models.DataSourceRef(type_val=PROMETHEUS_DATASOURCE_TYPE, uid=PROMETHEUS_DATASOURCE_UID)


def clickhouse_ref() -> dashboard_models.DataSourceRef:
    """A reference to the agentwatch ClickHouse datasource."""
    return dashboard_models.DataSourceRef(type_val=CLICKHOUSE_DATASOURCE_TYPE, uid=CLICKHOUSE_DATASOURCE_UID)


def sql(text: str) -> str:
    """SQL written as an indented triple-quoted string, stored without the indentation."""
    return textwrap.dedent(text).strip()


# --- PromQL ------------------------------------------------------------------------------------

AGENT_SELECTOR: Final = f'{names.LABEL_AGENT}=~"$agent", {names.LABEL_TRACK}=~"$track"'
"""Label matchers of the agent and track variables ("All" is ``.*``)."""


def promql(
    expr: str, *, legend: str = "__auto", ref_id: str = "A", instant: bool = False, table: bool = False
) -> prometheus_builders.Dataquery:
    """A Prometheus target: a range query for graphs, or an instant one (``table`` for table panels)."""
    query = prometheus_builders.Dataquery().expr(expr).ref_id(ref_id).datasource(prometheus_ref())
    query = query.legend_format(legend).editor_mode(prometheus_models.QueryEditorMode.CODE)
    query = query.instant() if instant or table else query.range()
    if table:
        query = query.format(prometheus_models.PromQueryFormat.TABLE)
    return query


# --- ClickHouse --------------------------------------------------------------------------------


class ClickHouseFormat(enum.IntEnum):
    """The ``format`` of a ClickHouse query (the plugin backend's sqlds format numbers)."""

    TIME_SERIES = 0
    TABLE = 1
    LOGS = 2
    TRACE = 3


_QUERY_TYPES: Final = {
    ClickHouseFormat.TIME_SERIES: "timeseries",
    ClickHouseFormat.TABLE: "table",
    ClickHouseFormat.LOGS: "logs",
    ClickHouseFormat.TRACE: "traces",
}


class ClickHouseQuery(cogvariants.Dataquery):
    """A raw-SQL query of the ClickHouse plugin; macros and variables are expanded by Grafana and the plugin."""

    def __init__(self, raw_sql: str, *, ref_id: str = "A", format_: ClickHouseFormat = ClickHouseFormat.TABLE) -> None:
        self.raw_sql = raw_sql
        self.ref_id = ref_id
        self.format = format_

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": clickhouse_ref(),
            "editorType": "sql",
            "format": int(self.format),
            "pluginVersion": CLICKHOUSE_QUERY_MODEL_VERSION,
            "queryType": _QUERY_TYPES[self.format],
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class ClickHouseQueryBuilder(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder form of ``ClickHouseQuery``, for the SDK's ``with_target``."""

    def __init__(self, raw_sql: str, *, ref_id: str = "A", format_: ClickHouseFormat = ClickHouseFormat.TABLE) -> None:
        self._query = ClickHouseQuery(sql(raw_sql), ref_id=ref_id, format_=format_)

    def build(self) -> ClickHouseQuery:
        return self._query


def clickhouse_table(raw_sql: str, *, ref_id: str = "A") -> ClickHouseQueryBuilder:
    """A ClickHouse query whose result is shown as a table (or reduced by a stat panel)."""
    return ClickHouseQueryBuilder(raw_sql, ref_id=ref_id, format_=ClickHouseFormat.TABLE)


def clickhouse_series(raw_sql: str, *, ref_id: str = "A") -> ClickHouseQueryBuilder:
    """A ClickHouse query returning ``time`` plus series columns, drawn as time series."""
    return ClickHouseQueryBuilder(raw_sql, ref_id=ref_id, format_=ClickHouseFormat.TIME_SERIES)


def clickhouse_trace(raw_sql: str, *, ref_id: str = "A") -> ClickHouseQueryBuilder:
    """A ClickHouse trace-ID query, shown by Grafana's trace view."""
    return ClickHouseQueryBuilder(raw_sql, ref_id=ref_id, format_=ClickHouseFormat.TRACE)


def conditional_all(condition: str, variable: str) -> str:
    """``condition`` unless ``$variable`` selects "All" (then ``1=1``: no filter, nothing enumerated)."""
    return f"$__conditionalAll({condition}, ${variable})"


def in_variable(column: str, variable: str) -> str:
    """``column`` restricted to the selected values of a multi-value variable."""
    return conditional_all(f"{column} IN (${{{variable}:singlequote}})", variable)


RUN_FILTERS: Final = " AND ".join(
    (
        "$__timeFilter(StartTime)",
        in_variable("TenantId", "tenant"),
        in_variable("AgentName", "agent"),
        in_variable("Track", "track"),
    )
)
"""Filters of every ``agent_runs`` query: the table's sort key prefix and time."""

TOOL_CALL_FILTERS: Final = " AND ".join(
    (
        "$__timeFilter(Timestamp)",
        in_variable("TenantId", "tenant"),
        in_variable("AgentName", "agent"),
        in_variable("Track", "track"),
    )
)
"""Filters of every ``agent_tool_calls`` query: sort key prefix (tenant, agent) and time, plus track."""


def sql_list(values: Sequence[str]) -> str:
    """A SQL list of string literals (closed-set values from the semantic contract, never user input)."""
    return ", ".join(f"'{value}'" for value in values)


# --- variables -----------------------------------------------------------------------------------


def _all_selected() -> dashboard_models.VariableOption:
    return dashboard_models.VariableOption(selected=True, text=["All"], value=[ALL])


def prometheus_variable(name: str, label: str, query: str) -> dashboard_builders.QueryVariable:
    """A multi-value variable from Prometheus label values, "All" (``.*``) selected."""
    return (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .datasource(prometheus_ref())
        .query(query)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(_all_selected())
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
    )


CLICKHOUSE_VARIABLE_QUERY_TYPE: Final = "sql"
"""``queryType`` of a custom-SQL variable query in the plugin's variable model (``CHVariableQuery``)."""

CLICKHOUSE_VARIABLE_REF_ID: Final = "var"
"""``refId`` of a variable query (the one the plugin's variable editor gives a query without one)."""


def clickhouse_variable_query(raw_sql: str) -> dict[str, object]:
    """The query object of a ClickHouse template variable, as the plugin's variable support reads it.

    The plugin (v4.19+, ``CHVariableSupport``) stores a variable query as ``CHVariableQuery``:
    ``queryType`` picks the editor (``sql`` is custom SQL) and the variable resolver runs ``rawSql``
    only. A plain string is still accepted as legacy, but the editor rewrites it on first save.
    """
    return {"queryType": CLICKHOUSE_VARIABLE_QUERY_TYPE, "rawSql": raw_sql, "refId": CLICKHOUSE_VARIABLE_REF_ID}


def clickhouse_variable(name: str, label: str, query: str) -> dashboard_builders.QueryVariable:
    """A multi-value variable from a ClickHouse query, "All" selected (the queries drop the condition)."""
    return (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .datasource(clickhouse_ref())
        .query(clickhouse_variable_query(sql(query)))
        .multi(True)
        .include_all(True)
        .current(_all_selected())
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
    )


def agent_variables() -> list[dashboard_builders.QueryVariable]:
    """The agent and track variables of the Prometheus dashboards."""
    return [
        prometheus_variable("agent", "Agent", f"label_values({names.RUNS_TOTAL}, {names.LABEL_AGENT})"),
        prometheus_variable(
            "track",
            "Track",
            f'label_values({names.RUNS_TOTAL}{{{names.LABEL_AGENT}=~"$agent"}}, {names.LABEL_TRACK})',
        ),
    ]


def run_variables() -> list[dashboard_builders.QueryVariable]:
    """The tenant, agent and track variables of the ClickHouse dashboards (each narrowed by the previous)."""
    tenant = in_variable("TenantId", "tenant")
    agent = in_variable("AgentName", "agent")
    return [
        clickhouse_variable(
            "tenant",
            "Tenant",
            f"""
            SELECT DISTINCT TenantId FROM {RUNS_TABLE}
            WHERE $__timeFilter(StartTime)
            ORDER BY TenantId
            """,
        ),
        clickhouse_variable(
            "agent",
            "Agent",
            f"""
            SELECT DISTINCT AgentName FROM {RUNS_TABLE}
            WHERE $__timeFilter(StartTime) AND {tenant}
            ORDER BY AgentName
            """,
        ),
        clickhouse_variable(
            "track",
            "Track",
            f"""
            SELECT DISTINCT Track FROM {RUNS_TABLE}
            WHERE $__timeFilter(StartTime) AND {tenant} AND {agent}
            ORDER BY Track
            """,
        ),
    ]


# --- field data links ------------------------------------------------------------------------------


class FieldLink(dashboard_models.DashboardLink):
    """A data link on table cells (Grafana's ``DataLink``), optionally an internal link into Explore."""

    def __init__(self, title: str, url: str, *, internal: Mapping[str, object] | None = None) -> None:
        super().__init__(title=title, url=url)
        self.internal = dict(internal) if internal is not None else None

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {"title": self.title, "url": self.url, "targetBlank": False}
        if self.internal is not None:
            payload["internal"] = self.internal
        return payload


class FieldLinkBuilder(cogbuilder.Builder[dashboard_models.DashboardLink]):
    """Builder form of ``FieldLink``, for the SDK's ``data_links``."""

    def __init__(self, title: str, url: str, *, internal: Mapping[str, object] | None = None) -> None:
        self._link = FieldLink(title, url, internal=internal)

    def build(self) -> FieldLink:
        return self._link


# --- panels and dashboards -----------------------------------------------------------------------


def legend_table(*calcs: str) -> common_builders.VizLegendOptions:
    """A legend below the graph, as a table with the given reducers (e.g. ``mean``, ``max``)."""
    return (
        common_builders.VizLegendOptions()
        .display_mode(common_models.LegendDisplayMode.TABLE)
        .placement(common_models.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(list(calcs))
    )


def tooltip_all() -> common_builders.VizTooltipOptions:
    """A tooltip listing every series, largest first."""
    return (
        common_builders.VizTooltipOptions()
        .mode(common_models.TooltipDisplayMode.MULTI)
        .sort(common_models.SortOrder.DESCENDING)
    )


def last_value() -> common_builders.ReduceDataOptions:
    """Stat panels show the last value of each field."""
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def value_mappings(texts: Mapping[int, tuple[str, str]]) -> list[dashboard_models.ValueMapping]:
    """Value -> (text, color) mappings, e.g. a verdict code to ``pass``/green."""
    options = {
        str(value): dashboard_models.ValueMappingResult(text=text, color=color, index=index)
        for index, (value, (text, color)) in enumerate(sorted(texts.items()))
    }
    return [dashboard_models.ValueMap(options=options)]


Target = prometheus_builders.Dataquery | ClickHouseQueryBuilder


def _datasource_of(targets: Sequence[Target]) -> dashboard_models.DataSourceRef:
    # a panel queries one datasource; which one follows from its targets
    if all(isinstance(target, ClickHouseQueryBuilder) for target in targets):
        return clickhouse_ref()
    if all(isinstance(target, prometheus_builders.Dataquery) for target in targets):
        return prometheus_ref()
    raise ValueError("a panel's targets must all query the same datasource")


def graph(
    title: str,
    description: str,
    *targets: Target,
    unit: str = "short",
    stacked: bool = False,
    bars: bool = False,
    width: int = 12,
    height: int = 8,
) -> timeseries_builders.Panel:
    """A time series panel; ``stacked`` for parts of a whole (e.g. runs by stop reason)."""
    panel = (
        timeseries_builders.Panel()
        .title(title)
        .description(description)
        .datasource(_datasource_of(targets))
        .unit(unit)
        .span(width)
        .height(height)
        .legend(legend_table("mean", "max", "lastNotNull"))
        .tooltip(tooltip_all())
        .fill_opacity(30 if stacked or bars else 10)
        .line_width(1)
        .show_points(common_models.VisibilityMode.NEVER)
        .span_nulls(False)
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL))
    if bars:
        panel = panel.draw_style(common_models.GraphDrawStyle.BARS)
    for target in targets:
        panel = panel.with_target(target)
    return panel


def stat(title: str, description: str, *targets: Target, unit: str = "short", width: int = 6) -> stat_builders.Panel:
    """A single-number panel (the last value of each field)."""
    panel = (
        stat_builders.Panel()
        .title(title)
        .description(description)
        .datasource(_datasource_of(targets))
        .unit(unit)
        .span(width)
        .height(4)
        .reduce_options(last_value())
        .color_mode(common_models.BigValueColorMode.VALUE)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .text_mode(common_models.BigValueTextMode.AUTO)
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def table(title: str, description: str, *targets: Target, width: int = 24, height: int = 10) -> table_builders.Panel:
    """A table panel with compact rows."""
    panel = (
        table_builders.Panel()
        .title(title)
        .description(description)
        .datasource(_datasource_of(targets))
        .span(width)
        .height(height)
        .show_header(True)
        .cell_height(common_models.TableCellHeight.SM)
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def row(title: str) -> dashboard_builders.Row:
    """A (expanded) row heading a group of panels."""
    return dashboard_builders.Row(title)


def new_dashboard(uid: str, title: str, description: str, *, time_from: str = "now-6h") -> dashboard_builders.Dashboard:
    """A dashboard with the agentwatch defaults: tag, shared crosshair, refresh, links to its siblings."""
    siblings = (
        dashboard_builders.DashboardLink("agentwatch")
        .type(dashboard_models.DashboardLinkType.DASHBOARDS)
        .tags([TAG])
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
        .icon("external link")
        .tooltip("Other agentwatch dashboards")
        .target_blank(False)
    )
    return (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .time(time_from, "now")
        .refresh("1m")
        .timezone("browser")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .link(siblings)
    )


__all__ = [
    "AGENT_SELECTOR",
    "ALL",
    "CLICKHOUSE_QUERY_MODEL_VERSION",
    "COLLECTOR_JOB",
    "RUNS_TABLE",
    "RUN_FILTERS",
    "TAG",
    "TOOL_CALLS_TABLE",
    "TOOL_CALL_FILTERS",
    "TRACES_TABLE",
    "TRACE_ID_TS_TABLE",
    "ClickHouseFormat",
    "ClickHouseQuery",
    "ClickHouseQueryBuilder",
    "FieldLink",
    "FieldLinkBuilder",
    "Target",
    "agent_variables",
    "clickhouse_ref",
    "clickhouse_series",
    "clickhouse_table",
    "clickhouse_trace",
    "clickhouse_variable",
    "conditional_all",
    "graph",
    "in_variable",
    "last_value",
    "legend_table",
    "new_dashboard",
    "prometheus_ref",
    "prometheus_variable",
    "promql",
    "row",
    "run_variables",
    "sql",
    "sql_list",
    "stat",
    "table",
    "tooltip_all",
    "value_mappings",
]
