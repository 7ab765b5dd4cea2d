"""Reading the audit trail (``agent_audit``): newest first, confined to a tenant, filtered."""

from __future__ import annotations

import json
from datetime import datetime

from agentwatch.collectors.control.state import ControlStore, _iso, _ms, _when
from agentwatch.collectors.store.control_schema import AUDIT_TABLE


def audit_entries(
    store: ControlStore,
    tenant: str | None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    agent: str | None = None,
    kind: str | None = None,
    limit: int = 200,
) -> list[dict[str, object]]:
    where = []
    params: dict[str, object] = {"limit": limit}
    for column, name, value in (("TenantId", "tenant", tenant), ("AgentName", "agent", agent)):
        if value is not None:
            where.append(f"{column} = {{{name}:String}}")
            params[name] = value
    if kind is not None:
        # "approval" matches approval.requested/approved/rejected
        where.append("(Kind = {kind:String} OR startsWith(Kind, concat({kind:String}, '.')))")
        params["kind"] = kind
    if since is not None:
        where.append("Timestamp >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')")
        params["since"] = _ms(since)
    if until is not None:
        where.append("Timestamp < fromUnixTimestamp64Milli({until:Int64}, 'UTC')")
        params["until"] = _ms(until)
    sql = (
        "SELECT Timestamp, TenantId, AgentName, Kind, Actor, Scope, Tool, SubjectId, RunId, TraceId, Reason,"
        " Details"
        f" FROM {AUDIT_TABLE} {'WHERE ' + ' AND '.join(where) if where else ''}"
        " ORDER BY Timestamp DESC LIMIT {limit:UInt32}"
    )
    out = []
    for row in store.query(sql, params):
        details = str(row["Details"])
        out.append(
            {
                "time": _iso(_when(row["Timestamp"])),
                "tenant": str(row["TenantId"]) or None,
                "agent": str(row["AgentName"]) or None,
                "kind": str(row["Kind"]),
                "actor": str(row["Actor"]),
                "scope": str(row["Scope"]) or None,
                "tool": str(row["Tool"]) or None,
                "subject": str(row["SubjectId"]) or None,
                "run_id": str(row["RunId"]) or None,
                "trace_id": str(row["TraceId"]) or None,
                "reason": str(row["Reason"]) or None,
                "details": json.loads(details) if details else None,
            }
        )
    return out


__all__ = ["audit_entries"]
