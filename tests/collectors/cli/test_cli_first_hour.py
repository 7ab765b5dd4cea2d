"""The first hour with the CLI: ``--version``, ``stats``, and errors a newcomer meets (a busy store,
a mangled id, ``| head -1``, Ctrl-C), each through the real command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from _chrows import engine_url
from _collector_proc import CollectorProcess
from _paths import REPO
from _ports import free_port
from _readapi import serve_read_api
from _readdata import fleet

from agentwatch.collectors.cli.main import main
from agentwatch.collectors.config.auth import Authenticator
from agentwatch.collectors.store.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

AGENTWATCH = [sys.executable, "-m", "agentwatch.collectors.cli.main"]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def child_env() -> dict[str, str]:
    return {**os.environ, "AGENTWATCH_TOKEN": ""}


@pytest.fixture
def store(clickhouse_store: ClickHouseStore) -> ClickHouseStore:
    fleet().load(clickhouse_store)
    return clickhouse_store


@pytest.fixture
def store_url(store: ClickHouseStore, clickhouse_engine: ClickHouseStore, clickhouse_database: str) -> str:
    return engine_url(clickhouse_engine, clickhouse_database)


@pytest.fixture
def collector(store: ClickHouseStore, tmp_path: Path) -> Iterator[str]:
    """The read API over real HTTP, with one acme token."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n  - {token: acme-reader, tenant: acme, scopes: [read]}\n", encoding="utf-8")
    with serve_read_api(store, Authenticator.from_file(tokens)) as url:
        yield url


# --- --version ------------------------------------------------------------------------------------


