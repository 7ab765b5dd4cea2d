"""``make demo`` installs only what the demo needs, with visible progress; ``make test`` still installs everything.

Read from ``make -n`` (a dry run: nothing is installed) against a virtualenv path that does not exist,
so every install step shows.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEV_TOOLS = ("dev", "mypy", "ruff", "pytest", "hypothesis")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def _dry_run(target: str, venv: Path) -> list[str]:
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(ROOT), f"VENV={venv}", target],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def _extras(lines: list[str]) -> set[str]:
    installs = [line for line in lines if "pip install" in line and "-e" in line]
    assert len(installs) == 1, installs
    found = re.search(r'"\.\[([^\]]*)\]"', installs[0])
    assert found is not None, installs[0]
    return set(found.group(1).split(","))


def test_make_demo_installs_the_demo_extras_only_and_shows_progress(tmp_path: Path) -> None:
    lines = _dry_run("demo", tmp_path / "venv")
    assert _extras(lines) == {"collector", "embedded", "runtimes"}
    install = next(line for line in lines if "pip install" in line and "-e" in line)
    assert " -q" not in install  # pip's progress is shown
    assert any(line.startswith("echo") and "installing" in line for line in lines)  # a line per phase
    pip_args = [line.split("pip install", 1)[1] for line in lines if "pip install" in line]
    for tool in DEV_TOOLS:
        assert not any(re.search(rf"\b{tool}\b", args) for args in pip_args), tool
    assert lines[-1].endswith("agentwatch demo")


def test_make_test_still_installs_everything(tmp_path: Path) -> None:
    lines = _dry_run("lint", tmp_path / "venv")
    assert {"dev", "collector", "embedded", "dashboards", "runtimes"} <= _extras(lines)
