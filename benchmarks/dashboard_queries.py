"""Dashboard query latency: every SQL panel of every dashboard on a day of agent traffic in an embedded store.

A fresh embedded ClickHouse (chDB) store gets the collector's schema (``ensure_schema``) and
``--spans`` spans (10 million by default) of realistic agent traffic spread over the last 24 hours,
generated inside ClickHouse (``INSERT INTO otel_traces SELECT ... FROM numbers(...)``, a chunk of
runs at a time, so loading is fast and memory stays bounded). The spans are shaped as the
instrumentation emits them (run, step, LLM-call and tool-call spans with the same attributes,
events and status; every name is checked against ``semconv``), so the collector's materialized
views fill ``agent_runs`` and ``agent_tool_calls`` as they do in production. The traffic:

- 24 tenants with a skewed share (the biggest sends about a quarter of the runs), 8 agents on
  three runtimes and five models; a canary and a baseline next to stable for three agents; a
  daily wave in volume;
- stop reasons in a production-like mix (86% completed; budget stops, policy denials, rejected
  approvals, kill switch, guardrail, errors, cancellations), slightly worse on the canary;
- runs of 1-8 steps (budget-stopped ones up to their limits), one LLM call per step with tokens
  growing with the context and the model's price, 0-2 tool calls per step, mostly read tools,
  with dispositions allowed/approved/deduplicated/denied/rejected/killed, outcomes, policy rules,
  idempotency keys, approval and policy events, and captured (already redacted) arguments and
  results for a few tenants.

Every SQL query of every dashboard (``agentwatch.dashboards.panels.panel_queries()``: panel targets
and template variables) is expanded with ``agentwatch.dashboards.macros.expand_sql`` over the whole
24 hours as Grafana would send it: once with every variable at All, once with one agent of one
tenant selected. Variables resolve as in Grafana: each query variable runs its own SQL, All stands
for all of its options, and the trace panel opens a real run. Each query then runs ``--repeat``
times after two warm-up runs, in interleaved rounds (every query once per round, with a trivial
``SELECT count() FROM agent_runs`` as the baseline), so a burst of load from another process is
spread over all queries. Reported per query: p50 and p95 wall time, p50 CPU time (all chDB
threads; unlike wall time it hardly moves when other processes compete for the cores), and the
p50 as a multiple of the baseline's.

Target: p95 < 300 ms for every panel. A query that misses it is shown with ``EXPLAIN ESTIMATE``
(rows read) and ``EXPLAIN indexes = 1`` (which index pruned what). Load time and rate, peak memory
and the store's size per table are reported too. Exit status 1 on a miss only with ``--strict``.

Run with ``.venv/bin/python benchmarks/dashboard_queries.py [--spans N] [--data DIR] [--repeat N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.collectors.store.schema import (
    RUNS_TABLE,
    TOOL_CALLS_TABLE,
    TRACE_ID_TS_TABLE,
    TRACES_TABLE,
    quote_literal,
)
from agentwatch.dashboards.macros import ALL_VALUE, VariableValue, expand_sql
from agentwatch.dashboards.panels import variable_query
from agentwatch.instrumentation import semconv

TARGET_P95_MS: Final = 300.0
WINDOW: Final = timedelta(hours=24)
INTERVAL_S: Final = 60  # what Grafana picks for 24 hours on a full-width panel
RUNS_PER_CHUNK: Final = 80_000  # about a million spans per INSERT ... SELECT
ROWS_PER_BLOCK: Final = 4_096  # runs per block before ARRAY JOIN: bounds memory to tens of MB
SETTLE_TIMEOUT_S: Final = 120.0
MIB: Final = 1 << 20
DATA_TABLES: Final = (TRACES_TABLE, TRACE_ID_TS_TABLE, RUNS_TABLE, TOOL_CALLS_TABLE)

# --- the simulated fleet ----------------------------------------------------------------------


@dataclass(frozen=True)
class Agent:
    """One agent of the fleet: its share of runs, runtime, model and budget, and its tools."""

    name: str
    share: float
    runtime: str
    provider: str
    model: str
    response_model: str
    usd_per_m_input: float
    usd_per_m_output: float
    llm_ms_spread: int  # LLM latency is 350 ms + up to this
    stable_version: str
    canary_version: str | None
    max_steps: int
    max_tool_calls: int
    max_seconds: int
    max_usd: float
    tools: tuple[tuple[str, semconv.ToolRisk, int], ...]  # name, risk, relative weight of being called


READ, WRITE, APPROVAL = semconv.ToolRisk.READ, semconv.ToolRisk.WRITE, semconv.ToolRisk.APPROVAL

AGENTS: Final = (
    Agent("support", 0.30, "custom", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.15, 0.60, 1800,
          "v41", "v42", 25, 12, 120, 0.50,
          (("kb.search", READ, 45), ("orders.lookup", READ, 35), ("ticket.update", WRITE, 12),
           ("ticket.close", APPROVAL, 6), ("email.send", APPROVAL, 2))),
    Agent("triage", 0.18, "openai-agents", "gcp.gemini", "gemini-2.0-flash", "gemini-2.0-flash-001", 0.10, 0.40,
          900, "v17", None, 20, 10, 60, 0.20,
          (("kb.search", READ, 50), ("crm.lookup", READ, 30), ("ticket.update", WRITE, 17),
           ("ticket.close", APPROVAL, 3))),
    Agent("billing", 0.14, "custom", "openai", "gpt-4o", "gpt-4o-2024-08-06", 2.50, 10.00, 3500,
          "v9", "v10", 25, 12, 120, 1.00,
          (("orders.lookup", READ, 50), ("invoice.lookup", READ, 38), ("refund.issue", APPROVAL, 8),
           ("email.send", APPROVAL, 4))),
    Agent("research", 0.12, "langgraph", "anthropic", "claude-sonnet-4", "claude-sonnet-4-20250514", 3.00, 15.00,
          6000, "v5", None, 40, 30, 600, 2.00,
          (("web.search", READ, 45), ("web.fetch", READ, 40), ("kb.search", READ, 14), ("email.send", APPROVAL, 1))),
    Agent("coder", 0.10, "openai-agents", "anthropic", "claude-sonnet-4", "claude-sonnet-4-20250514", 3.00, 15.00,
          7000, "v23", "v24", 40, 30, 900, 3.00,
          (("repo.read", READ, 50), ("code.run", WRITE, 30), ("repo.write", WRITE, 16), ("ci.trigger", APPROVAL, 4))),
    Agent("sales", 0.08, "langgraph", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.15, 0.60, 1800,
          "v3", None, 20, 10, 120, 0.30,
          (("crm.lookup", READ, 70), ("crm.update", WRITE, 25), ("email.send", APPROVAL, 5))),
    Agent("onboarding", 0.05, "custom", "anthropic", "claude-3-5-haiku", "claude-3-5-haiku-20241022", 0.80, 4.00,
          1500, "v12", None, 15, 8, 120, 0.30,
          (("kb.search", READ, 70), ("account.create", WRITE, 25), ("email.send", APPROVAL, 5))),
    Agent("security-review", 0.03, "openai-agents", "openai", "gpt-4o", "gpt-4o-2024-08-06", 2.50, 10.00, 4000,
          "v6", None, 30, 20, 300, 1.50,
          (("repo.read", READ, 55), ("vuln.scan", READ, 35), ("ticket.update", WRITE, 8),
           ("ticket.close", APPROVAL, 2))),
)  # fmt: skip

TENANTS: Final = (
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell", "cyberdyne",
    "soylent", "massive-dynamic", "aperture", "oscorp", "vandelay", "dunder-mifflin", "pied-piper",
    "gringotts", "monarch", "blue-sun", "nakatomi", "prestige", "virtucon", "wernham-hogg",
)  # fmt: skip
TENANT_SKEW: Final = 2.2  # tenant index = floor(n * u ** skew): the first tenants dominate

Stop = semconv.StopReason
STOP_MIX: Final = {
    Stop.COMPLETED: 0.865, Stop.MAX_STEPS: 0.02, Stop.MAX_TOOL_CALLS: 0.03, Stop.MAX_TIME: 0.01,
    Stop.MAX_USD: 0.005, Stop.POLICY_DENIED: 0.02, Stop.APPROVAL_REJECTED: 0.01, Stop.KILL_SWITCH: 0.002,
    Stop.GUARDRAIL: 0.01, Stop.ERROR: 0.02, Stop.CANCELLED: 0.008,
}  # fmt: skip
# the canary loops a little more (drift the canary dashboard should show)
CANARY_STOP_MIX: Final = {**STOP_MIX, Stop.COMPLETED: 0.835, Stop.MAX_TOOL_CALLS: 0.06}
CANARY_SHARE, BASELINE_SHARE = 0.05, 0.05

FORBIDDEN_TOOLS: Final = ("db.drop_table", "db.write", "shell.exec", "email.send_bulk")
ERROR_TYPES: Final = ("TimeoutError", "HTTPError", "ConnectionError", "ValueError")
CAPTURE_TENANT_EVERY: Final = 9  # tenants with content capture on: every 9th (redacted JSON, a few hundred bytes)


def _sql_list(values: Sequence[object]) -> str:
    items = []
    for value in values:
        if isinstance(value, str):
            items.append(quote_literal(value))
        elif isinstance(value, bool):
            items.append("1" if value else "0")
        elif isinstance(value, float):
            items.append(repr(value))
        elif isinstance(value, int):
            items.append(str(value))
        elif isinstance(value, Sequence):
            items.append(_sql_list(value))
        else:
            raise TypeError(f"no SQL literal for {value!r}")
    return "[" + ", ".join(items) + "]"


def _cumulative(shares: Sequence[float]) -> list[float]:
    total, bounds = 0.0, []
    for share in shares:
        total += share
        bounds.append(round(total, 9))
    bounds[-1] = 1.000001  # u < 1 always falls in the last bucket
    return bounds


def fleet_constants() -> dict[str, str]:
    """SQL literals of the fleet, for the generator's placeholders."""
    assert abs(sum(a.share for a in AGENTS) - 1) < 1e-9, "agent shares must add up to 1"
    assert abs(sum(STOP_MIX.values()) - 1) < 1e-9, "the stop-reason mix must add up to 1"
    assert abs(sum(CANARY_STOP_MIX.values()) - 1) < 1e-9, "the canary's stop-reason mix must add up to 1"
    reasons = list(STOP_MIX)
    return {
        "tenants": _sql_list(TENANTS),
        "n_tenants": str(len(TENANTS)),
        "tenant_skew": str(TENANT_SKEW),
        "agent_bounds": _sql_list(_cumulative([a.share for a in AGENTS])),
        "agents": _sql_list([a.name for a in AGENTS]),
        "runtimes": _sql_list([a.runtime for a in AGENTS]),
        "providers": _sql_list([a.provider for a in AGENTS]),
        "models": _sql_list([a.model for a in AGENTS]),
        "response_models": _sql_list([a.response_model for a in AGENTS]),
        "price_in": _sql_list([a.usd_per_m_input for a in AGENTS]),
        "price_out": _sql_list([a.usd_per_m_output for a in AGENTS]),
        "llm_spread": _sql_list([a.llm_ms_spread for a in AGENTS]),
        "stable_versions": _sql_list([a.stable_version for a in AGENTS]),
        "canary_versions": _sql_list([a.canary_version or "" for a in AGENTS]),
        "max_steps": _sql_list([a.max_steps for a in AGENTS]),
        "max_tool_calls": _sql_list([a.max_tool_calls for a in AGENTS]),
        "max_seconds": _sql_list([a.max_seconds for a in AGENTS]),
        "max_usd": _sql_list([a.max_usd for a in AGENTS]),
        "tool_names": _sql_list([[name for name, _, _ in a.tools] for a in AGENTS]),
        "tool_risks": _sql_list([[risk.value for _, risk, _ in a.tools] for a in AGENTS]),
        "tool_bounds": _sql_list(
            [_cumulative([weight / sum(w for _, _, w in a.tools) for _, _, weight in a.tools]) for a in AGENTS]
        ),
        "stop_reasons": _sql_list([reason.value for reason in reasons]),
        "stop_bounds": _sql_list(_cumulative([STOP_MIX[reason] for reason in reasons])),
        "canary_stop_bounds": _sql_list(_cumulative([CANARY_STOP_MIX[reason] for reason in reasons])),
        "canary_share": str(CANARY_SHARE),
        "baseline_share": str(CANARY_SHARE + BASELINE_SHARE),
        "forbidden": _sql_list(FORBIDDEN_TOOLS),
        "n_forbidden": str(len(FORBIDDEN_TOOLS)),
        "error_types": _sql_list(ERROR_TYPES),
        "capture_every": str(CAPTURE_TENANT_EVERY),
    }


