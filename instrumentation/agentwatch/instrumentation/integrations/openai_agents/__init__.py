"""OpenAI Agents SDK integration: runs, steps, LLM and tool calls on the agentwatch contract, and tool governance.

::

    from agents import Agent, Runner
    from agentwatch.instrumentation.integrations import openai_agents

    openai_agents.instrument(budget=Budget(max_steps=25, max_tool_calls=12), tenant_id="acme")
    openai_agents.govern_tools(agent, gateway)          # every function tool call through the gateway
    result = Runner.run_sync(agent, "Where is my order 1234?")

``instrument()`` wraps ``Runner.run`` / ``run_sync`` / ``run_streamed`` so each call is one
agentwatch run (``agentwatch.runtime = "openai-agents"``, budgets enforced, a stop reason always
set) and *adds* a tracing processor next to the SDK's own (the SDK's export to its backend is
untouched). To choose tenant, version, track or budget per call, run the SDK inside your own
``agent_run(..., runtime="openai-agents")`` block (the call is adopted as that run), or put
``agentwatch.tenant.id`` / ``agentwatch.track`` / ``gen_ai.agent.version`` in
``RunConfig(trace_metadata=...)``. ``uninstrument()`` restores the ``Runner`` methods and the
SDK's processor list exactly. ``OpenAIAgentsInstrumentor`` is the same for ``opentelemetry-instrument``.

The package is split by concern: ``instrumentor`` (what this package exports; it imports the
SDK only when used, so the package loads, and ``OpenAIAgentsInstrumentor`` can be discovered,
where the SDK is not installed), ``runner`` (the wrapped ``Runner`` calls), ``tracing`` (the SDK's
tracing processor and run hooks), ``tools`` (tool governance) and ``state`` (what is kept about
one SDK run).
"""

from __future__ import annotations

from agentwatch.instrumentation.integrations.openai_agents.instrumentor import (
    OpenAIAgentsInstrumentor,
    function_tools,
    govern_tools,
    instrument,
    is_instrumented,
    tool_implementations,
    uninstrument,
)
from agentwatch.instrumentation.integrations.openai_agents.state import RUNTIME

__all__ = [
    "RUNTIME",
    "OpenAIAgentsInstrumentor",
    "function_tools",
    "govern_tools",
    "instrument",
    "is_instrumented",
    "tool_implementations",
    "uninstrument",
]
