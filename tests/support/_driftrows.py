"""Test support for drift: ``agent_runs`` rows with chosen outcomes, and the example fleet's real traffic.

``synthetic_runs`` writes rows straight into ``agent_runs`` (what its materialized view would write)
with deterministic times, so window, ordering and bounds are exact. ``fleet_rows`` runs the example
support agent (``examples/fleet.py``) through the real instrumentation and the collector's OTLP
decoder, the stable and the canary release alternating run by run as a traffic split would.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from _chrows import new_token, now_ns, timestamp
from _readdata import to_rows
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.collectors._examples import load_example
from agentwatch.collectors.ingest.otlp import encode_rows
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.collectors.store.schema import RUNS_TABLE, TRACES_TABLE

DAY_NS = 86_400 * 1_000_000_000


@dataclass(frozen=True)
class Profile:
    """How one release behaves: stop-reason weights and mean cost, steps, duration."""

    stop_reasons: Mapping[str, float] = field(default_factory=lambda: {"completed": 0.9, "max_tool_calls": 0.1})
    cost_usd: float = 0.002
    steps: float = 2.0
    duration_s: float = 1.5


STABLE = Profile()
WORSE = Profile(stop_reasons={"completed": 0.7, "max_tool_calls": 0.3}, cost_usd=0.004, steps=3.5, duration_s=2.5)


def run_row(
    *,
    agent: str,
    track: str,
    version: str,
    stop_reason: str,
    start_ns: int,
    duration_s: float = 1.0,
    steps: int = 2,
    tool_calls: int = 1,
    cost_usd: float = 0.002,
    tenant: str = "acme",
    run_id: str,
) -> dict[str, Any]:
    """One ``agent_runs`` row in JSONEachRow form."""
    return {
        "TenantId": tenant,
        "AgentName": agent,
        "AgentVersion": version,
        "Track": track,
        "Runtime": "custom",
        "RunId": run_id,
        "StartTime": timestamp(start_ns),
        "EndTime": timestamp(start_ns + int(duration_s * 1e9)),
        "DurationSeconds": duration_s,
        "StopReason": stop_reason,
        "Steps": steps,
        "ToolCalls": tool_calls,
        "CostUsd": cost_usd,
    }


def synthetic_runs(
    agent: str,
    *,
    runs: int,
    canary: Profile,
    reference: Profile = STABLE,
    canary_share: float = 0.5,
    reference_track: str = "stable",
    canary_version: str = "v2",
    start_ns: int | None = None,
    seed: int = 1,
    spacing_s: float = 2.0,
) -> list[dict[str, Any]]:
    """``runs`` runs one after another, each a canary run with probability ``canary_share``."""
    rng = random.Random(f"{agent}-{seed}")
    begin = start_ns if start_ns is not None else now_ns() - DAY_NS
    rows = []
    for index in range(runs):
        is_canary = rng.random() < canary_share
        profile = canary if is_canary else reference
        reasons, weights = zip(*profile.stop_reasons.items(), strict=True)
        rows.append(
            run_row(
                agent=agent,
                track="canary" if is_canary else reference_track,
                version=canary_version if is_canary else "v1",
                stop_reason=rng.choices(reasons, weights)[0],
                start_ns=begin + int(index * spacing_s * 1e9),
                duration_s=round(rng.expovariate(1 / profile.duration_s), 6),
                steps=max(1, round(rng.expovariate(1 / profile.steps))),
                tool_calls=round(rng.expovariate(1.0)),
                cost_usd=round(rng.expovariate(1 / profile.cost_usd), 9),
                tenant=rng.choice(("acme", "globex")),
                run_id=f"{agent}-{seed}-{index:06d}",
            )
        )
    return rows


def load_runs(store: ClickHouseStore, rows: Sequence[Mapping[str, Any]]) -> None:
    payload = b"".join(json.dumps(row).encode() + b"\n" for row in rows)
    store.insert_json_rows(RUNS_TABLE, payload, dedup_token=new_token())


def fleet_rows(runs_per_track: int, *, canary_like_stable: bool = False, seed: int = 100) -> list[dict[str, object]]:
    """The example fleet's spans as ``otel_traces`` rows: stable and canary alternating run by run.

    ``canary_like_stable`` deploys the stable configuration on the canary track (a no-change canary).
    """
    fleet = load_example("fleet")
    canary = replace(fleet.STABLE, track="canary", version="v2") if canary_like_stable else fleet.CANARY
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for index in range(runs_per_track):
        for release in (fleet.STABLE, canary):
            fleet.simulate(1, release, tracer_provider=provider, seed=seed + index)
    provider.shutdown()
    return to_rows(exporter.get_finished_spans())


def load_spans(store: ClickHouseStore, rows: Sequence[dict[str, object]]) -> None:
    store.insert_json_rows(TRACES_TABLE, encode_rows(list(rows)), dedup_token=new_token())
