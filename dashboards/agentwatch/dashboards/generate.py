"""``agentwatch generate [--check] [--root DIR]``: regenerate every committed artifact, or check they are current.

The steps run in this order, because the later ones embed the output of the earlier ones:

1. ``dashboards``: the Grafana dashboards (``deploy/grafana/dashboards/*.json``);
2. ``alerts``: the alert and recording rules and their runbook (``alerts/*.yaml``, ``alerts/runbook.md``);
3. ``manifests``: the Kubernetes manifests that embed copies of them and of other files
   (``deploy/kubernetes/``, see ``deploy_sync``).

The alerts step comes from the alerts root, which this root never imports: the main CLI, which
registers both roots' commands, hands its writer in (``add_command(..., write_rules=...)``).

``--check`` writes nothing in the checkout: it runs the same steps on a scratch copy of ``deploy/``
and ``alerts/`` and lists every file that would change (changed, new or removed), so what it
reports is exactly what ``agentwatch generate`` would write. It exits 1 when anything would.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agentwatch.dashboards.deploy_sync import DeployLayout, SyncError, sync

WriteStep = Callable[[Path], object]
"""Regenerates one step's files in the checkout whose root it is given."""

DASHBOARDS_DIR: Final = Path("deploy") / "grafana" / "dashboards"
SCOPE: Final = ("deploy", "alerts")
"""The folders the steps read and write: what ``--check`` copies, and where it looks for changes."""
_SOURCES: Final = ("alerts/agentwatch",)
"""Inside the scope but not generated: the alerts root's own Python package."""

_CHECKOUT: Final = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Step:
    """One generator: its name, and how it regenerates its files in a checkout."""

    name: str
    write: WriteStep


def default_root() -> Path:
    """The source checkout this code runs from, when it is one; else the current directory."""
    if all((_CHECKOUT / folder).is_dir() for folder in SCOPE):
        return _CHECKOUT
    return Path.cwd()


def _write_dashboards(root: Path) -> object:
    from agentwatch.dashboards.render import write_all

    return write_all(root / DASHBOARDS_DIR)


def _write_manifests(root: Path) -> object:
    return sync(DeployLayout(root))


def steps(write_rules: WriteStep) -> tuple[Step, ...]:
    """Every step of ``generate``, in order: dashboards, then rules, then the manifests embedding both."""
    return (Step("dashboards", _write_dashboards), Step("alerts", write_rules), Step("manifests", _write_manifests))


def _skipped(relative: Path) -> bool:
    return "__pycache__" in relative.parts or any(relative.is_relative_to(source) for source in _SOURCES)


def _files(root: Path) -> Iterator[Path]:
    """Every file in the scope, relative to ``root``, sources and caches left out."""
    for folder in SCOPE:
        for path in sorted((root / folder).rglob("*")):
            relative = path.relative_to(root)
            if path.is_file() and not _skipped(relative):
                yield relative


def _snapshot(root: Path) -> dict[str, bytes]:
    return {relative.as_posix(): (root / relative).read_bytes() for relative in _files(root)}


def generate(root: Path, all_steps: Sequence[Step]) -> list[str]:
    """Run every step on the checkout at ``root``; returns the files that changed (relative, sorted)."""
    before = _snapshot(root)
    for step in all_steps:
        step.write(root)
    after = _snapshot(root)
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def stale_files(root: Path, all_steps: Sequence[Step]) -> list[str]:
    """The files ``generate`` would change in the checkout at ``root``, found on a scratch copy."""
    with tempfile.TemporaryDirectory(prefix="agentwatch-generate-") as scratch:
        copy = Path(scratch)
        for folder in SCOPE:
            shutil.copytree(
                root / folder,
                copy / folder,
                symlinks=True,
                ignore=lambda directory, names: [
                    name for name in names if _skipped((Path(directory) / name).relative_to(root))
                ],
            )
        return generate(copy, all_steps)


def run(args: argparse.Namespace, *, write_rules: WriteStep) -> int:
    """Handler of ``agentwatch generate``: 0 when written or current, 1 when ``--check`` finds stale files.

    Exits 2 when the root is not a checkout, the dashboards extra is missing or a manifest cannot be synced.
    """
    root: Path = args.root
    missing = [folder for folder in SCOPE if not (root / folder).is_dir()]
    if missing:
        print(f"agentwatch generate: {root} is not an agentwatch checkout (no {', '.join(missing)}/)", file=sys.stderr)
        return 2
    all_steps = steps(write_rules)
    try:
        changed = stale_files(root, all_steps) if args.check else generate(root, all_steps)
    except ImportError as exc:
        print(
            f"agentwatch generate: needs the dashboards extra (pip install 'agentwatch[dashboards]'): {exc}",
            file=sys.stderr,
        )
        return 2
    except SyncError as exc:
        print(f"agentwatch generate: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if changed:
            print(f"agentwatch generate: stale in {root} (run `agentwatch generate` to regenerate):", file=sys.stderr)
            for name in changed:
                print(f"  {name}", file=sys.stderr)
            return 1
        print(f"generated files in {root} are current ({', '.join(step.name for step in all_steps)})")
        return 0
    for name in changed:
        print(f"updated: {name}")
    if not changed:
        print(f"generated files in {root} were current already")
    return 0


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser], *, write_rules: WriteStep) -> None:
    """Register ``generate [--check] [--root DIR]``; ``write_rules`` regenerates ``ROOT/alerts/``."""
    parser = commands.add_parser(
        "generate",
        help="regenerate the committed dashboards, alert rules and deploy manifests (or --check them)",
        description="Regenerate, in order, the Grafana dashboards, the Prometheus rules and runbook, and the "
        "Kubernetes manifests that embed them, in a source checkout.",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=default_root(),
        metavar="DIR",
        help="the checkout to regenerate (default: %(default)s)",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing the files that would change"
    )
    parser.set_defaults(handler=lambda args: run(args, write_rules=write_rules))


__all__ = [
    "DASHBOARDS_DIR",
    "SCOPE",
    "Step",
    "WriteStep",
    "add_command",
    "default_root",
    "generate",
    "run",
    "stale_files",
    "steps",
]
