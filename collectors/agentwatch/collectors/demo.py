"""``agentwatch demo``: the whole pipeline on one machine, with nothing to start by hand.

Starts the collector on the embedded store, runs the example support agent as a stable and a
canary release (the canary subtly worse), exports over OTLP/HTTP with the official exporter, waits
until every run is stored, then prints the fleet report read back from ClickHouse and where to
look next. ``--serve`` keeps the collector running afterwards.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentwatch.collectors.queries import RunFilter, Stats, render_stats, stats
from agentwatch.collectors.service import CollectorService
from agentwatch.collectors.settings import CollectorSettings

SERVICE_NAME = "support-agent"


def _port_or_any(preferred: int) -> int:
    """The well-known port when it is free, else 0 (any): a second demo must not fail on a busy port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return 0
    return preferred


def demo_settings(data_dir: Path) -> CollectorSettings:
    return CollectorSettings(
        clickhouse=f"chdb://{data_dir}",
        spool=str(data_dir.with_name(data_dir.name + "-spool")),
        otlp_http=f"127.0.0.1:{_port_or_any(4318)}",
        otlp_grpc=f"127.0.0.1:{_port_or_any(4317)}",
        metrics=f"127.0.0.1:{_port_or_any(9464)}",
        batch_timeout_seconds=0.2,
    ).validate()


def _export_fleet(service: CollectorService, runs_per_track: int, progress: Callable[[str], None]) -> dict[str, Any]:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from agentwatch.collectors._examples import load_example

    fleet = load_example("fleet")
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{service.http_port}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=2048))
    outcomes: dict[str, Any] = {}
    for release in (fleet.STABLE, fleet.CANARY):
        progress(f"  running {runs_per_track} tickets on {release.track} ({release.version}, {release.model_name})")
        outcomes[release.track] = dict(fleet.simulate(runs_per_track, release, tracer_provider=provider))
    provider.force_flush()
    provider.shutdown()
    return outcomes


def run_demo(
    *, data_dir: Path, runs_per_track: int = 300, serve: bool = False, as_json: bool = False, timeout_s: float = 60
) -> int:
    out = sys.stderr if as_json else sys.stdout

    def progress(message: str) -> None:
        print(message, file=out, flush=True)

    started_at = datetime.now(UTC)
    begin = time.perf_counter()
    service = CollectorService(demo_settings(data_dir))
    service.start()
    try:
        progress(f"agentwatch demo: collector on OTLP/HTTP :{service.http_port}, embedded ClickHouse at {data_dir}")
        if not service.wait_ready(timeout_s):
            print(f"agentwatch demo: the store did not come up: {service.writer.last_error}", file=sys.stderr)
            return 1
        expected = runs_per_track * 2
        _export_fleet(service, runs_per_track, progress)
        progress("  waiting until every span is stored ...")
        deadline = time.monotonic() + timeout_s
        window = RunFilter(since=started_at)
        report = stats(service.store, window)
        while _runs(report) < expected and time.monotonic() < deadline:
            service.writer.wait_until_drained(1.0)
            report = stats(service.store, window)
        elapsed = time.perf_counter() - begin
        if as_json:
            print(json.dumps({**report.to_dict(), "expected_runs": expected, "stored_runs": _runs(report)}, indent=2))
        else:
            progress(f"  {_runs(report)} of {expected} runs stored, {elapsed:.1f} s in all\n")
            print(render_stats(report))
            print(_next_steps(service))
        if _runs(report) < expected:
            print(f"agentwatch demo: only {_runs(report)} of {expected} runs arrived", file=sys.stderr)
            return 1
        if serve:
            progress("collector keeps running (Ctrl-C to stop)")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0
    finally:
        service.stop()


def _runs(report: Stats) -> int:
    return sum(int(row["runs"]) for row in report.stop_reasons)


def _next_steps(service: CollectorService) -> str:
    return "\n".join(
        [
            "",
            "Where to look next:",
            f"  Prometheus metrics   http://127.0.0.1:{service.metrics_port}/metrics",
            "  runs                 agentwatch runs --stop-reason max_tool_calls --track canary",
            "  one run's trace      agentwatch trace RUN_ID",
            f"  read API             http://127.0.0.1:{service.http_port}/api/v1/runs (with --serve)",
            "  keep it running      agentwatch demo --serve",
        ]
    )
