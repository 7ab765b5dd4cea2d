"""Foreign traces become runs: spans of other GenAI dialects, gathered per trace, read at its root.

A run written by agentwatch is one span that says everything (``invoke_agent`` with the stop
reason and totals). A run written in another dialect is scattered over the spans of a trace, and
those arrive over several export requests. The rules, which README's "Already instrumented?"
spells out:

- **The run is the trace.** Its id is the trace id (32 hex), its span is the trace's root. It is
  read when the root arrives: a process exports a span when it ends, and a span ends after its
  children, so by then every span of the trace from that process has been seen. The root is
  stamped (``agentwatch.*`` attributes added, nothing changed) and the usual views and metrics
  take it from there; a root that is an LLM or tool call alone is not a run.
- **Counted once.** LLM calls nested in LLM calls are one call (two instrumentations of the same
  call: the client library's span inside a framework's); agentwatch's own span counts if the nest
  has one, else the outermost. The same holds for tool calls, except that in a trace agentwatch
  instruments, its gateway's spans are the only tool calls (every governed call goes through it).
  A foreign LLM call agentwatch did not record counts under agentwatch's run labels.
- **Stop reasons** come from what the frameworks raise: max turns / recursion limits →
  ``max_steps``, guardrail tripwires → ``guardrail``, cancellation → ``cancelled``, any other
  error on the root or an agent span → ``error``, else ``completed``.
- A trace whose root never arrives (its caller is not instrumented, or exports elsewhere) is
  dropped after ``idle_seconds``: its LLM and tool calls are counted in the metrics, with no run.

All state is this process's memory: one trace's spans must reach one collector replica (as for
tail sampling, route by trace id), and traces open at a restart are counted only in their rows.
``stage`` is called under ``lock`` with the spool write and undone with ``rollback`` when the
write fails, so a retried request is read exactly once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION

from agentwatch.collectors.ingest.dialects import DIALECT, RUN_TOOLS, Role, SpanFacts, is_own, own_role, read_span
from agentwatch.collectors.ingest.otlp import Converted, encode_rows
from agentwatch.collectors.ingest.otlp_types import ROW_COLUMNS
from agentwatch.instrumentation import semconv
from agentwatch.instrumentation.pricing import PriceTable

_TIMESTAMP, _TRACE, _SPAN, _PARENT = (ROW_COLUMNS.index(c) for c in ("Timestamp", "TraceId", "SpanId", "ParentSpanId"))
_NAME, _RESOURCE, _SCOPE = (ROW_COLUMNS.index(c) for c in ("SpanName", "ResourceAttributes", "ScopeName"))
_ATTRIBUTES, _DURATION = ROW_COLUMNS.index("SpanAttributes"), ROW_COLUMNS.index("Duration")
_STATUS, _MESSAGE = ROW_COLUMNS.index("StatusCode"), ROW_COLUMNS.index("StatusMessage")
_EVENTS: Final = ROW_COLUMNS.index("Events.Timestamp")  # the tuple of the three Events.* columns

_MAX_TOOLS_STAMPED: Final = 1000
_OUTCOMES: Final = {False: semconv.ToolOutcome.OK.value, True: semconv.ToolOutcome.ERROR.value}
_ENVIRONMENTS: Final = ("deployment.environment.name", "deployment.environment")
_TRACKS: Final = frozenset(track.value for track in semconv.Track)
# what a framework's error says -> the stop reason it means; read from status messages, exception
# types and messages, and error.type (first match wins, in this order)
_SIGNALS: Final = (
    ("GuardrailTripwireTriggered", semconv.StopReason.GUARDRAIL),
    ("Guardrail tripwire", semconv.StopReason.GUARDRAIL),
    ("MaxTurnsExceeded", semconv.StopReason.MAX_STEPS),
    ("Max turns", semconv.StopReason.MAX_STEPS),
    ("GraphRecursionError", semconv.StopReason.MAX_STEPS),
    ("Recursion limit", semconv.StopReason.MAX_STEPS),
    ("CancelledError", semconv.StopReason.CANCELLED),
    ("KeyboardInterrupt", semconv.StopReason.CANCELLED),
)
_SIGNAL_ORDER: Final = {reason: rank for rank, (_, reason) in enumerate(reversed(_SIGNALS))}

Observation = tuple[dict[str, str], int]
"""A span's attributes and duration as ``CollectorMetrics.observe_spans`` reads them."""


