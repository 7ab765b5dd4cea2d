"""The ``agentwatch dashboards`` and ``agentwatch alerts`` commands, registered on the main CLI.

The main CLI lives with the collector; it reaches this module lazily, so the collector itself
never imports the dashboards root (nor grafana-foundation-sdk) unless one of these commands runs.
"""

from __future__ import annotations

import argparse

from agentwatch.dashboards import dashboards_cli, rules


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register every command of this root on the main CLI's subparsers."""
    dashboards_cli.add_command(commands)
    rules.add_command(commands)