# --- the generator (ClickHouse SQL) -----------------------------------------------------------

# u(salt...) below is a uniform number in [0, 1) derived from the run number: the data is a pure
# function of the run number, so chunks are independent and a rerun gives the same fleet.
# The shape of one run: which tenant/agent/track, its stop reason, its steps and tool calls per step.
RUN_SHAPE: Final = """
    number AS r,
    (cityHash64(r, 1) % 1000000) / 1e6 AS u_tenant,
    (cityHash64(r, 2) % 1000000) / 1e6 AS u_agent,
    (cityHash64(r, 3) % 1000000) / 1e6 AS u_track,
    (cityHash64(r, 4) % 1000000) / 1e6 AS u_stop,
    (cityHash64(r, 5) % 1000000) / 1e6 AS u_steps,
    toUInt32(floor({n_tenants} * pow(u_tenant, {tenant_skew}))) + 1 AS tenant_i,
    arrayFirstIndex(bound -> u_agent < bound, {agent_bounds}) AS agent_i,
    {canary_versions}[agent_i] != '' AS has_canary,
    multiIf(has_canary AND u_track < {canary_share}, 'canary',
            has_canary AND u_track < {baseline_share}, 'baseline', 'stable') AS track,
    {stop_reasons}[arrayFirstIndex(bound -> u_stop < bound,
                                   if(track = 'canary', {canary_stop_bounds}, {stop_bounds}))] AS stop_reason,
    toUInt32({max_steps}[agent_i]) AS budget_steps,
    toUInt32({max_tool_calls}[agent_i]) AS budget_tool_calls,
    toUInt32(multiIf(
        stop_reason = 'max_steps', budget_steps,
        stop_reason = 'max_tool_calls', budget_tool_calls + 1,
        stop_reason = 'completed', 1 + floor(pow(u_steps, 1.6) * 8),
        stop_reason = 'max_time', 4 + floor(u_steps * 6),
        stop_reason = 'max_usd', 6 + floor(u_steps * 8),
        stop_reason = 'guardrail', 1 + floor(u_steps * 2),
        1 + floor(u_steps * 5))) AS steps,
    stop_reason IN ('policy_denied', 'approval_rejected', 'kill_switch', 'error') AS ends_on_tool,
    arrayMap(s -> toUInt32(multiIf(
        stop_reason = 'max_tool_calls', s <= budget_tool_calls,
        stop_reason = 'max_steps', cityHash64(r, s, 6) % 4 = 0,
        s = steps AND ends_on_tool, 1,
        s = steps AND stop_reason = 'completed', 0,
        1 + (cityHash64(r, s, 6) % 4 = 0))), range(1, steps + 1)) AS wanted_tools,
    if(stop_reason = 'max_tool_calls', wanted_tools,
       arrayMap((wanted, so_far, s) -> if(so_far < budget_tool_calls OR (s = steps AND ends_on_tool), wanted, 0),
                wanted_tools, arrayCumSum(wanted_tools), range(1, steps + 1))) AS tools,
    arraySum(tools) AS tool_calls,
    1 + 2 * steps + tool_calls AS span_count
"""