@dataclass(slots=True)
class _Span:
    span_id: str
    parent: str
    role: Role
    own: bool
    facts: SpanFacts | None
    start_ns: int
    duration_ns: int
    error: bool
    signal: str


_Calls = tuple[list["_Span"], list["_Span"]]  # a trace's counted LLM calls and tool calls


@dataclass(slots=True)
class _Trace:
    spans: dict[str, _Span] = field(default_factory=dict)
    foreign: bool = False
    own: bool = False  # agentwatch instruments this trace: its spans are the run and its tool calls
    own_labels: tuple[str, str] | None = None  # agent, track of agentwatch's run in this trace
    resource: Mapping[str, str] | None = None  # of the first foreign span
    service: str = ""
    touched: float = 0.0


@dataclass(slots=True)
class Staged:
    """What one request did to the assembler: its observations, and how to undo it."""

    observations: list[Observation] = field(default_factory=list)
    runs: int = 0
    _undo: list[Callable[[], object]] = field(default_factory=list)
    _stamped: set[int] = field(default_factory=set)


def _signal(text: str) -> str:
    for needle, reason in _SIGNALS:
        if needle in text:
            return reason.value
    return ""


def _span_signal(values: tuple[object, ...], attributes: Mapping[str, str]) -> str:
    """The stop reason a span's error names, if it names one we know."""
    texts = [str(values[_MESSAGE]), attributes.get(semconv.ERROR_TYPE, "")]
    events = values[_EVENTS]
    if isinstance(events, tuple) and len(events) == 3:
        for name, event_attributes in zip(events[1], events[2], strict=False):
            if name == "exception" and isinstance(event_attributes, Mapping):
                texts.append(event_attributes.get("exception.type", ""))
                texts.append(event_attributes.get("exception.message", ""))
    found = [reason for reason in map(_signal, texts) if reason]
    return max(found, key=lambda reason: _SIGNAL_ORDER[semconv.StopReason(reason)]) if found else ""


def _start_ns(timestamp: object) -> int:
    text = str(timestamp)  # "SSSSSSSSSS.NNNNNNNNN", as convert writes it
    return int(text.replace(".", "")) if text.replace(".", "").isdigit() else 0


def _track(attributes: Mapping[str, str], resource: Mapping[str, str]) -> str:
    """``agentwatch.track`` of the span or resource, else a deployment environment that names a track."""
    for source in (attributes, resource):
        track = source.get(semconv.TRACK, "")
        if track:
            return track
    for key in _ENVIRONMENTS:
        environment = resource.get(key, "")
        if environment in _TRACKS:
            return environment
    return semconv.Track.STABLE.value


