"""The agent metrics derived from converted spans: runs, tools, tokens, budgets and versions.

Only spans carrying ``agentwatch.run.id`` count; every other span is skipped after one lookup.
Runs read from other GenAI dialects arrive as observations the ingest assembler makes (the
stamped root span of such a run, marked ``agentwatch.dialect``, is skipped here).
Counters are summed per label set over a batch first, so a batch costs one ``inc`` per series
rather than one per span.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, cast

from prometheus_client import Counter, Gauge, Histogram

from agentwatch.collectors.metric_names import DIRECTION_INPUT, DIRECTION_OUTPUT
from agentwatch.collectors.metrics.labels import (
    _BUDGETS,
    _DISPOSITIONS,
    _OUTCOMES,
    _TRACKS,
    _AgentLabels,
    _Agents,
    _closed,
)
from agentwatch.instrumentation import semconv

_MAX_REMEMBERED_KEYS: Final = 10_000  # raw attribute tuples -> label sets; emptied when full

_Run = tuple[_AgentLabels, str, Mapping[str, object], object]  # agent, track, attributes, duration
_TokenKey = tuple[str, str, str, str]  # agent, track, model, direction
_ToolKey = tuple[str, str, str, str, str]  # agent, track, tool, disposition, outcome


def _amount(value: object) -> float | None:
    """A non-negative finite number from an attribute string, else None (never raises)."""
    if value is None or type(value) is bool:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]  # any str/int/float; the rest is caught below
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0.0 <= number < math.inf else None


@dataclass(frozen=True, slots=True)
class _RunSeries:
    """The children of the per-run metrics for one (agent, track): ``labels()`` costs more than an observation."""

    duration: Histogram
    steps: Histogram
    tool_calls: Histogram
    cost: Histogram
    cost_total: Counter


class _SpanMetrics:
    """The span half of ``CollectorMetrics``, which builds the families and the label state declared here."""

    _lock: threading.Lock
    _agents: _Agents
    _run_children: dict[tuple[str, str], _RunSeries]
    _tool_keys: dict[_ToolKey, _ToolKey]
    runs: Counter
    run_duration: Histogram
    run_steps: Histogram
    run_tool_calls: Histogram
    run_cost: Histogram
    cost: Counter
    tokens: Counter
    tool_calls: Counter
    budget_exhausted: Counter
    agent_info: Gauge

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
        runs: list[_Run] = []
        tokens: dict[_TokenKey, float] = {}
        tools: dict[_ToolKey, int] = {}
        with self._lock:
            for span_attributes, duration in spans:
                try:
                    attributes = cast("Mapping[str, object]", span_attributes)
                    if not attributes.get(semconv.RUN_ID):
                        continue  # the hot path for foreign spans: one lookup
                    if semconv.DIALECT in attributes:
                        continue  # a foreign run's root: ingest's assembler observes the run for it
                except AttributeError:
                    continue  # no attribute mapping: a malformed row
                self._observe_span(attributes, duration, runs, tokens, tools)
            self._flush(runs, tokens, tools)

    def _observe_span(
        self,
        attributes: Mapping[str, object],
        duration: object,
        runs: list[_Run],
        tokens: dict[_TokenKey, float],
        tools: dict[_ToolKey, int],
    ) -> None:
        # decide whether the span feeds a metric before resolving any label (steps feed none)
        operation = attributes.get(semconv.GEN_AI_OPERATION_NAME)
        if operation == semconv.OP_INVOKE_AGENT:
            # the run span's usage totals its LLM calls, which are counted from their own spans
            if attributes.get(semconv.STOP_REASON):
                runs.append(
                    (
                        self._agents(attributes.get(semconv.GEN_AI_AGENT_NAME)),
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

    def _tool_key(self, raw: tuple[object, object, object, object, object]) -> _ToolKey:
        """The label set of a tool call's raw attributes; remembered, as capped labels never change once given."""
        agent_name, track, tool, disposition, outcome = raw
        agent = self._agents(agent_name)
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
            self._tool_keys[cast("_ToolKey", raw)] = key
        return key

    def _observe_llm(self, operation: object, attributes: Mapping[str, object], tokens: dict[_TokenKey, float]) -> None:
        model_name = attributes.get(semconv.GEN_AI_RESPONSE_MODEL) or attributes.get(semconv.GEN_AI_REQUEST_MODEL)
        if operation != semconv.OP_CHAT and not model_name:
            return  # usage without a model is not attributable (and not an LLM span)
        input_tokens = _amount(attributes.get(semconv.GEN_AI_USAGE_INPUT_TOKENS))
        output_tokens = _amount(attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS))
        if not input_tokens and not output_tokens:
            return
        agent = self._agents(attributes.get(semconv.GEN_AI_AGENT_NAME))
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

    def _flush(self, runs: list[_Run], tokens: dict[_TokenKey, float], tools: dict[_ToolKey, int]) -> None:
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


__all__: list[str] = []