# Timing, tokens and cost of each step, and the run's identity.
RUN_DETAIL: Final = """
    {window_start_ns} + toInt64((((r + 0.5) / {runs}) - 0.035 * sin(2 * pi() * (r + 0.5) / {runs})) * {window_ns})
        AS start_ns,
    {tenants}[tenant_i] AS tenant,
    {agents}[agent_i] AS agent,
    if(track = 'canary', {canary_versions}[agent_i], {stable_versions}[agent_i]) AS version,
    {models}[agent_i] AS model,
    {price_in}[agent_i] AS price_in,
    {price_out}[agent_i] AS price_out,
    concat(leftPad(lower(hex(cityHash64(r, 20))), 16, '0'), leftPad(lower(hex(cityHash64(r, 21))), 16, '0'))
        AS trace_id,
    concat(leftPad(lower(hex(cityHash64(r, 22))), 16, '0'), leftPad(lower(hex(cityHash64(r, 23))), 16, '0'))
        AS run_id,
    arrayMap(s -> toUInt64(if(stop_reason = 'max_time', 30000 + cityHash64(r, s, 7) % 15000,
                              350 + cityHash64(r, s, 7) % {llm_spread}[agent_i])), range(1, steps + 1)) AS llm_ms,
    arrayMap(s -> toUInt64(4 + pow(cityHash64(r, s, 8) % 1000, 2) / 1500), range(1, steps + 1)) AS tool_ms,
    arrayMap((llm, tool, n) -> llm + tool * n + 2, llm_ms, tool_ms, tools) AS step_ms,
    arrayPushFront(arrayPopBack(arrayCumSum(step_ms)), toUInt64(0)) AS step_offset_ms,
    arraySum(step_ms) + 5 AS run_ms,
    arrayMap(s -> toUInt64((600 + 450 * s + cityHash64(r, s, 9) % 800) * if(stop_reason = 'max_usd', 25, 1)),
             range(1, steps + 1)) AS input_tokens,
    arrayMap(s -> toUInt64(30 + cityHash64(r, s, 10) % 400), range(1, steps + 1)) AS output_tokens,
    arrayMap((i, o) -> (i * price_in + o * price_out) / 1e6, input_tokens, output_tokens) AS llm_cost,
    multiIf(stop_reason = 'max_steps', 'steps', stop_reason = 'max_tool_calls', 'tool_calls',
            stop_reason = 'max_time', 'seconds', stop_reason = 'max_usd', 'usd', '') AS exhausted,
    multiIf(exhausted = 'steps', toString(budget_steps), exhausted = 'tool_calls', toString(budget_tool_calls),
            exhausted = 'seconds', toString({max_seconds}[agent_i]), exhausted = 'usd', toString({max_usd}[agent_i]),
            '') AS exhausted_limit,
    if(stop_reason = 'error', {error_types}[1 + cityHash64(r, 24) % 4], '') AS run_error,
    tenant_i % {capture_every} = 4 AS captures_content
"""

