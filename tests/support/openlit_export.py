"""Run one OpenLIT scenario of ``_dialects`` and export its spans over OTLP/HTTP: for OpenLIT's own venv.

OpenLIT pins ``openai<3`` (and OpenTelemetry 1.45.1), so it cannot share the test environment with
the Agents SDK the project uses; ``make test`` builds ``.venv-openlit`` from
``tests/support/openlit-requirements.txt`` and ``test_dialects_openlit`` runs this script there:

    .venv-openlit/bin/python tests/support/openlit_export.py ENDPOINT VARIANT SERVICE

It prints the scenario's ``DialectRun`` as JSON (exact tokens and calls, from the stub's script).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _dialects
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def main(endpoint: str, variant: str, service: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=10)))
    trace.set_tracer_provider(provider)
    done = _dialects.openlit_run(provider, variant=variant)
    provider.shutdown()
    print(json.dumps(dataclasses.asdict(done)))


if __name__ == "__main__":
    main(*sys.argv[1:4])
