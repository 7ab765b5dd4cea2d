"""Runs: ``list_runs`` (a filtered, newest-first list) and ``get_run`` (one run with its captured content)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentwatch.collectors.read.filters import RunFilter, StoreReader, check_text, to_ns
from agentwatch.collectors.read.models import RUN_COLUMNS, RunSummary, run_from_row
from agentwatch.collectors.store.schema import RUNS_TABLE


def run_conditions(flt: RunFilter, time_column: str = "StartTime") -> tuple[list[str], dict[str, Any]]:
    """WHERE fragments (constants only) and their parameters for the filter's set fields."""
    conditions: list[str] = []
    parameters: dict[str, Any] = {}
    for column, name, value in (
        ("TenantId", "tenant", flt.tenant),
        ("AgentName", "agent", flt.agent),
        ("Track", "track", flt.track),
        ("StopReason", "stop_reason", flt.stop_reason),
    ):
        if value is not None:
            conditions.append(f"{column} = {{{name}:String}}")
            parameters[name] = value
    if flt.since is not None:
        conditions.append(f"{time_column} >= fromUnixTimestamp64Nano({{since_ns:Int64}})")
        parameters["since_ns"] = to_ns(flt.since)
    if flt.until is not None:
        conditions.append(f"{time_column} <= fromUnixTimestamp64Nano({{until_ns:Int64}})")
        parameters["until_ns"] = to_ns(flt.until)
    return conditions, parameters


def where(conditions: Sequence[str]) -> str:
    """The WHERE clause of the conditions, or nothing."""
    return "WHERE " + " AND ".join(conditions) if conditions else ""


def list_runs(store: StoreReader, flt: RunFilter) -> list[RunSummary]:
    """Runs matching ``flt``, newest first, at most ``flt.limit``."""
    conditions, parameters = run_conditions(flt)
    parameters["limit"] = flt.limit
    # LIMIT 1 BY: a run is one row even if a replayed insert ever slipped past deduplication
    sql = f"""
        SELECT {RUN_COLUMNS}
        FROM {RUNS_TABLE}
        {where(conditions)}
        ORDER BY StartTime DESC, RunId
        LIMIT 1 BY TenantId, RunId
        LIMIT {{limit:UInt32}}"""
    return [run_from_row(row) for row in store.query(sql, parameters)]


def get_run(store: StoreReader, run_id: str, *, tenant: str | None = None) -> RunSummary | None:
    """One run with its captured input/output, or None (also when it belongs to another tenant)."""
    check_text("run id", run_id)
    check_text("tenant", tenant)
    conditions = ["RunId = {run_id:String}"]
    parameters: dict[str, Any] = {"run_id": run_id}
    if tenant is not None:
        conditions.append("TenantId = {tenant:String}")
        parameters["tenant"] = tenant
    sql = f"""
        SELECT {RUN_COLUMNS}, Input, Output
        FROM {RUNS_TABLE}
        {where(conditions)}
        ORDER BY StartTime DESC
        LIMIT 1"""
    rows = store.query(sql, parameters)
    return run_from_row(rows[0]) if rows else None


__all__ = ["get_run", "list_runs", "run_conditions", "where"]
