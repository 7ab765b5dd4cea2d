"""``instrument()`` / ``uninstrument()``, tool governance and ``OpenAIAgentsInstrumentor`` for the OpenAI Agents SDK.

What ``agentwatch.instrumentation.integrations.openai_agents`` exports (see the package for how
they are used). This module imports the SDK only when used, so it loads (and
``OpenAIAgentsInstrumentor`` can be discovered) where the SDK is not installed: the modules that
need the SDK (``runner``, ``tracing``, ``tools``) are imported inside the functions.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from agentwatch.instrumentation._budget import Budget
from agentwatch.instrumentation._settings import InstrumentationSettings
from agentwatch.instrumentation.killswitch import KillSwitch, KillSwitchSource
from agentwatch.instrumentation.semconv import Track

if TYPE_CHECKING:
    from agents import Agent, Tool
    from agents.tracing import TraceProvider
    from opentelemetry.trace import TracerProvider

    from agentwatch.instrumentation._gateway import ToolFunction, ToolGateway
    from agentwatch.instrumentation.integrations.openai_agents.runner import RunnerPatch
    from agentwatch.instrumentation.integrations.openai_agents.tools import IdempotencyKey, NameMapping, OnDenied

__all__ = [
    "OpenAIAgentsInstrumentor",
    "function_tools",
    "govern_tools",
    "instrument",
    "is_instrumented",
    "tool_implementations",
    "uninstrument",
]

logger: Final = logging.getLogger("agentwatch.instrumentation")

_DISTRIBUTION: Final = "openai-agents"
_OPTIONS: Final = frozenset({"budget", "tenant_id", "version", "track", "kill_switch", "settings"})
_TRACKS: Final = frozenset(track.value for track in Track)


class _Installed:
    """What ``instrument()`` installed, so ``uninstrument()`` can take exactly that back."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.patch: RunnerPatch | None = None
        self.provider: TraceProvider | None = None


_installed: Final = _Installed()


def instrument(*, tracer_provider: TracerProvider | None = None, **options: Any) -> None:
    """Watch every ``Runner`` call as an agentwatch run; idempotent (a second call updates only the options it names).

    Options (defaults of the runs the wrapper opens; a caller's own ``agent_run`` block wins):
    ``budget`` (``Budget``), ``tenant_id``, ``version``, ``track`` (``stable``, ``canary``,
    ``baseline``), ``kill_switch`` and ``settings`` (``InstrumentationSettings``; default: what
    ``configure()`` installed). ``tracer_provider`` defaults to ``configure()``'s, else the global one.
    """
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; expected some of: {', '.join(sorted(_OPTIONS))}")
    budget = options.get("budget")
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError("budget must be an agentwatch Budget")
    track = options.get("track", "stable")
    if track not in _TRACKS:
        raise ValueError(f"track must be one of {sorted(_TRACKS)}, got {track!r}")
    settings = options.get("settings")
    if settings is not None and not isinstance(settings, InstrumentationSettings):
        raise TypeError("settings must be InstrumentationSettings")
    kill_switch = options.get("kill_switch")
    if kill_switch is not None and not isinstance(kill_switch, KillSwitch | KillSwitchSource):
        raise TypeError("kill_switch must be a KillSwitch or a kill-switch source")
    try:
        from agents import add_trace_processor
        from agents.tracing import get_trace_provider
    except ImportError as exc:
        raise ModuleNotFoundError(
            "the OpenAI Agents integration needs the openai-agents package (pip install 'agentwatch[runtimes]')",
            name="agents",
        ) from exc
    from agentwatch.instrumentation.integrations.openai_agents.runner import RunnerPatch
    from agentwatch.instrumentation.integrations.openai_agents.tracing import AgentwatchTracingProcessor

    given: dict[str, Any] = dict(options)
    if tracer_provider is not None:
        given["tracer_provider"] = tracer_provider
    with _installed.lock:
        patch = _installed.patch
        if patch is None:
            processor = AgentwatchTracingProcessor()
            patch = RunnerPatch(processor)
            patch.install()
            # add, never replace: the SDK's own processors (its export) keep receiving every span
            add_trace_processor(processor)
            _installed.provider = get_trace_provider()
            _installed.patch = patch
        patch.defaults = replace(patch.defaults, **given)


def uninstrument() -> None:
    """Restore ``Runner`` and the SDK's processor list as they were; idempotent."""
    with _installed.lock:
        patch = _installed.patch
        if patch is None:
            return
        patch.remove()
        _remove_processor(_installed.provider, patch.processor)
        _installed.patch = None
        _installed.provider = None


def is_instrumented() -> bool:
    """True between ``instrument()`` and ``uninstrument()``."""
    return _installed.patch is not None


