"""One LLM call inside a run: its span, token usage, and cost from the price table.

A model without a price is marked ``agentwatch.cost.unpriced`` and counted on the run
(``agentwatch.run.unpriced_llm_calls``); it is never silently costed at zero.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._context import current_step
from agentwatch.instrumentation._guard import end_span, start_span
from agentwatch.instrumentation._runapi import MeteredRun

logger: Final = logging.getLogger("agentwatch.instrumentation")

_warned_models: set[str] = set()
_warned_lock = threading.Lock()
_WARNED_LIMIT: Final = 1024  # model names come from callers and spans; never let the set grow unbounded


def warn_unpriced(model: str) -> None:
    """Log a WARNING the first time (per process) an LLM call of ``model`` has no price."""
    key = model.strip().lower()
    with _warned_lock:
        if key in _warned_models or len(_warned_models) >= _WARNED_LIMIT:
            return
        _warned_models.add(key)
    logger.warning(
        "model %r has no price: its LLM calls are recorded with unknown cost (agentwatch.cost.unpriced), "
        "and a run with a max_usd budget stops before calling it (stop reason max_usd, reason unpriced_model) "
        "unless Budget(allow_unpriced_models=[...]) or Budget(allow_unpriced=True) allows it; add its price "
        "to the config's pricing: section or configure(price_table=...)",
        model,
    )


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


class LLMCall:
    """Use as ``with run.llm_call(model=...) as call:`` and call ``set_usage`` before leaving."""

    def __init__(
        self,
        run: MeteredRun,
        *,
        model: str,
        provider: str | None,
        operation: str,
        input_messages: Sequence[Any] | None,
    ) -> None:
        self._run = run
        self.model = model
        self.provider = provider
        self.operation = operation
        self._input_messages = input_messages
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_input_tokens = 0
        self.cost_usd: float | None = None
        self._explicit_cost = False
        self.response_model: str | None = None
        self._span: Span = trace.INVALID_SPAN
        self._token: object = None
        self._finished = False

    # -- filling in -----------------------------------------------------------------------------

    def set_usage(self, *, input_tokens: int = 0, output_tokens: int = 0, cached_input_tokens: int = 0) -> None:
        """Token usage; ``cached_input_tokens`` is the part of ``input_tokens`` read from cache."""
        self.input_tokens = _count("input_tokens", input_tokens)
        self.output_tokens = _count("output_tokens", output_tokens)
        self.cached_input_tokens = _count("cached_input_tokens", cached_input_tokens)
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens cannot exceed input_tokens (they are the cached part of them)")

    def set_response(
        self,
        *,
        model: str | None = None,
        finish_reasons: Sequence[str] | None = None,
        response_id: str | None = None,
        output_messages: Sequence[Any] | None = None,
    ) -> None:
        span = self._span
        if model:
            self.response_model = model
            span.set_attribute(semconv.GEN_AI_RESPONSE_MODEL, model)
        if finish_reasons:
            span.set_attribute(semconv.GEN_AI_RESPONSE_FINISH_REASONS, list(finish_reasons))
        if response_id:
            span.set_attribute(semconv.GEN_AI_RESPONSE_ID, response_id)
        if output_messages is not None:
            self._capture(semconv.GEN_AI_OUTPUT_MESSAGES, output_messages)

    def set_cost(self, usd: float) -> None:
        """Override the computed cost (for a provider that reports the billed amount)."""
        if usd < 0:
            raise ValueError("cost cannot be negative")
        self.cost_usd = float(usd)
        self._explicit_cost = True

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, *, start_time_ns: int | None = None) -> None:
        run = self._run
        self.provider = run.llm_call_started(model=self.model, provider=self.provider)
        attributes = run.span_attributes()
        attributes[semconv.GEN_AI_OPERATION_NAME] = self.operation
        attributes[semconv.GEN_AI_REQUEST_MODEL] = self.model
        if self.provider:
            attributes[semconv.GEN_AI_PROVIDER_NAME] = self.provider
        step = current_step.get()
        if step is not None:
            attributes[semconv.STEP_INDEX] = step
        self._span = start_span(
            run.tracer,
            semconv.llm_span_name(self.model, self.operation),
            attributes,
            strict=run.settings.strict,
            start_time=start_time_ns,
            kind=SpanKind.CLIENT,  # a call to a model served by another process (an API, a local server)
        )
        if self._input_messages is not None:
            self._capture(semconv.GEN_AI_INPUT_MESSAGES, self._input_messages)

    def finish(self, *, end_time_ns: int | None = None, error: BaseException | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        run = self._run
        span = self._span
        if not self._explicit_cost:
            prices = run.settings.prices()
            self.cost_usd = prices.cost(
                self.response_model or self.model,
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                cached_input_tokens=self.cached_input_tokens,
            )
            if self.cost_usd is None and self.response_model:
                self.cost_usd = prices.cost(
                    self.model,
                    input_tokens=self.input_tokens,
                    output_tokens=self.output_tokens,
                    cached_input_tokens=self.cached_input_tokens,
                )
        usage: dict[str, int | float | bool] = {
            semconv.GEN_AI_USAGE_INPUT_TOKENS: self.input_tokens,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: self.output_tokens,
        }
        if self.cached_input_tokens:
            usage[semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = self.cached_input_tokens
        if self.cost_usd is None:
            usage[semconv.COST_UNPRICED] = True
        else:
            usage[semconv.COST_USD] = round(self.cost_usd, 9)
        span.set_attributes(usage)
        if error is not None:
            span.set_attribute(semconv.ERROR_TYPE, type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR))
        run.llm_call_recorded(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens,
            cost_usd=self.cost_usd,
            model=self.response_model or self.model,
        )
        end_span(span, strict=run.settings.strict, end_time=end_time_ns)

    def _capture(self, attribute: str, messages: Sequence[Any]) -> None:
        settings = self._run.settings
        if settings.capture_content:
            # to_attribute walks the structure (sensitive keys), redacts every string, then truncates
            self._span.set_attribute(attribute, settings.redactor.to_attribute(list(messages)))

    def __enter__(self) -> LLMCall:
        self.start()
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]
        self.finish(error=exc)

    async def __aenter__(self) -> LLMCall:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)
