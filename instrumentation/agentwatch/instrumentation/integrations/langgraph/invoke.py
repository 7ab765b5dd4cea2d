"""Running a graph and getting its agentwatch run back: ``invoke_graph`` / ``ainvoke_graph``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from langchain_core.callbacks import BaseCallbackManager

from agentwatch.instrumentation._run import AgentRun
from agentwatch.instrumentation.errors import RunStopped
from agentwatch.instrumentation.integrations.langgraph.handler import AgentwatchCallbackHandler
from agentwatch.instrumentation.integrations.langgraph.instrumentor import installed_handler
from agentwatch.instrumentation.integrations.langgraph.messages import is_recursion_error

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable, RunnableConfig


# --- running a graph and getting its run back ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GraphRunResult:
    """A graph invocation's agentwatch run (always with a stop reason) and its output (None if it stopped)."""

    run: AgentRun
    output: Any = None


def _is_stop(error: BaseException) -> bool:
    return isinstance(error, RunStopped) or is_recursion_error(error)


def _with_handler(config: RunnableConfig | None, handler: AgentwatchCallbackHandler) -> tuple[RunnableConfig, UUID]:
    merged: RunnableConfig = dict(config) if config else {}  # type: ignore[assignment]  # a TypedDict copy
    root_id = merged.get("run_id") or uuid4()
    merged["run_id"] = root_id
    callbacks = merged.get("callbacks")
    if callbacks is None:
        merged["callbacks"] = [handler]
    elif isinstance(callbacks, BaseCallbackManager):
        if handler not in callbacks.handlers:
            manager = callbacks.copy()
            manager.add_handler(handler, inherit=True)
            merged["callbacks"] = manager
    elif handler not in callbacks:
        merged["callbacks"] = [*callbacks, handler]
    return merged, root_id


def _resolve_handler(handler: AgentwatchCallbackHandler | None) -> AgentwatchCallbackHandler:
    if handler is not None:
        return handler
    installed = installed_handler()
    if installed is None:
        raise TypeError("pass handler=AgentwatchCallbackHandler(...) or call instrument() first")
    return installed


def _result(handler: AgentwatchCallbackHandler, root_id: UUID, output: Any) -> GraphRunResult:
    run = handler.take_run(root_id)
    if run is None:
        raise RuntimeError(
            "the graph finished without an agentwatch run: is the runnable a LangGraph graph (or "
            "is graphs_only=False), and did it keep the callbacks of its config?"
        )
    return GraphRunResult(run=run, output=output)


def invoke_graph(
    graph: Runnable[Any, Any],
    input: Any,
    config: RunnableConfig | None = None,
    *,
    handler: AgentwatchCallbackHandler | None = None,
) -> GraphRunResult:
    """``graph.invoke`` as an agentwatch run, with ``agent_run``'s contract: a stop is not a crash.

    A budget, denial, rejection, kill switch or LangGraph's recursion limit ends the run with its
    stop reason and returns (``output`` None); any other exception propagates unchanged after the
    run recorded ``error`` (or ``cancelled``). ``handler`` defaults to the one ``instrument()`` installed.
    """
    chosen = _resolve_handler(handler)
    merged, root_id = _with_handler(config, chosen)
    try:
        output = graph.invoke(input, merged)
    except BaseException as exc:
        if not _is_stop(exc):
            raise
        return _result(chosen, root_id, None)
    return _result(chosen, root_id, output)


async def ainvoke_graph(
    graph: Runnable[Any, Any],
    input: Any,
    config: RunnableConfig | None = None,
    *,
    handler: AgentwatchCallbackHandler | None = None,
) -> GraphRunResult:
    """``graph.ainvoke`` as an agentwatch run (see ``invoke_graph``)."""
    chosen = _resolve_handler(handler)
    merged, root_id = _with_handler(config, chosen)
    try:
        output = await graph.ainvoke(input, merged)
    except BaseException as exc:
        if not _is_stop(exc):
            raise
        return _result(chosen, root_id, None)
    return _result(chosen, root_id, output)
