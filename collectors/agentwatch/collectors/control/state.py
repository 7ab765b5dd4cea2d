"""The fleet's control state in the store: kill-switch entries, approvals and the audit trail.

Every change is a new row with a larger ``Version`` for its key (a scope, an approval id), so the
replicas of a collector that share one store converge: each reads the latest version per key with
``argMax``. Versions are microseconds since the epoch, bumped past the last one this process wrote,
so one replica's changes are strictly ordered and two replicas' changes order by their clocks.

The switch state is read often (every agent polls it), so it is cached for ``refresh_s`` and read
from the store at most that often per process; a change made here drops the cache at once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from agentwatch.collectors.store.control_schema import APPROVALS_TABLE, AUDIT_TABLE, KILLSWITCH_TABLE
from agentwatch.instrumentation.killswitch import scope_parts

PENDING: Final = "pending"
APPROVED: Final = "approved"
REJECTED: Final = "rejected"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_ARGUMENTS: Final = 16_384


class ControlStore(Protocol):
    """What the control plane needs from a store: ``ClickHouseStore.query`` and ``command``."""

    def query(self, sql: str, parameters: Mapping[str, object] | None = None) -> list[dict[str, Any]]: ...

    def command(self, sql: str, parameters: Mapping[str, object] | None = None) -> Any: ...


class Conflict(Exception):
    """The change is not possible in the current state (an approval already decided)."""


def _ms(moment: datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1000)


def _when(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return None if moment <= _EPOCH else moment


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def visible_to(scope: str, tenant: str | None) -> bool:
    """Whether ``scope`` concerns ``tenant``'s agents (None: every tenant's): the global and
    agent-wide scopes cover every tenant, a tenant scope only its own."""
    if tenant is None:
        return True
    _, scope_tenant = scope_parts(scope)
    return scope_tenant is None or scope_tenant == tenant


@dataclass(frozen=True, slots=True)
class SwitchEntry:
    """The latest state of one kill-switch scope."""

    scope: str
    engaged: bool
    reason: str
    actor: str
    updated_at: datetime | None
    expires_at: datetime | None
    version: int

    def active(self, now: datetime) -> bool:
        return self.engaged and (self.expires_at is None or self.expires_at > now)

    def to_dict(self) -> dict[str, object]:
        agent, tenant = scope_parts(self.scope)
        return {
            "scope": self.scope,
            "agent": agent,
            "tenant": tenant,
            "engaged": self.engaged,
            "reason": self.reason,
            "actor": self.actor,
            "updated_at": _iso(self.updated_at),
            "expires_at": _iso(self.expires_at),
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class SwitchView:
    """What one tenant (None: everyone) sees of the switch: active entries and an ETag over them."""

    entries: tuple[SwitchEntry, ...]
    version: int
    etag: str

    @property
    def scopes(self) -> list[str]:
        return sorted(entry.scope for entry in self.entries)

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "etag": self.etag,
            "scopes": self.scopes,
            "entries": [entry.to_dict() for entry in self.entries],
        }


@dataclass(frozen=True, slots=True)
class Approval:
    """The latest state of one approval request."""

    approval_id: str
    tenant: str
    agent: str
    run_id: str
    call_id: str
    tool: str
    arguments: str
    rule: str
    status: str
    requested_by: str
    decided_by: str
    reason: str
    token: str
    created_at: datetime | None
    decided_at: datetime | None
    version: int

    def to_dict(self, *, with_token: bool = False) -> dict[str, object]:
        try:
            arguments: object = json.loads(self.arguments) if self.arguments else {}
        except ValueError:
            arguments = self.arguments
        document: dict[str, object] = {
            "id": self.approval_id,
            "tenant": self.tenant or None,
            "agent": self.agent,
            "run_id": self.run_id or None,
            "call_id": self.call_id or None,
            "tool": self.tool,
            "arguments": arguments,
            "rule": self.rule,
            "status": self.status,
            "requested_by": self.requested_by,
            "decided_by": self.decided_by or None,
            "reason": self.reason or None,
            "created_at": _iso(self.created_at),
            "decided_at": _iso(self.decided_at),
        }
        if with_token:
            document["token"] = self.token or None
        return document


# aliases end in "_": an alias named like a column would shadow it in the other aggregates and in WHERE
_SWITCH_SQL: Final = f"""SELECT Scope AS Scope_,
    argMax(Engaged, Version) AS Engaged_, argMax(Reason, Version) AS Reason_, argMax(Actor, Version) AS Actor_,
    argMax(UpdatedAt, Version) AS UpdatedAt_, argMax(ExpiresAt, Version) AS ExpiresAt_, max(Version) AS Version_
