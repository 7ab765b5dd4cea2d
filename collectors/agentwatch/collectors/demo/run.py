"""``agentwatch demo``: the whole pipeline on one machine, with nothing to start by hand.

Starts the collector on the embedded store, runs the example support agent as a stable and a
canary release (the canary subtly worse), exports over OTLP/HTTP with the official exporter, waits
until every run is stored, then prints the fleet report read back from ClickHouse and where to
look next. Then the same tickets run on each runtime the agent is written for (the custom loop,
the OpenAI Agents SDK, LangGraph) and a parity table compares them, read back from ClickHouse
too; and runs recorded on the custom loop are replayed onto the Agents SDK and back
(``demo_replay``). ``--serve`` keeps the collector running afterwards.

Where to look next is true for how the demo ran: after a plain run the collector has stopped, so
the commands read the store directly (``--clickhouse chdb://DIR``, with the ``agentwatch`` this
demo runs as, spelled so it works from the shell); with ``--serve`` they name the URLs the
collector actually bound. ``--serve`` listens on the well-known ports (or ``AGENTWATCH_OTLP_HTTP``,
``AGENTWATCH_OTLP_GRPC``, ``AGENTWATCH_METRICS``, ``AGENTWATCH_SQL``: the read-only SQL endpoint for
Grafana, which only ``--serve`` opens) and stops with exit 2 when one is busy, rather than
serving on another port the printed commands would not use.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, cast

from agentwatch.collectors.config.settings import ENV_PREFIX, CollectorSettings, SettingsError, parse_address
from agentwatch.collectors.demo.replay import ReplayResult, record_scenarios, render_replay, replay_recorded
from agentwatch.collectors.drift.analyzer import AgentDrift, analyze_all
from agentwatch.collectors.metric_names import CANARY_VERDICT, VERDICT_CODES
from agentwatch.collectors.read.filters import RunFilter
from agentwatch.collectors.read.models import Stats
from agentwatch.collectors.read.render import render_stats
from agentwatch.collectors.read.stats import stats
from agentwatch.collectors.service.collector import CollectorService
from agentwatch.collectors.store.schema import RUNS_TABLE

SERVICE_NAME = "support-agent"
EXIT_PORT_BUSY: Final = 2
# the listeners ``--serve`` keeps open: setting, well-known address, what it serves
SERVE_ADDRESSES: Final = (
    ("otlp_http", "127.0.0.1:4318", "OTLP/HTTP and the read API"),
    ("otlp_grpc", "127.0.0.1:4317", "OTLP/gRPC"),
    ("metrics", "127.0.0.1:9464", "Prometheus /metrics"),
    ("sql", "127.0.0.1:8124", "the read-only ClickHouse SQL endpoint for Grafana"),
)
# Grafana alone, with the dashboards, reading the SQL endpoint above (relative to the repository)
GRAFANA_LOCAL_COMPOSE: Final = "deploy/compose/grafana-local.yaml"


class PortBusy(Exception):
    """A port ``--serve`` needs is taken; the message names it, the flag and the way out."""


def _port_or_any(preferred: int) -> int:
    """The well-known port when it is free, else 0 (any): a second demo must not fail on a busy port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return 0
    return preferred


def _is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the collector binds
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _busy_message(setting: str, address: str, what: str) -> str:
    env = ENV_PREFIX + setting.upper()
    return (
        f"agentwatch demo: --serve needs {address} ({what}), but that port is in use (another collector or demo?).\n"
        f"  Stop what listens there, pick another port ({env}=127.0.0.1:PORT agentwatch demo --serve), "
        "or run without --serve."
    )


def serve_addresses(environ: Mapping[str, str]) -> dict[str, str]:
    """The addresses ``--serve`` listens on, each checked free; ``PortBusy`` names the first busy one."""
    addresses = {}
    for setting, default, what in SERVE_ADDRESSES:
        address = environ.get(ENV_PREFIX + setting.upper()) or default
        host, port = parse_address(address, setting=ENV_PREFIX + setting.upper())
        if port and not _is_free(host, port):
            raise PortBusy(_busy_message(setting, address, what))
        addresses[setting] = address
    return addresses


