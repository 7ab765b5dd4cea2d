"""The collector's metrics in a registry of their own: the agent metric families and the self-metrics.

The metric and label names are the contract of DESIGN.md ("Collector"); they live in
``agentwatch.collectors.metric_names``, which dashboards and alert rules import without pulling in
``prometheus_client``.

``CollectorMetrics`` always owns its registry (never the process-global ``REGISTRY``), so several
collectors (and tests) can live in one process. Serve ``exposition()`` with ``CONTENT_TYPE``.
"""

from __future__ import annotations

import threading
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agentwatch.collectors.metric_names import (
    AGENT_INFO,
    BUDGET_EXHAUSTED_TOTAL,
    CANARY_DRIFT_EVALUE,
    CANARY_VERDICT,
    COLLECTOR_DRIFT_EVALUATIONS_TOTAL,
    COLLECTOR_INSERT_DURATION_SECONDS,
    COLLECTOR_INSERT_FAILURES_TOTAL,
    COLLECTOR_QUEUE_SPANS,
    COLLECTOR_REQUEST_BODY_BYTES,
    COLLECTOR_REQUESTS_TOTAL,
    COLLECTOR_SPANS_DROPPED_TOTAL,
    COLLECTOR_SPANS_RECEIVED_TOTAL,
    COLLECTOR_SPANS_REJECTED_TOTAL,
    COLLECTOR_SPANS_WRITTEN_TOTAL,
    COLLECTOR_SPOOL_BYTES,
    COLLECTOR_SPOOL_CAPACITY_BYTES,
    COLLECTOR_SPOOL_DISK_FULL_TOTAL,
    COLLECTOR_SPOOL_RECLAIMED_BYTES_TOTAL,
    COLLECTOR_SPOOL_SPANS,
    COLLECTOR_STORE_UP,
    COST_USD_TOTAL,
    DRIFT_FAILED,
    DRIFT_OK,
    DRIFT_RESULTS,
    LABEL_AGENT,
    LABEL_BUDGET,
    LABEL_CODE,
    LABEL_DIRECTION,
    LABEL_DISPOSITION,
    LABEL_METRIC,
    LABEL_MODEL,
    LABEL_OUTCOME,
    LABEL_REASON,
    LABEL_RESULT,
    LABEL_STOP_REASON,
    LABEL_TOOL,
    LABEL_TRACK,
    LABEL_TRANSPORT,
    LABEL_VERSION,
    LLM_TOKENS_TOTAL,
    MAX_LABEL_LENGTH,
    RUN_COST_USD,
    RUN_DURATION_SECONDS,
    RUN_STEPS,
    RUN_TOOL_CALLS,
    RUNS_TOTAL,
    TOOL_CALLS_TOTAL,
    VERDICT_CODES,
)
from agentwatch.collectors.metrics.exposition import ExposedRegistry
from agentwatch.collectors.metrics.labels import _Agents, _CappedValues
from agentwatch.collectors.metrics.spans import _SpanMetrics

# --- histogram buckets sized for agents, not for web requests ------------------------------
RUN_DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RUN_STEPS_BUCKETS: Final = (1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0)
RUN_TOOL_CALLS_BUCKETS: Final = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 50.0, 100.0)
RUN_COST_USD_BUCKETS: Final = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
INSERT_DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_BODY_BUCKETS: Final = (1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0)

# caps of the self-metric labels: the callers are our own code, the caps only guard against bugs
_MAX_TRANSPORTS: Final = 8
_MAX_REASONS: Final = 32
_MAX_CODES: Final = 64
_MAX_DRIFT_METRICS: Final = 32


def _counter(name: str, documentation: str, labels: tuple[str, ...], registry: CollectorRegistry) -> Counter:
    # prometheus_client appends _total itself; the constant is the exposed name
    return Counter(name.removesuffix("_total"), documentation, labels, registry=registry)