# One row per span: the run span, then per step a step span, its LLM call and its tool calls.
SPANS: Final = """
INSERT INTO {table} (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName,
    ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage,
    `Events.Timestamp`, `Events.Name`, `Events.Attributes`,
    `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`)
SELECT
    fromUnixTimestamp64Nano(ts_ns) AS Timestamp,
    trace_id AS TraceId,
    span_id AS SpanId,
    parent_id AS ParentSpanId,
    '' AS TraceState,
    multiIf(kind = 0, concat('invoke_agent ', agent), kind = 1, concat('step ', agent),
            kind = 2, concat('chat ', model), concat('execute_tool ', tool_name)) AS SpanName,
    'Internal' AS SpanKind,
    concat(agent, '-agent') AS ServiceName,
    map('service.name', concat(agent, '-agent'), 'service.version', version,
        'service.instance.id', concat(agent, '-', toString(cityHash64(r, 25) % 6)),
        'deployment.environment.name', 'production', 'telemetry.sdk.language', 'python',
        'telemetry.sdk.name', 'opentelemetry', 'telemetry.sdk.version', '1.38.0') AS ResourceAttributes,
    'agentwatch' AS ScopeName,
    '0.1.0' AS ScopeVersion,
    mapFilter((key, value) -> value != '', multiIf(
        kind = 0, map(
            'agentwatch.run.id', run_id, 'gen_ai.agent.name', agent, 'agentwatch.tenant.id', tenant,
            'agentwatch.track', track, 'gen_ai.operation.name', 'invoke_agent',
            'agentwatch.runtime', {runtimes}[agent_i], 'gen_ai.agent.version', version,
            'gen_ai.provider.name', {providers}[agent_i], 'gen_ai.request.model', model,
            'gen_ai.conversation.id',
                if(cityHash64(r, 26) % 10 < 6, concat('conv_', lower(hex(cityHash64(r, 26)))), ''),
            'agentwatch.budget.max_steps', toString(budget_steps),
            'agentwatch.budget.max_tool_calls', toString(budget_tool_calls),
            'agentwatch.budget.max_seconds', toString({max_seconds}[agent_i]),
            'agentwatch.budget.max_usd', toString({max_usd}[agent_i]),
            'agentwatch.stop_reason', stop_reason, 'agentwatch.run.steps', toString(steps),
            'agentwatch.run.tool_calls', toString(tool_calls), 'agentwatch.run.llm_calls', toString(steps),
            'agentwatch.run.cost_usd', toString(arraySum(llm_cost)),
            'gen_ai.usage.input_tokens', toString(arraySum(input_tokens)),
            'gen_ai.usage.output_tokens', toString(arraySum(output_tokens)),
            'agentwatch.budget.exhausted', exhausted, 'error.type', run_error),
        kind = 1, map(
            'agentwatch.run.id', run_id, 'gen_ai.agent.name', agent, 'agentwatch.tenant.id', tenant,
            'agentwatch.track', track, 'agentwatch.operation.name', 'agentwatch.step',
            'agentwatch.step.index', toString(s)),
        kind = 2, map(
            'agentwatch.run.id', run_id, 'gen_ai.agent.name', agent, 'agentwatch.tenant.id', tenant,
            'agentwatch.track', track, 'gen_ai.operation.name', 'chat', 'gen_ai.request.model', model,
            'gen_ai.provider.name', {providers}[agent_i], 'agentwatch.step.index', toString(s),
            'gen_ai.response.model', {response_models}[agent_i],
            'gen_ai.response.finish_reasons', if(tools[s] > 0, '["tool_calls"]', '["stop"]'),
            'gen_ai.usage.input_tokens', toString(input_tokens[s]),
            'gen_ai.usage.output_tokens', toString(output_tokens[s]),
            'agentwatch.cost_usd', toString(llm_cost[s])),
        map(
            'agentwatch.run.id', run_id, 'gen_ai.agent.name', agent, 'agentwatch.tenant.id', tenant,
            'agentwatch.track', track, 'gen_ai.operation.name', 'execute_tool', 'gen_ai.tool.name', tool_name,
            'gen_ai.tool.type', 'function', 'agentwatch.tool.risk', risk, 'agentwatch.policy.rule', policy_rule,
            'agentwatch.step.index', toString(s),
            'gen_ai.tool.call.id', concat('call_', substring(lower(hex(th)), 1, 12)),
            'agentwatch.tool.idempotency_key', idempotency_key, 'agentwatch.tool.disposition', disposition,
            'agentwatch.tool.outcome', outcome, 'error.type', tool_error,
            'gen_ai.tool.call.arguments', if(captures_content, concat('{{"query":"order ', toString(th % 100000),
                ' status","customer":"[REDACTED:email]","top_k":5}}'), ''),
            'gen_ai.tool.call.result', if(captures_content AND outcome = 'ok', concat('{{"results":[',
                arrayStringConcat(arrayMap(i -> concat('{{"id":"KB-', toString((th + i) % 100000),
                    '","score":0.', toString(bitShiftRight(th, i) % 100), ',"title":"Refunds for delayed orders, part ',
                    toString(i), '"}}'), range(1 + th % 5)), ','), ']}}'), '')))) AS SpanAttributes,
    dur_ns AS Duration,
    multiIf(kind = 0 AND run_error != '', 'Error', kind = 3 AND outcome = 'error', 'Error', 'Unset') AS StatusCode,
    multiIf(kind = 0, run_error, kind = 3, tool_error, '') AS StatusMessage,
    arrayMap(offset_ns -> fromUnixTimestamp64Nano(ts_ns + offset_ns), event_offsets) AS `Events.Timestamp`,
    event_names AS `Events.Name`,
    event_attributes AS `Events.Attributes`,
    CAST([] AS Array(String)) AS `Links.TraceId`,
    CAST([] AS Array(String)) AS `Links.SpanId`,
    CAST([] AS Array(String)) AS `Links.TraceState`,
    CAST([] AS Array(Map(String, String))) AS `Links.Attributes`
FROM (
    SELECT *,
        span.1 AS kind, span.2 AS s, span.3 AS k,
        start_ns + toInt64((2 + if(s > 0, step_offset_ms[s], 0)) * 1000000) AS step_ns,
        multiIf(kind = 0, start_ns, kind = 1, step_ns, kind = 2, step_ns + 300000,
                step_ns + toInt64((llm_ms[s] + 1 + k * tool_ms[s]) * 1000000)) AS ts_ns,
        toUInt64(multiIf(kind = 0, run_ms, kind = 1, step_ms[s], kind = 2, llm_ms[s], tool_ms[s]) * 1000000) AS dur_ns,
        leftPad(lower(hex(cityHash64(r, kind, s, k, 30))), 16, '0') AS span_id,
        multiIf(kind = 0, '', kind = 1, leftPad(lower(hex(cityHash64(r, 0, 0, 0, 30))), 16, '0'),
                leftPad(lower(hex(cityHash64(r, 1, s, 0, 30))), 16, '0')) AS parent_id,
        cityHash64(r, s, k, 12) AS th,
        (th % 1000000) / 1e6 AS u_disposition,
        {tool_names}[agent_i] AS catalog,
        arrayFirstIndex(bound -> (intDiv(th, 1000000) % 1000000) / 1e6 < bound, {tool_bounds}[agent_i]) AS tool_j,
        {tool_risks}[agent_i][tool_j] AS catalog_risk,
        kind = 3 AND s = steps AND k + 1 = tools[s] AND ends_on_tool AS terminal,
        multiIf(terminal AND stop_reason = 'policy_denied', 'denied',
                terminal AND stop_reason = 'approval_rejected', 'rejected',
                terminal AND stop_reason = 'kill_switch', 'killed',
                terminal, 'allowed',
                u_disposition < 0.01, 'denied',
                catalog_risk = 'approval', if(u_disposition < 0.05, 'rejected', 'approved'),
                catalog_risk = 'write' AND u_disposition < 0.06, 'deduplicated',
                'allowed') AS disposition,
        multiIf(disposition = 'denied', {forbidden}[1 + intDiv(th, 7) % {n_forbidden}],
                terminal AND disposition = 'rejected', 'email.send', catalog[tool_j]) AS tool_name,
        multiIf(disposition = 'denied', 'write', terminal AND disposition = 'rejected', 'approval',
                catalog_risk) AS risk,
        multiIf(disposition IN ('denied', 'rejected', 'killed'), 'blocked',
                terminal AND stop_reason = 'error', 'error',
                disposition IN ('allowed', 'approved') AND intDiv(th, 1000) % 1000 < 15, 'error',
                'ok') AS outcome,
        if(outcome = 'error', {error_types}[1 + intDiv(th, 13) % 4], '') AS tool_error,
        multiIf(disposition = 'denied', if(startsWith(tool_name, 'db.drop'), 'deny:db.drop*', 'default_deny'),
                disposition = 'killed', 'kill_switch',
                risk = 'approval', concat('approval:', tool_name),
                concat('allow:', tool_name)) AS policy_rule,
        if(risk != 'read' AND (disposition = 'deduplicated' OR intDiv(th, 17) % 10 < 6),
           concat(replaceAll(tool_name, '.', '-'), '-', toString(intDiv(th, 100) % 1000000)), '') AS idempotency_key,
        multiIf(
            kind = 0 AND exhausted != '', [toInt64(run_ms * 1000000)],
            kind = 0 AND stop_reason = 'kill_switch', [toInt64(run_ms * 1000000)],
            kind = 3 AND disposition IN ('denied', 'killed'), [toInt64(10000)],
            kind = 3 AND disposition IN ('approved', 'rejected'), [toInt64(10000), toInt64(dur_ns * 0.9)],
            CAST([] AS Array(Int64))) AS event_offsets,
        multiIf(
            kind = 0 AND exhausted != '', ['agentwatch.budget.exhausted'],
            kind = 0 AND stop_reason = 'kill_switch', ['agentwatch.kill_switch.engaged'],
            kind = 3 AND disposition = 'denied', ['agentwatch.policy.denied'],
            kind = 3 AND disposition = 'killed', ['agentwatch.kill_switch.engaged'],
            kind = 3 AND disposition = 'approved', ['agentwatch.approval.requested', 'agentwatch.approval.granted'],
            kind = 3 AND disposition = 'rejected', ['agentwatch.approval.requested', 'agentwatch.approval.rejected'],
            CAST([] AS Array(String))) AS event_names,
        multiIf(
            kind = 0 AND exhausted != '',
                [map('budget', exhausted, 'limit', exhausted_limit,
                     'used', if(exhausted = 'steps', toString(steps), if(exhausted = 'tool_calls',
                                toString(tool_calls), exhausted_limit)))],
            kind = 0 AND stop_reason = 'kill_switch', [map('scope', concat('agent:', agent))],
            kind = 3 AND disposition = 'denied', [map('tool', tool_name, 'rule', policy_rule)],
            kind = 3 AND disposition = 'killed', [map('scope', concat('agent:', agent))],
            kind = 3 AND disposition = 'approved',
                [map('tool', tool_name), map('tool', tool_name, 'approver', 'oncall@example.com')],
            kind = 3 AND disposition = 'rejected',
                [map('tool', tool_name),
                 map('tool', tool_name, 'approver', 'oncall@example.com', 'reason', 'not allowed for this customer')],
            CAST([] AS Array(Map(String, String)))) AS event_attributes
    FROM (
        SELECT {run_shape}, {run_detail},
            -- (kind, step, tool): the run span, then per step its span, its LLM call and its tool calls
            arrayPushFront(
                arrayFlatten(arrayMap(s -> arrayConcat(
                    [tuple(toUInt8(1), toUInt32(s), toUInt32(0)), tuple(toUInt8(2), toUInt32(s), toUInt32(0))],
                    arrayMap(k -> tuple(toUInt8(3), toUInt32(s), toUInt32(k)), range(tools[s]))), range(1, steps + 1))),
                tuple(toUInt8(0), toUInt32(0), toUInt32(0))) AS span_plan
        FROM numbers({first_run}, {run_count})
    )
    ARRAY JOIN span_plan AS span, arrayEnumerate(span_plan) AS position
    WHERE r < {last_run} OR position <= {last_run_spans}
)
SETTINGS max_block_size = {block_rows}, min_insert_block_size_rows = 262144, max_threads = 2, max_insert_threads = 2
"""


