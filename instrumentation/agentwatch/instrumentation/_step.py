"""One step of a run: a ``step {agent}`` span, and ``agentwatch.step.index`` in context while it lasts."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._context import current_step
from agentwatch.instrumentation._guard import end_span, start_span
from agentwatch.instrumentation._runapi import SteppedRun
from agentwatch.instrumentation.errors import RunStopped

if TYPE_CHECKING:
    from contextvars import Token


class StepScope:
    """One step of a run: a ``step {agent}`` span and ``agentwatch.step.index`` in context."""

    def __init__(self, run: SteppedRun) -> None:
        self._run = run
        self.index = 0
        self._span: Span = trace.INVALID_SPAN
        self._context_token: object = None
        self._step_token: Token[int | None] | None = None

    def __enter__(self) -> StepScope:
        run = self._run
        self.index = run.admit_step()
        attributes = run.span_attributes()
        attributes[semconv.OPERATION_NAME] = semconv.OP_STEP  # not a GenAI operation
        attributes[semconv.STEP_INDEX] = self.index
        self._span = start_span(run.tracer, semconv.step_span_name(run.agent), attributes, strict=run.settings.strict)
        self._context_token = otel_context.attach(trace.set_span_in_context(self._span))
        self._step_token = current_step.set(self.index)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._step_token is not None:
            current_step.reset(self._step_token)
        otel_context.detach(self._context_token)  # type: ignore[arg-type]
        if exc is not None and not isinstance(exc, RunStopped):
            self._span.set_attribute(semconv.ERROR_TYPE, type(exc).__qualname__)
            self._span.set_status(Status(StatusCode.ERROR))
        end_span(self._span, strict=self._run.settings.strict)

    async def __aenter__(self) -> StepScope:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)
