"""LangChain messages and model results as agentwatch records them: roles, content, usage, finish reasons.

Also what a run records as its input and output by default (``default_input`` / ``default_output``)
and how LangGraph's own ends of a run (its recursion limit, a graph's root chain) are recognised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, LLMResult

try:  # LangChain without LangGraph still gets runs from its chains
    from langgraph.errors import GraphRecursionError
except ImportError:  # pragma: no cover - the runtimes extra installs both
    GraphRecursionError = None  # type: ignore[assignment,misc]

_ROLES: Final = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "AIMessageChunk": "assistant"}
# LangChain's ls_provider values, as gen_ai.provider.name spells them
_PROVIDERS: Final = {
    "google_genai": "gcp.gen_ai",
    "google_vertexai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "mistralai": "mistral_ai",
    "xai": "x_ai",
}
_RECURSION_LIMIT: Final = re.compile(r"[Rr]ecursion limit of (\d+)")


# --- message helpers ------------------------------------------------------------------------------


def _text(content: Any) -> Any:
    """Text of message content: a string, or the text blocks of a content list joined (else as is)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            block if isinstance(block, str) else block.get("text")
            for block in content
            if isinstance(block, str) or (isinstance(block, Mapping) and block.get("type") == "text")
        ]
        if len(texts) == len(content):
            return "".join(t for t in texts if isinstance(t, str))
    return content


def message_record(message: Any) -> dict[str, Any]:
    """One message as ``{"role", "content"}`` (plus tool calls / call id), whatever form LangGraph accepted."""
    if isinstance(message, BaseMessage):
        record: dict[str, Any] = {"role": _ROLES.get(message.type, message.type), "content": _text(message.content)}
        if isinstance(message, AIMessage) and message.tool_calls:
            record["tool_calls"] = [
                {"id": call.get("id"), "name": call["name"], "arguments": call["args"]} for call in message.tool_calls
            ]
        if isinstance(message, ToolMessage):
            record["tool_call_id"] = message.tool_call_id
            if message.artifact is not None:
                # the raw result, as the tool span records it: redaction then walks its structure
                # instead of JSON text escaped once more inside the message
                record["content"] = message.artifact
        return record
    if isinstance(message, tuple) and len(message) == 2:
        role = {"human": "user", "ai": "assistant"}.get(str(message[0]), str(message[0]))
        return {"role": role, "content": _text(message[1])}
    if isinstance(message, Mapping) and "content" in message:
        return {"role": message.get("role", "user"), "content": _text(message["content"])}
    return {"role": "user", "content": _text(message)}


def _messages_of(value: Any) -> list[Any] | None:
    if isinstance(value, Mapping):
        messages = value.get("messages")
        if isinstance(messages, list | tuple):
            return list(messages)
        return None
    if isinstance(value, list) and value and all(isinstance(m, BaseMessage) for m in value):
        return value
    return None


def default_input(inputs: Any) -> Any:
    """What a run records as its input: the user's text for a one-message state, else the messages or the value."""
    if isinstance(inputs, str):
        return inputs
    messages = _messages_of(inputs)
    if messages is None:
        return inputs
    records = [message_record(m) for m in messages]
    if len(records) == 1:
        return records[0]["content"]
    return records


def default_output(outputs: Any) -> Any:
    """What a run records as its output: the final answer's text for a messages state, else the value."""
    messages = _messages_of(outputs)
    if not messages:
        return outputs
    last = message_record(messages[-1])
    return last["content"] if last["role"] == "assistant" else last


# --- model call helpers ---------------------------------------------------------------------------


def nonempty_string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def model_name(serialized: Mapping[str, Any] | None, metadata: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    for value in (
        metadata.get("ls_model_name"),
        params.get("model"),
        params.get("model_name"),
        params.get("model_id"),
        params.get("deployment_name"),
    ):
        if name := nonempty_string(value):
            return name
    serialized_kwargs = serialized.get("kwargs") if isinstance(serialized, Mapping) else None
    if isinstance(serialized_kwargs, Mapping):
        for key in ("model", "model_name", "model_id"):
            if name := nonempty_string(serialized_kwargs.get(key)):
                return name
    return nonempty_string(params.get("_type")) or "unknown"


def provider_name(metadata: Mapping[str, Any]) -> str | None:
    provider = nonempty_string(metadata.get("ls_provider"))
    return _PROVIDERS.get(provider, provider) if provider else None


@dataclass(frozen=True, slots=True)
class Reply:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    messages: tuple[dict[str, Any], ...] = ()


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def reply_of(response: LLMResult) -> Reply:
    generations = [g for batch in response.generations for g in batch]
    llm_output = response.llm_output or {}
    first = generations[0] if generations else None
    message = first.message if isinstance(first, ChatGeneration) else None
    input_tokens = output_tokens = cached = 0
    usage = message.usage_metadata if isinstance(message, AIMessage) else None
    if usage:
        input_tokens, output_tokens = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
        cached = _count((usage.get("input_token_details") or {}).get("cache_read"))
    else:
        legacy = llm_output.get("token_usage") or llm_output.get("usage")
        if isinstance(legacy, Mapping):
            input_tokens = _count(legacy.get("prompt_tokens", legacy.get("input_tokens")))
            output_tokens = _count(legacy.get("completion_tokens", legacy.get("output_tokens")))
    metadata: Mapping[str, Any] = message.response_metadata if message is not None else {}
    reasons: list[str] = []
    for generation in generations:
        info = generation.generation_info or {}
        meta = generation.message.response_metadata if isinstance(generation, ChatGeneration) else {}
        reason = nonempty_string(meta.get("finish_reason")) or nonempty_string(meta.get("stop_reason"))
        reason = reason or nonempty_string(info.get("finish_reason"))
        if reason is None and isinstance(generation, ChatGeneration):
            calls = isinstance(generation.message, AIMessage) and bool(generation.message.tool_calls)
            reason = "tool_calls" if calls else "stop"
        if reason:
            reasons.append(reason)
    records = tuple(
        message_record(g.message) if isinstance(g, ChatGeneration) else {"role": "assistant", "content": g.text}
        for g in generations
    )
    return Reply(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=min(cached, input_tokens),
        response_model=nonempty_string(metadata.get("model_name"))
        or nonempty_string(metadata.get("model"))
        or nonempty_string(llm_output.get("model_name")),
        response_id=nonempty_string(metadata.get("id")),
        finish_reasons=tuple(reasons),
        messages=records,
    )


def tool_result(output: Any) -> Any:
    """The raw result of a tool: a ToolMessage's artifact when there is one, else its content."""
    if isinstance(output, ToolMessage):
        return output.artifact if output.artifact is not None else output.content
    return output


def recursion_limit(error: BaseException) -> int | None:
    match = _RECURSION_LIMIT.search(str(error))
    return int(match.group(1)) if match else None


def is_recursion_error(error: BaseException | None) -> bool:
    return GraphRecursionError is not None and isinstance(error, GraphRecursionError)


def is_graph_root(metadata: Mapping[str, Any]) -> bool:
    # Pregel marks its root chain (and everything under it) ls_integration=langgraph; only the
    # root of a graph that is not itself running inside a node lacks langgraph_node.
    return metadata.get("ls_integration") == "langgraph" and "langgraph_node" not in metadata
