"""Migration 6: the control plane's tables (kill switch, approvals, audit) and the denials view.

Every replica of the collector reads and writes the same rows, so the state converges through the
store: a change is a new row with a larger ``Version`` for the same key (a kill-switch scope, an
approval id), the tables are ``ReplacingMergeTree(Version)`` keyed by it, and readers take the
latest version per key with ``argMax`` (correct before and after merges, on one node or through a
``Distributed`` table on a cluster, where the key is also the sharding key so all versions of one
key live on one shard).

- ``agent_killswitch``: one row per change of a scope (engage or release, reason, who, when,
  optional expiry). No TTL: a row may be the only one holding an engaged scope, and expiring it
  would silently release the switch; released scopes collapse to one row per scope on merge.
- ``agent_approvals``: one row per change of an approval (filed, approved, rejected); TTL
  ``runs_ttl_days`` on the filing time.
- ``agent_audit``: append-only trail of kill-switch changes, approval requests and decisions (with
  the approver's identity) and policy denials, the last filled by a materialized view from
  ``otel_traces`` (tool spans with disposition ``denied``); TTL ``runs_ttl_days``.
"""

from __future__ import annotations

from typing import Final

from agentwatch.collectors.store.ddl import SchemaOptions, _attr, _Table, _view, quote_literal
from agentwatch.instrumentation import semconv

KILLSWITCH_TABLE: Final = "agent_killswitch"
APPROVALS_TABLE: Final = "agent_approvals"
AUDIT_TABLE: Final = "agent_audit"
AUDIT_DENIALS_VIEW: Final = "agent_audit_denials_mv"

_KILLSWITCH: Final = _Table(
    name=KILLSWITCH_TABLE,
    definitions=(
        "Scope String",
        "TenantId LowCardinality(String)",
        "AgentName LowCardinality(String)",
        "Engaged UInt8",
        "Reason String",
        "Actor String",
        "UpdatedAt DateTime64(3, 'UTC')",
        "ExpiresAt DateTime64(3, 'UTC')",  # 1970-01-01: never
        "Version UInt64",
    ),
    family="ReplacingMergeTree",
    engine_args=("Version",),
    partition_by="tuple()",
    order_by="(TenantId, Scope)",
    ttl_column="UpdatedAt",
    ttl_days=lambda options: 0,
    shard_key="cityHash64(Scope)",
)

_APPROVALS: Final = _Table(
    name=APPROVALS_TABLE,
    definitions=(
        "ApprovalId String",
        "TenantId LowCardinality(String)",
        "AgentName LowCardinality(String)",
        "RunId String",
        "CallId String",
        "Tool LowCardinality(String)",
        "Arguments String CODEC(ZSTD(1))",
        "Rule LowCardinality(String)",
        "Status LowCardinality(String)",  # pending, approved, rejected
        "RequestedBy String",
        "DecidedBy String",
        "Reason String",
        "DecisionToken String",
        "CreatedAt DateTime64(3, 'UTC')",
        "DecidedAt DateTime64(3, 'UTC')",
        "Version UInt64",
    ),
    family="ReplacingMergeTree",
    engine_args=("Version",),
    partition_by="toYYYYMM(CreatedAt)",
    order_by="(TenantId, ApprovalId)",
    ttl_column="CreatedAt",
    ttl_days=lambda options: options.runs_ttl_days,
    shard_key="cityHash64(ApprovalId)",
)

_AUDIT: Final = _Table(
    name=AUDIT_TABLE,
    definitions=(
        "Timestamp DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1))",
        "TenantId LowCardinality(String)",
        "AgentName LowCardinality(String)",
        "Kind LowCardinality(String)",
        "Actor String",
        "Scope String",
        "Tool LowCardinality(String)",
        "SubjectId String",  # the approval id, or the denied call's span id
        "RunId String",
        "TraceId String",
        "Reason String",
        "Details String CODEC(ZSTD(1))",
    ),
    family="MergeTree",
    partition_by="toYYYYMM(Timestamp)",
    order_by="(TenantId, toDateTime(Timestamp), Kind)",
    ttl_column="Timestamp",
    ttl_days=lambda options: options.runs_ttl_days,
    # the denials view writes on the shard of the trace; direct inserts spread by tenant
    shard_key="cityHash64(TenantId)",
)

_DENIALS_SELECT: Final = f"""SELECT
    toDateTime64(Timestamp, 3, 'UTC') AS Timestamp,
    {_attr(semconv.TENANT_ID)} AS TenantId,
    {_attr(semconv.GEN_AI_AGENT_NAME)} AS AgentName,
    'policy.denied' AS Kind,
    'policy' AS Actor,
    '' AS Scope,
    {_attr(semconv.GEN_AI_TOOL_NAME)} AS Tool,
    SpanId AS SubjectId,
    {_attr(semconv.RUN_ID)} AS RunId,
    TraceId,
    {_attr(semconv.POLICY_RULE)} AS Reason,
    '' AS Details
FROM {{source}}
WHERE {_attr(semconv.TOOL_DISPOSITION)} = {quote_literal(semconv.ToolDisposition.DENIED.value)}
    OR has(Events.Name, {quote_literal(semconv.EVENT_POLICY_DENIED)})"""


def v6_control(options: SchemaOptions) -> list[str]:
    """Kill switch, approvals, audit, and the view deriving policy denials from spans."""
    return [
        *_KILLSWITCH.statements(options),
        *_APPROVALS.statements(options),
        *_AUDIT.statements(options),
        _view(options, AUDIT_DENIALS_VIEW, AUDIT_TABLE, _DENIALS_SELECT),
    ]


__all__ = ["APPROVALS_TABLE", "AUDIT_DENIALS_VIEW", "AUDIT_TABLE", "KILLSWITCH_TABLE", "v6_control"]
