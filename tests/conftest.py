"""Shared fixtures: a tracer provider with an in-memory exporter per test, deterministic ids and clocks."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator

import pytest
from _telemetry import Telemetry, new_telemetry


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = new_telemetry()
    yield telemetry
    telemetry.provider.shutdown()


@pytest.fixture(autouse=True)
def close_the_sdk_event_loop() -> Iterator[None]:
    """``Runner.run_sync`` leaves its event loop open for the next call (by design); close it after each test.

    Every test that runs the Agents SDK synchronously (its own tests, replay, the demo's runtimes)
    leaves that loop behind; closed here, its sockets never surface as a ResourceWarning in whatever
    test happens to run when it is collected.
    """
    yield
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:  # no loop set (asyncio.run cleared it)
        return
    if not loop.is_running():
        loop.close()
