"""The ``agentwatch`` command line: one subcommand per job, readable output, ``--json`` for machines."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO, cast

from agentwatch.collectors.cli.control import add_control_commands
from agentwatch.collectors.cli.drift import add_drift_command
from agentwatch.collectors.cli.read import add_read_commands
from agentwatch.collectors.cli.replay import add_replay_command


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agentwatch.collectors.demo.run import run_demo
    from agentwatch.collectors.replay.sdk_logging import quiet_missing_api_key_warning

    quiet_missing_api_key_warning()  # the Agents SDK example runs without an OpenAI key, by design

    return run_demo(
        data_dir=Path(args.data).resolve(),
        runs_per_track=args.runs,
        parity_runs=args.parity_runs,
        serve=args.serve,
        as_json=args.json,
    )


def _collector(args: argparse.Namespace) -> int:
    import logging

    from agentwatch.collectors.config.settings import SettingsError, resolve
    from agentwatch.collectors.service.collector import CollectorService
    from agentwatch.collectors.service.malloc import limit_arenas
    from agentwatch.collectors.store.clickhouse import StoreError
    from agentwatch.collectors.store.spool import SpoolError

    limit_arenas()  # before any worker thread starts: keeps the resident size flat under load
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {name: getattr(args, name) for name in _COLLECTOR_FLAGS}
    try:
        settings = resolve(config_file=args.config, overrides=overrides)
        service = CollectorService(settings)
    except (SettingsError, SpoolError, StoreError) as exc:  # spool in use, engine cannot start: a setup problem
        print(f"agentwatch collector: {exc}", file=sys.stderr)
        return 2
    try:
        service.serve_forever()
    except OSError as exc:
        print(f"agentwatch collector: {exc}", file=sys.stderr)
        service.stop(drain_timeout_s=0)
        return 2
    return 0


def _schema(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from agentwatch.collectors.store.clickhouse import ClickHouseStore, StoreError, redacted_url
    from agentwatch.collectors.store.schema import LATEST_VERSION, SchemaOptions, render

    options = SchemaOptions(
        database=args.database or "default",
        cluster=args.cluster,
        traces_ttl_days=args.traces_ttl_days,
        runs_ttl_days=args.runs_ttl_days,
    )
    if args.check:
        from agentwatch.collectors.store.schema_check import check

        try:
            store = ClickHouseStore.open(args.clickhouse, database=args.database)
            try:
                findings = check(store, replace(options, database=store.database))
            finally:
                store.close()
        except (StoreError, ValueError) as exc:  # unreachable, refused, or not a store URL
            print(f"agentwatch schema: {redacted_url(args.clickhouse)}: {exc}", file=sys.stderr)
            return 2
        for finding in findings:
            print(finding)
        if not findings:
            print(f"schema is as expected (version {LATEST_VERSION})")
        return 1 if findings else 0
    if args.apply:
        store = ClickHouseStore.open(args.clickhouse, database=args.database)
        try:
            # without --database, the database named in the URL (as the collector does)
            applied = store.ensure_schema(replace(options, database=store.database))
        except StoreError as exc:
            print(f"agentwatch schema: {redacted_url(args.clickhouse)}: {exc}", file=sys.stderr)
            return 2
        finally:
            store.close()
        print(f"applied migrations: {', '.join(map(str, applied)) or 'none (schema is current)'}")
        return 0
    for statement in render(options):
        print(statement.rstrip().rstrip(";") + ";\n")
    return 0


# flags of `agentwatch collector`; each is also a YAML key and an AGENTWATCH_<NAME> variable
_COLLECTOR_FLAGS = (
    "clickhouse",
    "database",
    "cluster",
    "otlp_http",
    "otlp_grpc",
    "metrics",
    "sql",
    "sql_max_execution_seconds",
    "sql_max_memory_bytes",
    "sql_max_result_rows",
    "sql_max_result_bytes",
    "spool",
    "spool_max_bytes",
    "tokens",
    "insecure_allow_remote",
    "header_timeout_seconds",
    "body_timeout_seconds",
    "max_body_bytes",
    "max_spans_per_request",
    "max_attribute_length",
    "max_attribute_key_length",
    "max_attributes_per_span",
    "max_concurrent_decodes",
    "decode_timeout_seconds",
    "max_inflight_bytes",
    "batch_max_spans",
    "batch_max_bytes",
    "batch_timeout_seconds",
    "retry_after_seconds",
    "traces_ttl_days",
    "runs_ttl_days",
    "max_tools_per_agent",
    "max_models_per_agent",
    "redact",
    "dialects",
    "dialect_trace_idle_seconds",
    "pricing_file",
    "drift_enabled",
    "drift_interval_seconds",
    "drift_window",
    "drift_since",
    "drift_alpha",
    "drift_canary_share",
    "drift_max_runs",
    "approval_webhooks",
)


def _add_collector(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from agentwatch.collectors.config.settings import SETTING_TYPES, CollectorSettings

    collector = commands.add_parser(
        "collector",
        help="receive OTLP, store in ClickHouse, expose Prometheus metrics",
        description="Settings come from flags > AGENTWATCH_<NAME> environment > --config YAML > defaults.",
    )
    collector.add_argument("--config", metavar="FILE", help="YAML file with the same settings (snake_case keys)")
    help_text = {
        "clickhouse": "chdb://PATH (embedded, default chdb://./agentwatch-data) or http(s)://user:pw@host:8123/db",
        "otlp_http": "OTLP/HTTP address, also /healthz, /readyz and /api/v1 (default 127.0.0.1:4318)",
        "otlp_grpc": "OTLP/gRPC address, empty to disable (default 127.0.0.1:4317)",
        "metrics": "Prometheus /metrics address (default 127.0.0.1:9464)",
        "sql": "read-only ClickHouse HTTP interface over the embedded store, for Grafana (default off; e.g. "
        "127.0.0.1:8124)",
        "sql_max_execution_seconds": "time limit of one --sql query (default 30)",
        "sql_max_memory_bytes": "memory limit of one --sql query (default 1 GiB)",
        "sql_max_result_rows": "rows one --sql query may return (default 100000)",
        "sql_max_result_bytes": "bytes one --sql query may return (default 128 MiB)",
        "spool": "directory of the durable spool (default ./agentwatch-spool)",
        "tokens": "tokens file: token -> tenant and scopes (ingest, read, metrics, sql, control)",
        "insecure_allow_remote": "allow listening beyond loopback without tokens",
        "header_timeout_seconds": "time for a request's head from its first byte, HTTP listeners (default 10)",
        "body_timeout_seconds": "time for a request's body from its head, HTTP listeners (default 30)",
        "max_concurrent_decodes": "requests decompressed and decoded at once; others wait (default 4)",
        "decode_timeout_seconds": "time limit for one request's decoding, and for waiting for a slot (default 10)",
        "max_inflight_bytes": "request bytes being processed at once; beyond it 429 (default 256 MiB)",
        "batch_max_spans": "spans per ClickHouse insert at most (default 50000)",
        "batch_max_bytes": "bytes per ClickHouse insert at most (default 64 MiB)",
        "batch_timeout_seconds": "longest wait before a partial batch is inserted (default 0.5)",
        "retry_after_seconds": "Retry-After sent with 429 and 503 (default 5)",
        "max_tools_per_agent": "metric label cap: distinct tools per agent (default 50)",
        "max_models_per_agent": "metric label cap: distinct models per agent (default 20)",
        "redact": "scrub secrets from every span (default on; --no-redact turns it off)",
        "dialects": "read runs from other GenAI instrumentations' spans (default on; --no-dialects turns it off)",
        "dialect_trace_idle_seconds": "seconds before a foreign trace whose root never came is dropped (default 300)",
        "pricing_file": "JSON price list overriding the shipped prices, for the costs of foreign runs",
        "drift_enabled": "run the drift analyzer (true/false, default true): canary gauges on /metrics",
        "drift_interval_seconds": "seconds between drift evaluations (default 60)",
        "drift_window": "how far back canary runs are looked for: 24h, 7d (default 7d)",
        "drift_since": "fixed window start for every canary (default: each canary's first run)",
        "drift_alpha": "false-alarm level of the drift tests (default 0.05)",
        "drift_canary_share": "canary traffic share: 0.1 or support=0.1,billing=0.25 (default: estimated)",
        "drift_max_runs": "runs per evaluation at most, the earliest first (default 100000)",
        "approval_webhooks": "comma-separated URL prefixes an approval may ask the collector to notify (default none)",
    }
    defaults = CollectorSettings()
    for name in _COLLECTOR_FLAGS:
        flag = "--" + name.replace("_", "-")
        if getattr(defaults, name) is True:  # on by default: an off switch, --no-redact
            collector.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text.get(name))
        elif SETTING_TYPES[name] is bool:
            collector.add_argument(flag, action="store_const", const=True, default=None, help=help_text.get(name))
        else:
            collector.add_argument(flag, default=None, metavar=name.upper(), help=help_text.get(name))
    collector.set_defaults(handler=_collector)

    schema = commands.add_parser("schema", help="print, apply or check the ClickHouse schema migrations")
    action = schema.add_mutually_exclusive_group(required=True)
    action.add_argument("--print", action="store_true", help="print the DDL")
    action.add_argument("--apply", action="store_true", help="apply pending migrations to --clickhouse")
    action.add_argument(
        "--check",
        action="store_true",
        help="compare --clickhouse with the schema (pending migrations, a foreign otel_traces sort key or TTL, "
        "missing columns): one line per difference; exit 0 as expected, 1 differences, 2 errors",
    )
    schema.add_argument("--clickhouse", default="chdb://./agentwatch-data", help="store URL (for --apply, --check)")
    schema.add_argument("--database", default=None, help="default: the database of --clickhouse, else 'default'")
    schema.add_argument("--cluster", default=None, metavar="NAME", help="ON CLUSTER variant: Replicated + Distributed")
    schema.add_argument("--traces-ttl-days", type=int, default=30)
    schema.add_argument("--runs-ttl-days", type=int, default=400)
    schema.set_defaults(handler=_schema)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentwatch", description="Observability and governance for LLM agents.")
    parser.add_argument("--version", action="version", version=f"agentwatch {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="run the example agents and print what the telemetry shows")
    demo.add_argument("--json", action="store_true", help="machine-readable output")
    demo.add_argument("--serve", action="store_true", help="keep the collector running after the report")
    demo.add_argument("--runs", type=int, default=300, help="tickets per release (stable and canary), default 300")
    demo.add_argument(
        "--parity-runs",
        type=int,
        default=40,
        help="tickets run on each runtime (custom loop, OpenAI Agents SDK, LangGraph) for the parity table; 0 skips",
    )
    demo.add_argument("--data", default="agentwatch-data", help="embedded store directory (default ./agentwatch-data)")
    demo.set_defaults(handler=_demo)
    _add_collector(commands)
    add_read_commands(commands)
    add_replay_command(commands)
    add_drift_command(commands)
    add_control_commands(commands)
    _add_artifact_commands(commands)
    _add_mcp_proxy_command(commands)
    return parser


def _add_mcp_proxy_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``mcp-proxy``: the instrumentation's MCP proxy, loaded only when it runs (the options are its own)."""
    proxy = commands.add_parser(
        "mcp-proxy", help="an MCP server fronting upstream MCP servers, every tool call through the gateway"
    )
    proxy.add_argument("--config", required=True, help="agentwatch YAML/JSON config with an mcp section")
    proxy.add_argument("--stdio", action="store_true", help="serve one client over stdin/stdout (else Streamable HTTP)")
    proxy.add_argument("--host", help="listen host (default: mcp.listen.host)")
    proxy.add_argument("--port", type=int, help="listen port (default: mcp.listen.port)")
    proxy.set_defaults(handler=_mcp_proxy)


