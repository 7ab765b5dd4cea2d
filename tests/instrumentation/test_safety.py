"""Telemetry never breaks the agent: failing processors and exporters are logged, not raised."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from _telemetry import Telemetry, make_gateway
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from agentwatch.instrumentation import StopReason, _guard, agent_run


@pytest.fixture(autouse=True)
def _fresh_failure_counts() -> None:
    _guard._failures.clear()  # the log de-duplication is process-wide; each test starts from zero


class ExplodingProcessor(SpanProcessor):
    def __init__(self, *, on: str = "start") -> None:
        self.on = on

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.on == "start":
            raise RuntimeError("processor broke on start")

    def on_end(self, span: ReadableSpan) -> None:
        if self.on == "end":
            raise RuntimeError("processor broke on end")


class ExplodingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector unreachable")

    def shutdown(self) -> None:
        return None


def _run_agent(provider: TracerProvider, telemetry: Telemetry) -> StopReason | None:
    gateway = make_gateway()
    with (
        agent_run("support", tracer_provider=provider, settings=telemetry.settings, gateway=gateway) as run,
        run.step(),
    ):
        run.record_llm_call(model="gpt-4o", input_tokens=10, output_tokens=1)
        assert run.call_tool("kb.search", {"q": 1}) == {"q": 1}
    return run.stop_reason


@pytest.mark.parametrize("on", ["start", "end"])
def test_failing_processor_is_logged_not_raised(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture, on: str
) -> None:
    telemetry.with_settings(strict=False)
    provider = TracerProvider()
    provider.add_span_processor(ExplodingProcessor(on=on))
    with caplog.at_level(logging.WARNING, logger="agentwatch.instrumentation"):
        assert _run_agent(provider, telemetry) is StopReason.COMPLETED
    messages = [r.getMessage() for r in caplog.records if r.name == "agentwatch.instrumentation"]
    assert any(f"processor broke on {on}" in m for m in messages)
    assert len(messages) <= 4  # repeated failures are not logged once per span


@pytest.mark.parametrize("on", ["start", "end"])
def test_failing_processor_raises_in_strict_mode(telemetry: Telemetry, on: str) -> None:
    provider = TracerProvider()
    provider.add_span_processor(ExplodingProcessor(on=on))
    with pytest.raises(RuntimeError, match=f"processor broke on {on}"):
        _run_agent(provider, telemetry)


def test_failing_exporter_never_reaches_the_agent(telemetry: Telemetry, caplog: pytest.LogCaptureFixture) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ExplodingExporter()))
    with caplog.at_level(logging.ERROR):
        assert _run_agent(provider, telemetry) is StopReason.COMPLETED
    assert any("collector unreachable" in (r.exc_text or r.getMessage()) or r.exc_info for r in caplog.records)
    provider.shutdown()


def test_user_exception_passes_through_a_broken_pipeline(telemetry: Telemetry) -> None:
    telemetry.with_settings(strict=False)
    provider = TracerProvider()
    provider.add_span_processor(ExplodingProcessor())

    class Mine(Exception):
        pass

    with pytest.raises(Mine), agent_run("support", tracer_provider=provider, settings=telemetry.settings) as run:
        raise Mine
    assert run.stop_reason is StopReason.ERROR