_NAME_LITERAL: Final = re.compile(r"'((?:gen_ai|agentwatch|error)\.[a-z_.]+)'")


def check_attribute_names() -> None:
    """Every attribute, operation and event name the generator writes is one of the contract's names."""
    contract = {value for value in vars(semconv).values() if isinstance(value, str)}
    used = set(_NAME_LITERAL.findall(RUN_SHAPE + RUN_DETAIL + SPANS))
    unknown = sorted(used - contract)
    if unknown:
        raise RuntimeError(f"the generator writes names outside agentwatch.instrumentation.semconv: {unknown}")


@dataclass(frozen=True)
class LoadPlan:
    """How many runs make ``spans`` spans, and how much of the last run is kept."""

    spans: int
    runs: int
    last_run_spans: int


def plan_load(store: ClickHouseStore, spans: int, constants: Mapping[str, str]) -> LoadPlan:
    """Find the run count whose spans add up to ``spans`` (the last run is cut to fit exactly)."""
    shape = RUN_SHAPE.format(**constants)
    mean = float(store.command(f"SELECT avg(span_count) FROM (SELECT {shape} FROM numbers(100000))"))
    guess = math.ceil(spans / mean * 1.02) + 1000
    found = store.query(
        f"SELECT r, span_count, total FROM (SELECT r, span_count, sum(span_count) OVER (ORDER BY r "
        f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS total FROM (SELECT {shape} FROM numbers({guess}))) "
        f"WHERE total >= {spans} ORDER BY r LIMIT 1"
    )
    if not found:
        raise RuntimeError(f"{guess} runs do not make {spans} spans")
    last, count, total = (int(str(found[0][key])) for key in ("r", "span_count", "total"))
    return LoadPlan(spans=spans, runs=last + 1, last_run_spans=count - (total - spans))


