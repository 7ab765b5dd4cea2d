"""Fleet statistics for a time window: stop reasons, budgets hit, denials, cost per run, top tools."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from agentwatch.collectors.read.filters import RunFilter, StoreReader
from agentwatch.collectors.read.models import Stats
from agentwatch.collectors.read.runs import run_conditions, where
from agentwatch.collectors.store.schema import RUNS_TABLE, TOOL_CALLS_TABLE
from agentwatch.instrumentation import semconv

# Gateway decisions that kept a tool from running as asked.
_DENYING_DISPOSITIONS: Final = (
    semconv.ToolDisposition.DENIED.value,
    semconv.ToolDisposition.REJECTED.value,
    semconv.ToolDisposition.KILLED.value,
)


def _plain(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (ClickHouse floats rounded so the JSON stays readable)."""
    return [{key: round(value, 9) if isinstance(value, float) else value for key, value in row.items()} for row in rows]


def stats(store: StoreReader, flt: RunFilter, *, top: int = 20) -> Stats:
    """Aggregate ``agent_runs`` and ``agent_tool_calls`` over the filter's tenant, agent, track and window."""
    conditions, parameters = run_conditions(flt)
    tool_conditions, tool_parameters = run_conditions(
        RunFilter(agent=flt.agent, track=flt.track, tenant=flt.tenant, since=flt.since, until=flt.until),
        time_column="Timestamp",
    )
    parameters.update(tool_parameters)
    parameters["top"] = top
    parameters["denying"] = list(_DENYING_DISPOSITIONS)
    runs_where = where(conditions)
    budget_where = where([*conditions, "BudgetExhausted != ''"])
    denial_where = where([*tool_conditions, "has({denying:Array(String)}, Disposition)"])
    tools_where = where(tool_conditions)
    stop_reasons = store.query(
        f"""SELECT AgentName AS agent, Track AS track, StopReason AS stop_reason, count() AS runs
            FROM {RUNS_TABLE} {runs_where}
            GROUP BY agent, track, stop_reason ORDER BY agent, track, runs DESC, stop_reason""",
        parameters,
    )
    budgets = store.query(
        f"""SELECT AgentName AS agent, Track AS track, BudgetExhausted AS budget, count() AS runs
            FROM {RUNS_TABLE} {budget_where}
            GROUP BY agent, track, budget ORDER BY agent, track, runs DESC, budget""",
        parameters,
    )
    denials = store.query(
        f"""SELECT AgentName AS agent, Track AS track, ToolName AS tool, Disposition AS disposition,
                   PolicyRule AS rule, count() AS calls
            FROM {TOOL_CALLS_TABLE} {denial_where}
            GROUP BY agent, track, tool, disposition, rule
            ORDER BY calls DESC, agent, track, tool, disposition, rule""",
        parameters,
    )
    cost = store.query(
        f"""SELECT AgentName AS agent, Track AS track, count() AS runs, sum(CostUsd) AS total_usd,
                   avg(CostUsd) AS mean_usd, quantile(0.5)(CostUsd) AS p50_usd, quantile(0.95)(CostUsd) AS p95_usd,
                   max(CostUsd) AS max_usd, avg(DurationSeconds) AS mean_duration_s, avg(Steps) AS mean_steps,
                   sum(InputTokens) AS input_tokens, sum(OutputTokens) AS output_tokens
            FROM {RUNS_TABLE} {runs_where}
            GROUP BY agent, track ORDER BY agent, track""",
        parameters,
    )
    top_tools = store.query(
        f"""SELECT AgentName AS agent, ToolName AS tool, count() AS calls,
                   countIf(has({{denying:Array(String)}}, Disposition)) AS denied,
                   countIf(Outcome = {{error_outcome:String}}) AS errors
            FROM {TOOL_CALLS_TABLE} {tools_where}
            GROUP BY agent, tool ORDER BY calls DESC, agent, tool LIMIT {{top:UInt32}}""",
        {**parameters, "error_outcome": semconv.ToolOutcome.ERROR.value},
    )
    return Stats(
        since=flt.since,
        until=flt.until,
        tenant=flt.tenant,
        stop_reasons=_plain(stop_reasons),
        budgets=_plain(budgets),
        denials=_plain(denials),
        cost=_plain(cost),
        top_tools=_plain(top_tools),
    )


__all__ = ["stats"]
