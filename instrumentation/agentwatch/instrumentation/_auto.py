"""``instrument()`` / ``uninstrument()``: wrap every installed agent runtime with one call.

Each runtime adapter lives in ``agentwatch.instrumentation.integrations`` and is imported only
when its runtime is installed, so the base install stays light. Instrumenting is idempotent and
reversible: ``uninstrument()`` restores exactly what the adapters patched, newest first.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Iterable
from typing import Any, Final, Protocol, cast

from opentelemetry.trace import TracerProvider

from agentwatch.instrumentation._guard import telemetry_failed
from agentwatch.instrumentation._installed import current_settings
from agentwatch.instrumentation.errors import ConfigError


class _Adapter(Protocol):
    def instrument(self, *, tracer_provider: TracerProvider | None = None, **options: Any) -> None: ...

    def uninstrument(self) -> None: ...


# runtime name (the agentwatch.runtime attribute) -> (the package that must be installed, adapter module)
RUNTIMES: Final[dict[str, tuple[str, str]]] = {
    "openai-agents": ("agents", "agentwatch.instrumentation.integrations.openai_agents"),
    "langgraph": ("langgraph", "agentwatch.instrumentation.integrations.langgraph"),
    # not a runtime but the MCP client every runtime uses: its tool calls go through the gateway
    "mcp": ("mcp", "agentwatch.instrumentation.integrations.mcp"),
}

_lock: Final = threading.Lock()
_instrumented: list[str] = []  # in the order they were instrumented


def available_runtimes() -> list[str]:
    """The runtimes whose package is installed in this environment."""
    return [name for name, (package, _) in RUNTIMES.items() if importlib.util.find_spec(package) is not None]


def instrumented_runtimes() -> list[str]:
    """The runtimes ``instrument()`` has wrapped and ``uninstrument()`` has not yet restored."""
    with _lock:
        return list(_instrumented)


def _adapter(runtime: str) -> _Adapter:
    return cast(_Adapter, importlib.import_module(RUNTIMES[runtime][1]))


def _selected(runtimes: Iterable[str] | None) -> list[str]:
    if runtimes is None:
        return available_runtimes()
    chosen = list(dict.fromkeys(runtimes))
    unknown = [name for name in chosen if name not in RUNTIMES]
    if unknown:
        raise ConfigError("runtimes", f"unknown runtime(s) {', '.join(unknown)}; known: {', '.join(RUNTIMES)}")
    missing = [name for name in chosen if name not in available_runtimes()]
    if missing:
        raise ConfigError("runtimes", f"not installed: {', '.join(missing)} (pip install 'agentwatch[runtimes]')")
    return chosen


def instrument(
    *, tracer_provider: TracerProvider | None = None, runtimes: Iterable[str] | None = None, **options: Any
) -> list[str]:
    """Instrument the installed runtimes (or exactly ``runtimes``); return the ones now instrumented.

    ``options`` go to every selected adapter, so pass only those all of them accept: ``budget``,
    ``tenant_id``, ``version``, ``track``, ``kill_switch``, ``settings`` (or select one runtime
    with ``runtimes=`` to use its own options). Calling it again changes nothing. Naming a
    runtime that is unknown or not installed raises ``ConfigError``; an adapter that fails while
    patching is logged and skipped (raised under pytest), so instrumentation never stops the host
    from starting.
    """
    strict = current_settings().strict
    with _lock:
        for runtime in _selected(runtimes):
            if runtime in _instrumented:
                continue
            try:
                _adapter(runtime).instrument(tracer_provider=tracer_provider, **options)
            except Exception as exc:
                telemetry_failed(f"instrumenting {runtime}", exc, strict=strict)
                continue
            _instrumented.append(runtime)
        return list(_instrumented)


def uninstrument(*, runtimes: Iterable[str] | None = None) -> None:
    """Restore the runtimes ``instrument()`` wrapped (all of them, or only ``runtimes``), newest first."""
    strict = current_settings().strict
    with _lock:
        wanted = set(_instrumented if runtimes is None else runtimes)
        for runtime in reversed(list(_instrumented)):
            if runtime not in wanted:
                continue
            try:
                _adapter(runtime).uninstrument()
            except Exception as exc:
                telemetry_failed(f"uninstrumenting {runtime}", exc, strict=strict)
            _instrumented.remove(runtime)