def load(store: ClickHouseStore, plan: LoadPlan, window_end: datetime, constants: Mapping[str, str]) -> float:
    """Insert the fleet chunk by chunk with progress; returns the seconds it took."""
    window_start_ns = int((window_end - WINDOW).timestamp()) * 1_000_000_000
    values = dict(constants)
    values.update(
        window_start_ns=str(window_start_ns),
        window_ns=str(int(WINDOW.total_seconds()) * 1_000_000_000),
        runs=str(plan.runs),
        last_run=str(plan.runs - 1),
        last_run_spans=str(plan.last_run_spans),
        block_rows=str(ROWS_PER_BLOCK),
        table=TRACES_TABLE,
    )
    values["run_shape"] = RUN_SHAPE.format(**values)
    values["run_detail"] = RUN_DETAIL.format(**values)
    started = time.perf_counter()
    for first in range(0, plan.runs, RUNS_PER_CHUNK):
        count = min(RUNS_PER_CHUNK, plan.runs - first)
        store.command(SPANS.format(**values, first_run=first, run_count=count))
        done = first + count
        elapsed = time.perf_counter() - started
        spans_so_far = int(store.command(f"SELECT count() FROM {TRACES_TABLE}"))
        eta = elapsed / done * (plan.runs - done)
        print(
            f"  loaded {done:>9,} / {plan.runs:,} runs  {spans_so_far:>11,} spans  "
            f"{spans_so_far / elapsed:>9,.0f} spans/s  {elapsed:6.1f} s  (about {eta:.0f} s left)",
            file=sys.stderr,
            flush=True,
        )
    return time.perf_counter() - started


def settle(store: ClickHouseStore, timeout_s: float = SETTLE_TIMEOUT_S) -> float:
    """Wait (bounded) for background merges to finish, as a store a day old would have; returns seconds."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if int(store.command("SELECT count() FROM system.merges WHERE database = currentDatabase()")) == 0:
            break
        time.sleep(0.5)
    return time.perf_counter() - started


@dataclass(frozen=True)
class TableSize:
    table: str
    rows: int
    parts: int
    bytes_on_disk: int
    uncompressed_bytes: int
    merged_away_bytes: int  # inactive parts a merge replaced, deleted a few minutes later


def table_sizes(store: ClickHouseStore) -> list[TableSize]:
    tables = ", ".join(map(quote_literal, DATA_TABLES))
    rows = store.query(
        "SELECT table, sumIf(rows, active) AS rows, countIf(active) AS parts, sumIf(bytes_on_disk, active) AS disk, "
        "sumIf(data_uncompressed_bytes, active) AS raw, sumIf(bytes_on_disk, NOT active) AS old "
        f"FROM system.parts WHERE database = currentDatabase() AND table IN ({tables}) "
        "GROUP BY table ORDER BY disk DESC"
    )
    return [
        TableSize(
            table=str(r["table"]),
            rows=int(str(r["rows"])),
            parts=int(str(r["parts"])),
            bytes_on_disk=int(str(r["disk"])),
            uncompressed_bytes=int(str(r["raw"])),
            merged_away_bytes=int(str(r["old"])),
        )
        for r in rows
    ]


# --- the queries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One SQL query of a dashboard: a panel target or a template variable's own query."""

    title: str
    sql: str


@dataclass(frozen=True)
class Variable:
    """A template variable of a ClickHouse dashboard, as Grafana resolves it."""

    name: str
    kind: str  # "query" (options from its own SQL), "textbox", "custom", "constant"
    sql: str | None
    multi: bool
    include_all: bool
    custom_all_value: str | None
    default: str


@dataclass(frozen=True)
class Dashboard:
    uid: str
    variables: tuple[Variable, ...]
    queries: tuple[Query, ...]


def _variable(definition: Mapping[str, Any]) -> Variable:
    kind = str(definition.get("type"))
    current = definition.get("current") or {}
    default = current.get("value") if isinstance(current, dict) else None
    if kind == "textbox":
        default = definition.get("query") or default
    if isinstance(default, list):
        default = default[0] if default else ""
    return Variable(
        name=str(definition["name"]),
        kind=kind,
        sql=variable_query(definition) if kind == "query" else None,
        multi=bool(definition.get("multi")),
        include_all=bool(definition.get("includeAll")),
        custom_all_value=definition.get("allValue") or None,
        default=str(default or ""),
    )


def sql_dashboards() -> list[Dashboard]:
    """Every dashboard with SQL queries: its variables (in Grafana's order) and its SQL queries."""
    from agentwatch.dashboards.panels import panel_queries
    from agentwatch.dashboards.render import dashboards

    documents = {str(document["uid"]): document for document in dashboards().values()}
    queries: dict[str, list[Query]] = {}
    titles: Counter[tuple[str, str]] = Counter()
    for query in panel_queries():
        if query.language != "sql":
            continue
        title = f"variable {query.panel_title}" if query.kind == "variable" else query.panel_title
        titles[query.dashboard_uid, title] += 1
        if titles[query.dashboard_uid, title] > 1:  # two targets or panels with one title
            title = f"{title} ({titles[query.dashboard_uid, title]})"
        queries.setdefault(query.dashboard_uid, []).append(Query(title, query.expr))
    return [
        Dashboard(
            uid,
            tuple(_variable(v) for v in documents[uid].get("templating", {}).get("list") or []),
            tuple(found),
        )
        for uid, found in queries.items()
    ]


@dataclass(frozen=True)
class Scenario:
    """Variable selections: unset query variables are All, unset textboxes keep their default."""

    name: str
    selection: dict[str, str]


