"""``langchain-mcp-adapters``: its tools call ``ClientSession.call_tool`` (governed there); this names them.

Each tool ``convert_mcp_tool_to_langchain_tool`` builds is given the server name it was loaded
with (``MultiServerMCPClient``'s connection name, or ``load_mcp_tools(..., server_name=...)``),
is marked governed so the LangGraph handler leaves its span to the gateway (one span per call),
and runs in the LangGraph run, step and span the handler recorded for the tool call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from agentwatch.instrumentation.integrations.mcp._core import calling_server

GOVERNED_METADATA_KEY = "agentwatch_governed"  # the LangGraph integration's marker (langgraph.tools)


@contextmanager
def _in_langgraph_run(callbacks: Any) -> Iterator[None]:
    """Make the LangGraph run and step of this tool call current (when the agentwatch handler saw it)."""
    parent_run_id = getattr(callbacks, "parent_run_id", None)
    if parent_run_id is None:
        yield
        return
    from agentwatch.instrumentation.integrations.langgraph.tools import ToolCallSiteProvider, _activated

    site = None
    for handler in getattr(callbacks, "handlers", []):
        if isinstance(handler, ToolCallSiteProvider):
            site = handler.tool_call_site(parent_run_id)
            if site is not None:
                break
    with _activated(site):
        yield


def _named(inner: Callable[..., Awaitable[Any]], server: str | None) -> Callable[..., Awaitable[Any]]:
    async def named(*args: Any, callbacks: Any = None, **kwargs: Any) -> Any:
        with _in_langgraph_run(callbacks), calling_server(server) if server else nullcontext():
            return await inner(*args, **kwargs)

    # StructuredTool passes ``callbacks`` to a coroutine that declares it; keep the adapter's other parameters
    signature = inspect.signature(inner)
    parameters = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    parameters.append(inspect.Parameter("callbacks", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Any))
    parameters += [p for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
    named.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    named.__annotations__ = {**getattr(inner, "__annotations__", {}), "callbacks": Any}
    named.__name__ = getattr(inner, "__name__", "call_tool")
    return named


def _convert(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def convert(*args: Any, **kwargs: Any) -> Any:
        tool = original(*args, **kwargs)
        coroutine = getattr(tool, "coroutine", None)
        if coroutine is not None:
            tool.coroutine = _named(coroutine, kwargs.get("server_name"))
            tool.metadata = {**(tool.metadata or {}), GOVERNED_METADATA_KEY: True}
        return tool

    return convert


def convert_function_wrapper() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return _convert
