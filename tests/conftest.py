"""Shared fixtures: a tracer provider with an in-memory exporter per test, deterministic ids and clocks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _telemetry import Telemetry, new_telemetry


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = new_telemetry()
    yield telemetry
    telemetry.provider.shutdown()
