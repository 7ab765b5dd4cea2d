"""Prometheus metrics of the collector: agent metrics derived from received spans, plus self-metrics.

The metric and label names are the contract of DESIGN.md ("Collector"); they live in
``agentwatch.collectors.metric_names`` (which dashboards and alert rules import without pulling in
``prometheus_client``) and are re-exported here. This module imports only the standard library,
``prometheus_client``, ``metric_names`` and ``agentwatch.instrumentation.semconv``.

Cardinality is bounded by construction, because one misbehaving agent must not be able to take
Prometheus down: label values come from closed sets (stop reason, track, disposition, outcome,
budget: anything else becomes ``other``) or from per-agent capped sets (tools, models, versions:
the first N distinct values keep their name, later ones become ``other``); agents themselves are
capped; every value is length-capped and made printable. No run, trace, span, tenant or user id is
ever a label.

``CollectorMetrics`` always owns its registry (never the process-global ``REGISTRY``), so several
collectors (and tests) can live in one process. Serve ``exposition()`` with ``CONTENT_TYPE``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from agentwatch.collectors.metric_names import (
    AGENT_INFO,
    AGENT_METRICS,
    BUDGET_EXHAUSTED_TOTAL,
    CANARY_DRIFT_EVALUE,
    CANARY_VERDICT,
    COLLECTOR_DRIFT_EVALUATIONS_TOTAL,
    COLLECTOR_INSERT_DURATION_SECONDS,
    COLLECTOR_INSERT_FAILURES_TOTAL,
    COLLECTOR_METRICS,
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
    DIRECTION_INPUT,
    DIRECTION_OUTPUT,
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
    OTHER,
    RUN_COST_USD,
    RUN_DURATION_SECONDS,
    RUN_STEPS,
    RUN_TOOL_CALLS,
    RUNS_TOTAL,
    TOOL_CALLS_TOTAL,
    UNKNOWN,
    VERDICT_CODES,
    VERDICT_FAIL,
    VERDICT_INCONCLUSIVE,
    VERDICT_PASS,
)
from agentwatch.instrumentation import semconv

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""Content type of ``exposition()``: the classic text format, which every Prometheus version scrapes."""

# --- histogram buckets sized for agents, not for web requests ------------------------------
RUN_DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RUN_STEPS_BUCKETS: Final = (1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0)
RUN_TOOL_CALLS_BUCKETS: Final = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 50.0, 100.0)
RUN_COST_USD_BUCKETS: Final = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
INSERT_DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_BODY_BUCKETS: Final = (1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0)

_TRACKS: Final = frozenset(track.value for track in semconv.Track)
_DISPOSITIONS: Final = frozenset(disposition.value for disposition in semconv.ToolDisposition)
_OUTCOMES: Final = frozenset(outcome.value for outcome in semconv.ToolOutcome)
_BUDGETS: Final = frozenset(budget.value for budget in semconv.BudgetName)
_RESERVED: Final = frozenset({OTHER, UNKNOWN})

# caps of the self-metric labels: the callers are our own code, the caps only guard against bugs
_MAX_TRANSPORTS: Final = 8
_MAX_REASONS: Final = 32
_MAX_CODES: Final = 64
_MAX_DRIFT_METRICS: Final = 32


def clean_label(value: object, max_length: int = MAX_LABEL_LENGTH) -> str:
    """A label value from an attribute: a string, length-capped, printable, ``unknown`` when empty."""
    text = value if type(value) is str else _text(value)
    if not text:
        return UNKNOWN
    text = text[:max_length]
    if not text.isprintable():
        # control characters and lone surrogates (from JSON escapes) would break the text exposition
        text = "".join(char if char.isprintable() else "_" for char in text)
    return text


def _text(value: object) -> str:
    """Any non-str attribute value as text; rows should carry only str, but a bad row must not raise."""
    if value is None:
        return ""
    try:
        return str(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        return ""


_MAX_REMEMBERED_KEYS: Final = 10_000  # raw attribute tuples -> label sets; emptied when full


def _closed(value: object, allowed: frozenset[str]) -> str:
    """A label from a closed set: the value itself when valid, else ``other`` (missing included)."""
    return value if type(value) is str and value in allowed else OTHER


def _amount(value: object) -> float | None:
    """A non-negative finite number from an attribute string, else None (never raises)."""
    if value is None or type(value) is bool:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]  # any str/int/float; the rest is caught below
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0.0 <= number < math.inf else None


