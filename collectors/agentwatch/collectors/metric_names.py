"""Names of the collector's Prometheus metrics and labels: the contract of DESIGN.md ("Collector").

Dashboards and alert rules build their queries from these constants, and the collector exposes its
metrics under them (``agentwatch.collectors.metrics`` builds its families from them). This module imports
nothing but ``typing``, so a generator can depend on the names without pulling in
``prometheus_client`` or any registry code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

# --- metric names (exposed names: counters end in _total, as prometheus_client exposes them) --
RUNS_TOTAL: Final = "agentwatch_runs_total"
RUN_DURATION_SECONDS: Final = "agentwatch_run_duration_seconds"
RUN_STEPS: Final = "agentwatch_run_steps"
RUN_TOOL_CALLS: Final = "agentwatch_run_tool_calls"
RUN_COST_USD: Final = "agentwatch_run_cost_usd"
COST_USD_TOTAL: Final = "agentwatch_cost_usd_total"
LLM_TOKENS_TOTAL: Final = "agentwatch_llm_tokens_total"
TOOL_CALLS_TOTAL: Final = "agentwatch_tool_calls_total"
BUDGET_EXHAUSTED_TOTAL: Final = "agentwatch_budget_exhausted_total"
AGENT_INFO: Final = "agentwatch_agent_info"
CANARY_DRIFT_EVALUE: Final = "agentwatch_canary_drift_evalue"
CANARY_VERDICT: Final = "agentwatch_canary_verdict"

COLLECTOR_SPANS_RECEIVED_TOTAL: Final = "agentwatch_collector_spans_received_total"
COLLECTOR_SPANS_WRITTEN_TOTAL: Final = "agentwatch_collector_spans_written_total"
COLLECTOR_SPANS_REJECTED_TOTAL: Final = "agentwatch_collector_spans_rejected_total"
COLLECTOR_SPANS_DROPPED_TOTAL: Final = "agentwatch_collector_spans_dropped_total"
COLLECTOR_REQUESTS_TOTAL: Final = "agentwatch_collector_requests_total"
COLLECTOR_QUEUE_SPANS: Final = "agentwatch_collector_queue_spans"
COLLECTOR_SPOOL_BYTES: Final = "agentwatch_collector_spool_bytes"
COLLECTOR_SPOOL_SPANS: Final = "agentwatch_collector_spool_spans"
COLLECTOR_SPOOL_CAPACITY_BYTES: Final = "agentwatch_collector_spool_capacity_bytes"
COLLECTOR_SPOOL_RECLAIMED_BYTES_TOTAL: Final = "agentwatch_collector_spool_reclaimed_bytes_total"
COLLECTOR_SPOOL_DISK_FULL_TOTAL: Final = "agentwatch_collector_spool_disk_full_total"
COLLECTOR_INSERT_DURATION_SECONDS: Final = "agentwatch_collector_insert_duration_seconds"
COLLECTOR_INSERT_FAILURES_TOTAL: Final = "agentwatch_collector_insert_failures_total"
COLLECTOR_STORE_UP: Final = "agentwatch_collector_store_up"
COLLECTOR_REQUEST_BODY_BYTES: Final = "agentwatch_collector_request_body_bytes"
COLLECTOR_DRIFT_EVALUATIONS_TOTAL: Final = "agentwatch_collector_drift_evaluations_total"

AGENT_METRICS: Final = (
    RUNS_TOTAL,
    RUN_DURATION_SECONDS,
    RUN_STEPS,
    RUN_TOOL_CALLS,
    RUN_COST_USD,
    COST_USD_TOTAL,
    LLM_TOKENS_TOTAL,
    TOOL_CALLS_TOTAL,
    BUDGET_EXHAUSTED_TOTAL,
    AGENT_INFO,
    CANARY_DRIFT_EVALUE,
    CANARY_VERDICT,
)
"""Every agent metric (exposed family names)."""

COLLECTOR_METRICS: Final = (
    COLLECTOR_SPANS_RECEIVED_TOTAL,
    COLLECTOR_SPANS_WRITTEN_TOTAL,
    COLLECTOR_SPANS_REJECTED_TOTAL,
    COLLECTOR_SPANS_DROPPED_TOTAL,
    COLLECTOR_REQUESTS_TOTAL,
    COLLECTOR_QUEUE_SPANS,
    COLLECTOR_SPOOL_BYTES,
    COLLECTOR_SPOOL_SPANS,
    COLLECTOR_SPOOL_CAPACITY_BYTES,
    COLLECTOR_SPOOL_RECLAIMED_BYTES_TOTAL,
    COLLECTOR_SPOOL_DISK_FULL_TOTAL,
    COLLECTOR_INSERT_DURATION_SECONDS,
    COLLECTOR_INSERT_FAILURES_TOTAL,
    COLLECTOR_STORE_UP,
    COLLECTOR_REQUEST_BODY_BYTES,
    COLLECTOR_DRIFT_EVALUATIONS_TOTAL,
)
"""Every collector self-metric (exposed family names)."""

# --- label names and reserved label values -------------------------------------------------
LABEL_AGENT: Final = "agent"
LABEL_TRACK: Final = "track"
LABEL_STOP_REASON: Final = "stop_reason"
LABEL_MODEL: Final = "model"
LABEL_DIRECTION: Final = "direction"
LABEL_TOOL: Final = "tool"
LABEL_DISPOSITION: Final = "disposition"
LABEL_OUTCOME: Final = "outcome"
LABEL_RESULT: Final = "result"
LABEL_BUDGET: Final = "budget"
LABEL_VERSION: Final = "version"
LABEL_METRIC: Final = "metric"
LABEL_TRANSPORT: Final = "transport"
LABEL_REASON: Final = "reason"
LABEL_CODE: Final = "code"

OTHER: Final = "other"
"""Label value for anything outside a closed set or beyond a cap (equals ``semconv.STOP_REASON_OTHER``)."""
UNKNOWN: Final = "unknown"
"""Label value for a missing or empty name (agent, tool, model, version)."""
DIRECTION_INPUT: Final = "input"
DIRECTION_OUTPUT: Final = "output"

MAX_LABEL_LENGTH: Final = 128
"""Longer label values are truncated (a label is a name, never content)."""

DRIFT_OK: Final = "ok"
DRIFT_FAILED: Final = "failed"
DRIFT_RESULTS: Final = (DRIFT_OK, DRIFT_FAILED)
"""``result`` values of ``agentwatch_collector_drift_evaluations_total``."""

VERDICT_PASS: Final = 0
VERDICT_INCONCLUSIVE: Final = 1
VERDICT_FAIL: Final = 2
VERDICT_CODES: Final[Mapping[str, int]] = {
    "pass": VERDICT_PASS,
    "inconclusive": VERDICT_INCONCLUSIVE,
    "fail": VERDICT_FAIL,
}
"""Value of ``agentwatch_canary_verdict``: ordered by severity, so ``max by (agent)`` is the worst metric."""

__all__ = [
    "AGENT_INFO",
    "AGENT_METRICS",
    "BUDGET_EXHAUSTED_TOTAL",
    "CANARY_DRIFT_EVALUE",
    "CANARY_VERDICT",
    "COLLECTOR_DRIFT_EVALUATIONS_TOTAL",
    "COLLECTOR_INSERT_DURATION_SECONDS",
    "COLLECTOR_INSERT_FAILURES_TOTAL",
    "COLLECTOR_METRICS",
    "COLLECTOR_QUEUE_SPANS",
    "COLLECTOR_REQUESTS_TOTAL",
    "COLLECTOR_REQUEST_BODY_BYTES",
    "COLLECTOR_SPANS_DROPPED_TOTAL",
    "COLLECTOR_SPANS_RECEIVED_TOTAL",
    "COLLECTOR_SPANS_REJECTED_TOTAL",
    "COLLECTOR_SPANS_WRITTEN_TOTAL",
    "COLLECTOR_SPOOL_BYTES",
    "COLLECTOR_SPOOL_CAPACITY_BYTES",
    "COLLECTOR_SPOOL_DISK_FULL_TOTAL",
    "COLLECTOR_SPOOL_RECLAIMED_BYTES_TOTAL",
    "COLLECTOR_SPOOL_SPANS",
    "COLLECTOR_STORE_UP",
    "COST_USD_TOTAL",
    "DIRECTION_INPUT",
    "DIRECTION_OUTPUT",
    "DRIFT_FAILED",
    "DRIFT_OK",
    "DRIFT_RESULTS",
    "LABEL_AGENT",
    "LABEL_BUDGET",
    "LABEL_CODE",
    "LABEL_DIRECTION",
    "LABEL_DISPOSITION",
    "LABEL_METRIC",
    "LABEL_MODEL",
    "LABEL_OUTCOME",
    "LABEL_REASON",
    "LABEL_RESULT",
    "LABEL_STOP_REASON",
    "LABEL_TOOL",
    "LABEL_TRACK",
    "LABEL_TRANSPORT",
    "LABEL_VERSION",
    "LLM_TOKENS_TOTAL",
    "MAX_LABEL_LENGTH",
    "OTHER",
    "RUNS_TOTAL",
    "RUN_COST_USD",
    "RUN_DURATION_SECONDS",
    "RUN_STEPS",
    "RUN_TOOL_CALLS",
    "TOOL_CALLS_TOTAL",
    "UNKNOWN",
    "VERDICT_CODES",
    "VERDICT_FAIL",
    "VERDICT_INCONCLUSIVE",
    "VERDICT_PASS",
]
