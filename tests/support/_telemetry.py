"""Helpers for the instrumentation tests: a tracer provider with an in-memory exporter, clocks, spans."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.instrumentation import (
    Budget,
    InstrumentationSettings,
    RunAttributesSpanProcessor,
    RunScope,
    ToolGateway,
    agent_run,
    semconv,
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Telemetry:
    """A provider, its exporter, and helpers to read what was exported."""

    provider: TracerProvider
    exporter: InMemorySpanExporter
    clock: FakeClock
    settings: InstrumentationSettings
    ids: Iterator[int] = field(default_factory=itertools.count)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def by_operation(self, operation: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if semconv.span_operation(s.attributes or {}) == operation]

    def runs(self) -> list[ReadableSpan]:
        return self.by_operation(semconv.OP_INVOKE_AGENT)

    def run_span(self) -> ReadableSpan:
        runs = self.runs()
        assert len(runs) == 1, f"expected one run span, got {len(runs)}"
        return runs[0]

    def tools(self) -> list[ReadableSpan]:
        return self.by_operation(semconv.OP_EXECUTE_TOOL)

    def steps(self) -> list[ReadableSpan]:
        return self.by_operation(semconv.OP_STEP)

    def llm(self) -> list[ReadableSpan]:
        return self.by_operation(semconv.OP_CHAT)

    def run(self, agent: str = "support", **kwargs: Any) -> RunScope:
        kwargs.setdefault("tracer_provider", self.provider)
        kwargs.setdefault("settings", self.settings)
        return agent_run(agent, **kwargs)

    def with_settings(self, **overrides: Any) -> Telemetry:
        from dataclasses import replace

        self.settings = replace(self.settings, **overrides)
        return self


def attrs(span: ReadableSpan) -> Mapping[str, Any]:
    return span.attributes or {}


def event_names(span: ReadableSpan) -> list[str]:
    return [event.name for event in span.events]


def echo(**kwargs: Any) -> dict[str, Any]:
    return dict(kwargs)


def make_gateway(tools: Mapping[str, Callable[..., Any]] | None = None, **kwargs: Any) -> ToolGateway:
    from agentwatch.instrumentation import Policy

    kwargs.setdefault("policy", Policy(allow=["kb.*"], require_approval=["ticket.close"], deny=["kb.admin"]))
    return ToolGateway(tools=tools or {"kb.search": echo, "kb.admin": echo, "ticket.close": echo}, **kwargs)


__all__ = ["Budget", "FakeClock", "Telemetry", "attrs", "echo", "event_names", "make_gateway"]


def new_telemetry() -> Telemetry:
    """A provider with agentwatch's run-attributes processor and an in-memory exporter; run ids run-0001, ..."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RunAttributesSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = FakeClock()
    counter = itertools.count(1)
    settings = InstrumentationSettings(strict=True, clock=clock, id_generator=lambda: f"run-{next(counter):04d}")
    return Telemetry(provider=provider, exporter=exporter, clock=clock, settings=settings)