class _CappedValues:
    """The first ``cap`` distinct values keep their name; later ones map to ``other``.

    Not thread-safe on its own: ``CollectorMetrics`` calls it under its lock.
    """

    __slots__ = ("_cap", "_max_length", "_seen")

    def __init__(self, cap: int, max_length: int) -> None:
        self._cap = cap
        self._max_length = max_length
        self._seen: set[str] = set()

    def __call__(self, value: object) -> str:
        if type(value) is str and value in self._seen:
            return value  # fast path: seen values are clean labels already
        label = clean_label(value, self._max_length)
        if label in self._seen or label in _RESERVED:
            return label
        if len(self._seen) < self._cap:
            self._seen.add(label)
            return label
        return OTHER


class _AgentLabels:
    """Label state of one agent label: its name and its capped tools, models and versions."""

    __slots__ = ("label", "models", "tools", "versions")

    def __init__(self, label: str, *, tools: int, models: int, versions: int, max_length: int) -> None:
        self.label = label
        self.tools = _CappedValues(tools, max_length)
        self.models = _CappedValues(models, max_length)
        self.versions = _CappedValues(versions, max_length)


@dataclass(frozen=True, slots=True)
class _RunSeries:
    """The children of the per-run metrics for one (agent, track): ``labels()`` costs more than an observation."""

    duration: Histogram
    steps: Histogram
    tool_calls: Histogram
    cost: Histogram
    cost_total: Counter


class ExposedRegistry:
    """A registry as /metrics shows it: without the ``*_created`` samples.

    prometheus_client adds a ``_created`` series beside every counter and histogram child, which
    doubles the series Prometheus stores and is never queried here; dropping it at exposition time
    avoids the library's process-wide switch (``disable_created_metrics``). It also answers
    ``restricted_registry`` (``?name[]=...``), which prometheus_client's ASGI app calls on whatever
    it serves.
    """

    def __init__(self, registry: Collector) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            # collect() builds fresh Metric objects each time, so filtering them in place is safe
            metric.samples = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            yield metric

    def restricted_registry(self, names: Iterable[str]) -> ExposedRegistry:
        restrict = getattr(self._registry, "restricted_registry", None)
        return ExposedRegistry(restrict(names) if restrict is not None else self._registry)


def _counter(name: str, documentation: str, labels: tuple[str, ...], registry: CollectorRegistry) -> Counter:
    # prometheus_client appends _total itself; the constant is the exposed name
    return Counter(name.removesuffix("_total"), documentation, labels, registry=registry)


