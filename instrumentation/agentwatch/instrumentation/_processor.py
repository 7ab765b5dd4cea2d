"""A span processor that stamps the current run id and step index on every span of a run.

agentwatch's own spans already carry them; this makes spans from *other* instrumentations (an
HTTP client, a database driver, a vendor SDK) started inside a run carry them too, so flat
queries over ``otel_traces`` need no joins. ``configure()`` installs it.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._context import current_run, current_step


class RunAttributesSpanProcessor(SpanProcessor):
    """Adds ``agentwatch.run.id`` (and ``agentwatch.step.index`` inside a step) at span start."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        run = current_run.get()
        if run is None:
            return
        scope = span.instrumentation_scope
        if scope is not None and scope.name == semconv.INSTRUMENTATION_SCOPE:
            return  # an agentwatch span sets its own run (a sub-run span must not get the parent's step)
        span.set_attribute(semconv.RUN_ID, run.run_id)
        step = current_step.get()
        if step is not None:
            span.set_attribute(semconv.STEP_INDEX, step)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
