"""``agentwatch-instrument CMD ...``: run a Python program with agentwatch set up before it starts.

Like ``opentelemetry-instrument``: the command is executed unchanged, with the folder holding
agentwatch's ``sitecustomize`` first on ``PYTHONPATH``; that module calls ``configure()`` from the
standard ``OTEL_*`` variables and ``instrument()``, so the program needs no code change.

A Python that cannot import agentwatch would run the program with nothing set up and send
nothing, so a Python command is checked first: a bare ``python``/``python3`` that is another
interpreter (or missing) is replaced by the one agentwatch is installed in, with a notice; a path
to such a Python stops the launcher with exit 2 and a message naming both interpreters.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

RUNTIMES_ENV: Final = "AGENTWATCH_INSTRUMENT_RUNTIMES"
DISABLED_ENV: Final = "AGENTWATCH_INSTRUMENT_DISABLED"  # an escape hatch that needs no redeploy of the command
_AUTOLOAD_DIR: Final = Path(__file__).resolve().parent / "_autoload"
_BOOTSTRAPPED_ENV: Final = "_AGENTWATCH_BOOTSTRAPPED"
_PYTHON_NAME: Final = re.compile(r"python(\d+(\.\d+)?)?w?(\.exe)?")
_PROBE: Final = (
    "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('agentwatch.instrumentation') else 1)"
)
_PROBE_TIMEOUT_S: Final = 20.0
EXIT_WRONG_PYTHON: Final = 2

logger: Final = logging.getLogger("agentwatch.instrumentation")


def child_environment(environ: Mapping[str, str], *, runtimes: Sequence[str] | None = None) -> dict[str, str]:
    """The environment the instrumented command runs with: our ``sitecustomize`` first on the path."""
    env = dict(environ)
    paths = [str(_AUTOLOAD_DIR), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    if runtimes:
        env[RUNTIMES_ENV] = ",".join(runtimes)
    env.pop(_BOOTSTRAPPED_ENV, None)
    return env


def bootstrap(environ: Mapping[str, str] | None = None) -> list[str]:
    """Configure tracing from ``OTEL_*`` and instrument the runtimes; returns the instrumented ones.

    Runs once per process (a child process inherits the path, so it bootstraps too, once). A
    failure is logged and the program still runs: agentwatch must never stop the host.
    """
    env = os.environ if environ is None else environ
    instrumented: list[str] = []
    if env.get(DISABLED_ENV, "").strip().lower() in {"1", "true", "yes"}:
        return instrumented
    if os.environ.get(_BOOTSTRAPPED_ENV) != str(os.getpid()):
        os.environ[_BOOTSTRAPPED_ENV] = str(os.getpid())
        try:
            from agentwatch.instrumentation._auto import instrument
            from agentwatch.instrumentation._setup import configure

            configure(environ=env)
            wanted = [name.strip() for name in env.get(RUNTIMES_ENV, "").split(",") if name.strip()]
            instrumented = instrument(runtimes=wanted or None)
        except Exception:
            logger.exception("agentwatch-instrument could not set up instrumentation; the program runs without it")
    _run_shadowed_sitecustomize()
    return instrumented


def _run_shadowed_sitecustomize() -> None:
    """Run the ``sitecustomize`` our folder hides (a distribution's or a virtualenv's), if any."""
    for entry in sys.path:
        if not entry or Path(entry).resolve() == _AUTOLOAD_DIR:
            continue
        candidate = Path(entry) / "sitecustomize.py"
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("_agentwatch_shadowed_sitecustomize", candidate)
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            return


def _own_python_names() -> set[str]:
    major, minor = sys.version_info[:2]
    return {"python", f"python{major}", f"python{major}.{minor}"}


def can_import_agentwatch(python: str, environ: Mapping[str, str]) -> bool:
    """Whether ``python`` (with this environment's ``PYTHONPATH``) finds ``agentwatch.instrumentation``."""
    if Path(os.path.abspath(python)).parent == Path(os.path.abspath(sys.executable)).parent:
        return True  # the same bin folder (virtualenv) as this launcher's own interpreter
    probe_env = {**environ, DISABLED_ENV: "1"}  # our sitecustomize must not set anything up in the probe
    try:
        done = subprocess.run(
            [python, "-c", _PROBE], env=probe_env, capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def python_to_run(command: str, environ: Mapping[str, str]) -> str | int | None:
    """For a Python command: the interpreter to run, or an exit code after a message; None for any other command.

    A bare ``python``/``python3`` (or this interpreter's exact version) that is missing or cannot import
    agentwatch is replaced by this interpreter, with a notice. Any other Python that cannot import
    agentwatch is refused: it would run the program with nothing set up and send nothing.
    """
    name = os.path.basename(command)
    if not _PYTHON_NAME.fullmatch(name):
        return None
    found = shutil.which(command, path=environ.get("PATH"))
    if found is not None and can_import_agentwatch(found, environ):
        return found
    bare = os.sep not in command and (os.altsep is None or os.altsep not in command)
    if bare and name in _own_python_names():
        where = "is not on PATH" if found is None else f"on PATH is {found}, which cannot import agentwatch"
        print(f"agentwatch-instrument: {command} {where}; running {sys.executable} instead", file=sys.stderr)
        return sys.executable
    if found is None:
        return None  # reported as "command not found"
    print(
        f"agentwatch-instrument: {command} ({found}) cannot import agentwatch, so the program would run with "
        f"nothing set up and send nothing.\n"
        f"  agentwatch is installed for {sys.executable}.\n"
        f"  Fix: run the program with that Python (agentwatch-instrument {sys.executable} ...), "
        f"or install agentwatch into {found} ({found} -m pip install agentwatch).",
        file=sys.stderr,
    )
    return EXIT_WRONG_PYTHON


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentwatch-instrument",
        description=(
            "Run a Python program with agentwatch tracing and runtime instrumentation set up. "
            "Configured by OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_HEADERS."
        ),
    )
    parser.add_argument(
        "--runtimes",
        default=None,
        help="comma-separated runtimes to instrument (openai-agents, langgraph); default: every installed one",
    )
    parser.add_argument("command", help="the program to run, e.g. python")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:  # noqa: RET503 - execve replaces the process on success
    args = build_parser().parse_args(argv)
    runtimes = [name.strip() for name in args.runtimes.split(",") if name.strip()] if args.runtimes else None
    if runtimes:
        from agentwatch.instrumentation._auto import RUNTIMES

        unknown = [name for name in runtimes if name not in RUNTIMES]
        if unknown:
            print(
                f"agentwatch-instrument: unknown runtime(s) {', '.join(unknown)}; known: {', '.join(RUNTIMES)}",
                file=sys.stderr,
            )
            return 2
    env = child_environment(os.environ, runtimes=runtimes)
    chosen = python_to_run(args.command, env)
    if isinstance(chosen, int):
        return chosen
    executable = chosen if chosen is not None else shutil.which(args.command)
    if executable is None:
        print(f"agentwatch-instrument: command not found: {args.command}", file=sys.stderr)
        return 127
    # a substituted Python gets its own path as argv[0]: a bare name would make it look itself up on PATH
    argv0 = executable if chosen is not None else args.command
    os.execve(executable, [argv0, *args.args], env)  # replaces this process, like exec in a shell