def _mcp_proxy(args: argparse.Namespace) -> int:
    from agentwatch.instrumentation.integrations.mcp import proxy

    argv = ["--config", args.config, *(["--stdio"] if args.stdio else [])]
    argv += [*(["--host", args.host] if args.host else []), *(["--port", str(args.port)] if args.port else [])]
    return proxy.main(argv)


def _add_artifact_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``dashboards``, ``alerts`` and ``generate``: the generators of the committed artifacts.

    Imported here, lazily, so the collector never loads the dashboards and alerts roots at import
    time; the heavy dependency (grafana-foundation-sdk, the dashboards extra) loads only when a
    dashboards command runs. The two roots never import each other: this is where they meet, so
    ``generate`` gets the alert rules' writer from here.
    """
    try:
        from agentwatch.alerts import cli as alerts_cli
        from agentwatch.dashboards import cli as dashboards_cli
    except ImportError:  # a partial install without the generator roots: the service commands still work
        return
    alerts_cli.add_command(commands)
    dashboards_cli.add_commands(commands, write_rules=alerts_cli.write_committed)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agentwatch")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


class _PipeSafeStdout:
    """``sys.stdout`` whose reader may leave (``agentwatch runs | head -1``): the rest goes to /dev/null.

    A closed pipe must neither print a traceback nor change the exit code (a gate's code is its
    verdict), so the command carries on writing into /dev/null and returns its own code.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()
            self._stream.flush()  # what the buffer still holds now goes to /dev/null

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    stdout = sys.stdout
    sys.stdout = cast(TextIO, _PipeSafeStdout(stdout))
    try:
        result: int = handler(args)
        sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's code for SIGINT, no traceback
        print(f"agentwatch {args.command}: interrupted", file=sys.stderr)
        result = 130
        if args.command == "demo":
            # the demo drove agent runtimes whose worker threads and exit hooks (thread pools, span
            # exporters) may still wait on work the interrupt cut short; its collector has stopped
            # and what it acknowledged is in the spool, so nothing is lost by leaving now
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(result)
    finally:
        sys.stdout = stdout
    return result


if __name__ == "__main__":
    sys.exit(main())
