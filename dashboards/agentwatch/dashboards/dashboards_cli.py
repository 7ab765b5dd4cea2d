"""``agentwatch dashboards``: write the Grafana dashboards rendered from code, or check they are current.

``add_command(commands)`` registers the subcommand on the main CLI's subparsers; ``main()`` runs it
on its own. The Grafana SDK is imported only when the command runs, so the CLI's other commands
work without the ``dashboards`` extra installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

_CHECKOUT_OUT = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "dashboards"


def default_out_dir() -> Path:
    """``deploy/grafana/dashboards`` of the source checkout when running from one, else under the cwd."""
    if _CHECKOUT_OUT.parent.is_dir():
        return _CHECKOUT_OUT
    return Path("deploy") / "grafana" / "dashboards"


def run(args: argparse.Namespace) -> int:
    """Handler of ``agentwatch dashboards``: 0 when written or current, 1 when ``--check`` finds stale files."""
    try:
        from agentwatch.dashboards.render import render_all, stale_files, write_all
    except ImportError as exc:
        print(
            f"agentwatch dashboards: needs the dashboards extra (pip install 'agentwatch[dashboards]'): {exc}",
            file=sys.stderr,
        )
        return 2
    out_dir: Path = args.out
    if args.check:
        stale = stale_files(out_dir)
        if stale:
            print(
                f"agentwatch dashboards: stale in {out_dir} (run `agentwatch dashboards` to regenerate):",
                file=sys.stderr,
            )
            for name in stale:
                print(f"  {name}", file=sys.stderr)
            return 1
        print(f"{len(render_all())} dashboards in {out_dir} are current")
        return 0
    for path in write_all(out_dir):
        print(path)
    return 0


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``dashboards [--out DIR] [--check]`` on the main CLI's subparsers."""
    parser = commands.add_parser(
        "dashboards",
        help="render the Grafana dashboards to JSON (or --check the committed ones)",
        description="Render the agentwatch Grafana dashboards from code to the JSON files Grafana provisions.",
    )
    parser.add_argument(
        "--out", type=Path, default=default_out_dir(), metavar="DIR", help="output directory (default: %(default)s)"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing files that differ from the code"
    )
    parser.set_defaults(handler=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dashboards`` as a program of its own."""
    parser = argparse.ArgumentParser(prog="agentwatch")
    add_command(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(["dashboards", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.handler(args)
    return result


__all__ = ["add_command", "default_out_dir", "main", "run"]


if __name__ == "__main__":
    sys.exit(main())