def scenarios(store: ClickHouseStore) -> list[Scenario]:
    """Everything at All, then the busiest agent of the busiest tenant; both open one real trace."""
    busiest = store.query(
        f"SELECT TenantId AS tenant, AgentName AS agent FROM {RUNS_TABLE} GROUP BY tenant, agent "
        "ORDER BY count() DESC LIMIT 1"
    )[0]
    tenant, agent = str(busiest["tenant"]), str(busiest["agent"])
    # the run an on-call engineer would open: the latest one a budget stopped
    trace = store.query(
        f"SELECT TraceId FROM {RUNS_TABLE} WHERE TenantId = {quote_literal(tenant)} "
        f"AND AgentName = {quote_literal(agent)} AND StopReason = 'max_tool_calls' ORDER BY StartTime DESC LIMIT 1"
    )
    trace_id = str(trace[0]["TraceId"]) if trace else ""
    return [
        Scenario("All", {"trace_id": trace_id}),
        Scenario(f"{agent}@{tenant}", {"tenant": tenant, "agent": agent, "trace_id": trace_id}),
    ]


def resolve_variables(
    store: ClickHouseStore, dashboard: Dashboard, scenario: Scenario, window_end: datetime
) -> tuple[dict[str, VariableValue], dict[str, VariableValue]]:
    """Variable values and All options as Grafana computes them: each query variable runs its own
    SQL with the variables before it, and All stands for every option (or the custom all value)."""
    values: dict[str, VariableValue] = {}
    all_values: dict[str, VariableValue] = {}
    for variable in dashboard.variables:
        chosen = scenario.selection.get(variable.name)
        if variable.kind == "query" and variable.sql is not None:
            sql = expand_sql(
                variable.sql,
                start=window_end - WINDOW,
                end=window_end,
                variables=values,
                interval_s=INTERVAL_S,
                all_values=all_values,
            )
            options = [str(next(iter(row.values()))) for row in store.query(sql)]
            all_values[variable.name] = variable.custom_all_value or options
            if chosen is None:
                values[variable.name] = ALL_VALUE if variable.include_all else (options[:1] or [""])[0]
            else:
                values[variable.name] = [chosen] if variable.multi else chosen
        else:
            values[variable.name] = chosen if chosen is not None else variable.default
    return values, all_values


@dataclass(frozen=True)
class Measured:
    """One query ready to time: where it comes from and its expanded SQL."""

    dashboard: str
    title: str
    scenario: str
    sql: str


@dataclass(frozen=True)
class Timing:
    """Latency of one query: wall time (what a dashboard user waits) and CPU time (this process, all
    chDB threads: unlike wall time, hardly affected by other processes competing for the cores)."""

    query: Measured
    rows: int
    wall_ms: tuple[float, ...]
    cpu_ms: tuple[float, ...]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.wall_ms)

    @property
    def p95_ms(self) -> float:
        return percentile(self.wall_ms, 0.95)

    @property
    def cpu_p50_ms(self) -> float:
        return statistics.median(self.cpu_ms)

    @property
    def met(self) -> bool:
        return self.p95_ms < TARGET_P95_MS


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (of 20 samples, p95 is the 19th fastest)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def expanded_queries(
    store: ClickHouseStore, dashboards: Sequence[Dashboard], scenario_list: Sequence[Scenario], window_end: datetime
) -> list[Measured]:
    """Every query of every dashboard in every scenario, expanded as Grafana would send it."""
    found = []
    for scenario in scenario_list:
        for dashboard in dashboards:
            variables, all_values = resolve_variables(store, dashboard, scenario, window_end)
            for query in dashboard.queries:
                sql = expand_sql(
                    query.sql,
                    start=window_end - WINDOW,
                    end=window_end,
                    variables=variables,
                    interval_s=INTERVAL_S,
                    all_values=all_values,
                )
                found.append(Measured(dashboard.uid, query.title, scenario.name, sql))
    return found


def measure(store: ClickHouseStore, queries: Sequence[Measured], repeat: int, warmup: int = 2) -> list[Timing]:
    """Time every query ``repeat`` times after ``warmup`` untimed runs, in interleaved rounds (each
    round runs every query once), so a burst of load from elsewhere is spread over all queries
    instead of landing on the samples of one."""
    rows = [0] * len(queries)
    for _ in range(warmup):
        for index, query in enumerate(queries):
            rows[index] = len(store.query(query.sql))
    wall: list[list[float]] = [[] for _ in queries]
    cpu: list[list[float]] = [[] for _ in queries]
    for round_number in range(1, repeat + 1):
        for index, query in enumerate(queries):
            started, started_cpu = time.perf_counter(), time.process_time()
            store.query(query.sql)
            wall[index].append((time.perf_counter() - started) * 1000)
            cpu[index].append((time.process_time() - started_cpu) * 1000)
        if round_number % 5 == 0 or round_number == repeat:
            print(f"  round {round_number} / {repeat}  (load average {os.getloadavg()[0]:.1f})", file=sys.stderr)
    return [
        Timing(query, count, tuple(wall_ms), tuple(cpu_ms))
        for query, count, wall_ms, cpu_ms in zip(queries, rows, wall, cpu, strict=True)
    ]


def explain(store: ClickHouseStore, sql: str) -> str:
    """How much a query reads (``EXPLAIN ESTIMATE``) and which indexes pruned what (``EXPLAIN indexes = 1``)."""
    estimate = store.query(f"EXPLAIN ESTIMATE {sql}")
    reads = [
        f"reads {int(str(row['rows'])):,} rows ({int(str(row['marks'])):,} granules, {row['parts']} parts) "
        f"of {row['table']}"
        for row in estimate
    ]
    plan = [str(next(iter(row.values()))) for row in store.query(f"EXPLAIN indexes = 1 {sql}")]
    return "\n".join([*reads, *plan])


# --- report ------------------------------------------------------------------------------------