def test_version_prints_the_distribution_version() -> None:
    result = subprocess.run([*AGENTWATCH, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"agentwatch {version('agentwatch')}\n"


# --- stats ----------------------------------------------------------------------------------------


def test_stats_from_the_store(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["stats", "--clickhouse", store_url, "--since", "24h"], capsys)
    assert (code, err) == (0, "")
    assert out.startswith("Runs by stop reason")
    assert "support/canary" in out
    assert "support/stable" in out
    assert "Cost and effort per run" in out
    code, out, err = run_main(["stats", "--clickhouse", store_url, "--json", "--track", "canary"], capsys)
    assert (code, err) == (0, "")
    document = json.loads(out)["stats"]
    canary = [info for info in fleet().runs if info.track == "canary"]
    assert sum(int(row["runs"]) for row in document["stop_reasons"]) == len(canary)
    assert {row["track"] for row in document["stop_reasons"]} == {"canary"}
    assert {row["stop_reason"] for row in document["stop_reasons"]} == {str(info.stop_reason) for info in canary}
    code, out, _ = run_main(["stats", "--clickhouse", store_url, "--agent", "nobody"], capsys)
    assert (code, out.strip()) == (0, "no runs in this window")


def test_stats_through_the_collector_read_api(
    collector: str, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["stats", "--collector", collector, "--token", "acme-reader", "--json"], capsys)
    assert (code, err) == (0, "")
    document = json.loads(out)["stats"]
    assert document["tenant"] == "acme"  # answered by /api/v1/stats: confined to the token's tenant
    acme = [info for info in fleet().runs if info.tenant == "acme"]
    assert sum(int(row["runs"]) for row in document["stop_reasons"]) == len(acme)
    code, text, err = run_main(["stats", "--collector", collector, "--token", "acme-reader"], capsys)
    assert (code, err) == (0, "")
    code, direct, _ = run_main(["stats", "--clickhouse", store_url, "--tenant", "acme"], capsys)
    assert code == 0
    assert text == direct  # the same report, whichever the source
    code, out, err = run_main(["stats", "--collector", collector], capsys)
    assert (code, out) == (2, "")
    assert "answered 401" in err
    code, out, err = run_main(["stats", "--collector", collector, "--since", "yesterday"], capsys)
    assert (code, out) == (2, "")
    assert "cannot read time 'yesterday'" in err


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run_id", "problem"),
    [
        ("4bf92f3577b34da6a3ce929d0e0e473", "31 hex digits"),
        ("4bf92f3577b34da6a3ce929d0e0e47366", "33 hex digits"),
        ("4bf92f3577b34da6a3ce929d0e0e473g", "'g' is not a hex digit"),
        ("0" * 32, "all-zero"),
        ("run 1", "spaces"),
    ],
)
def test_a_mangled_id_says_what_trace_expects(run_id: str, problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    # an unreachable collector: the answer comes before any I/O
    code, out, err = run_main(["trace", run_id, "--collector", f"http://127.0.0.1:{free_port()}"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("agentwatch trace: ID must be a run id or a trace id (32 hex digits)")
    assert problem in err
    assert len(err.splitlines()) == 1


def test_well_formed_ids_still_reach_the_store(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    info = fleet().run(tenant="acme", stop_reason="max_tool_calls")
    for ident in (info.run_id, info.trace_id, info.trace_id.upper()):
        code, _, err = run_main(["trace", ident, "--clickhouse", store_url], capsys)
        assert (code, err) == (0, "")
    code, _, err = run_main(["trace", "no-such-run", "--clickhouse", store_url], capsys)
    assert code == 1
    assert "no run 'no-such-run'" in err


def test_a_store_held_by_a_running_collector_points_to_collector(tmp_path: Path) -> None:
    proc = CollectorProcess(tmp_path / "collector").start()
    try:
        store = f"chdb://{tmp_path / 'collector' / 'clickhouse'}"
        for command in (["runs"], ["stats"], ["trace", "4bf92f3577b34da6a3ce929d0e0e4736"]):
            result = subprocess.run(
                [*AGENTWATCH, *command, "--clickhouse", store],
                capture_output=True,
                text=True,
                timeout=120,
                env=child_env(),
                check=False,
            )
            assert (result.returncode, result.stdout) == (2, "")
            assert "Traceback" not in result.stderr
            [line] = [line for line in result.stderr.splitlines() if line.startswith("agentwatch ")]
            assert line.startswith(f"agentwatch {command[0]}: store {store} is in use by another process")
            assert "--collector URL" in line
        # ... and that is the way in: the collector's read API answers, /api/v1/stats included
        result = subprocess.run(
            [*AGENTWATCH, "stats", "--collector", proc.base_url],
            capture_output=True,
            text=True,
            timeout=120,
            env=child_env(),
            check=False,
        )
        assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "no runs in this window", "")
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store filled by ``agentwatch demo`` (its canary fails on cost, steps and tool calls: drift exits 1)."""
    folder = tmp_path_factory.mktemp("demo")
    subprocess.run(
        [*AGENTWATCH, "demo", "--data", str(folder / "data"), "--parity-runs", "0"],
        cwd=folder,
        capture_output=True,
        timeout=300,
        env=child_env(),
        check=True,
    )
    return f"chdb://{folder / 'data'}"


def _run_with_reader_gone(argv: list[str]) -> tuple[int, str]:
    """Run the command with stdout a pipe whose reader has already left (as ``| head -1`` does)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [*AGENTWATCH, *argv],
            check=False,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=child_env(),
        )
    finally:
        os.close(write_end)
    return result.returncode, result.stderr


def _assert_same_outcome_without_a_reader(argv: list[str]) -> int:
    normal = subprocess.run(
        [*AGENTWATCH, *argv], check=False, capture_output=True, text=True, timeout=120, env=child_env()
    )
    assert normal.stdout
    code, err = _run_with_reader_gone(argv)
    assert (code, err) == (normal.returncode, normal.stderr)
    assert "Traceback" not in err
    assert "BrokenPipe" not in err
    return code


@pytest.mark.parametrize("argv", [["runs", "--json"], ["runs"], ["stats"], ["stats", "--json"]])
def test_a_closed_pipe_is_quiet_and_keeps_the_exit_code(collector: str, argv: list[str]) -> None:
    assert _assert_same_outcome_without_a_reader([*argv, "--collector", collector, "--token", "acme-reader"]) == 0


def test_a_closed_pipe_keeps_the_drift_gate_code(demo_store: str) -> None:
    for argv in (["drift", "--agent", "support"], ["drift", "--agent", "support", "--json"]):
        assert _assert_same_outcome_without_a_reader([*argv, "--clickhouse", demo_store]) == 1  # the canary fails
    assert _assert_same_outcome_without_a_reader(["runs", "--limit", "500", "--clickhouse", demo_store]) == 0


def test_head_1_in_a_shell(collector: str, demo_store: str) -> None:
    for command, code in (
        (f"runs --collector {collector} --token acme-reader", 0),
        (f"runs --limit 500 --clickhouse {demo_store}", 0),  # more than a pipe holds
        (f"drift --agent support --clickhouse {demo_store}", 1),
    ):
        script = f"{sys.executable} -m agentwatch.collectors.cli.main {command} | head -1; exit ${{PIPESTATUS[0]}}"
        result = subprocess.run(
            ["bash", "-c", script], check=False, capture_output=True, text=True, timeout=120, env=child_env()
        )
        assert (result.returncode, result.stderr) == (code, ""), command
        assert len(result.stdout.splitlines()) == 1


def test_ctrl_c_during_the_demo_is_one_line_and_130(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*AGENTWATCH, "demo", "--data", str(tmp_path / "data"), "--runs", "3000", "--parity-runs", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert process.stdout is not None
        seen = ""
        while "running 3000 tickets" not in seen:
            line = process.stdout.readline()
            assert line, f"the demo ended early: {seen}"
            seen += line
        time.sleep(1.0)  # inside the runs
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()  # reaps it and closes its pipes (left open, they warn in a later test)
    assert (process.returncode, err) == (130, "agentwatch demo: interrupted\n")


def test_paths_the_defaults_create_are_ignored() -> None:
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    for folder in ("agentwatch-data/", "agentwatch-spool/", "agentwatch-data-spool/"):
        assert folder in ignored
