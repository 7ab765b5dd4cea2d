"""The pinned GenAI names agree with the OpenTelemetry semantic-conventions package."""

from __future__ import annotations

import pytest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as upstream
from opentelemetry.semconv.schemas import Schemas

from agentwatch.instrumentation import semconv

PAIRS = [
    (semconv.GEN_AI_OPERATION_NAME, upstream.GEN_AI_OPERATION_NAME),
    (semconv.GEN_AI_PROVIDER_NAME, upstream.GEN_AI_PROVIDER_NAME),
    (semconv.GEN_AI_AGENT_NAME, upstream.GEN_AI_AGENT_NAME),
    (semconv.GEN_AI_AGENT_ID, upstream.GEN_AI_AGENT_ID),
    (semconv.GEN_AI_AGENT_VERSION, upstream.GEN_AI_AGENT_VERSION),
    (semconv.GEN_AI_CONVERSATION_ID, upstream.GEN_AI_CONVERSATION_ID),
    (semconv.GEN_AI_REQUEST_MODEL, upstream.GEN_AI_REQUEST_MODEL),
    (semconv.GEN_AI_RESPONSE_MODEL, upstream.GEN_AI_RESPONSE_MODEL),
    (semconv.GEN_AI_RESPONSE_ID, upstream.GEN_AI_RESPONSE_ID),
    (semconv.GEN_AI_RESPONSE_FINISH_REASONS, upstream.GEN_AI_RESPONSE_FINISH_REASONS),
    (semconv.GEN_AI_USAGE_INPUT_TOKENS, upstream.GEN_AI_USAGE_INPUT_TOKENS),
    (semconv.GEN_AI_USAGE_OUTPUT_TOKENS, upstream.GEN_AI_USAGE_OUTPUT_TOKENS),
    (semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, upstream.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS),
    (semconv.GEN_AI_TOOL_NAME, upstream.GEN_AI_TOOL_NAME),
    (semconv.GEN_AI_TOOL_CALL_ID, upstream.GEN_AI_TOOL_CALL_ID),
    (semconv.GEN_AI_TOOL_TYPE, upstream.GEN_AI_TOOL_TYPE),
    (semconv.GEN_AI_TOOL_CALL_ARGUMENTS, upstream.GEN_AI_TOOL_CALL_ARGUMENTS),
    (semconv.GEN_AI_TOOL_CALL_RESULT, upstream.GEN_AI_TOOL_CALL_RESULT),
    (semconv.GEN_AI_INPUT_MESSAGES, upstream.GEN_AI_INPUT_MESSAGES),
    (semconv.GEN_AI_OUTPUT_MESSAGES, upstream.GEN_AI_OUTPUT_MESSAGES),
]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=[p[0] for p in PAIRS])
def test_genai_names_match_upstream(ours: str, theirs: str) -> None:
    assert ours == theirs


def test_operations_match_upstream_values() -> None:
    values = upstream.GenAiOperationNameValues
    assert values.INVOKE_AGENT.value == semconv.OP_INVOKE_AGENT
    assert values.CHAT.value == semconv.OP_CHAT
    assert values.EXECUTE_TOOL.value == semconv.OP_EXECUTE_TOOL


def test_schema_url_is_the_genai_registrys_not_a_core_release() -> None:
    # the GenAI names left the core conventions (core v1.44.0 deprecates them): their schema URL is
    # the GenAI registry's own, never one of the core releases the Python package knows
    assert semconv.SCHEMA_URL not in {schema.value for schema in Schemas}
    assert semconv.SCHEMA_URL.startswith("https://opentelemetry.io/schemas/gen-ai")


def test_closed_enums() -> None:
    assert {r.value for r in semconv.StopReason} == {
        "completed", "max_steps", "max_tool_calls", "max_time", "max_usd", "policy_denied",
        "approval_rejected", "kill_switch", "guardrail", "error", "cancelled",
    }  # fmt: skip
    assert {d.value for d in semconv.ToolDisposition} == {
        "allowed", "denied", "approved", "rejected", "killed", "deduplicated", "replayed", "ungoverned",
    }  # fmt: skip
    assert {o.value for o in semconv.ToolOutcome} == {"ok", "error", "blocked"}
    assert {t.value for t in semconv.Track} == {"stable", "canary", "baseline"}
    assert {b.value: b.stop_reason.value for b in semconv.BudgetName} == {
        "steps": "max_steps", "tool_calls": "max_tool_calls", "seconds": "max_time", "usd": "max_usd",
    }  # fmt: skip
    assert str(semconv.StopReason.MAX_STEPS) == "max_steps"


def test_span_names_are_low_cardinality() -> None:
    assert semconv.run_span_name("support") == "invoke_agent support"
    assert semconv.step_span_name("support") == "step support"
    assert semconv.llm_span_name("gpt-4o") == "chat gpt-4o"
    assert semconv.tool_span_name("db.write") == "execute_tool db.write"