def render_table(timings: Sequence[Timing], baseline: Timing) -> str:
    header = ("dashboard", "panel", "variables", "rows", "p50 ms", "p95 ms", "cpu p50 ms", "p50/baseline", "p95<300")
    lines = [
        (
            t.query.dashboard.removeprefix("agentwatch-"),
            t.query.title,
            t.query.scenario,
            f"{t.rows:,}",
            f"{t.p50_ms:.1f}",
            f"{t.p95_ms:.1f}",
            f"{t.cpu_p50_ms:.1f}",
            f"{t.p50_ms / baseline.p50_ms:.1f}x",
            "MET" if t.met else "MISSED",
        )
        for t in [baseline, *timings]
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    numeric = {3, 4, 5, 6, 7}

    def row(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([row(header), row(["-" * w for w in widths]), *(row(line) for line in lines)])


def human_bytes(count: int) -> str:
    return f"{count / MIB:,.1f} MiB" if count < 1 << 30 else f"{count / (1 << 30):,.2f} GiB"


@contextmanager
def data_directory(path: Path | None) -> Iterator[Path]:
    if path is not None:
        if path.exists() and any(path.iterdir()):
            raise SystemExit(f"--data {path} is not empty: the benchmark needs a fresh store")
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    temporary = Path(tempfile.mkdtemp(prefix="agentwatch-dashboard-bench-"))
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def run(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    check_attribute_names()
    dashboards = sql_dashboards()
    if not any(dashboard.queries for dashboard in dashboards):
        raise SystemExit("the dashboards define no SQL query")
    constants = fleet_constants()
    window_end = datetime.now(UTC).replace(second=0, microsecond=0)
    store = ClickHouseStore.open(f"chdb://{data}", query_timeout=600.0)
    try:
        store.ensure_schema()
        plan = plan_load(store, args.spans, constants)
        print(f"loading {plan.spans:,} spans ({plan.runs:,} runs) over 24 hours into {data}", file=sys.stderr)
        load_s = load(store, plan, window_end, constants)
        load_rss = peak_rss_bytes()
        settle_s = settle(store)
        sizes = table_sizes(store)
        counts = {size.table: size.rows for size in sizes}
        if counts.get(TRACES_TABLE) != plan.spans or counts.get(RUNS_TABLE) != plan.runs:
            raise RuntimeError(f"loaded {counts} but planned {plan.spans} spans and {plan.runs} runs")
        baseline_sql = f"SELECT count() FROM {RUNS_TABLE}"
        queries = [
            Measured("baseline", baseline_sql, "-", baseline_sql),
            *expanded_queries(store, dashboards, scenarios(store), window_end),
        ]
        print(f"timing {len(queries)} queries x {args.repeat} interleaved rounds", file=sys.stderr)
        load_before = os.getloadavg()[0]
        baseline, *timings = measure(store, queries, args.repeat)
        load_after = os.getloadavg()[0]
        missed = [t for t in timings if not t.met]
        explained = {
            f"{t.query.dashboard} / {t.query.title} [{t.query.scenario}]": explain(store, t.query.sql) for t in missed
        }
    finally:
        store.close()
    return {
        "spans": counts.get(TRACES_TABLE, 0),
        "runs": counts.get(RUNS_TABLE, 0),
        "tool_calls": counts.get(TOOL_CALLS_TABLE, 0),
        "load_s": load_s,
        "load_peak_rss_bytes": load_rss,
        "settle_s": settle_s,
        "sizes": sizes,
        "baseline": baseline,
        "timings": timings,
        "missed": missed,
        "explained": explained,
        "repeat": args.repeat,
        "load_average": (load_before, load_after),
        "cores": os.cpu_count() or 0,
    }


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def report(result: Mapping[str, Any]) -> str:
    sizes: list[TableSize] = result["sizes"]
    timings: list[Timing] = result["timings"]
    missed: list[Timing] = result["missed"]
    before, after = result["load_average"]
    lines = [
        f"store: {result['spans']:,} spans, {result['runs']:,} runs, {result['tool_calls']:,} tool calls over 24 h",
        f"load: {result['load_s']:.1f} s ({result['spans'] / result['load_s']:,.0f} spans/s, "
        f"peak RSS {human_bytes(result['load_peak_rss_bytes'])}), then {result['settle_s']:.1f} s for merges",
        f"size on disk: {human_bytes(sum(size.bytes_on_disk for size in sizes))} in active parts "
        f"(+{human_bytes(sum(size.merged_away_bytes for size in sizes))} of merged-away parts awaiting deletion)",
    ]
    for size in sizes:
        lines.append(
            f"  {size.table:<30} {size.rows:>12,} rows  {size.parts:>3} parts  {human_bytes(size.bytes_on_disk):>12}"
            f"  ({size.uncompressed_bytes / max(size.bytes_on_disk, 1):.1f}x compressed)"
        )
    lines += [
        "",
        f"{len(timings)} queries over 24 hours (interval {INTERVAL_S} s), {result['repeat']} interleaved warm rounds; "
        f"{result['cores']} cores, load average {before:.1f} before and {after:.1f} after timing",
        render_table(timings, result["baseline"]),
        "",
        f"target p95 < {TARGET_P95_MS:.0f} ms per panel: {'MET' if not missed else 'MISSED'}"
        + (f" ({len(missed)} of {len(timings)} queries over)" if missed else ""),
    ]
    for label, plan in result["explained"].items():
        lines += ["", f"EXPLAIN indexes = 1 of {label}:", plan]
    return "\n".join(lines)


def as_json(result: Mapping[str, Any]) -> str:
    def timing(t: Timing) -> dict[str, Any]:
        return {
            "dashboard": t.query.dashboard,
            "panel": t.query.title,
            "variables": t.query.scenario,
            "rows": t.rows,
            "p50_ms": round(t.p50_ms, 2),
            "p95_ms": round(t.p95_ms, 2),
            "cpu_p50_ms": round(t.cpu_p50_ms, 2),
            "met": t.met,
        }

    return json.dumps(
        {
            "spans": result["spans"],
            "runs": result["runs"],
            "tool_calls": result["tool_calls"],
            "load_s": round(result["load_s"], 2),
            "load_peak_rss_bytes": result["load_peak_rss_bytes"],
            "bytes_on_disk": sum(size.bytes_on_disk for size in result["sizes"]),
            "load_average": result["load_average"],
            "baseline": timing(result["baseline"]),
            "queries": [timing(t) for t in result["timings"]],
            "target_p95_ms": TARGET_P95_MS,
            "met": not result["missed"],
        },
        indent=2,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=10_000_000, help="spans to load (default 10 million)")
    parser.add_argument("--data", type=Path, help="store directory (must be empty; default: a temporary one, removed)")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per query, after 2 warm-up runs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a panel misses the target")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.spans < 1000:
        parser.error("--spans must be at least 1000")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    with data_directory(args.data) as data:
        result = run(args, data)
    print(as_json(result) if args.json else report(result))
    return 1 if args.strict and result["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