FROM {KILLSWITCH_TABLE}
GROUP BY Scope"""

_APPROVAL_COLUMNS: Final = (
    "TenantId",
    "AgentName",
    "RunId",
    "CallId",
    "Tool",
    "Arguments",
    "Rule",
    "Status",
    "RequestedBy",
    "DecidedBy",
    "Reason",
    "DecisionToken",
    "CreatedAt",
    "DecidedAt",
)
_APPROVAL_SELECT: Final = (
    "SELECT ApprovalId AS ApprovalId_, "
    + ", ".join(f"argMax({column}, Version) AS {column}_" for column in _APPROVAL_COLUMNS)
    + f", max(Version) AS Version_ FROM {APPROVALS_TABLE}"
)


def _approval(row: Mapping[str, Any]) -> Approval:
    return Approval(
        approval_id=str(row["ApprovalId_"]),
        tenant=str(row["TenantId_"]),
        agent=str(row["AgentName_"]),
        run_id=str(row["RunId_"]),
        call_id=str(row["CallId_"]),
        tool=str(row["Tool_"]),
        arguments=str(row["Arguments_"]),
        rule=str(row["Rule_"]),
        status=str(row["Status_"]),
        requested_by=str(row["RequestedBy_"]),
        decided_by=str(row["DecidedBy_"]),
        reason=str(row["Reason_"]),
        token=str(row["DecisionToken_"]),
        created_at=_when(row["CreatedAt_"]),
        decided_at=_when(row["DecidedAt_"]),
        version=int(row["Version_"]),
    )


def _insert_sql(table: str, columns: Mapping[str, str]) -> str:
    """``INSERT ... SELECT`` with one server-side parameter per column (values never become SQL text)."""
    names = ", ".join(columns)
    values = ", ".join(
        f"fromUnixTimestamp64Milli({{{name}:Int64}}, 'UTC')" if kind == "ms" else f"{{{name}:{kind}}}"
        for name, kind in columns.items()
    )
    return f"INSERT INTO {table} ({names}) SELECT {values}"


_SWITCH_INSERT: Final = _insert_sql(
    KILLSWITCH_TABLE,
    {
        "Scope": "String",
        "TenantId": "String",
        "AgentName": "String",
        "Engaged": "UInt8",
        "Reason": "String",
        "Actor": "String",
        "UpdatedAt": "ms",
        "ExpiresAt": "ms",
        "Version": "UInt64",
    },
)
_APPROVAL_INSERT: Final = _insert_sql(
    APPROVALS_TABLE,
    {
        "ApprovalId": "String",
        **{c: ("ms" if c.endswith("At") else "String") for c in _APPROVAL_COLUMNS},
        "Version": "UInt64",
    },
)
_AUDIT_COLUMNS: Final = {
    "Timestamp": "ms",
    "TenantId": "String",
    "AgentName": "String",
    "Kind": "String",
    "Actor": "String",
    "Scope": "String",
    "Tool": "String",
    "SubjectId": "String",
    "RunId": "String",
    "TraceId": "String",
    "Reason": "String",
    "Details": "String",
}
_AUDIT_INSERT: Final = _insert_sql(AUDIT_TABLE, _AUDIT_COLUMNS)


class ControlPlane:
    """Reads and changes the control state in ``store``; thread-safe."""

    def __init__(self, store: ControlStore, *, refresh_s: float = 0.25, clock: Any = time.time) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._version_lock = threading.Lock()
        self._last_version = 0
        self._switch: tuple[float, tuple[SwitchEntry, ...]] | None = None
        # bumped on every change made through this process: long-polls wake on it
        self.changes = 0

    @property
    def store(self) -> ControlStore:
        return self._store

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _next_version(self) -> int:
        with self._version_lock:
            self._last_version = max(self._last_version + 1, int(self._clock() * 1_000_000))
            return self._last_version

    # --- kill switch ----------------------------------------------------------------------------

    def switch_entries(self, *, fresh: bool = False) -> tuple[SwitchEntry, ...]:
        """The latest row of every scope ever set (engaged or not), cached for ``refresh_s``."""
        cached = self._switch
        if not fresh and cached is not None and time.monotonic() - cached[0] < self._refresh_s:
            return cached[1]
        with self._lock:
            cached = self._switch
            if not fresh and cached is not None and time.monotonic() - cached[0] < self._refresh_s:
                return cached[1]
            started = time.monotonic()
            rows = self._store.query(_SWITCH_SQL)
            entries = tuple(
                SwitchEntry(
                    scope=str(row["Scope_"]),
                    engaged=bool(row["Engaged_"]),
                    reason=str(row["Reason_"]),
                    actor=str(row["Actor_"]),
                    updated_at=_when(row["UpdatedAt_"]),
                    expires_at=_when(row["ExpiresAt_"]),
                    version=int(row["Version_"]),
                )
                for row in rows
            )
            self._switch = (started, entries)
            return entries

    def switch_view(self, tenant: str | None, *, fresh: bool = False) -> SwitchView:
        """The active entries ``tenant`` (None: all) is subject to, with a content ETag."""
        now = self._now()
        entries = self.switch_entries(fresh=fresh)
        active = tuple(
            sorted((e for e in entries if e.active(now) and visible_to(e.scope, tenant)), key=lambda e: e.scope)
        )
        version = max((e.version for e in entries if visible_to(e.scope, tenant)), default=0)
        digest = hashlib.sha256(
            json.dumps([[e.scope, e.version, _ms(e.expires_at)] for e in active]).encode()
        ).hexdigest()
        return SwitchView(entries=active, version=version, etag=f'"{digest[:32]}"')

    def set_switch(
        self, scope: str, *, engaged: bool, actor: str, reason: str, expires_at: datetime | None = None
    ) -> SwitchEntry:
        """Engage or release ``scope`` (canonical) and write the audit entry."""
        now = self._now()
        version = self._next_version()
        agent, tenant = scope_parts(scope)
        if expires_at is not None:  # what the store keeps: milliseconds
            expires_at = datetime.fromtimestamp(_ms(expires_at) / 1000, UTC)
        self._store.command(
            _SWITCH_INSERT,
            {
                "Scope": scope,
                "TenantId": tenant or "",
                "AgentName": agent or "",
                "Engaged": int(engaged),
                "Reason": reason,
                "Actor": actor,
                "UpdatedAt": _ms(now),
                "ExpiresAt": _ms(expires_at) if engaged else 0,
                "Version": version,
            },
        )
        self._switch = None
        self.changes += 1
        details = {"expires_at": _iso(expires_at)} if engaged and expires_at is not None else {}
        self.audit(
            "killswitch.engaged" if engaged else "killswitch.released",
            tenant=tenant or "",
            agent=agent or "",
            actor=actor,
            scope=scope,
            reason=reason,
            details=details,
        )
        return SwitchEntry(scope, engaged, reason, actor, now, expires_at if engaged else None, version)

    # --- approvals ------------------------------------------------------------------------------

    def file_approval(
        self,
        *,
        tenant: str,
        agent: str,
        tool: str,
        arguments: str,
        rule: str,
        requested_by: str,
        run_id: str = "",
        call_id: str = "",
    ) -> Approval:
        now = self._now()
        approval = Approval(
            approval_id=uuid.uuid4().hex,
            tenant=tenant,
            agent=agent,
            run_id=run_id,
            call_id=call_id,
            tool=tool,
            arguments=arguments[:_MAX_ARGUMENTS],
            rule=rule,
            status=PENDING,
            requested_by=requested_by,
            decided_by="",
            reason="",
            token="",
            created_at=now,
            decided_at=None,
            version=self._next_version(),
        )
        self._write_approval(approval)
        self.audit(
            "approval.requested",
            tenant=tenant,
            agent=agent,
            actor=requested_by,
            tool=tool,
            subject=approval.approval_id,
            run_id=run_id,
            reason=rule,
        )
        return approval

    def _write_approval(self, a: Approval) -> None:
        self._store.command(
            _APPROVAL_INSERT,
            {
                "ApprovalId": a.approval_id,
                "TenantId": a.tenant,
                "AgentName": a.agent,
                "RunId": a.run_id,
                "CallId": a.call_id,
                "Tool": a.tool,
                "Arguments": a.arguments,
                "Rule": a.rule,
                "Status": a.status,
                "RequestedBy": a.requested_by,
                "DecidedBy": a.decided_by,
                "Reason": a.reason,
                "DecisionToken": a.token,
                "CreatedAt": _ms(a.created_at),
                "DecidedAt": _ms(a.decided_at),
                "Version": a.version,
            },
        )
        self.changes += 1

    def approval(self, approval_id: str, tenant: str | None) -> Approval | None:
        """One approval; None when unknown or another tenant's (the same answer for both)."""
        where = "WHERE ApprovalId = {id:String}"
        params: dict[str, object] = {"id": approval_id}
        if tenant is not None:
            where += " AND TenantId = {tenant:String}"
            params["tenant"] = tenant
        rows = self._store.query(f"{_APPROVAL_SELECT} {where} GROUP BY ApprovalId", params)
        return _approval(rows[0]) if rows else None

    def approvals(self, tenant: str | None, *, status: str | None = None, limit: int = 100) -> list[Approval]:
        where = []
        params: dict[str, object] = {"limit": limit}
        if tenant is not None:
            where.append("TenantId = {tenant:String}")
            params["tenant"] = tenant
        sql = f"{_APPROVAL_SELECT} {'WHERE ' + ' AND '.join(where) if where else ''} GROUP BY ApprovalId"
        if status is not None:
            sql += " HAVING Status_ = {status:String}"
            params["status"] = status
        sql += " ORDER BY CreatedAt_ DESC LIMIT {limit:UInt32}"
        return [_approval(row) for row in self._store.query(sql, params)]

    def decide(self, approval_id: str, tenant: str | None, *, approved: bool, actor: str, reason: str) -> Approval:
        """Approve or reject a pending approval; Conflict when it is already decided; KeyError when unknown."""
        with self._lock:
            current = self.approval(approval_id, tenant)
            if current is None:
                raise KeyError(approval_id)
            if current.status != PENDING:
                raise Conflict(f"approval {approval_id} is already {current.status} by {current.decided_by}")
            decided = Approval(
                **{
                    **{name: getattr(current, name) for name in Approval.__slots__},
                    "status": APPROVED if approved else REJECTED,
                    "decided_by": actor,
                    "reason": reason,
                    "token": secrets.token_urlsafe(18) if approved else "",
                    "decided_at": self._now(),
                    "version": self._next_version(),
                }
            )
            self._write_approval(decided)
        self.audit(
            "approval.approved" if approved else "approval.rejected",
            tenant=current.tenant,
            agent=current.agent,
            actor=actor,
            tool=current.tool,
            subject=approval_id,
            run_id=current.run_id,
            reason=reason,
        )
        return decided

    # --- audit ----------------------------------------------------------------------------------

    def audit(
        self,
        kind: str,
        *,
        tenant: str,
        agent: str = "",
        actor: str = "",
        scope: str = "",
        tool: str = "",
        subject: str = "",
        run_id: str = "",
        reason: str = "",
        details: Mapping[str, object] | None = None,
    ) -> None:
        self._store.command(
            _AUDIT_INSERT,
            {
                "Timestamp": _ms(self._now()),
                "TenantId": tenant,
                "AgentName": agent,
                "Kind": kind,
                "Actor": actor,
                "Scope": scope,
                "Tool": tool,
                "SubjectId": subject,
                "RunId": run_id,
                "TraceId": "",
                "Reason": reason,
                "Details": json.dumps(dict(details)) if details else "",
            },
        )


__all__ = [
    "APPROVED",
    "PENDING",
    "REJECTED",
    "Approval",
    "Conflict",
    "ControlPlane",
    "ControlStore",
    "SwitchEntry",
    "SwitchView",
    "visible_to",
]
