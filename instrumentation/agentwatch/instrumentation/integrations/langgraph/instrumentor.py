"""``instrument()`` / ``uninstrument()``: every LangGraph graph in the process recorded, with no code change.

Also ``LangGraphInstrumentor``, the same in the shape OpenTelemetry's auto-instrumentation loads.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from agentwatch.instrumentation.integrations.langgraph.handler import AgentwatchCallbackHandler

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider


# --- auto-instrumentation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Installation:
    handler: AgentwatchCallbackHandler
    variable: ContextVar[AgentwatchCallbackHandler | None]


class _Installed:
    """What ``instrument()`` installed in this process (one at a time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.installation: _Installation | None = None


_installed: Final = _Installed()


def instrument(*, tracer_provider: TracerProvider | None = None, **options: Any) -> None:
    """Record every LangGraph graph run in this process, with no change to the code that runs them.

    Registers a LangChain configure hook: every callback manager LangChain builds (so every
    graph, in every thread and task) gets one shared ``AgentwatchCallbackHandler(graphs_only=True,
    **options)``. Idempotent (a second call changes nothing); ``uninstrument()`` removes it.
    """
    from langchain_core.tracers.context import register_configure_hook

    with _installed.lock:
        if _installed.installation is not None:
            return
        options.setdefault("graphs_only", True)
        handler = AgentwatchCallbackHandler(tracer_provider=tracer_provider, **options)
        # The default, not a value set in some context: every thread and task sees the handler.
        variable: ContextVar[AgentwatchCallbackHandler | None] = ContextVar(
            "agentwatch_langgraph_handler", default=handler
        )
        register_configure_hook(variable, inheritable=True)
        _installed.installation = _Installation(handler=handler, variable=variable)


def uninstrument() -> None:
    """Remove what ``instrument()`` added; LangChain's hook list is left exactly as it was before."""
    from langchain_core.tracers import context as tracer_context

    with _installed.lock:
        installation = _installed.installation
        if installation is None:
            return
        variable = installation.variable
        # LangChain has no public way to unregister a hook; drop ours (and only ours) in place.
        tracer_context._configure_hooks[:] = [
            hook for hook in tracer_context._configure_hooks if hook[0] is not variable
        ]
        _installed.installation = None


def is_instrumented() -> bool:
    """True while ``instrument()`` is in effect."""
    return _installed.installation is not None


def installed_handler() -> AgentwatchCallbackHandler | None:
    """The handler ``instrument()`` installed, if any (to read its ``last_run`` or pass to ``invoke_graph``)."""
    installation = _installed.installation
    return installation.handler if installation is not None else None


class LangGraphInstrumentor:
    """``instrument()`` / ``uninstrument()`` in the shape OpenTelemetry's auto-instrumentation loads.

    Registered under the ``opentelemetry_instrumentor`` entry point, so ``opentelemetry-instrument
    python app.py`` records LangGraph runs with no code change. The loader's own options are ignored.
    """

    _LOADER_OPTIONS: Final = frozenset({"skip_dep_check", "raise_exception_on_conflict"})

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("langchain-core >= 1.0",)

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return is_instrumented()

    def instrument(self, **kwargs: Any) -> None:
        options = {key: value for key, value in kwargs.items() if key not in self._LOADER_OPTIONS}
        instrument(**options)

    def uninstrument(self, **kwargs: Any) -> None:
        uninstrument()
