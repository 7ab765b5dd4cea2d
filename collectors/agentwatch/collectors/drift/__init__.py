"""Canary drift analysis: is the canary worse than its baseline, and is the evidence good enough to act?

The public API (DESIGN.md): ``RunRecord``, ``compare`` (fixed-horizon decision), ``SequentialMonitor``
(anytime-valid, safe to update after every batch), ``DriftReport`` and ``MetricDrift``.
"""

from __future__ import annotations

from agentwatch.collectors.drift.model import (
    VERDICTS,
    DriftReport,
    EvidenceKind,
    MetricDrift,
    RunRecord,
    Verdict,
    worst,
)

__all__ = ["VERDICTS", "DriftReport", "EvidenceKind", "MetricDrift", "RunRecord", "Verdict", "worst"]
