"""Loaded at interpreter start by ``agentwatch-instrument``: configure tracing, instrument runtimes.

``agentwatch-instrument`` puts this folder first on ``PYTHONPATH``, so Python imports this
module before the user's program runs. Configuration comes from the standard ``OTEL_*``
variables (``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``)
and ``AGENTWATCH_INSTRUMENT_RUNTIMES`` (comma-separated; all installed runtimes by default).
A site-wide ``sitecustomize`` shadowed by this one is still run, after ours.
"""

from __future__ import annotations

from agentwatch.instrumentation._launcher import bootstrap

bootstrap()
