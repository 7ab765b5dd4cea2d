"""``agentwatch drift --agent NAME``: is the canary worse than its baseline? A report and an exit code for CI/CD.

Reads from a running collector's read API (``--collector URL``, ``GET /api/v1/drift``) or a store
opened here (``--clickhouse URL``), resolved as ``agentwatch runs`` does. The default test is the
anytime-valid sequential one (safe to re-run every minute); ``--fixed`` takes the fixed-horizon
decision at this moment instead. ``--watch`` re-evaluates every ``--interval`` seconds, prints a
line whenever the verdict changes, stops at the first ``fail`` (anytime-valid, so final) and
otherwise at ``--timeout`` with the last verdict's code.

Exit codes, for a pipeline gate:

- 0 ``pass`` (and ``inconclusive`` unless ``--fail-on-inconclusive``)
- 1 ``fail``: the canary is worse, roll back
- 2 usage, connection or store error, unknown agent (one line on stderr)
- 3 ``inconclusive`` with ``--fail-on-inconclusive``: not enough data yet
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from agentwatch.collectors.cli.read import (
    DEFAULT_COLLECTOR,
    CollectorSource,
    ReadError,
    Source,
    StoreSource,
    add_source_flags,
    open_source,
)
from agentwatch.collectors.config.settings import DEFAULT_CLICKHOUSE
from agentwatch.collectors.drift.render import headline, render_report
from agentwatch.collectors.read.filters import InvalidQuery

EXIT_PASS: Final = 0
EXIT_FAIL: Final = 1
EXIT_ERROR: Final = 2
EXIT_INCONCLUSIVE: Final = 3
DRIFT_PATH: Final = "/api/v1/drift"


def exit_code(verdict: str, *, fail_on_inconclusive: bool = False) -> int:
    """The gate's exit status for ``verdict``."""
    if verdict == "fail":
        return EXIT_FAIL
    if verdict == "inconclusive" and fail_on_inconclusive:
        return EXIT_INCONCLUSIVE
    return EXIT_PASS


# --- evaluation -----------------------------------------------------------------------------------


def _params(args: argparse.Namespace) -> dict[str, str]:
    raw = {
        "agent": args.agent,
        "since": args.since,
        "until": args.until,
        "mode": "fixed" if args.fixed else None,
        "alpha": args.alpha,
        "canary_share": args.canary_share,
        "tenant": args.tenant,
    }
    return {name: str(value) for name, value in raw.items() if value is not None}


def evaluate(source: Source, params: Mapping[str, str]) -> dict[str, Any]:
    """The drift report (the read API's JSON shape) for ``params`` from ``source``."""
    from agentwatch.collectors.drift.analyzer import AgentNotFound, DriftOptions, analyze, options_from_params

    if isinstance(source, CollectorSource):
        # the raw strings go to the server, which parses them the same way ("2h" is relative to its clock)
        document = source.get_document(DRIFT_PATH, dict(params))
        if document is None:
            raise ReadError(f"{source.description}: no runs of agent {params['agent']!r} in the window (404)")
        report: Any = document.get("drift")
        if not isinstance(report, dict) or "verdict" not in report:
            raise ReadError(f"{source.description} answered an unexpected drift document")
        return report
    if isinstance(source, StoreSource):
        agent, options = options_from_params(params, DriftOptions())
        try:
            result = source.run_query(lambda: analyze(source.store, agent, options))
        except AgentNotFound as exc:
            raise ReadError(f"{source.description}: {exc}") from None
        answer: dict[str, Any] = result.to_dict()
        return answer
    raise ReadError(f"cannot evaluate drift from {source.description}")


# --- rendering ------------------------------------------------------------------------------------


# --- the command ----------------------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"agentwatch drift: {message}", file=sys.stderr)
    return code


