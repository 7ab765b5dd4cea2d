"""What ``configure()`` installed for this process: the settings and tracer provider runs fall back on.

Kept apart from ``configure()`` (which reads a config file, so builds on ``_config`` and through it
on the gateway) so that the run and the gateway can read the defaults without importing it.
"""

from __future__ import annotations

import threading
from typing import Final

from opentelemetry import trace

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._settings import InstrumentationSettings


class _Installed:
    """What ``configure()`` installed for this process (the defaults runs fall back on)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: InstrumentationSettings | None = None
        self.provider: trace.TracerProvider | None = None
        # keyed by id(); the provider is kept alongside so a recycled id cannot return a stale tracer
        self.tracers: dict[int, tuple[trace.TracerProvider, trace.Tracer]] = {}


_installed: Final = _Installed()


def current_settings() -> InstrumentationSettings:
    """Settings installed by ``configure()``, else built once from the environment."""
    settings = _installed.settings
    if settings is None:
        with _installed.lock:
            if _installed.settings is None:
                _installed.settings = InstrumentationSettings.from_env()
            settings = _installed.settings
    return settings


def current_tracer_provider() -> trace.TracerProvider:
    """Provider installed by ``configure()``, else OpenTelemetry's global one."""
    provider = _installed.provider
    return provider if provider is not None else trace.get_tracer_provider()


def tracer_for(provider: trace.TracerProvider) -> trace.Tracer:
    """The agentwatch tracer of ``provider``, created once per provider (runs start often)."""
    tracers = _installed.tracers
    tracer = tracers.get(id(provider))
    if tracer is None or tracer[0] is not provider:
        created = provider.get_tracer(semconv.INSTRUMENTATION_SCOPE, schema_url=semconv.SCHEMA_URL)
        with _installed.lock:
            if len(tracers) > 64:  # providers are few; a test suite makes many
                tracers.clear()
            tracers[id(provider)] = (provider, created)
        return created
    return tracer[1]


def install(settings: InstrumentationSettings | None, provider: trace.TracerProvider | None) -> None:
    """Make ``settings`` and ``provider`` the process defaults (None and None forgets them)."""
    with _installed.lock:
        _installed.settings = settings
        _installed.provider = provider
