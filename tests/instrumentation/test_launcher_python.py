"""``agentwatch-instrument python app.py`` never runs a Python that lacks agentwatch and silently sends nothing.

A bare ``python``/``python3`` that is another interpreter (or missing) is replaced by the launcher's
own, with a notice; an explicit path to such a Python is refused with exit 2 and a message naming
both interpreters. The launcher runs for real, as a child process, with a doctored ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentwatch.instrumentation._launcher import EXIT_WRONG_PYTHON, python_to_run

LAUNCHER = Path(sys.executable).parent / "agentwatch-instrument"
# prints which interpreter ran and whether agentwatch's bootstrap ran in it
PROGRAM = "import os, sys; print('ran', sys.executable, os.environ.get('_AGENTWATCH_BOOTSTRAPPED') == str(os.getpid()))"


def _fake_python(folder: Path, name: str = "python3") -> tuple[Path, Path]:
    """A ``python3`` that is not a Python with agentwatch: it notes every call and fails."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "calls"
    fake = folder / name
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{marker}"\nexit 1\n')
    fake.chmod(0o755)
    return fake, marker


def _launch(*args: str, path: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "AGENTWATCH_", "PYTHON"))}
    env.update(PATH=path, OTEL_SERVICE_NAME="launcher-test", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    return subprocess.run(
        [str(LAUNCHER), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_bare_python3_that_lacks_agentwatch_is_replaced_by_the_launchers_own(tmp_path: Path) -> None:
    fake, marker = _fake_python(tmp_path / "bin")
    done = _launch("python3", "-c", PROGRAM, path=f"{fake.parent}{os.pathsep}{os.environ['PATH']}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"python3 on PATH is {fake}, which cannot import agentwatch" in done.stderr
    assert sys.executable in done.stderr
    assert done.stdout.split() == ["ran", sys.executable, "True"]  # agentwatch was set up in the program
    assert "-c" in marker.read_text()  # the fake was only probed, never given the program


def test_a_bare_python_missing_from_path_runs_the_launchers_own(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _launch("python", "-c", PROGRAM, path=str(empty), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "python is not on PATH" in done.stderr
    assert done.stdout.split() == ["ran", sys.executable, "True"]


def test_an_explicit_python_that_lacks_agentwatch_fails_loudly(tmp_path: Path) -> None:
    fake, marker = _fake_python(tmp_path / "bin")
    done = _launch(str(fake), "-c", "open('ran', 'w')", path=os.environ["PATH"], cwd=tmp_path)
    assert done.returncode == EXIT_WRONG_PYTHON
    assert f"{fake} ({fake}) cannot import agentwatch" in done.stderr
    assert sys.executable in done.stderr  # names the interpreter agentwatch is installed for
    assert "Fix:" in done.stderr
    assert not (tmp_path / "ran").exists()
    assert "open('ran'" not in marker.read_text()


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no system Python")
def test_the_system_python_without_agentwatch_is_not_run_silently(tmp_path: Path) -> None:
    probe = subprocess.run(["/usr/bin/python3", "-c", "import agentwatch"], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip("the system Python has agentwatch")
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "python3").symlink_to("/usr/bin/python3")
    done = _launch("python3", "-c", PROGRAM, path=f"{folder}{os.pathsep}{os.environ['PATH']}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "cannot import agentwatch" in done.stderr
    assert done.stdout.split() == ["ran", sys.executable, "True"]
    explicit = _launch(str(folder / "python3"), "-c", "pass", path=os.environ["PATH"], cwd=tmp_path)
    assert explicit.returncode == EXIT_WRONG_PYTHON
    assert "cannot import agentwatch" in explicit.stderr


def test_the_launchers_own_python_and_other_commands_pass_through() -> None:
    env = dict(os.environ)
    assert python_to_run(sys.executable, env) == sys.executable
    assert python_to_run("ls", env) is None
    assert python_to_run("uvicorn", env) is None
    assert shutil.which("ls") is not None
