"""LangGraph and LangChain as agentwatch runs: a callback handler, governed tools, and auto-instrumentation.

One graph invocation (``invoke``, ``ainvoke``, ``stream``, ``astream``) is one agentwatch run,
built on the same ``AgentRun`` as a custom loop: the ``invoke_agent`` span with every run attribute
(totals, budgets, stop reason), budgets checked before each action, the kill switch, content capture
with redaction, and the audit log. Runtime ``langgraph``.

How LangChain's callbacks map onto the contract:

* the graph's root chain → the run. Its end is ``completed``; ``GraphRecursionError`` (LangGraph's
  own superstep limit) → ``max_steps``; a ``RunStopped`` (budget, denial, rejection, kill switch)
  → its stop reason; cancellation (a cancelled task, a stream closed early) → ``cancelled``; any
  other exception → ``error``. The exception still reaches the caller, as LangGraph users expect;
  ``invoke_graph`` returns the run instead, like ``agent_run`` swallows a stop.
* steps. A step is one turn of the agent: it starts with the superstep in which the model is
  called and takes in the supersteps after it that call no model (the tool node), up to the next
  superstep that calls the model. A ReAct turn (model superstep + tools superstep) is therefore one
  step, as in a custom loop or the Agents SDK, so one ``Budget(max_steps=...)`` means the same on
  every runtime. The step budget is checked before the model call that would start the next step.
  Parallel branches of one superstep share its step; the step span lists the nodes it covered
  (``langgraph.nodes``) and the superstep it started in (``langgraph.step``).
* chat-model calls → ``chat {model}`` spans with the model from LangChain's metadata, usage from the
  message's ``usage_metadata``, finish reasons, and the cost from agentwatch's price table; the USD
  budget and the kill switch are checked before each call.
* tool calls → ``execute_tool`` spans: governed tools (``govern_tools``, ``gateway_tools``,
  ``governed_tool_node``) get the gateway's span with disposition and policy rule; any other tool
  gets one from the handler (disposition ``allowed``, rule ``ungoverned``) and counts against the
  tool-call budget.

Spans are parented through LangChain's ``run_id``/``parent_run_id``, not the ambient context, so
parallel branches, threads and asyncio tasks land under the right step. While a node, a model
call or a tool runs, the run, step and span are also made current (``contextvars``), so tools
calling ``get_current_run()``, nested ``agent_run`` blocks and spans of other instrumentations
inside the node are attributed to the run.

Use it explicitly::

    handler = AgentwatchCallbackHandler("support", budget=Budget(max_steps=25), gateway=gateway)
    result = invoke_graph(graph, {"messages": [("user", ticket)]}, handler=handler)
    print(result.run.stop_reason)

or for every graph in the process with ``instrument()`` (a LangChain configure hook: no code
changes; ``uninstrument()`` removes it). Per-invocation values come from the config's metadata
(``agentwatch_tenant_id``, ``agentwatch_track``, ``agentwatch_version``, ``agentwatch_agent``,
``agentwatch_conversation_id``; LangGraph's ``thread_id`` is the conversation id otherwise).

The package is split by concern: ``handler`` (the callback handler), ``state`` (per-run state and
the integration's names), ``messages`` (LangChain messages and model results), ``tools`` (governed
tools), ``invoke`` (``invoke_graph``) and ``instrumentor`` (``instrument()``).
"""

from __future__ import annotations

from agentwatch.instrumentation.integrations.langgraph.handler import AgentwatchCallbackHandler
from agentwatch.instrumentation.integrations.langgraph.instrumentor import (
    LangGraphInstrumentor,
    installed_handler,
    instrument,
    is_instrumented,
    uninstrument,
)
from agentwatch.instrumentation.integrations.langgraph.invoke import GraphRunResult, ainvoke_graph, invoke_graph
from agentwatch.instrumentation.integrations.langgraph.messages import default_input, default_output
from agentwatch.instrumentation.integrations.langgraph.state import (
    LANGGRAPH_NODES,
    LANGGRAPH_RECURSION_LIMIT,
    LANGGRAPH_STEP,
    METADATA_AGENT,
    METADATA_CONVERSATION_ID,
    METADATA_TENANT_ID,
    METADATA_TRACK,
    METADATA_VERSION,
    RUNTIME,
    UNGOVERNED_RULE,
)
from agentwatch.instrumentation.integrations.langgraph.tools import (
    GOVERNED_METADATA_KEY,
    GovernedTool,
    Idempotency,
    OnDenied,
    gateway_tools,
    govern_tools,
    governed_tool_node,
    lc_tool_name,
    tool_functions,
)

__all__ = [
    "GOVERNED_METADATA_KEY",
    "LANGGRAPH_NODES",
    "LANGGRAPH_RECURSION_LIMIT",
    "LANGGRAPH_STEP",
    "METADATA_AGENT",
    "METADATA_CONVERSATION_ID",
    "METADATA_TENANT_ID",
    "METADATA_TRACK",
    "METADATA_VERSION",
    "RUNTIME",
    "UNGOVERNED_RULE",
    "AgentwatchCallbackHandler",
    "GovernedTool",
    "GraphRunResult",
    "Idempotency",
    "LangGraphInstrumentor",
    "OnDenied",
    "ainvoke_graph",
    "default_input",
    "default_output",
    "gateway_tools",
    "govern_tools",
    "governed_tool_node",
    "installed_handler",
    "instrument",
    "invoke_graph",
    "is_instrumented",
    "lc_tool_name",
    "tool_functions",
    "uninstrument",
]
