"""A scripted ``agents.models.interface.Model`` for tests: deterministic turns, real SDK types, no network.

Each turn is the list of output items one model call returns (function calls, a message) with
its token usage. Like the SDK's own models it reports itself in a ``response`` span (as
``OpenAIResponsesModel`` does), a ``generation`` span (as ``OpenAIChatCompletionsModel`` does), or
no span at all (as a custom model may), and it streams (``response.created`` then
``response.completed``) for ``Runner.run_streamed``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agents import ModelResponse, ModelSettings, Tool, TResponseInputItem, Usage
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseOutputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.tracing import generation_span, response_span
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from openai.types.responses.response_prompt_param import ResponsePromptParam
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from typing_extensions import override

SpanKind = Literal["response", "generation", "none"]


def call(name: str, args: dict[str, Any], call_id: str) -> ResponseFunctionToolCall:
    """A function call the model makes (also a handoff: ``transfer_to_<agent>``)."""
    return ResponseFunctionToolCall(
        type="function_call", name=name, arguments=json.dumps(args), call_id=call_id, id=f"fc_{call_id}"
    )


def message(text: str) -> ResponseOutputMessage:
    """A final assistant message."""
    return ResponseOutputMessage(
        id=f"msg_{abs(hash(text)) % 10**8}",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


@dataclass
class Turn:
    """One model call: what it returns and what it costs."""

    output: list[TResponseOutputItem]
    input_tokens: int = 1000
    output_tokens: int = 100
    cached_input_tokens: int = 0
    delay_s: float = 0.0
    error: Exception | None = None


def turn(*items: TResponseOutputItem, **kwargs: Any) -> Turn:
    return Turn(list(items), **kwargs)


@dataclass
class ScriptedAgentsModel(Model):
    """Returns ``turns`` in order; ``responder`` (if given) decides each turn from the input instead."""

    turns: list[Turn] = field(default_factory=list)
    model: str = "gpt-4o-mini"
    response_model: str | None = "gpt-4o-mini-2024-07-18"
    spans: SpanKind = "response"
    responder: Callable[[str | list[TResponseInputItem]], Turn] | None = None
    calls: int = 0

    def _next(self, input: str | list[TResponseInputItem]) -> Turn:
        self.calls += 1
        if self.responder is not None:
            return self.responder(input)
        if not self.turns:
            raise AssertionError("the scripted model ran out of turns")
        return self.turns.pop(0)

    def _response(self, step: Turn) -> Response:
        return Response(
            id=f"resp_{self.calls}",
            created_at=time.time(),
            model=self.response_model or self.model,
            object="response",
            output=step.output,
            parallel_tool_calls=True,
            tool_choice="auto",
            tools=[],
            usage=ResponseUsage(
                input_tokens=step.input_tokens,
                output_tokens=step.output_tokens,
                total_tokens=step.input_tokens + step.output_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=step.cached_input_tokens, cache_write_tokens=0),
                output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            ),
        )

    @staticmethod
    def _usage(step: Turn) -> Usage:
        return Usage(
            requests=1,
            input_tokens=step.input_tokens,
            output_tokens=step.output_tokens,
            total_tokens=step.input_tokens + step.output_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=step.cached_input_tokens, cache_write_tokens=0),
        )

    async def _produce(self, input: str | list[TResponseInputItem], tracing: ModelTracing) -> tuple[Turn, Response]:
        step = self._next(input)
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        if step.error is not None:
            raise step.error
        return step, self._response(step)

    @override
    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        disabled = tracing.is_disabled()
        if self.spans == "response":
            with response_span(disabled=disabled) as span:
                step, response = await self._produce(input, tracing)
                span.span_data.response = response
                span.span_data.input = input
        elif self.spans == "generation":
            with generation_span(model=self.model, disabled=disabled) as span:
                step, response = await self._produce(input, tracing)
                span.span_data.usage = {
                    "input_tokens": step.input_tokens,
                    "output_tokens": step.output_tokens,
                    "input_tokens_details": {"cached_tokens": step.cached_input_tokens},
                }
                span.span_data.output = [item.model_dump() for item in step.output]
        else:
            step, response = await self._produce(input, tracing)
        return ModelResponse(output=step.output, usage=self._usage(step), response_id=response.id)

    @override
    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        with response_span(disabled=tracing.is_disabled() or self.spans == "none") as span:
            _, response = await self._produce(input, tracing)
            created = response.model_copy(update={"output": [], "usage": None})
            yield ResponseCreatedEvent(response=created, type="response.created", sequence_number=0)
            span.span_data.response = response
            yield ResponseCompletedEvent(response=response, type="response.completed", sequence_number=1)


def scripted(turns: Sequence[Turn], **kwargs: Any) -> ScriptedAgentsModel:
    return ScriptedAgentsModel(turns=list(turns), **kwargs)
