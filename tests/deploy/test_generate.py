"""``agentwatch generate``: one command regenerates every committed artifact, and ``--check`` catches drift.

The committed dashboards, rules, runbook and Kubernetes manifests must equal a fresh generation
(exit 0 on the repository). On a scratch copy, a dashboard edited by one byte and a hand-edited
rule file make ``--check`` exit 1 naming both, without writing anything; ``generate`` then
restores them and, last, the manifests that embed them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _paths import REPO

from agentwatch.collectors.cli.main import build_parser
from agentwatch.dashboards.generate import SCOPE

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

ROOT = REPO
DASHBOARD = Path("deploy/grafana/dashboards/overview.json")
RULES = Path("alerts/agentwatch-rules.yaml")
GRAFANA_MANIFEST = Path("deploy/kubernetes/grafana.yaml")


def generate(*argv: str) -> int:
    args = build_parser().parse_args(["generate", *argv])
    result: int = args.handler(args)
    return result


def checkout_copy(tmp_path: Path) -> Path:
    """The folders ``generate`` reads and writes, copied (the alerts root's Python sources left out)."""
    root = tmp_path / "checkout"
    for folder in SCOPE:
        shutil.copytree(ROOT / folder, root / folder, ignore=shutil.ignore_patterns("agentwatch", "__pycache__"))
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_the_committed_artifacts_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate("--check", "--root", str(ROOT)) == 0, capsys.readouterr().err
    assert "current" in capsys.readouterr().out


def test_the_generate_command_is_registered_with_a_checkout_default() -> None:
    args = build_parser().parse_args(["generate"])
    assert args.root == ROOT
    assert args.check is False


def test_check_names_every_stale_file_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = checkout_copy(tmp_path)
    assert DASHBOARD.name in {path.name for path in (root / DASHBOARD.parent).glob("*.json")}
    dashboard = bytearray((root / DASHBOARD).read_bytes())
    dashboard[dashboard.index(b"\n")] = ord(" ")  # one byte: the same JSON document, not the generated file
    (root / DASHBOARD).write_bytes(bytes(dashboard))
    rules = root / RULES
    rules.write_text(
        rules.read_text(encoding="utf-8").replace("severity: page", "severity: ticket", 1), encoding="utf-8"
    )
    before = tree(root)
    capsys.readouterr()

    assert generate("--check", "--root", str(root)) == 1
    err = capsys.readouterr().err
    stale = [line.strip() for line in err.splitlines()[1:]]
    assert stale == [RULES.as_posix(), DASHBOARD.as_posix()], err
    assert tree(root) == before, "--check wrote into the checkout"


def test_generate_restores_the_files_and_keeps_the_manifests_in_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = checkout_copy(tmp_path)
    (root / DASHBOARD).unlink()
    (root / RULES).write_text("groups: []\n", encoding="utf-8")
    capsys.readouterr()
    # the manifests embed the regenerated files, not the broken ones: generate would not change them
    assert generate("--check", "--root", str(root)) == 1
    assert capsys.readouterr().err.split()[-2:] == [RULES.as_posix(), DASHBOARD.as_posix()]

    assert generate("--root", str(root)) == 0
    updated = capsys.readouterr().out.splitlines()
    assert updated == [f"updated: {RULES.as_posix()}", f"updated: {DASHBOARD.as_posix()}"]
    for path in (DASHBOARD, RULES, GRAFANA_MANIFEST):
        assert (root / path).read_bytes() == (ROOT / path).read_bytes(), path
    assert generate("--check", "--root", str(root)) == 0


def test_a_manifest_that_drifted_alone_is_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = checkout_copy(tmp_path)
    manifest = root / GRAFANA_MANIFEST
    manifest.write_text(manifest.read_text(encoding="utf-8") + "# edited by hand\n", encoding="utf-8")
    capsys.readouterr()
    assert generate("--check", "--root", str(root)) == 1
    assert capsys.readouterr().err.split()[-1] == GRAFANA_MANIFEST.as_posix()


def test_a_folder_that_is_not_a_checkout_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate("--check", "--root", str(tmp_path)) == 2
    assert "not an agentwatch checkout" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
