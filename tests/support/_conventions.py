"""The current GenAI conventions, checked over every span a run exported (custom loop and runtimes alike)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from agentwatch.instrumentation import semconv


def attrs(span: ReadableSpan) -> Any:
    return span.attributes or {}


# gen_ai.operation.name values registered by the GenAI conventions (model/gen-ai/registry.yaml)
REGISTERED_OPERATIONS = frozenset(
    {
        "chat", "generate_content", "text_completion", "embeddings", "retrieval", "create_agent",
        "invoke_agent", "execute_tool", "invoke_workflow", "plan", "search_memory", "create_memory",
        "update_memory", "upsert_memory", "delete_memory", "create_memory_store", "delete_memory_store",
    }
)  # fmt: skip


def assert_current_conventions(spans: Iterable[ReadableSpan]) -> None:
    """Every span: the GenAI schema URL, a registered operation (if any), CLIENT exactly for model calls."""
    spans = list(spans)
    assert spans
    for span in spans:
        a = attrs(span)
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == semconv.INSTRUMENTATION_SCOPE
        assert span.instrumentation_scope.schema_url == semconv.SCHEMA_URL
        operation = a.get(semconv.GEN_AI_OPERATION_NAME)
        assert operation is None or operation in REGISTERED_OPERATIONS, (span.name, operation)
        assert not str(operation or "").startswith("agentwatch."), span.name
        is_llm = operation in {"chat", "text_completion", "generate_content", "embeddings"}
        assert span.kind is (SpanKind.CLIENT if is_llm else SpanKind.INTERNAL), (span.name, span.kind)
