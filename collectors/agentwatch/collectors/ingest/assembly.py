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
  There, a foreign LLM call counts (under agentwatch's run labels) only if no own call of the
  trace has its usage (``trace_reading.unrecorded``): side-by-side trees of one runtime do not nest.
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

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME

from agentwatch.collectors.ingest.dialects import DIALECT, Role, SpanFacts, is_own, own_role, read_span
from agentwatch.collectors.ingest.otlp import Converted, encode_rows
from agentwatch.collectors.ingest.otlp_types import ROW_COLUMNS
from agentwatch.collectors.ingest.trace_reading import (
    Observation,
    OpenTrace,
    TraceSpan,
    counted_calls,
    run_labels,
    run_stamps,
    signal_of,
    strongest_signal,
)
from agentwatch.instrumentation import semconv
from agentwatch.instrumentation.pricing import PriceTable

_TIMESTAMP, _TRACE, _SPAN, _PARENT = (ROW_COLUMNS.index(c) for c in ("Timestamp", "TraceId", "SpanId", "ParentSpanId"))
_NAME, _RESOURCE, _SCOPE = (ROW_COLUMNS.index(c) for c in ("SpanName", "ResourceAttributes", "ScopeName"))
_SERVICE: Final = ROW_COLUMNS.index("ServiceName")
_ATTRIBUTES, _DURATION = ROW_COLUMNS.index("SpanAttributes"), ROW_COLUMNS.index("Duration")
_STATUS, _MESSAGE = ROW_COLUMNS.index("StatusCode"), ROW_COLUMNS.index("StatusMessage")
_EVENTS: Final = ROW_COLUMNS.index("Events.Timestamp")  # the tuple of the three Events.* columns

_MAX_MIXED_RESOURCES: Final = 10_000
_PROCESS_KEYS: Final = ("service.instance.id", "process.pid", "host.name")


@dataclass(slots=True)
class Staged:
    """What one request did to the assembler: its observations, and how to undo it."""

    observations: list[Observation] = field(default_factory=list)
    runs: int = 0
    _undo: list[Callable[[], object]] = field(default_factory=list)
    _stamped: set[int] = field(default_factory=set)


def _span_signal(values: tuple[object, ...], attributes: Mapping[str, str]) -> str:
    """The stop reason a span's error names, if it names one we know."""
    texts = [str(values[_MESSAGE]), attributes.get(semconv.ERROR_TYPE, "")]
    events = values[_EVENTS]
    if isinstance(events, tuple) and len(events) == 3:
        for name, event_attributes in zip(events[1], events[2], strict=False):
            if name == "exception" and isinstance(event_attributes, Mapping):
                texts.append(event_attributes.get("exception.type", ""))
                texts.append(event_attributes.get("exception.message", ""))
    return strongest_signal([reason for reason in map(signal_of, texts) if reason])


def _key(values: tuple[object, ...]) -> tuple[str, str]:
    """A trace's key: the tenant (stamped at ingest) and the trace id."""
    attributes: Mapping[str, str] = values[_ATTRIBUTES]  # type: ignore[assignment]
    return attributes.get(semconv.TENANT_ID, ""), str(values[_TRACE])


def _resource_identity(values: tuple[object, ...]) -> tuple[str, ...]:
    """Which process wrote a span, as far as its resource says."""
    resource: Mapping[str, str] = values[_RESOURCE]  # type: ignore[assignment]
    return (*tuple(resource.get(key, "") for key in _PROCESS_KEYS), str(values[_SERVICE]))


def _tokens(attributes: Mapping[str, str], key: str) -> int:
    try:
        return int(float(attributes.get(key) or 0))
    except (ValueError, OverflowError):
        return 0


def _start_ns(timestamp: object) -> int:
    text = str(timestamp)  # "SSSSSSSSSS.NNNNNNNNN", as convert writes it
    return int(text.replace(".", "")) if text.replace(".", "").isdigit() else 0


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
        self._traces: OrderedDict[tuple[str, str], OpenTrace] = OrderedDict()
        self._closed: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._mixed: OrderedDict[tuple[str, ...], None] = OrderedDict()  # resources writing foreign GenAI spans

    @property
    def open_traces(self) -> int:
        return len(self._traces)

    # -- one request --------------------------------------------------------------------------

    def stage(self, converted: Converted) -> Staged:
        """Register the request's spans; read the runs whose roots it holds (stamping their rows).

        agentwatch's own spans are registered only when their process also writes another
        dialect's GenAI spans (a ``mixed`` resource): elsewhere nothing needs them, and they are
        most of the traffic, so they cost one string comparison each.
        """
        staged = Staged()
        rows = converted.values
        facts: list[SpanFacts | None] = [None] * len(rows)
        relevant: set[tuple[str, str]] = set()
        own_rows: list[int] = []
        mixed_here: set[int] = set()  # id() of this request's resources that wrote foreign GenAI spans
        for index, values in enumerate(rows):
            scope = values[_SCOPE]
            if scope == semconv.INSTRUMENTATION_SCOPE:
                own_rows.append(index)
                continue
            attributes: dict[str, str] = values[_ATTRIBUTES]  # type: ignore[assignment]
            fact = read_span(attributes, values[_RESOURCE], str(scope), str(values[_NAME]))  # type: ignore[arg-type]
            if fact is None:
                if semconv.RUN_ID in attributes and is_own(attributes, str(scope)):
                    own_rows.append(index)
                elif self._traces and (key := _key(values)) in self._traces:
                    relevant.add(key)  # a plain span of an open trace: its place in the tree
                continue
            facts[index] = fact
            relevant.add(_key(values))
            if id(values[_RESOURCE]) not in mixed_here:
                mixed_here.add(id(values[_RESOURCE]))
                self._remember_mixed(values)
            if semconv.RUN_ID in attributes:
                # a foreign span inside agentwatch's run: marked, so that the metrics of the rows'
                # own spans skip it, and counted here if agentwatch did not record the same call
                self._stamp(converted, index, {DIALECT: fact.dialect.value}, staged)
        known: dict[int, bool] = {}
        for index in own_rows:
            values = rows[index]
            mixed = known.get(id(values[_RESOURCE]))
            if mixed is None:
                mixed = id(values[_RESOURCE]) in mixed_here or _resource_identity(values) in self._mixed
                known[id(values[_RESOURCE])] = mixed
            if mixed:
                relevant.add(_key(values))
        if relevant:
            self._read(converted, facts, relevant, staged)
        self._encode(converted, staged)
        return staged

    def _read(
        self, converted: Converted, facts: list[SpanFacts | None], relevant: set[tuple[str, str]], staged: Staged
    ) -> None:
        """Register the spans of the relevant traces, then read the traces whose roots came."""
        now = self._clock()
        roots: list[tuple[int, tuple[str, str]]] = []
        for index, values in enumerate(converted.values):
            key = _key(values)
            if key not in relevant or key in self._closed:
                continue
            trace = self._open(key, staged)
            trace.touched = now
            self._register(trace, values, facts[index], staged)
            if not values[_PARENT]:
                roots.append((index, key))
        for index, key in roots:
            self._close(key, converted, index, staged)

    def _remember_mixed(self, values: tuple[object, ...]) -> None:
        identity = _resource_identity(values)
        if identity in self._mixed:
            self._mixed.move_to_end(identity)
            return
        self._mixed[identity] = None
        if len(self._mixed) > _MAX_MIXED_RESOURCES:
            self._mixed.popitem(last=False)

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
                observations.extend(counted_calls(key, trace, run_id=key[1], labels=None)[0])
        return observations

    # -- state ----------------------------------------------------------------------------------

    def _open(self, key: tuple[str, str], staged: Staged) -> OpenTrace:
        trace = self._traces.get(key)
        if trace is None:
            trace = self._traces[key] = OpenTrace()
            staged._undo.append(lambda: self._traces.pop(key, None))
        else:
            self._traces.move_to_end(key)
        return trace

    def _register(self, trace: OpenTrace, values: tuple[object, ...], fact: SpanFacts | None, staged: Staged) -> None:
        attributes: dict[str, str] = values[_ATTRIBUTES]  # type: ignore[assignment]
        span_id = str(values[_SPAN])
        if span_id in trace.spans:
            return  # sent again (a re-export): already known
        own = fact is None and is_own(attributes, str(values[_SCOPE]))
        role = fact.role if fact is not None else (own_role(attributes) if own else Role.OTHER)
        error = values[_STATUS] == "Error"
        trace.spans[span_id] = TraceSpan(
            span_id=span_id,
            parent=str(values[_PARENT]),
            role=role,
            own=own,
            facts=fact,
            start_ns=_start_ns(values[_TIMESTAMP]),
            duration_ns=int(values[_DURATION]),  # type: ignore[call-overload]
            error=error,
            signal=_span_signal(values, attributes) if error or values[_EVENTS] else "",
            usage=(
                _tokens(attributes, semconv.GEN_AI_USAGE_INPUT_TOKENS),
                _tokens(attributes, semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
            )
            if own and role is Role.LLM
            else (0, 0),
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
            staged.observations.extend(counted_calls(key, trace, run_id=key[1], labels=labels)[0])
            return
        root_id = str(converted.values[index][_SPAN])
        root = trace.spans[root_id]
        is_run = root.role is Role.AGENT or (
            root.role is Role.OTHER and any(s.role in (Role.AGENT, Role.LLM) for s in trace.spans.values() if not s.own)
        )
        if not is_run:
            staged.observations.extend(counted_calls(key, trace, run_id=key[1], labels=None)[0])
            return
        root_values = converted.values[index]
        labels = run_labels(
            trace,
            root_values[_ATTRIBUTES],  # type: ignore[arg-type]
            root_values[_RESOURCE],  # type: ignore[arg-type]
            str(root_values[_NAME]),
        )
        observations, llm, tools = counted_calls(key, trace, run_id=key[1], labels=labels)
        staged.observations.extend(observations)
        stamps = run_stamps(self._prices, key, trace, root_id, labels, calls=(llm, tools))
        self._stamp(converted, index, stamps, staged)
        observed = dict(converted.values[index][_ATTRIBUTES])  # type: ignore[call-overload]
        observed[semconv.GEN_AI_OPERATION_NAME] = semconv.OP_INVOKE_AGENT
        observed.pop(DIALECT, None)
        staged.observations.append((observed, root.duration_ns))
        staged.runs += 1

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
        """Rewrite the JSON lines of the stamped rows (and only those) from their values."""
        if not staged._stamped:
            return
        converted._rows = None  # a cached row would not hold the stamps
        for index in staged._stamped:
            converted.lines[index] = encode_rows([converted.row(index)]).decode("utf-8")


__all__ = ["Observation", "RunAssembler", "Staged"]
