"""Every flag README.md shows for an ``agentwatch`` command is one that command's parser accepts.

Flags are attributed precisely: command lines in code blocks (``agentwatch CMD ...``, with ``\\``
continuations, comments cut off), inline code spans that start with ``agentwatch CMD``, and the
collector's settings tables (a setting ``max_body_bytes`` is the flag ``--max-body-bytes``).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

from _paths import REPO

from agentwatch.collectors.cli.main import build_parser
from agentwatch.collectors.config.settings import SETTING_TYPES

README = REPO / "README.md"
_COMMAND = re.compile(r"^(?:\$\s+)?agentwatch\s+([a-z][a-z0-9-]*)(?=\s|$)(.*)$")
_TOP_LEVEL = re.compile(r"^(?:\$\s+)?agentwatch\s+(--[a-z][a-z0-9-]*)")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_INLINE = re.compile(r"`([^`\n]+)`")
_SETTING = re.compile(r"^[a-z][a-z0-9_]*$")


def _add(found: dict[str, set[str]], text: str) -> None:
    text = text.strip()
    top = _TOP_LEVEL.match(text)
    if top:
        found[""].add(top.group(1))
        return
    match = _COMMAND.match(text)
    if match:
        found[match.group(1)].update(_FLAG.findall(match.group(2)))


def readme_flags(text: str) -> dict[str, set[str]]:
    """Command ("" for ``agentwatch`` itself) -> the flags README shows for it."""
    found: dict[str, set[str]] = defaultdict(set)
    lines = text.splitlines()
    in_code = False
    pending = ""
    settings_table = False
    for line in lines:
        if line.lstrip().startswith("```"):
            in_code = not in_code
            pending = ""
            continue
        if in_code:
            logical = pending + " " + line.split(" #")[0] if pending else line.split(" #")[0]
            if logical.rstrip().endswith("\\"):
                pending = logical.rstrip()[:-1]
                continue
            pending = ""
            _add(found, logical)
            continue
        for span in _INLINE.findall(line):
            _add(found, span)
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if cells[0].startswith("setting"):
                settings_table = True
                continue
            if settings_table:
                for token in _INLINE.findall(cells[0]):
                    if token.startswith("--"):
                        found["collector"].add(token)
                    elif _SETTING.match(token) and token in SETTING_TYPES:
                        found["collector"].add("--" + token.replace("_", "-"))
        else:
            settings_table = False
    return dict(found)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_the_extraction_sees_the_documented_flags() -> None:
    found = readme_flags(README.read_text(encoding="utf-8"))
    assert {
        "--max-body-bytes",
        "--no-redact",
        "--max-inflight-bytes",
        "--batch-max-spans",
        "--batch-max-bytes",
        "--batch-timeout-seconds",
        "--retry-after-seconds",
        "--max-tools-per-agent",
        "--max-models-per-agent",
        "--no-drift-enabled",
        "--otlp-grpc",
        "--tokens",
    } <= found["collector"]
    assert {"--agent", "--track", "--stop-reason", "--since", "--json", "--limit"} <= found["runs"]
    assert "--content" in found["trace"]
    assert {"--apply", "--check", "--cluster", "--clickhouse"} <= found["schema"]
    assert "--version" in found[""]


def test_every_flag_readme_shows_is_accepted() -> None:
    parser = build_parser()
    commands = _subcommands(parser)
    problems = []
    for command, flags in sorted(readme_flags(README.read_text(encoding="utf-8")).items()):
        target = parser if command == "" else commands.get(command)
        if target is None:
            problems.append(f"agentwatch {command}: no such command")
            continue
        for flag in sorted(flags):
            if flag not in target._option_string_actions:
                problems.append(f"agentwatch {command or ''} {flag}".replace("  ", " "))
    assert not problems, "README shows flags the parser rejects:\n" + "\n".join(problems)


def test_the_documented_collector_flags_parse_to_their_settings() -> None:
    collector = _subcommands(build_parser())["collector"]
    args = collector.parse_args(
        ["--no-redact", "--max-inflight-bytes", "1000", "--batch-timeout-seconds", "0.25", "--retry-after-seconds", "3"]
    )
    assert (args.redact, args.max_inflight_bytes, args.batch_timeout_seconds, args.retry_after_seconds) == (
        False,
        "1000",
        "0.25",
        "3",
    )
    assert collector.parse_args([]).redact is None  # unset: the environment, the file or the default decide
