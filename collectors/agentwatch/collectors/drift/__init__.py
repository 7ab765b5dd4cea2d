"""Canary drift analysis: is the canary worse than its baseline, and is the evidence good enough to act?

The public API (DESIGN.md): ``RunRecord``, ``compare`` (fixed-horizon decision), ``SequentialMonitor``
(anytime-valid, safe to update after every batch), ``DriftReport`` and ``MetricDrift``. ``RunColumns``
is the columnar form of runs (for callers holding arrays); ``DriftSettings`` holds the floors and
guards; the count-based e-values (``stop_reason_log_evalue`` and friends) serve callers that only
have per-track stop-reason counts (index them like ``STOP_REASON_CATEGORIES``).
"""

from __future__ import annotations

from agentwatch.collectors.drift.columns import RunColumns, columns_from_records
from agentwatch.collectors.drift.compare import compare
from agentwatch.collectors.drift.config import (
    BAD_STOP_REASONS,
    METRIC_FAMILIES,
    STOP_REASON_CATEGORIES,
    DriftSettings,
    Floors,
    Guards,
)
from agentwatch.collectors.drift.model import (
    VERDICTS,
    DriftReport,
    EvidenceKind,
    MetricDrift,
    RunRecord,
    Verdict,
    worst,
)
from agentwatch.collectors.drift.sequential import SequentialMonitor
from agentwatch.collectors.drift.stopreasons import (
    reason_log_evalues,
    stop_reason_log_evalue,
    traffic_share_log_evalue,
)

__all__ = [
    "BAD_STOP_REASONS",
    "METRIC_FAMILIES",
    "STOP_REASON_CATEGORIES",
    "VERDICTS",
    "DriftReport",
    "DriftSettings",
    "EvidenceKind",
    "Floors",
    "Guards",
    "MetricDrift",
    "RunColumns",
    "RunRecord",
    "SequentialMonitor",
    "Verdict",
    "columns_from_records",
    "compare",
    "reason_log_evalues",
    "stop_reason_log_evalue",
    "traffic_share_log_evalue",
    "worst",
]