class RunAssembler:
    """Gathers the spans of open traces and turns each foreign trace into a run when its root arrives."""

    def __init__(
        self,
        prices: PriceTable | None = None,
        *,
        idle_seconds: float = 300.0,
        max_traces: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = threading.Lock()
        self._prices = prices or PriceTable.default()
        self._idle = idle_seconds
        self._max_traces = max_traces
        self._clock = clock
        self._traces: OrderedDict[tuple[str, str], _Trace] = OrderedDict()
        self._closed: OrderedDict[tuple[str, str], None] = OrderedDict()

    @property
    def open_traces(self) -> int:
        return len(self._traces)

    # -- one request --------------------------------------------------------------------------

    def stage(self, converted: Converted) -> Staged:
        """Register the request's spans; read the runs whose roots it holds (stamping their rows)."""
        staged = Staged()
        now = self._clock()
        rows = converted.values
        relevant: set[tuple[str, str]] = set()
        facts: list[SpanFacts | None] = []
        for index, values in enumerate(rows):
            attributes: dict[str, str] = values[_ATTRIBUTES]  # type: ignore[assignment]
            key = (attributes.get(semconv.TENANT_ID, ""), str(values[_TRACE]))
            fact = read_span(attributes, values[_RESOURCE], str(values[_SCOPE]), str(values[_NAME]))  # type: ignore[arg-type]
            facts.append(fact)
            if fact is not None or semconv.RUN_ID in attributes or key in self._traces:
                relevant.add(key)
            if fact is not None and semconv.RUN_ID in attributes:
                # a foreign span inside agentwatch's run: marked, so that the metrics of the rows'
                # own spans skip it, and counted here if agentwatch did not record the same call
                self._stamp(converted, index, {DIALECT: fact.dialect.value}, staged)
        if not relevant:
            self._encode(converted, staged)
            return staged
        roots: list[tuple[int, tuple[str, str]]] = []
        for index, values in enumerate(rows):
            attributes = values[_ATTRIBUTES]  # type: ignore[assignment]
            key = (attributes.get(semconv.TENANT_ID, ""), str(values[_TRACE]))
            if key not in relevant or key in self._closed:
                continue
            trace = self._open(key, staged)
            trace.touched = now
            self._register(trace, values, facts[index], staged)
            if not values[_PARENT]:
                roots.append((index, key))
        for index, key in roots:
            self._close(key, converted, index, staged)
        self._encode(converted, staged)
        return staged

    def rollback(self, staged: Staged) -> None:
        """Undo ``stage`` (the request was not stored, and its client will send it again)."""
        for undo in reversed(staged._undo):
            undo()
        staged._undo.clear()

    def expire(self) -> list[Observation]:
        """Drop traces idle for longer than ``idle_seconds`` (or beyond the cap); count their calls."""
        observations: list[Observation] = []
        deadline = self._clock() - self._idle
        while self._traces:
            key, trace = next(iter(self._traces.items()))
            if trace.touched > deadline and len(self._traces) <= self._max_traces:
                break
            del self._traces[key]
            if trace.foreign:
                observations.extend(self._calls(key, trace, run_id=key[1], labels=None)[0])
        return observations

    # -- state ----------------------------------------------------------------------------------

    def _open(self, key: tuple[str, str], staged: Staged) -> _Trace:
        trace = self._traces.get(key)
        if trace is None:
            trace = self._traces[key] = _Trace()
            staged._undo.append(lambda: self._traces.pop(key, None))
        else:
            self._traces.move_to_end(key)
        return trace

    def _register(self, trace: _Trace, values: tuple[object, ...], fact: SpanFacts | None, staged: Staged) -> None:
        attributes: dict[str, str] = values[_ATTRIBUTES]  # type: ignore[assignment]
        span_id = str(values[_SPAN])
        if span_id in trace.spans:
            return  # sent again (a re-export): already known
        own = fact is None and is_own(attributes, str(values[_SCOPE]))
        role = fact.role if fact is not None else (own_role(attributes) if own else Role.OTHER)
        error = values[_STATUS] == "Error"
        trace.spans[span_id] = _Span(
            span_id=span_id,
            parent=str(values[_PARENT]),
            role=role,
            own=own,
            facts=fact,
            start_ns=_start_ns(values[_TIMESTAMP]),
            duration_ns=int(values[_DURATION]),  # type: ignore[call-overload]
            error=error,
            signal=_span_signal(values, attributes) if error or values[_EVENTS] else "",
        )
        staged._undo.append(lambda: trace.spans.pop(span_id, None))
        if own or (fact is not None and semconv.RUN_ID in attributes):
            trace.own = True  # (the run id on a foreign span: agentwatch's processor put it there)
        if own and trace.own_labels is None and attributes.get(semconv.GEN_AI_AGENT_NAME):
            trace.own_labels = (attributes[semconv.GEN_AI_AGENT_NAME], attributes.get(semconv.TRACK, ""))
        if fact is not None and not trace.foreign:
            trace.foreign = True
            trace.resource = values[_RESOURCE]  # type: ignore[assignment]
            trace.service = str(attributes.get(SERVICE_NAME) or trace.resource.get(SERVICE_NAME, ""))  # type: ignore[union-attr]

    # -- reading a trace ------------------------------------------------------------------------

    def _close(self, key: tuple[str, str], converted: Converted, index: int, staged: Staged) -> None:
        trace = self._traces.pop(key, None)
        if trace is None:
            return
        self._closed[key] = None
        while len(self._closed) > self._max_traces:
            self._closed.popitem(last=False)

        def reopen() -> None:
            self._closed.pop(key, None)
            self._traces[key] = trace

        staged._undo.append(reopen)
        if not trace.foreign:
            return  # agentwatch's own trace: its spans say everything
        if trace.own:
            labels = trace.own_labels or ("", "")
            staged.observations.extend(self._calls(key, trace, run_id=key[1], labels=labels)[0])
            return
        root_id = str(converted.values[index][_SPAN])
        root = trace.spans[root_id]
        is_run = root.role is Role.AGENT or (
            root.role is Role.OTHER and any(s.role in (Role.AGENT, Role.LLM) for s in trace.spans.values() if not s.own)
        )
        if not is_run:
            staged.observations.extend(self._calls(key, trace, run_id=key[1], labels=None)[0])
            return
        labels = self._run_labels(trace, converted.values[index])
        calls, llm, tools = self._calls(key, trace, run_id=key[1], labels=labels)
        staged.observations.extend(calls)
        stamps = self._run_stamps(key, trace, root_id, labels, calls=(llm, tools))
        self._stamp(converted, index, stamps, staged)
        observed = dict(converted.values[index][_ATTRIBUTES])  # type: ignore[call-overload]
        observed[semconv.GEN_AI_OPERATION_NAME] = semconv.OP_INVOKE_AGENT
        observed.pop(DIALECT, None)
        staged.observations.append((observed, root.duration_ns))
        staged.runs += 1

    def _ancestors(self, trace: _Trace, span_id: str) -> list[_Span]:
        found: list[_Span] = []
        seen = {span_id}
        parent = trace.spans[span_id].parent
        while parent and parent not in seen and (span := trace.spans.get(parent)) is not None:
            found.append(span)
            seen.add(parent)
            parent = span.parent
        return found

    def _counted(self, trace: _Trace, role: Role) -> list[_Span]:
        """The foreign spans of ``role`` that count: one per nest, none where agentwatch's own span is."""
        covered: set[int] = set()
        for span_id, span in trace.spans.items():
            if span.own and span.role is role:
                covered.update(id(ancestor) for ancestor in self._ancestors(trace, span_id))
        counted = []
        for span_id, span in trace.spans.items():
            if span.own or span.role is not role or id(span) in covered:
                continue
            if any(ancestor.role is role for ancestor in self._ancestors(trace, span_id)):
                continue
            counted.append(span)
        return counted

    def _calls(
        self, key: tuple[str, str], trace: _Trace, *, run_id: str, labels: tuple[str, str] | None
    ) -> tuple[list[Observation], list[_Span], list[_Span]]:
        """Observations of a trace's counted LLM and tool calls, and those calls."""
        agent, track = labels or (trace.service, _track({}, trace.resource or {}))
        base = {semconv.RUN_ID: run_id, semconv.GEN_AI_AGENT_NAME: agent, semconv.TRACK: track}
        if key[0]:
            base[semconv.TENANT_ID] = key[0]
        observations: list[Observation] = []
        llm = self._counted(trace, Role.LLM)
        for span in llm:
            facts = span.facts
            assert facts is not None
            observations.append(
                (
                    {
                        **base,
                        semconv.GEN_AI_OPERATION_NAME: semconv.OP_CHAT,
                        semconv.GEN_AI_RESPONSE_MODEL: facts.model,
                        semconv.GEN_AI_USAGE_INPUT_TOKENS: str(facts.input_tokens),
                        semconv.GEN_AI_USAGE_OUTPUT_TOKENS: str(facts.output_tokens),
                    },
                    span.duration_ns,
                )
            )
        tools = [] if trace.own else self._counted(trace, Role.TOOL)
        for span in tools:
            assert span.facts is not None
            observations.append(
                (
                    {
                        **base,
                        semconv.GEN_AI_OPERATION_NAME: semconv.OP_EXECUTE_TOOL,
                        semconv.GEN_AI_TOOL_NAME: span.facts.tool,
                        semconv.TOOL_DISPOSITION: semconv.ToolDisposition.UNGOVERNED.value,
                        semconv.TOOL_OUTCOME: (
                            semconv.ToolOutcome.ERROR if span.error else semconv.ToolOutcome.OK
                        ).value,
                    },
                    span.duration_ns,
                )
            )
        return observations, llm, tools

    def _run_labels(self, trace: _Trace, root: Sequence[object]) -> tuple[str, str]:
        """The run's agent (its outermost named agent span, else the service) and track."""
        agents = [
            (not span.facts.agent_named, len(self._ancestors(trace, span_id)), span.start_ns, span.facts.agent)
            for span_id, span in trace.spans.items()
            if span.facts is not None and span.role is Role.AGENT and span.facts.agent
        ]
        named = [entry for entry in agents if not entry[0]]
        if named:
            agent = min(named)[3]
        elif agents:
            # span names only (OpenInference): the workflow root is named after the workflow, its
            # first agent span after the agent
            children = [entry for entry in agents if entry[1] > 0]
            agent = min(children or agents, key=lambda entry: (entry[2], entry[1]))[3]
        else:
            agent = trace.service or "unknown"
        return agent, _track(root[_ATTRIBUTES], root[_RESOURCE])  # type: ignore[arg-type]

    def _stop_reason(self, trace: _Trace, root_id: str) -> str:
        signals = [span.signal for span in trace.spans.values() if span.signal and not span.own]
        if signals:
            return max(signals, key=lambda reason: _SIGNAL_ORDER[semconv.StopReason(reason)])
        root = trace.spans[root_id]
        if root.error or any(span.error for span in trace.spans.values() if span.role is Role.AGENT and not span.own):
            return semconv.StopReason.ERROR.value
        return semconv.StopReason.COMPLETED.value

    def _run_stamps(
        self, key: tuple[str, str], trace: _Trace, root_id: str, labels: tuple[str, str], *, calls: _Calls
    ) -> dict[str, str]:
        llm, tools = calls
        root = trace.spans[root_id]
        facts = [span.facts for span in trace.spans.values() if span.facts is not None]
        cost = 0.0
        unpriced = 0
        for span in llm:
            assert span.facts is not None
            price = self._prices.cost(
                span.facts.model,
                input_tokens=span.facts.input_tokens,
                output_tokens=span.facts.output_tokens,
                cached_input_tokens=min(span.facts.cached_input_tokens, span.facts.input_tokens),
            )
            if price is None:
                price = span.facts.native_cost_usd
            if price is None:
                unpriced += 1
            else:
                cost += price
        resource = trace.resource or {}
        root_facts = root.facts
        stamps = {
            DIALECT: (root_facts or facts[0]).dialect.value if (root_facts or facts) else "",
            semconv.RUN_ID: key[1],
            semconv.STOP_REASON: self._stop_reason(trace, root_id),
            semconv.TRACK: labels[1],
            semconv.RUNTIME: next((f.runtime for f in facts if f.runtime), "") or "other",
            semconv.RUN_STEPS: str(len(llm)),
            semconv.RUN_TOOL_CALLS: str(len(tools)),
            semconv.RUN_LLM_CALLS: str(len(llm)),
            semconv.RUN_COST_USD: repr(cost),
            semconv.RUN_UNPRICED_LLM_CALLS: str(unpriced),
        }
        if tools:
            stamps[RUN_TOOLS] = json.dumps(
                [
                    [
                        s.span_id,
                        s.parent,
                        s.facts.tool,
                        s.facts.tool_call_id,
                        s.facts.tool_type,
                        str(s.start_ns),
                        s.duration_ns,
                        int(s.error),
                    ]
                    for s in sorted(tools, key=lambda span: span.start_ns)[:_MAX_TOOLS_STAMPED]
                    if s.facts is not None
                ],
                separators=(",", ":"),
            )
        added = {
            semconv.GEN_AI_AGENT_NAME: labels[0],
            semconv.GEN_AI_AGENT_VERSION: next((f.agent_version for f in facts if f.agent_version), "")
            or resource.get(SERVICE_VERSION, ""),
            semconv.GEN_AI_CONVERSATION_ID: next((f.conversation for f in facts if f.conversation), ""),
            semconv.GEN_AI_USAGE_INPUT_TOKENS: str(sum(s.facts.input_tokens for s in llm if s.facts)),
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: str(sum(s.facts.output_tokens for s in llm if s.facts)),
        }
        return {**{k: v for k, v in added.items() if v}, **stamps}

    def _stamp(self, converted: Converted, index: int, stamps: Mapping[str, str], staged: Staged) -> None:
        """Add ``stamps`` to a row's attributes (keeping any the span has); ``_encode`` rewrites its line."""
        attributes: dict[str, str] = converted.values[index][_ATTRIBUTES]  # type: ignore[assignment]
        before = dict(attributes)
        line = converted.lines[index]
        for name, value in stamps.items():
            if name.startswith("agentwatch.") or name not in attributes:
                attributes[name] = value
        staged._stamped.add(index)

        def unstamp() -> None:
            attributes.clear()
            attributes.update(before)
            converted.lines[index] = line

        staged._undo.append(unstamp)

    @staticmethod
    def _encode(converted: Converted, staged: Staged) -> None:
        """Rewrite the JSON lines of the stamped rows from their values (rows are rebuilt once)."""
        if not staged._stamped:
            return
        converted._rows = None
        rows = converted.rows
        for index in staged._stamped:
            converted.lines[index] = encode_rows([rows[index]]).decode("utf-8")


__all__ = ["Observation", "RunAssembler", "Staged"]
