"""Test support: steady agent traffic over OTLP, whose behaviour a test can change to induce an anomaly.

Every run is a real ``agent_run`` of the instrumentation, with a real ``ToolGateway`` and
``Budget``, exported by the official OTLP/HTTP exporter to a collector, exactly as an agent in
production would ship it. A run's *kind* decides how it behaves:

``ok``         one step, an LLM call and an allowed help-center search: ``completed``
``stuck``      keeps searching until its tool-call budget stops it: ``max_tool_calls``
``injected``   a prompt injection steers it into ``db.drop_table``; the gateway denies the call and
               the agent answers anyway: ``completed``, with a ``denied`` tool call
``error``      the model call fails: ``error``

``Traffic`` runs a background thread that emits runs for every (agent, track) at a fixed rate,
choosing kinds from each stream's mix deterministically (smooth weighted round-robin), so shares
are exact over any window and no test flakes on an unlucky draw. ``set_mix`` changes a stream's
behaviour from the next run on and returns the moment it did: the anomaly's start.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agentwatch.instrumentation import (
    AgentRun,
    Budget,
    Policy,
    RunAttributesSpanProcessor,
    ToolDenied,
    ToolGateway,
    agent_run,
)

KINDS = ("ok", "stuck", "injected", "error")
STUCK_TOOL_CALL_BUDGET = 3


class ModelUnavailable(RuntimeError):
    """The scripted model's failure in an ``error`` run."""


def kb_search(query: str) -> list[str]:
    return [f"article about {query[:20]}"]


def db_drop_table(table: str) -> str:
    raise AssertionError("the gateway must never let this through")


def _policy() -> Policy:
    return Policy(allow=["kb.*"], deny=["db.drop*"])


class WeightedCycle:
    """Smooth weighted round-robin: over any run of n picks each kind's count is within 1 of n * share."""

    def __init__(self, mix: Mapping[str, float]) -> None:
        unknown = set(mix) - set(KINDS)
        if unknown or not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
            raise ValueError(f"bad mix {dict(mix)}: kinds are {KINDS}, weights non-negative, not all zero")
        total = sum(mix.values())
        self.shares = {kind: weight / total for kind, weight in mix.items() if weight > 0}
        self._credit = dict.fromkeys(self.shares, 0.0)

    def __next__(self) -> str:
        for kind, share in self.shares.items():
            self._credit[kind] += share
        kind = max(self._credit, key=lambda name: self._credit[name])
        self._credit[kind] -= 1.0
        return kind

    def __iter__(self) -> Iterator[str]:
        return self


@dataclass
class Stream:
    """One (agent, track) stream of runs: its mix and what it has emitted so far."""

    agent: str
    track: str
    cycle: WeightedCycle
    emitted: Counter[str] = field(default_factory=Counter)


class Traffic:
    """Runs agents against a collector at ``runs_per_second`` per stream, in a background thread."""

    def __init__(self, traces_url: str, *, runs_per_second: float = 4.0, service_name: str = "agentwatch-e2e") -> None:
        self.runs_per_second = runs_per_second
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(RunAttributesSpanProcessor())
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url, timeout=10), schedule_delay_millis=200)
        )
        self.gateway = ToolGateway(
            policy=_policy(),
            tools={"kb.search": kb_search, "db.drop_table": db_drop_table},
            tracer_provider=self.provider,
        )
        self._streams: dict[tuple[str, str], Stream] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    # --- what runs --------------------------------------------------------------------------------

    def set_mix(self, agent: str, mix: Mapping[str, float], *, track: str = "stable") -> float:
        """Set (or add) a stream's mix; returns the wall-clock time from which new runs follow it."""
        with self._lock:
            stream = self._streams.get((agent, track))
            if stream is None:
                self._streams[(agent, track)] = Stream(agent, track, WeightedCycle(mix))
            else:
                stream.cycle = WeightedCycle(mix)
            return time.time()

    def emitted(self, agent: str, track: str = "stable") -> Counter[str]:
        with self._lock:
            return Counter(self._streams[(agent, track)].emitted)

    def run_once(self, agent: str, kind: str, *, track: str = "stable") -> str:
        """One run of ``kind``; returns its stop reason."""
        budget = Budget(max_tool_calls=STUCK_TOOL_CALL_BUDGET, max_steps=10)
        try:
            with agent_run(
                agent,
                tenant_id="acme",
                version="v2" if track == "canary" else "v1",
                track=track,
                budget=budget,
                gateway=self.gateway,
                tracer_provider=self.provider,
            ) as run:
                self._behave(run, kind)
        except ModelUnavailable:
            pass  # an ``error`` run re-raises the agent's exception, as the instrumentation promises
        return str(run.stop_reason)

    @staticmethod
    def _behave(run: AgentRun, kind: str) -> None:
        with run.step():
            run.record_llm_call(model="gpt-4o-mini", provider="openai", input_tokens=900, output_tokens=80)
            if kind == "error":
                raise ModelUnavailable("model endpoint returned 503")
            if kind == "injected":
                # the agent is told the call was denied and carries on, as a well-built loop does
                with contextlib.suppress(ToolDenied):
                    run.call_tool("db.drop_table", {"table": "customers"})
            run.call_tool("kb.search", {"query": "shipping"})
        if kind == "stuck":
            while True:  # only the budget ends this; the instrumentation ends the block with max_tool_calls
                with run.step():
                    run.call_tool("kb.search", {"query": "refund policy"})

    # --- the background loop -------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._loop, name="agent-traffic", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        interval = 1.0 / self.runs_per_second
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                with self._lock:
                    batch = [(stream, next(stream.cycle)) for stream in self._streams.values()]
                for stream, kind in batch:
                    self.run_once(stream.agent, kind, track=stream.track)
                    with self._lock:
                        stream.emitted[kind] += 1
                next_tick += interval
                # on a loaded machine fall behind gracefully instead of bursting to catch up
                next_tick = max(next_tick, time.monotonic() - interval)
                self._stop.wait(max(0.0, next_tick - time.monotonic()))
        except BaseException as exc:  # surfaced by check(); a dead generator must fail the test, not hang it
            self.failure = exc

    def check(self) -> None:
        if self.failure is not None:
            raise RuntimeError("traffic generator failed") from self.failure
        assert self._thread is None or self._thread.is_alive(), "traffic generator stopped"

    def flush(self, timeout_s: float = 30.0) -> None:
        assert self.provider.force_flush(int(timeout_s * 1000)), "spans were not exported in time"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.gateway.close()
        self.provider.shutdown()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["KINDS", "STUCK_TOOL_CALL_BUDGET", "Traffic", "WeightedCycle"]
