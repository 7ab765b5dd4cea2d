"""Prometheus metrics of the collector: agent metrics derived from received spans, plus self-metrics.

The metric and label names are the contract of DESIGN.md ("Collector"); they live in
``agentwatch.collectors.metric_names`` (import them from there). This package imports only the
standard library, ``prometheus_client``, ``metric_names`` and ``agentwatch.instrumentation.semconv``.

- ``labels``: label values, cleaned, from closed sets or capped per agent (cardinality is bounded
  by construction);
- ``spans``: deriving the agent metrics from converted spans;
- ``registry``: ``CollectorMetrics``, the metric families in a registry of their own, and the
  self-metrics;
- ``exposition``: what /metrics serves (``ExposedRegistry``, ``CONTENT_TYPE``).
"""

from __future__ import annotations

from agentwatch.collectors.metrics.exposition import CONTENT_TYPE, ExposedRegistry
from agentwatch.collectors.metrics.labels import clean_label
from agentwatch.collectors.metrics.registry import (
    INSERT_DURATION_BUCKETS,
    REQUEST_BODY_BUCKETS,
    RUN_COST_USD_BUCKETS,
    RUN_DURATION_BUCKETS,
    RUN_STEPS_BUCKETS,
    RUN_TOOL_CALLS_BUCKETS,
    CollectorMetrics,
)

__all__ = [
    "CONTENT_TYPE",
    "INSERT_DURATION_BUCKETS",
    "REQUEST_BODY_BUCKETS",
    "RUN_COST_USD_BUCKETS",
    "RUN_DURATION_BUCKETS",
    "RUN_STEPS_BUCKETS",
    "RUN_TOOL_CALLS_BUCKETS",
    "CollectorMetrics",
    "ExposedRegistry",
    "clean_label",
]
