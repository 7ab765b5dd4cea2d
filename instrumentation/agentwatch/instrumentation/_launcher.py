"""``agentwatch-instrument CMD ...``: run a Python program with agentwatch set up before it starts.

Like ``opentelemetry-instrument``: the command is executed unchanged, with the folder holding
agentwatch's ``sitecustomize`` first on ``PYTHONPATH``; that module calls ``configure()`` from the
standard ``OTEL_*`` variables and ``instrument()``, so the program needs no code change.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

RUNTIMES_ENV: Final = "AGENTWATCH_INSTRUMENT_RUNTIMES"
DISABLED_ENV: Final = "AGENTWATCH_INSTRUMENT_DISABLED"  # an escape hatch that needs no redeploy of the command
_AUTOLOAD_DIR: Final = Path(__file__).resolve().parent / "_autoload"
_BOOTSTRAPPED_ENV: Final = "_AGENTWATCH_BOOTSTRAPPED"

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
    executable = shutil.which(args.command)
    if executable is None:
        print(f"agentwatch-instrument: command not found: {args.command}", file=sys.stderr)
        return 127
    env = child_environment(os.environ, runtimes=runtimes)
    os.execve(executable, [args.command, *args.args], env)  # replaces this process, like exec in a shell