class CollectorMetrics:
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
        self._max_agents = max_agents
        self._max_length = max_label_length
        self._caps = {"tools": max_tools_per_agent, "models": max_models_per_agent, "versions": max_versions_per_agent}
        self._agents: dict[str, _AgentLabels] = {}
        self._run_children: dict[tuple[str, str], _RunSeries] = {}
        self._tool_keys: dict[tuple[str, str, str, str, str], tuple[str, str, str, str, str]] = {}
        self._other_agent = self._new_agent(OTHER)
        self._unknown_agent = self._new_agent(UNKNOWN)
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

    def _new_agent(self, label: str) -> _AgentLabels:
        caps = self._caps
        return _AgentLabels(
            label, tools=caps["tools"], models=caps["models"], versions=caps["versions"], max_length=self._max_length
        )

    # --- label resolution (callers hold the lock) -------------------------------------------

    def _agent(self, name: object) -> _AgentLabels:
        if type(name) is str:
            state = self._agents.get(name)  # fast path: a name seen before is its own (clean) label
            if state is not None:
                return state
        label = clean_label(name, self._max_length)
        state = self._agents.get(label)
        if state is not None:
            return state
        if label == UNKNOWN:
            return self._unknown_agent
        if label == OTHER or len(self._agents) >= self._max_agents:
            return self._other_agent
        state = self._agents[label] = self._new_agent(label)
        return state

    # --- agent metrics from spans ---------------------------------------------------------------

    def observe_rows(self, rows: Iterable[Mapping[str, object]]) -> None:
        """Derive the agent metrics from span rows; never raises on malformed rows (they are skipped)."""
        spans: list[tuple[object, object]] = []
        for row in rows:
            try:
                spans.append((row.get("SpanAttributes"), row.get("Duration")))
            except AttributeError:
                continue  # not a mapping: a malformed row
        self.observe_spans(spans)

    def observe_spans(self, spans: Iterable[tuple[object, object]]) -> None:
        """``observe_rows`` from each row's ``(SpanAttributes, Duration)`` only, as ``Converted.spans`` gives them."""
        runs: list[tuple[_AgentLabels, str, Mapping[str, object], object]] = []
        tokens: dict[tuple[str, str, str, str], float] = {}
        tools: dict[tuple[str, str, str, str, str], int] = {}
        with self._lock:
            for span_attributes, duration in spans:
                try:
                    attributes = cast("Mapping[str, object]", span_attributes)
                    if not attributes.get(semconv.RUN_ID):
                        continue  # the hot path for foreign spans: one lookup
                except AttributeError:
                    continue  # no attribute mapping: a malformed row
                self._observe_span(attributes, duration, runs, tokens, tools)
            self._flush(runs, tokens, tools)

    def _observe_span(
        self,
        attributes: Mapping[str, object],
        duration: object,
        runs: list[tuple[_AgentLabels, str, Mapping[str, object], object]],
        tokens: dict[tuple[str, str, str, str], float],
        tools: dict[tuple[str, str, str, str, str], int],
    ) -> None:
        # decide whether the span feeds a metric before resolving any label (steps feed none)
        operation = attributes.get(semconv.GEN_AI_OPERATION_NAME)
        if operation == semconv.OP_INVOKE_AGENT:
            # the run span's usage totals its LLM calls, which are counted from their own spans
            if attributes.get(semconv.STOP_REASON):
                runs.append(
                    (
                        self._agent(attributes.get(semconv.GEN_AI_AGENT_NAME)),
                        _closed(attributes.get(semconv.TRACK), _TRACKS),
                        attributes,
                        duration,
                    )
                )
        elif operation == semconv.OP_EXECUTE_TOOL:
            raw = (
                attributes.get(semconv.GEN_AI_AGENT_NAME),
                attributes.get(semconv.TRACK),
                attributes.get(semconv.GEN_AI_TOOL_NAME),
                attributes.get(semconv.TOOL_DISPOSITION),
                attributes.get(semconv.TOOL_OUTCOME),
            )
            try:
                key = self._tool_keys.get(raw)  # type: ignore[arg-type]
            except TypeError:  # an unhashable value in a malformed row
                key = None
            if key is None:
                key = self._tool_key(raw)
            tools[key] = tools.get(key, 0) + 1
        elif (
            operation == semconv.OP_CHAT
            or attributes.get(semconv.GEN_AI_RESPONSE_MODEL)
            or attributes.get(semconv.GEN_AI_REQUEST_MODEL)
        ):
            self._observe_llm(operation, attributes, tokens)  # else no model: not an LLM span (steps)

    def _tool_key(self, raw: tuple[object, object, object, object, object]) -> tuple[str, str, str, str, str]:
        """The label set of a tool call's raw attributes; remembered, as capped labels never change once given."""
        agent_name, track, tool, disposition, outcome = raw
        agent = self._agent(agent_name)
        key = (
            agent.label,
            _closed(track, _TRACKS),
            agent.tools(tool),
            _closed(disposition, _DISPOSITIONS),
            _closed(outcome, _OUTCOMES),
        )
        if all(value is None or type(value) is str for value in raw):
            if len(self._tool_keys) >= _MAX_REMEMBERED_KEYS:
                self._tool_keys.clear()
            self._tool_keys[cast("tuple[str, str, str, str, str]", raw)] = key
        return key

    def _observe_llm(
        self, operation: object, attributes: Mapping[str, object], tokens: dict[tuple[str, str, str, str], float]
    ) -> None:
        model_name = attributes.get(semconv.GEN_AI_RESPONSE_MODEL) or attributes.get(semconv.GEN_AI_REQUEST_MODEL)
        if operation != semconv.OP_CHAT and not model_name:
            return  # usage without a model is not attributable (and not an LLM span)
        input_tokens = _amount(attributes.get(semconv.GEN_AI_USAGE_INPUT_TOKENS))
        output_tokens = _amount(attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS))
        if not input_tokens and not output_tokens:
            return
        agent = self._agent(attributes.get(semconv.GEN_AI_AGENT_NAME))
        track = _closed(attributes.get(semconv.TRACK), _TRACKS)
        model = agent.models(model_name)
        for direction, count in ((DIRECTION_INPUT, input_tokens), (DIRECTION_OUTPUT, output_tokens)):
            if count:
                key = (agent.label, track, model, direction)
                tokens[key] = tokens.get(key, 0.0) + count

    def _run_series(self, agent: str, track: str) -> _RunSeries:
        """The per-run histograms and the cost counter of one agent and track (children looked up once)."""
        key = (agent, track)
        series = self._run_children.get(key)
        if series is None:
            series = self._run_children[key] = _RunSeries(
                self.run_duration.labels(agent, track),
                self.run_steps.labels(agent, track),
                self.run_tool_calls.labels(agent, track),
                self.run_cost.labels(agent, track),
                self.cost.labels(agent, track),
            )
        return series

    def _flush(
        self,
        runs: list[tuple[_AgentLabels, str, Mapping[str, object], object]],
        tokens: dict[tuple[str, str, str, str], float],
        tools: dict[tuple[str, str, str, str, str], int],
    ) -> None:
        # counters are summed per label set first: one inc per series instead of one per span or run
        finished: dict[tuple[str, str, str], int] = {}
        versions: dict[tuple[str, str, str], None] = {}
        exhausted: dict[tuple[str, str, str], int] = {}
        for agent, track, attributes, duration_ns in runs:
            label = agent.label
            key = (label, track, _closed(attributes.get(semconv.STOP_REASON), semconv.STOP_REASONS))
            finished[key] = finished.get(key, 0) + 1
            versions[(label, track, agent.versions(attributes.get(semconv.GEN_AI_AGENT_VERSION)))] = None
            budget = attributes.get(semconv.BUDGET_EXHAUSTED)
            if budget:
                key = (label, track, _closed(budget, _BUDGETS))
                exhausted[key] = exhausted.get(key, 0) + 1
            series = self._run_series(label, track)
            duration = _amount(duration_ns)
            if duration is not None:
                series.duration.observe(duration / 1e9)
            steps = _amount(attributes.get(semconv.RUN_STEPS))
            if steps is not None:
                series.steps.observe(steps)
            tool_calls = _amount(attributes.get(semconv.RUN_TOOL_CALLS))
            if tool_calls is not None:
                series.tool_calls.observe(tool_calls)
            cost = _amount(attributes.get(semconv.RUN_COST_USD))
            if cost is not None:
                series.cost.observe(cost)
                series.cost_total.inc(cost)  # run by run: the float total is summed as it always was
        for run_labels, count in finished.items():
            self.runs.labels(*run_labels).inc(count)
        for info_labels in versions:
            self.agent_info.labels(*info_labels).set(1)
        for budget_labels, count in exhausted.items():
            self.budget_exhausted.labels(*budget_labels).inc(count)
        for token_labels, amount in tokens.items():
            self.tokens.labels(*token_labels).inc(amount)
        for tool_labels, count in tools.items():
            self.tool_calls.labels(*tool_labels).inc(count)

    def set_drift(self, agent: str, metric: str, evalue: float, verdict: str) -> None:
        """Publish one drift result: the e-value and the verdict (``pass`` 0, ``inconclusive`` 1, ``fail`` 2)."""
        code = VERDICT_CODES.get(verdict)
        if code is None:
            raise ValueError(f"unknown verdict {verdict!r}; expected one of {sorted(VERDICT_CODES)}")
        with self._lock:
            labels = (self._agent(agent).label, self._drift_metrics(metric))
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
    "CONTENT_TYPE",
    "COST_USD_TOTAL",
    "DIRECTION_INPUT",
    "DIRECTION_OUTPUT",
    "DRIFT_FAILED",
    "DRIFT_OK",
    "DRIFT_RESULTS",
    "INSERT_DURATION_BUCKETS",
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
    "REQUEST_BODY_BUCKETS",
    "RUNS_TOTAL",
    "RUN_COST_USD",
    "RUN_COST_USD_BUCKETS",
    "RUN_DURATION_BUCKETS",
    "RUN_DURATION_SECONDS",
    "RUN_STEPS",
    "RUN_STEPS_BUCKETS",
    "RUN_TOOL_CALLS",
    "RUN_TOOL_CALLS_BUCKETS",
    "TOOL_CALLS_TOTAL",
    "UNKNOWN",
    "VERDICT_CODES",
    "VERDICT_FAIL",
    "VERDICT_INCONCLUSIVE",
    "VERDICT_PASS",
    "CollectorMetrics",
    "ExposedRegistry",
    "clean_label",
]
