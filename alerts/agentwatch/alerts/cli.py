"""``agentwatch alerts [--out DIR] [--check] [--budget-slo X]``: write the rule files and the runbook, or check them.

The main CLI (``agentwatch.collectors.cli.main``) registers this command and hands ``write_committed``
to ``agentwatch generate``. Only the options are imported up front; the rules are built when a
command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from agentwatch.alerts.options import RuleOptions

ALERTS_DIR: Final = Path("alerts")
"""Where the committed rule files and runbook live, relative to the repository root."""


def write_committed(root: Path) -> list[Path]:
    """Regenerate the committed files of a checkout (``ROOT/alerts/``), default options; returns their paths."""
    from agentwatch.alerts.render import write_rule_files

    return write_rule_files(root / ALERTS_DIR)


def run(args: argparse.Namespace) -> int:
    """Handler of ``agentwatch alerts``: 0 when written or current, 1 when ``--check`` finds stale files.

    Exits 2 on invalid options.
    """
    from agentwatch.alerts.render import stale_files, write_rule_files

    out_dir = Path(args.out)
    try:
        options = RuleOptions(budget_slo=args.budget_slo)
    except ValueError as exc:
        print(f"agentwatch alerts: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_files(out_dir, options)
        if stale:
            print(
                f"agentwatch alerts: out of date in {out_dir}: {', '.join(stale)} (run `agentwatch alerts`)",
                file=sys.stderr,
            )
            return 1
        print(f"{out_dir}: up to date")
        return 0
    for path in write_rule_files(out_dir, options):
        print(path)
    return 0


def add_command(commands: Any) -> None:
    """Register ``agentwatch alerts [--out DIR] [--check] [--budget-slo X]`` on an argparse subparsers action."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "alerts", help="write (or check) the Prometheus alert and recording rules and their runbook"
    )
    parser.add_argument("--out", default="alerts", metavar="DIR", help="output directory (default ./alerts)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the files in DIR differ from a fresh rendering"
    )
    parser.add_argument(
        "--budget-slo",
        type=float,
        default=RuleOptions.budget_slo,
        metavar="X",
        help="fraction of runs that must not end on a budget stop (default 0.99)",
    )
    parser.set_defaults(handler=run)


__all__ = ["ALERTS_DIR", "add_command", "run", "write_committed"]
