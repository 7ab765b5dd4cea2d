"""Test support: spans shaped like other GenAI instrumentations' (OpenInference here), built with the OTel SDK.

The shapes are what the real instrumentations emit (see ``_dialects`` for the real libraries);
building them by hand keeps the rules of the run assembler testable on traces small enough to read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode, Tracer

OI = "openinference.span.kind"


@contextmanager
def child(tracer: Tracer, name: str, attributes: Mapping[str, Any], **kwargs: Any) -> Iterator[Span]:
    with tracer.start_as_current_span(name, attributes=dict(attributes), **kwargs) as span:
        yield span


def openinference_run(tracer: Tracer, *, error: str | None = None) -> None:
    """The shape OpenInference gives an Agents SDK run: workflow root, agent, LLM calls, a tool."""
    with child(tracer, "Agent workflow", {OI: "AGENT"}), child(tracer, "Assistant", {OI: "AGENT"}) as agent:
        for turn, (prompt, completion) in enumerate(((11, 7), (22, 14))):
            with child(
                tracer,
                "response",
                {
                    OI: "LLM",
                    "llm.model_name": "gpt-4o-mini",
                    "llm.token_count.prompt": prompt,
                    "llm.token_count.completion": completion,
                    "session.id": "conv-1",
                },
            ):
                pass
            if turn == 0:
                with child(tracer, "lookup_order", {OI: "TOOL", "tool.name": "lookup_order"}):
                    pass
        if error:
            agent.set_status(Status(StatusCode.ERROR, error))
