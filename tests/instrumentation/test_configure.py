"""``configure()``: arguments win over the environment; an existing provider can be reused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.instrumentation import agent_run, configure, load_config, reset_configuration, semconv
from agentwatch.instrumentation._installed import current_settings


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    reset_configuration()
    yield
    reset_configuration()


def test_configure_with_exporter_and_env_capture() -> None:
    exporter = InMemorySpanExporter()
    provider = configure(
        service_name="svc",
        exporter=exporter,
        set_global=False,
        environ={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"},
    )
    assert current_settings().capture_content is True
    with agent_run("support") as run:
        run.record_input("hello")
    provider.force_flush()
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "svc"
    assert (span.attributes or {})[semconv.RUN_INPUT] == "hello"
    provider.shutdown()


def test_arguments_win_over_environment() -> None:
    configure(
        exporter=InMemorySpanExporter(),
        set_global=False,
        capture_content=False,
        environ={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"},
    )
    assert current_settings().capture_content is False


def test_config_file_settings_are_applied() -> None:
    config = load_config(
        {"logging": {"capture_content": True, "tool_calls": False}, "pricing": {"house": {"input": 1, "output": 1}}}
    )
    configure(exporter=InMemorySpanExporter(), set_global=False, config=config, environ={})
    settings = current_settings()
    assert settings.capture_content is True
    assert settings.audit_tool_calls is False
    assert settings.prices().cost("house", input_tokens=1_000_000, output_tokens=0) == pytest.approx(1.0)


def test_existing_provider_gets_run_attributes() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert configure(tracer_provider=provider, environ={}) is provider
    tracer = provider.get_tracer("other")
    with agent_run("support") as run, tracer.start_as_current_span("db query"):
        pass
    foreign = next(s for s in exporter.get_finished_spans() if s.name == "db query")
    assert (foreign.attributes or {})[semconv.RUN_ID] == run.run_id


def test_bad_environment_value_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"):
        configure(
            exporter=InMemorySpanExporter(),
            set_global=False,
            environ={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "maybe"},
        )