def _remove_processor(provider: TraceProvider | None, processor: Any) -> None:
    """Take agentwatch's processor out of the SDK's list, keeping every other one in its place.

    The SDK has no public "remove": its default provider's list is rebuilt without ours. A
    provider of another kind keeps the processor, switched off.
    """
    processor.enabled = False
    multi = getattr(provider, "_multi_processor", None)
    current = getattr(multi, "_processors", None)
    if provider is None or not isinstance(current, tuple):
        logger.debug("agentwatch: the Agents SDK trace provider cannot drop a processor; it stays, switched off")
        return
    provider.set_processors([registered for registered in current if registered is not processor])


def govern_tools(
    agents: Agent[Any] | Iterable[Agent[Any]],
    gateway: ToolGateway,
    *,
    on_denied: OnDenied = "refuse",
    names: NameMapping | None = None,
    idempotency_key: IdempotencyKey | None = None,
) -> None:
    """Put every function tool of ``agents`` behind ``gateway`` (see ``openai_agents.tools.govern_tools``).

    A refused call answers the model with a refusal (``on_denied="refuse"``) or stops the run
    with ``policy_denied`` / ``approval_rejected`` (``on_denied="stop"``); budget and kill-switch
    stops always stop it.
    """
    from agentwatch.instrumentation.integrations.openai_agents import tools

    tools.govern_tools(agents, gateway, on_denied=on_denied, names=names, idempotency_key=idempotency_key)


def function_tools(
    implementations: Mapping[str, Callable[..., Any]], *, names: Mapping[str, str] | None = None
) -> list[Tool]:
    """One SDK ``FunctionTool`` per gateway tool implementation, for ``govern_tools`` to route to the gateway."""
    from agentwatch.instrumentation.integrations.openai_agents import tools

    return tools.function_tools(implementations, names=names)


def tool_implementations(
    agents: Agent[Any] | Iterable[Agent[Any]], *, names: NameMapping | None = None
) -> dict[str, ToolFunction]:
    """The agents' own function tools as gateway implementations (``ToolGateway(tools=...)``)."""
    from agentwatch.instrumentation.integrations.openai_agents import tools

    return tools.tool_implementations(agents, names=names)


# --- opentelemetry-instrument --------------------------------------------------------------------


class _Instrumentor:
    """The public part of opentelemetry-instrumentation's ``BaseInstrumentor``, for when it is not installed.

    ``opentelemetry-instrument`` loads an ``opentelemetry_instrumentor`` entry point, instantiates
    it without arguments and calls ``instrument(skip_dep_check=True)``; a missing SDK then raises
    ``ModuleNotFoundError``, which it treats as "library not installed".
    """

    _is_instrumented_by_opentelemetry = False

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return self._is_instrumented_by_opentelemetry

    def instrumentation_dependencies(self) -> Collection[str]:
        raise NotImplementedError

    def _instrument(self, **kwargs: Any) -> None:
        raise NotImplementedError

    def _uninstrument(self, **kwargs: Any) -> None:
        raise NotImplementedError

    def instrument(self, **kwargs: Any) -> None:
        if self._is_instrumented_by_opentelemetry:
            return
        skip_dep_check = kwargs.pop("skip_dep_check", False)
        kwargs.pop("raise_exception_on_conflict", None)
        if not skip_dep_check and not _installed_distribution(_DISTRIBUTION):
            logger.error("agentwatch: %s is not installed; the Agents SDK is not instrumented", _DISTRIBUTION)
            return
        self._instrument(**kwargs)
        self._is_instrumented_by_opentelemetry = True

    def uninstrument(self, **kwargs: Any) -> None:
        if self._is_instrumented_by_opentelemetry:
            self._uninstrument(**kwargs)
            self._is_instrumented_by_opentelemetry = False


def _installed_distribution(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if TYPE_CHECKING:
    _InstrumentorBase = _Instrumentor
else:
    try:
        from opentelemetry.instrumentation.instrumentor import BaseInstrumentor as _InstrumentorBase
    except ImportError:  # opentelemetry-instrumentation is optional
        _InstrumentorBase = _Instrumentor


class OpenAIAgentsInstrumentor(_InstrumentorBase):
    """``instrument()`` / ``uninstrument()`` as an OpenTelemetry instrumentor (``opentelemetry-instrument``).

    A ``BaseInstrumentor`` when opentelemetry-instrumentation is installed, else a class with the
    same ``instrument`` / ``uninstrument`` / ``instrumentation_dependencies`` contract.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return (f"{_DISTRIBUTION} >= 0.2",)

    def _instrument(self, **kwargs: Any) -> None:
        instrument(**kwargs)

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstrument()