class CollectorMetrics(_SpanMetrics):
    """The collector's metrics, in a registry of their own.

    ``observe_rows`` derives the agent metrics from span rows (the row format of the shared
    contract: ``SpanAttributes`` maps str to str, ``Duration`` is nanoseconds). Only spans carrying
    ``agentwatch.run.id`` count; every other span is skipped after one lookup. The ``record_*`` and
    ``set_*`` methods feed the self-metrics. All methods are thread-safe.

    The canary verdict gauge encodes ``pass`` as 0, ``inconclusive`` as 1 and ``fail`` as 2
    (``VERDICT_CODES``).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_tools_per_agent: int = 50,
        max_models_per_agent: int = 20,
        max_agents: int = 500,
        max_versions_per_agent: int = 20,
        max_label_length: int = MAX_LABEL_LENGTH,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._agents = _Agents(
            max_agents=max_agents,
            tools=max_tools_per_agent,
            models=max_models_per_agent,
            versions=max_versions_per_agent,
            max_length=max_label_length,
        )
        self._run_children = {}
        self._tool_keys = {}
        self._transports = _CappedValues(_MAX_TRANSPORTS, max_label_length)
        self._reasons = _CappedValues(_MAX_REASONS, max_label_length)
        self._codes = _CappedValues(_MAX_CODES, max_label_length)
        self._drift_metrics = _CappedValues(_MAX_DRIFT_METRICS, max_label_length)
        self._build_agent_metrics()
        self._build_collector_metrics()

    # --- construction --------------------------------------------------------------------------

    def _build_agent_metrics(self) -> None:
        reg = self.registry
        agent_track = (LABEL_AGENT, LABEL_TRACK)
        self.runs = _counter(RUNS_TOTAL, "Finished agent runs by stop reason.", (*agent_track, LABEL_STOP_REASON), reg)
        self.run_duration = Histogram(
            RUN_DURATION_SECONDS, "Wall time of finished runs.", agent_track, registry=reg, buckets=RUN_DURATION_BUCKETS
        )
        self.run_steps = Histogram(
            RUN_STEPS, "Steps per finished run.", agent_track, registry=reg, buckets=RUN_STEPS_BUCKETS
        )
        self.run_tool_calls = Histogram(
            RUN_TOOL_CALLS, "Tool calls per finished run.", agent_track, registry=reg, buckets=RUN_TOOL_CALLS_BUCKETS
        )
        self.run_cost = Histogram(
            RUN_COST_USD, "Cost in USD per finished run.", agent_track, registry=reg, buckets=RUN_COST_USD_BUCKETS
        )
        self.cost = _counter(COST_USD_TOTAL, "Cost in USD of finished runs.", agent_track, reg)
        self.tokens = _counter(
            LLM_TOKENS_TOTAL, "LLM tokens by model and direction.", (*agent_track, LABEL_MODEL, LABEL_DIRECTION), reg
        )
        self.tool_calls = _counter(
            TOOL_CALLS_TOTAL,
            "Tool calls through the gateway by decision and outcome.",
            (*agent_track, LABEL_TOOL, LABEL_DISPOSITION, LABEL_OUTCOME),
            reg,
        )
        self.budget_exhausted = _counter(
            BUDGET_EXHAUSTED_TOTAL, "Runs stopped by an exhausted budget.", (*agent_track, LABEL_BUDGET), reg
        )
        self.agent_info = Gauge(
            AGENT_INFO, "Agent versions seen per track (always 1).", (*agent_track, LABEL_VERSION), registry=reg
        )
        self.drift_evalue = Gauge(
            CANARY_DRIFT_EVALUE, "Anytime-valid e-value of canary drift.", (LABEL_AGENT, LABEL_METRIC), registry=reg
        )
        self.verdict = Gauge(
            CANARY_VERDICT,
            "Canary verdict: 0 pass, 1 inconclusive, 2 fail.",
            (LABEL_AGENT, LABEL_METRIC),
            registry=reg,
        )

    def _build_collector_metrics(self) -> None:
        reg = self.registry
        self.spans_received = _counter(
            COLLECTOR_SPANS_RECEIVED_TOTAL, "Spans received by transport.", (LABEL_TRANSPORT,), reg
        )
        self.spans_written = _counter(COLLECTOR_SPANS_WRITTEN_TOTAL, "Spans written to ClickHouse.", (), reg)
        self.spans_rejected = _counter(
            COLLECTOR_SPANS_REJECTED_TOTAL, "Spans refused to the sender, by reason.", (LABEL_REASON,), reg
        )
        self.spans_dropped = _counter(
            COLLECTOR_SPANS_DROPPED_TOTAL, "Accepted spans lost before storage, by reason.", (LABEL_REASON,), reg
        )
        self.requests = _counter(
            COLLECTOR_REQUESTS_TOTAL,
            "OTLP export requests by transport and code.",
            (LABEL_TRANSPORT, LABEL_CODE),
            reg,
        )
        self.queue = Gauge(COLLECTOR_QUEUE_SPANS, "Spans waiting in memory for a write.", registry=reg)
        self.spool_bytes = Gauge(COLLECTOR_SPOOL_BYTES, "Bytes in the local spool.", registry=reg)
        self.spool_spans = Gauge(COLLECTOR_SPOOL_SPANS, "Spans in the local spool.", registry=reg)
        self.spool_capacity = Gauge(COLLECTOR_SPOOL_CAPACITY_BYTES, "Capacity of the local spool.", registry=reg)
        self.spool_reclaimed = _counter(
            COLLECTOR_SPOOL_RECLAIMED_BYTES_TOTAL,
            "Bytes of committed records the spool reclaimed early (a full disk, or the active segment's size).",
            (),
            reg,
        )
        self.spool_disk_full = _counter(
            COLLECTOR_SPOOL_DISK_FULL_TOTAL, "Spool writes that failed because the disk was full.", (), reg
        )
        self._spool_counts = (0, 0)
        self.insert_duration = Histogram(
            COLLECTOR_INSERT_DURATION_SECONDS,
            "Duration of successful ClickHouse inserts.",
            registry=reg,
            buckets=INSERT_DURATION_BUCKETS,
        )
        self.insert_failures = _counter(COLLECTOR_INSERT_FAILURES_TOTAL, "Failed ClickHouse inserts.", (), reg)
        self.store_up = Gauge(COLLECTOR_STORE_UP, "1 when the last store operation succeeded.", registry=reg)
        self.drift_evaluations = _counter(
            COLLECTOR_DRIFT_EVALUATIONS_TOTAL,
            "Drift analyzer rounds by result (ok, failed): failing rounds leave the canary gauges stale.",
            (LABEL_RESULT,),
            reg,
        )
        for result in DRIFT_RESULTS:  # both series from the start, so increase() sees the first failure
            self.drift_evaluations.labels(result)
        self.request_body = Histogram(
            COLLECTOR_REQUEST_BODY_BYTES,
            "Size of OTLP request bodies after decompression.",
            (LABEL_TRANSPORT,),
            registry=reg,
            buckets=REQUEST_BODY_BUCKETS,
        )

    # --- drift -----------------------------------------------------------------------------------

    def set_drift(self, agent: str, metric: str, evalue: float, verdict: str) -> None:
        """Publish one drift result: the e-value and the verdict (``pass`` 0, ``inconclusive`` 1, ``fail`` 2)."""
        code = VERDICT_CODES.get(verdict)
        if code is None:
            raise ValueError(f"unknown verdict {verdict!r}; expected one of {sorted(VERDICT_CODES)}")
        with self._lock:
            labels = (self._agents(agent).label, self._drift_metrics(metric))
        self.drift_evalue.labels(*labels).set(evalue)
        self.verdict.labels(*labels).set(code)

    # --- collector self-metrics -----------------------------------------------------------------

    def record_received(self, transport: str, spans: int) -> None:
        """Spans decoded from one request on ``transport`` (``http`` or ``grpc``)."""
        with self._lock:
            label = self._transports(transport)
        self.spans_received.labels(label).inc(spans)

    def record_rejected(self, reason: str, spans: int) -> None:
        """Spans refused to the sender (``invalid``, ``limit``, ``auth``, ...)."""
        with self._lock:
            label = self._reasons(reason)
        self.spans_rejected.labels(label).inc(spans)

    def record_dropped(self, reason: str, spans: int) -> None:
        """Spans that were accepted but will never reach storage (should stay at zero)."""
        with self._lock:
            label = self._reasons(reason)
        self.spans_dropped.labels(label).inc(spans)

    def record_request(self, transport: str, code: int | str, *, body_bytes: int | None = None) -> None:
        """One export request answered with ``code`` (HTTP status or gRPC code name)."""
        with self._lock:
            labels = (self._transports(transport), self._codes(code))
        self.requests.labels(*labels).inc()
        if body_bytes is not None and body_bytes >= 0:
            self.request_body.labels(labels[0]).observe(body_bytes)

    def record_written(self, spans: int, seconds: float) -> None:
        """A successful insert of ``spans`` spans that took ``seconds``; marks the store up."""
        self.spans_written.inc(spans)
        self.insert_duration.observe(seconds)
        self.store_up.set(1)

    def record_drift_evaluation(self, *, ok: bool) -> None:
        """One round of the drift analyzer: published (``ok``) or failed (the gauges keep old values)."""
        self.drift_evaluations.labels(DRIFT_OK if ok else DRIFT_FAILED).inc()

    def record_insert_failure(self) -> None:
        """A failed insert; marks the store down."""
        self.insert_failures.inc()
        self.store_up.set(0)

    def set_queue(self, spans: int) -> None:
        """Spans waiting in memory."""
        self.queue.set(spans)

    def set_spool(
        self, size_bytes: int, spans: int, capacity_bytes: int, *, reclaimed_bytes: int = 0, disk_full_errors: int = 0
    ) -> None:
        """Current spool size, span count and capacity; the spool's running totals since it was opened."""
        self.spool_bytes.set(size_bytes)
        self.spool_spans.set(spans)
        self.spool_capacity.set(capacity_bytes)
        with self._lock:
            reclaimed_before, full_before = self._spool_counts
            self._spool_counts = (max(reclaimed_before, reclaimed_bytes), max(full_before, disk_full_errors))
        self.spool_reclaimed.inc(max(0, reclaimed_bytes - reclaimed_before))
        self.spool_disk_full.inc(max(0, disk_full_errors - full_before))

    def set_store_up(self, up: bool) -> None:
        """Whether the store answered the last operation."""
        self.store_up.set(1 if up else 0)

    # --- exposition -----------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (serve with ``CONTENT_TYPE``)."""
        return generate_latest(self.exposed)

    @property
    def exposed(self) -> ExposedRegistry:
        """The registry as /metrics serves it (hand it to prometheus_client's exposition helpers)."""
        return ExposedRegistry(self.registry)


__all__ = [
    "INSERT_DURATION_BUCKETS",
    "REQUEST_BODY_BUCKETS",
    "RUN_COST_USD_BUCKETS",
    "RUN_DURATION_BUCKETS",
    "RUN_STEPS_BUCKETS",
    "RUN_TOOL_CALLS_BUCKETS",
    "CollectorMetrics",
]