def demo_settings(
    data_dir: Path,
    *,
    drift_since: datetime | None = None,
    serve: bool = False,
    environ: Mapping[str, str] | None = None,
) -> CollectorSettings:
    """The demo's collector: embedded store beside ``data_dir``; drift over this demo's runs only.

    A plain run takes the well-known ports when free and any port otherwise (nothing outlives it);
    ``--serve`` takes the ports its printed URLs name, or raises ``PortBusy``.
    """
    if serve:
        addresses = serve_addresses(os.environ if environ is None else environ)
    else:
        addresses = {
            setting: f"127.0.0.1:{_port_or_any(int(default.rsplit(':', 1)[1]))}"
            for setting, default, _ in SERVE_ADDRESSES
            if setting != "sql"  # only a collector that keeps running serves Grafana
        }
    return CollectorSettings(
        clickhouse=f"chdb://{data_dir}",
        spool=str(data_dir.with_name(data_dir.name + "-spool")),
        batch_timeout_seconds=0.2,
        drift_since=drift_since.isoformat() if drift_since else "",
        otlp_http=addresses["otlp_http"],
        otlp_grpc=addresses["otlp_grpc"],
        metrics=addresses["metrics"],
        sql=addresses.get("sql", ""),
    ).validate()


@dataclass(frozen=True)
class _Sent:
    """When the parity runs and the recorded runs began, and how many runs were recorded for replay."""

    parity_started: datetime
    recording_started: datetime
    recorded: int


def _boundary() -> datetime:
    # a clear boundary between two reports, whatever the clock's resolution
    time.sleep(0.01)
    moment = datetime.now(UTC)
    time.sleep(0.01)
    return moment


