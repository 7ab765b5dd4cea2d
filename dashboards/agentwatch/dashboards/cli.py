"""The ``agentwatch dashboards`` and ``agentwatch generate`` commands, registered on the main CLI.

The main CLI lives with the collector; it reaches this module lazily, so the collector itself
never imports the dashboards root (nor grafana-foundation-sdk) unless one of these commands runs.
``generate`` also regenerates the alert rules, which live in the alerts root: this root does not
import it, so the main CLI passes the rules' writer in.
"""

from __future__ import annotations

import argparse

from agentwatch.dashboards import dashboards_cli, generate
from agentwatch.dashboards.generate import WriteStep


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser], *, write_rules: WriteStep) -> None:
    """Register every command of this root on the main CLI's subparsers (``write_rules``: see ``generate``)."""
    dashboards_cli.add_command(commands)
    generate.add_command(commands, write_rules=write_rules)
