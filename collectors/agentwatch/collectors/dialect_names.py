"""Attribute names of the GenAI dialects agentwatch reads but does not write: one list for every reader.

Ingest (``ingest.dialects``) turns spans written in these dialects into runs; the read path
(``read.traces``, ``read.render``) shows them in trace trees. Both read the same names, so they
live here, in a module that imports nothing of the collector, as ``metric_names`` does for metrics.
"""

from __future__ import annotations

from typing import Final

# OpenInference (Arize)
OPENINFERENCE_SPAN_KIND: Final = "openinference.span.kind"
OPENINFERENCE_MODEL: Final = "llm.model_name"
OPENINFERENCE_PROMPT_TOKENS: Final = "llm.token_count.prompt"
OPENINFERENCE_COMPLETION_TOKENS: Final = "llm.token_count.completion"
OPENINFERENCE_CACHE_READ_TOKENS: Final = "llm.token_count.prompt_details.cache_read"
OPENINFERENCE_TOOL_NAME: Final = "tool.name"
# OpenLLMetry (Traceloop)
TRACELOOP_SPAN_KIND: Final = "traceloop.span.kind"
TRACELOOP_ENTITY_NAME: Final = "traceloop.entity.name"
# older GenAI conventions (OpenLLMetry, OpenLIT before gen_ai.usage.input_tokens)
GEN_AI_USAGE_PROMPT_TOKENS: Final = "gen_ai.usage.prompt_tokens"
GEN_AI_USAGE_COMPLETION_TOKENS: Final = "gen_ai.usage.completion_tokens"
GEN_AI_SYSTEM: Final = "gen_ai.system"
"""The provider's name before ``gen_ai.provider.name``."""

LLM_OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
"""``gen_ai.operation.name`` values of model calls (agentwatch's own pin only ``chat``)."""

__all__ = [
    "GEN_AI_SYSTEM",
    "GEN_AI_USAGE_COMPLETION_TOKENS",
    "GEN_AI_USAGE_PROMPT_TOKENS",
    "LLM_OPERATIONS",
    "OPENINFERENCE_CACHE_READ_TOKENS",
    "OPENINFERENCE_COMPLETION_TOKENS",
    "OPENINFERENCE_MODEL",
    "OPENINFERENCE_PROMPT_TOKENS",
    "OPENINFERENCE_SPAN_KIND",
    "OPENINFERENCE_TOOL_NAME",
    "TRACELOOP_ENTITY_NAME",
    "TRACELOOP_SPAN_KIND",
]
