"""Every query the dashboards send, as data: what tests and benchmarks run against real engines.

``panel_queries()`` walks the rendered dashboards (exactly what Grafana gets) and returns one
``PanelQuery`` per panel target and per query variable, with the datasource it goes to and its
language: ``promql`` for Prometheus, ``sql`` for ClickHouse. The text is as stored, with Grafana
variables and ClickHouse-plugin macros unexpanded (``agentwatch.dashboards.macros`` expands them).

Query variables are included with ``kind="variable"`` (a ClickHouse variable's SQL is the
``rawSql`` of its query object). A Prometheus variable query is Grafana's
``label_values(<selector>, <label>)`` function rather than PromQL; ``variable_promql`` turns it into
the equivalent PromQL (``count by (<label>) (<selector>)``) for evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from agentwatch.dashboards.datasources import DATASOURCE_TYPES, PROMETHEUS_DATASOURCE_TYPE

Language = Literal["promql", "sql"]
Kind = Literal["panel", "variable"]

_LABEL_VALUES: Final = re.compile(r"^\s*label_values\((?:(?P<selector>.+),\s*)?(?P<label>[A-Za-z_][A-Za-z0-9_]*)\)\s*$")


@dataclass(frozen=True)
class PanelQuery:
    """One query of one dashboard panel (or of a template variable: ``kind="variable"``)."""

    dashboard_uid: str
    panel_title: str
    datasource_uid: str
    language: Language
    expr: str
    kind: Kind = "panel"
    ref_id: str = ""


def _language(datasource_uid: str) -> Language:
    kind = DATASOURCE_TYPES.get(datasource_uid)
    if kind is None:
        raise ValueError(f"unknown datasource uid {datasource_uid!r}")
    return "promql" if kind == PROMETHEUS_DATASOURCE_TYPE else "sql"


def _uid(reference: Any) -> str:
    uid = reference.get("uid") if isinstance(reference, dict) else None
    if not isinstance(uid, str) or not uid:
        raise ValueError(f"datasource reference without a uid: {reference!r}")
    return uid


def variable_query(variable: Mapping[str, Any]) -> str:
    """A query variable's query text: a string (Prometheus) or the ``rawSql`` of the ClickHouse plugin's object."""
    query = variable.get("query")
    text = query.get("rawSql") if isinstance(query, dict) else query
    if not isinstance(text, str):
        raise ValueError(f"variable ${variable.get('name')} without a query: {query!r}")
    return text


def queries_of(document: dict[str, Any]) -> list[PanelQuery]:
    """The queries of one rendered dashboard document."""
    dashboard_uid = str(document["uid"])
    found: list[PanelQuery] = []
    for variable in document.get("templating", {}).get("list") or []:
        if variable.get("type") != "query":
            continue
        uid = _uid(variable.get("datasource"))
        expr = variable_query(variable)
        found.append(PanelQuery(dashboard_uid, f"${variable['name']}", uid, _language(uid), expr, "variable"))
    panels = [panel for top in document.get("panels") or [] for panel in (top, *(top.get("panels") or []))]
    for panel in panels:
        for target in panel.get("targets") or []:
            uid = _uid(target.get("datasource") or panel.get("datasource"))
            language = _language(uid)
            expr = target.get("expr") if language == "promql" else target.get("rawSql")
            if not isinstance(expr, str):
                raise ValueError(f"{dashboard_uid}/{panel.get('title')}: target without a query: {target!r}")
            found.append(PanelQuery(dashboard_uid, str(panel["title"]), uid, language, expr, "panel", target["refId"]))
    return found


def panel_queries() -> list[PanelQuery]:
    """Every panel target and query variable of every agentwatch dashboard."""
    from agentwatch.dashboards.render import dashboards

    return [query for document in dashboards().values() for query in queries_of(document)]


def variable_promql(expr: str) -> str:
    """PromQL equivalent of a Prometheus variable query (``label_values(sel, label)`` -> ``count by (label) (sel)``)."""
    match = _LABEL_VALUES.match(expr)
    if match is None:
        return expr
    selector = match["selector"] or '{__name__=~".+"}'
    return f"count by ({match['label']}) ({selector})"


__all__ = ["Kind", "Language", "PanelQuery", "panel_queries", "queries_of", "variable_promql", "variable_query"]
