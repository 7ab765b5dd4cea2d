"""Telemetry must never break the agent: failures inside span handling are logged, not raised.

Only agentwatch's own telemetry calls go through here (starting and ending spans, which run the
span processors); user code and tool functions never do, so their exceptions pass unchanged.
Under pytest (``strict``) the failure is raised instead, so a bug cannot hide behind the log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from agentwatch.instrumentation._settings import InstrumentationSettings

logger: Final = logging.getLogger("agentwatch.instrumentation")

_REPEAT_EVERY: Final = 1000  # a broken processor fails on every span: log the first, then every 1000th
_failures: dict[tuple[str, str], int] = {}
_failures_lock: Final = threading.Lock()


def telemetry_failed(action: str, exc: Exception, *, strict: bool) -> None:
    """Report a failure of agentwatch's own telemetry; re-raise when ``strict``."""
    if strict:
        raise exc
    key = (type(exc).__qualname__, str(exc)[:200])
    with _failures_lock:
        count = _failures.get(key, 0) + 1
        if len(_failures) > 1000:
            _failures.clear()
        _failures[key] = count
    if count == 1 or count % _REPEAT_EVERY == 0:
        logger.warning(
            "agentwatch telemetry failed while %s (%d times so far); the agent is unaffected: %r", action, count, exc
        )


def start_span(
    tracer: Tracer,
    name: str,
    attributes: Mapping[str, AttributeValue],
    *,
    context: Context | None = None,
    strict: bool,
    start_time: int | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    links: Sequence[Link] | None = None,
) -> Span:
    """Start a span; on failure return a non-recording span so the caller carries on.

    ``kind`` is ``CLIENT`` for calls to a remote model, else ``INTERNAL`` (runs, steps and tools run
    in the agent's process)."""
    try:
        return tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, start_time=start_time, links=links
        )
    except Exception as exc:
        telemetry_failed(f"starting span {name!r}", exc, strict=strict)
        return trace.INVALID_SPAN


def end_span(span: Span, *, strict: bool, end_time: int | None = None) -> None:
    """End a span, shielding the caller from failing span processors."""
    try:
        span.end(end_time=end_time)
    except Exception as exc:
        telemetry_failed("ending a span", exc, strict=strict)


def error_description(
    exc: BaseException, settings: InstrumentationSettings, secret_values: tuple[str, ...] = ()
) -> str:
    """Span status text for an error: the exception type, plus its redacted message only when
    content capture is on (messages often quote user input or tool arguments)."""
    name = type(exc).__qualname__
    if not settings.capture_content:
        return name
    message = settings.redactor.redact_text(str(exc), secret_values=secret_values)
    return f"{name}: {message}"[:256]
