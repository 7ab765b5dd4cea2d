"""Both generated files of the alerts root, written together and checked together.

``render_all()`` is the single source of the committed ``alerts/agentwatch-rules.yaml`` and
``alerts/runbook.md``; regenerating must change nothing, which ``agentwatch alerts --check``,
``agentwatch generate --check`` and the tests verify. Edit the rule builders, never the files.
"""

from __future__ import annotations

from pathlib import Path

from agentwatch.alerts.model import RUNBOOK_FILE
from agentwatch.alerts.options import DEFAULT_OPTIONS, RuleOptions
from agentwatch.alerts.rules import render_rule_files
from agentwatch.alerts.runbook import render_runbook


def render_all(options: RuleOptions = DEFAULT_OPTIONS) -> dict[str, str]:
    """File name -> text of every generated file: the rule files, then the runbook."""
    return {**render_rule_files(options), RUNBOOK_FILE: render_runbook(options)}


def write_rule_files(out_dir: Path, options: RuleOptions = DEFAULT_OPTIONS) -> list[Path]:
    """Write the rule files and the runbook into ``out_dir``; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all(options).items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_files(out_dir: Path, options: RuleOptions = DEFAULT_OPTIONS) -> list[str]:
    """Names of the generated files in ``out_dir`` that are missing or differ from a fresh rendering."""
    stale = []
    for name, text in render_all(options).items():
        path = out_dir / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


__all__ = ["render_all", "stale_files", "write_rule_files"]