def _export_fleet(
    service: CollectorService, runs_per_track: int, parity_runs: int, progress: Callable[[str], None]
) -> _Sent:
    """Send the fleet's traffic, the parity traffic, then the runs recorded for replay."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from agentwatch.collectors._examples import load_example

    fleet = load_example("fleet")
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{service.http_port}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=65536, max_export_batch_size=2048))
    try:
        releases = (fleet.STABLE, fleet.CANARY)
        described = " and ".join(f"{r.track} ({r.version}, {r.model_name})" for r in releases)
        progress(f"  running {runs_per_track} tickets each on {described}, alternating as a traffic split does")
        # run by run, as live traffic split between two releases arrives: the drift analysis reads the
        # runs in the order they ended, and two blocks one after the other would look like a change
        for index in range(runs_per_track):
            for release in releases:
                fleet.simulate(1, release, tracer_provider=provider, seed=FLEET_SEED + index)
        parity_started = _boundary()
        for runtime in RUNTIMES if parity_runs else ():
            progress(f"  running the same {parity_runs} stable tickets on the {runtime} runtime")
            fleet.simulate(parity_runs, fleet.STABLE, tracer_provider=provider, seed=PARITY_SEED, runtime=runtime)
        recording_started = _boundary()
        recorded = 0
        if parity_runs:
            progress("  recording the example tickets on the custom loop and the Agents SDK (content capture on)")
            recorded = record_scenarios(provider)
    finally:
        provider.force_flush()
        provider.shutdown()
    return _Sent(parity_started, recording_started, recorded)


# The runtimes the example agent is written for, in the order the parity table shows them.
RUNTIMES: Final = ("custom", "openai-agents", "langgraph")
PARITY_SEED: Final = 11
FLEET_SEED: Final = 7  # the example fleet's own default seed


def runtime_parity(service: CollectorService, since: datetime, until: datetime | None = None) -> list[dict[str, Any]]:
    """Per runtime, the runs in [since, until): stop-reason counts, steps, tool calls and cost, from ClickHouse."""
    rows = service.store.query(
        f"""SELECT Runtime AS runtime, count() AS runs,
                sumMap(map(StopReason, toUInt64(1))) AS stop_reasons,
                avg(Steps) AS mean_steps, avg(ToolCalls) AS mean_tool_calls, avg(LlmCalls) AS mean_llm_calls,
                sum(CostUsd) AS total_usd
            FROM {RUNS_TABLE} FINAL
            WHERE StartTime >= {{since:DateTime64(9)}} AND StartTime < {{until:DateTime64(9)}}
            GROUP BY runtime""",
        {"since": since, "until": until or datetime.now(UTC)},
    )
    order = {name: index for index, name in enumerate(RUNTIMES)}
    parity = [
        {
            "runtime": str(row["runtime"]),
            "runs": int(cast(int, row["runs"])),
            "stop_reasons": {str(k): int(v) for k, v in sorted(cast(dict[str, int], row["stop_reasons"]).items())},
            "mean_steps": round(float(cast(float, row["mean_steps"])), 3),
            "mean_tool_calls": round(float(cast(float, row["mean_tool_calls"])), 3),
            "mean_llm_calls": round(float(cast(float, row["mean_llm_calls"])), 3),
            "total_usd": round(float(cast(float, row["total_usd"])), 6),
        }
        for row in rows
    ]
    return sorted(parity, key=lambda row: order.get(row["runtime"], len(order)))


def render_parity(parity: list[dict[str, Any]]) -> str:
    """The parity table: one line per runtime; identical rows mean the runtimes behaved alike."""
    reasons = sorted({reason for row in parity for reason in row["stop_reasons"]})
    header = ["runtime", "runs", *reasons, "steps/run", "tools/run", "llm/run", "cost USD"]
    lines = [
        [
            row["runtime"],
            str(row["runs"]),
            *(str(row["stop_reasons"].get(reason, 0)) for reason in reasons),
            f"{row['mean_steps']:.2f}",
            f"{row['mean_tool_calls']:.2f}",
            f"{row['mean_llm_calls']:.2f}",
            f"{row['total_usd']:.4f}",
        ]
        for row in parity
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    render = [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) for cells in [header, *lines]
    ]
    alike = len({json.dumps({k: v for k, v in row.items() if k != "runtime"}, sort_keys=True) for row in parity}) == 1
    verdict = "same stop reasons, steps, tool calls and cost on every runtime" if alike else "the runtimes differ"
    return "\n".join(["Runtime parity (the same tickets on each runtime)", *render, f"  -> {verdict}"])


def _start_service(data_dir: Path, started_at: datetime, *, serve: bool) -> CollectorService | int:
    """The demo's collector, started; or exit 2 after a message when a port ``--serve`` needs is busy."""
    try:
        settings = demo_settings(data_dir, drift_since=started_at, serve=serve)
    except (PortBusy, SettingsError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_PORT_BUSY
    service = CollectorService(settings)
    try:
        service.start()
    except (OSError, RuntimeError) as exc:  # a port taken between the check and the bind
        service.stop(drain_timeout_s=0)
        print(f"agentwatch demo: could not listen: {exc}" + (" (--serve)" if serve else ""), file=sys.stderr)
        return EXIT_PORT_BUSY
    return service


def run_demo(
    *,
    data_dir: Path,
    runs_per_track: int = 300,
    parity_runs: int = 40,
    serve: bool = False,
    as_json: bool = False,
    timeout_s: float = 60,
) -> int:
    out = sys.stderr if as_json else sys.stdout

    def progress(message: str) -> None:
        print(message, file=out, flush=True)

    started_at = datetime.now(UTC)
    begin = time.perf_counter()
    service = _start_service(data_dir, started_at, serve=serve)
    if isinstance(service, int):
        return service
    try:
        progress(f"agentwatch demo: collector on OTLP/HTTP :{service.http_port}, embedded ClickHouse at {data_dir}")
        if not service.wait_ready(timeout_s):
            print(f"agentwatch demo: the store did not come up: {service.writer.last_error}", file=sys.stderr)
            return 1
        expected = runs_per_track * 2
        expected_parity = parity_runs * len(RUNTIMES)
        sent = _export_fleet(service, runs_per_track, parity_runs, progress)
        parity_started = sent.parity_started
        progress("  waiting until every span is stored ...")
        deadline = time.monotonic() + timeout_s
        window = RunFilter(since=started_at, until=parity_started)
        recorded_window = RunFilter(since=sent.recording_started)

        def stored() -> tuple[Stats, list[dict[str, Any]], int]:
            parity = runtime_parity(service, parity_started, sent.recording_started)
            return stats(service.store, window), parity, _runs(stats(service.store, recorded_window))

        report, parity, recorded = stored()
        while (
            _runs(report) < expected or sum(row["runs"] for row in parity) < expected_parity or recorded < sent.recorded
        ) and time.monotonic() < deadline:
            service.writer.wait_until_drained(1.0)
            report, parity, recorded = stored()
        stored_parity = sum(row["runs"] for row in parity)
        drift = canary_drift(service, since=started_at, until=parity_started)
        replays = replay_recorded(service.store, since=sent.recording_started) if sent.recorded else []
        elapsed = time.perf_counter() - begin
        if not as_json:
            stored = _runs(report) + stored_parity
            progress(f"  {stored} of {expected + expected_parity} runs stored, {elapsed:.1f} s\n")
        next_steps = NextSteps(service=service, data_dir=data_dir, serve=serve, run_id=_example_run_id(service, window))
        _print_results(
            service, report, parity, drift, replays, as_json=as_json, expected=expected, next_steps=next_steps
        )
        if _runs(report) < expected or stored_parity < expected_parity:
            print(
                f"agentwatch demo: only {_runs(report) + stored_parity} of {expected + expected_parity} runs arrived",
                file=sys.stderr,
            )
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


def _print_results(
    service: CollectorService,
    report: Stats,
    parity: list[dict[str, Any]],
    drift: list[AgentDrift],
    replays: list[ReplayResult],
    *,
    as_json: bool,
    expected: int,
    next_steps: NextSteps,
) -> None:
    if as_json:
        summary = {
            "expected_runs": expected,
            "stored_runs": _runs(report),
            "runtime_parity": parity,
            "drift": [result.to_dict() for result in drift],
            "drift_gauges": published_verdicts(service),
            "replay": [result.to_dict() for result in replays],
            "next_steps": next_steps.commands(),
        }
        print(json.dumps({**report.to_dict(), **summary}, indent=2))
        return
    print(render_stats(report))
    if drift:
        print()
        print(render_drift(drift, published_verdicts(service)))
    if parity:
        print()
        print(render_parity(parity))
    if replays:
        print()
        print(render_replay(replays))
    print(next_steps.render())


def canary_drift(service: CollectorService, *, since: datetime, until: datetime) -> list[AgentDrift]:
    """Each canary against stable over the demo's fleet traffic, published as the collector's drift gauges."""
    results = analyze_all(service.store, replace(service.drift_options, since=since, until=until))
    if service.drift_loop is not None:
        service.drift_loop.publisher.publish(results)
    return results


def published_verdicts(service: CollectorService) -> dict[str, dict[str, int]]:
    """``agentwatch_canary_verdict`` as /metrics shows it: agent → metric → code (0 pass, 1 inconclusive, 2 fail)."""
    verdicts: dict[str, dict[str, int]] = {}
    for family in service.metrics.registry.collect():
        if family.name == CANARY_VERDICT:
            for sample in family.samples:
                verdicts.setdefault(sample.labels["agent"], {})[sample.labels["metric"]] = int(sample.value)
    return {agent: dict(sorted(metrics.items())) for agent, metrics in sorted(verdicts.items())}


def render_drift(results: list[AgentDrift], gauges: dict[str, dict[str, int]]) -> str:
    """The drift report per canary, and what the gauges (and so the alert rules) see."""
    from agentwatch.collectors.drift.render import render_report

    names = {code: verdict for verdict, code in VERDICT_CODES.items()}
    sections = ["Canary drift (canary vs stable, the same report as `agentwatch drift --agent NAME`)"]
    for result in results:
        sections.append(render_report(result.to_dict()))
        worst = max(gauges.get(result.agent, {}).values(), default=None)
        if worst is not None:
            sections.append(
                f'  -> /metrics: max({CANARY_VERDICT}{{agent="{result.agent}"}}) = {worst} ({names[worst]})'
            )
    sections.append(
        "  (the demo's analyzer round ran on this demo's fleet traffic, as stored at this moment; a later\n"
        "   `agentwatch drift` reads every run stored by then, other demos and the parity runs included, and its\n"
        "   sequential test weighs the canary's whole history, so its figures may differ)"
    )
    return "\n".join(sections)


def _runs(report: Stats) -> int:
    return sum(int(row["runs"]) for row in report.stop_reasons)


def _example_run_id(service: CollectorService, window: RunFilter) -> str | None:
    """A real run for the printed ``agentwatch trace`` command: a canary stopped by its tool-call budget."""
    rows = service.store.query(
        f"""SELECT RunId AS run_id FROM {RUNS_TABLE} FINAL
            WHERE StartTime >= {{since:DateTime64(9)}} AND StartTime < {{until:DateTime64(9)}}
            ORDER BY StopReason = 'max_tool_calls' DESC, Track = 'canary' DESC, StartTime DESC LIMIT 1""",
        {"since": window.since, "until": window.until or datetime.now(UTC)},
    )
    return str(rows[0]["run_id"]) if rows else None


def agentwatch_command() -> tuple[str, str | None]:
    """How to run ``agentwatch`` from the user's shell; and the ``activate`` script when it is not on PATH.

    The demo often runs as ``.venv/bin/agentwatch`` (``make demo``) with the virtualenv not active:
    then the path is spelled out (relative to the current directory when inside it).
    """
    script = Path(sys.prefix) / "bin" / "agentwatch"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m agentwatch.collectors.cli.main", None
    on_path = shutil.which("agentwatch")
    if on_path is not None and Path(on_path).absolute() == script.absolute():
        return "agentwatch", None
    try:
        spelled = script.absolute().relative_to(Path.cwd())
    except ValueError:
        spelled = script.absolute()
    activate = spelled.parent / "activate"
    return shlex.quote(str(spelled)), shlex.quote(str(activate)) if activate.exists() else None


@dataclass(frozen=True)
class NextSteps:
    """Where to look next, true for how the demo ran: the store after a plain run, the live URLs with ``--serve``."""

    service: CollectorService
    data_dir: Path
    serve: bool
    run_id: str | None

    @property
    def source(self) -> str:
        if self.serve:
            return f"--collector http://127.0.0.1:{self.service.http_port}"
        return f"--clickhouse {shlex.quote(f'chdb://{self.data_dir}')}"

    @property
    def _data_flag(self) -> str:
        default = Path.cwd() / "agentwatch-data"
        return "" if self.data_dir == default else f" --data {shlex.quote(str(self.data_dir))}"

    def commands(self) -> dict[str, str]:
        """Label → a command line that works as printed (with ``--serve``: while the demo runs)."""
        aw, _ = agentwatch_command()
        src = self.source
        run_id = self.run_id or "RUN_ID"
        return {
            "runs": f"{aw} runs {src} --stop-reason max_tool_calls --track canary",
            "one run's trace": f"{aw} trace {run_id} {src}",
            "canary gate": f"{aw} drift --agent support {src}",
            "replay on a runtime": f"{aw} replay {src} --since 1h"
            " --target agentwatch_examples.openai_agents_support:replay_target",
        }

    def render(self) -> str:
        aw, activate = agentwatch_command()
        service = self.service
        if self.serve:
            lines = [
                "",
                "Where to look next (the collector keeps running until Ctrl-C):",
                f"  read API             http://127.0.0.1:{service.http_port}/api/v1/runs",
                f"  Prometheus metrics   http://127.0.0.1:{service.metrics_port}/metrics",
                f"  send your own spans  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{service.http_port}",
                f"  SQL for Grafana      http://127.0.0.1:{service.sql_port}  (read-only ClickHouse HTTP interface)",
                f"  Grafana dashboards   {grafana_local_command()}  then http://127.0.0.1:3000",
            ]
        else:
            lines = [
                "",
                f"Where to look next (these read the demo's store at {self.data_dir} once the demo has exited):",
            ]
        commands = self.commands()
        if self.run_id is not None:  # the placeholder spelled out, and a real id to put in it
            commands["one run's trace"] = (
                f"{aw} trace RUN_ID {self.source}  (RUN_ID from `runs`, e.g. {shlex.quote(self.run_id)})"
            )
        commands["canary gate"] += "  (exit 1 when the canary is worse)"
        lines += [f"  {label:<20} {command}" for label, command in commands.items()]
        if not self.serve:
            lines.append(
                f"  live /metrics, API   {aw} demo --serve{self._data_flag}  (keeps the collector running: "
                "http://127.0.0.1:9464/metrics, http://127.0.0.1:4318/api/v1/runs, SQL for Grafana on 127.0.0.1:8124)"
            )
        if activate is not None:
            lines.append(f"  plain `agentwatch`   source {activate}  (puts agentwatch on PATH in this shell)")
        return "\n".join(lines)


def grafana_local_command() -> str:
    """The command that starts Grafana alone against ``--serve``'s SQL endpoint, spelt for where it runs.

    From the repository root the relative path works; elsewhere the file's absolute path in this
    checkout (an editable install), or the relative path when the package was installed without it.
    """
    compose = Path(__file__).resolve().parents[4] / GRAFANA_LOCAL_COMPOSE
    if not compose.exists():
        return f"docker compose -f {GRAFANA_LOCAL_COMPOSE} up -d  (from an agentwatch checkout)"
    try:
        shown = str(compose.relative_to(Path.cwd()))
    except ValueError:
        shown = str(compose)
    return f"docker compose -f {shlex.quote(shown)} up -d"