def _watch(
    args: argparse.Namespace,
    run: Callable[[], dict[str, Any]],
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> int:
    deadline = monotonic() + args.timeout if args.timeout else math.inf
    shown: str | None = None
    report: dict[str, Any] = {}
    while True:
        report = run()
        if report["verdict"] != shown:
            shown = str(report["verdict"])
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(json.dumps({"time": stamp, "drift": report}) if args.json else f"{stamp} {headline(report)}")
            sys.stdout.flush()
        if shown == "fail" or monotonic() + args.interval > deadline:
            break
        sleep(args.interval)
    if not args.json:
        print(render_report(report))
    return exit_code(str(report["verdict"]), fail_on_inconclusive=args.fail_on_inconclusive)


def drift_command(args: argparse.Namespace) -> int:
    """``agentwatch drift``: the report and the gate's exit code."""
    from agentwatch.collectors.drift.analyzer import DriftOptions, options_from_params

    params = _params(args)
    try:
        options_from_params(params, DriftOptions())  # a typo fails here, before any I/O
    except InvalidQuery as exc:
        return _fail(str(exc))
    if args.interval <= 0 or (args.timeout is not None and args.timeout <= 0):
        return _fail("--interval and --timeout must be positive seconds")
    try:
        source = open_source(args)
    except ReadError as exc:
        return _fail(str(exc), exc.code)
    try:
        if args.watch:
            return _watch(args, lambda: evaluate(source, params))
        report = evaluate(source, params)
        print(json.dumps({"drift": report}, indent=2) if args.json else render_report(report))
        return exit_code(str(report["verdict"]), fail_on_inconclusive=args.fail_on_inconclusive)
    except InvalidQuery as exc:
        return _fail(str(exc))
    except ReadError as exc:
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        return _fail("interrupted")
    finally:
        source.close()


def add_drift_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``drift`` to the ``agentwatch`` command (sets ``handler``)."""
    parser = subparsers.add_parser(
        "drift",
        help="canary vs baseline: verdict, evidence and an exit code for CI/CD gates",
        description=(
            "Compares the canary of --agent with its baseline (or stable) track. Reads from --collector URL or "
            f"--clickhouse URL; with neither, the collector at {DEFAULT_COLLECTOR}, else {DEFAULT_CLICKHOUSE}. "
            "Exit codes: 0 pass (and inconclusive), 1 fail, 2 error, 3 inconclusive with --fail-on-inconclusive."
        ),
    )
    parser.add_argument("--agent", required=True, help="the agent whose canary to judge")
    parser.add_argument("--since", help="window start: 15m, 2h, 7d or ISO-8601 (default: the canary's first run)")
    parser.add_argument("--until", help="window end: 15m, 2h, 7d or ISO-8601 (default: now)")
    parser.add_argument("--fixed", action="store_true", help="fixed-horizon decision now (default: sequential)")
    parser.add_argument("--alpha", type=float, help="false-alarm level (default 0.05)")
    parser.add_argument(
        "--canary-share", type=float, help="share of traffic the canary receives (default: estimated from the runs)"
    )
    parser.add_argument(
        "--fail-on-inconclusive", action="store_true", help="exit 3 instead of 0 when there is not enough data yet"
    )
    parser.add_argument("--watch", action="store_true", help="re-evaluate every --interval, print verdict changes")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between --watch evaluations (60)")
    parser.add_argument("--timeout", type=float, help="stop --watch after this many seconds (default: never)")
    add_source_flags(parser)
    parser.add_argument("--tenant", help="only this tenant's runs (a tenant-scoped token is always confined)")
    parser.add_argument("--json", action="store_true", help="machine-readable output (JSON lines with --watch)")
    parser.set_defaults(handler=drift_command)


__all__ = [
    "EXIT_ERROR",
    "EXIT_FAIL",
    "EXIT_INCONCLUSIVE",
    "EXIT_PASS",
    "add_drift_command",
    "drift_command",
    "evaluate",
    "exit_code",
]
