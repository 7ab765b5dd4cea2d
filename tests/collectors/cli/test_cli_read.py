"""``agentwatch runs`` / ``agentwatch trace``: against a store opened directly and against a live read API."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _chrows import engine_url
from _ports import free_port
from _readapi import serve_read_api
from _readdata import fleet

from agentwatch.collectors.cli import read as cli_read
from agentwatch.collectors.cli.read import add_read_commands
from agentwatch.collectors.config.auth import Authenticator
from agentwatch.collectors.store.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="agentwatch")
    add_read_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.handler(args)
    out, err = capsys.readouterr()
    return code, out, err


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


# --- reading the store directly -------------------------------------------------------------------


def test_runs_json_from_the_store(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["runs", "--clickhouse", store_url, "--json"], capsys)
    assert (code, err) == (0, "")
    runs = json.loads(out)["runs"]
    assert {run["run_id"] for run in runs} == {info.run_id for info in fleet().runs}
    code, out, _ = run_cli(
        ["runs", "--clickhouse", store_url, "--json", "--stop-reason", "policy_denied", "--track", "canary"], capsys
    )
    assert code == 0
    [run] = json.loads(out)["runs"]
    assert run["run_id"] == fleet().run(tenant="globex", stop_reason="policy_denied", track="canary").run_id


def test_runs_table_from_the_store(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["runs", "--clickhouse", store_url, "--tenant", "acme", "--since", "1h"], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("START (UTC)")
    assert len(lines) == 1 + 6
    assert all(" acme " in line for line in lines[1:])
    code, out, _ = run_cli(["runs", "--clickhouse", store_url, "--agent", "nobody"], capsys)
    assert (code, out.strip()) == (0, "no runs match")


def test_trace_from_the_store(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    info = fleet().run(tenant="initech", stop_reason="approval_rejected")
    code, out, err = run_cli(["trace", info.run_id, "--clickhouse", store_url], capsys)
    assert (code, err) == (0, "")
    assert "stop=approval_rejected" in out
    assert "execute_tool email.send" in out
    assert "rejected/blocked" in out
    assert "ms" in out
    code, out, _ = run_cli(["trace", info.run_id, "--clickhouse", store_url, "--json"], capsys)
    assert code == 0
    trace = json.loads(out)["trace"]
    assert trace["roots"][0]["kind"] == "run"
    assert trace["span_count"] == info.spans


def test_unknown_run_is_exit_1(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["trace", "no-such-run", "--clickhouse", store_url], capsys)
    assert (code, out) == (1, "")
    assert err.startswith("agentwatch trace: no run 'no-such-run'")
    assert len(err.splitlines()) == 1
    info = fleet().run(tenant="globex", stop_reason="policy_denied")
    assert run_cli(["trace", info.run_id, "--clickhouse", store_url, "--tenant", "acme"], capsys)[0] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runs", "--since", "yesterday"], "cannot read time 'yesterday'"),
        (["runs", "--limit", "many"], "limit must be an integer"),
        (["runs", "--stop-reason", "exploded"], "unknown stop reason"),
    ],
)
def test_bad_filters_are_exit_2_before_any_io(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli([*argv, "--collector", "http://127.0.0.1:9"], capsys)
    assert (code, out) == (2, "")
    assert message in err
    assert len(err.splitlines()) == 1


def test_a_store_without_schema_is_exit_2(clickhouse_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["runs", "--clickhouse", clickhouse_url], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("agentwatch runs: store chdb://")
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_a_bad_store_url_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["runs", "--clickhouse", "mysql://db"], capsys)
    assert code == 2
    assert "unsupported ClickHouse URL" in err


# --- reading through a collector ------------------------------------------------------------------


def test_runs_and_trace_through_the_collector(
    collector: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = {info.run_id for info in fleet().runs if info.tenant == "acme"}
    code, out, err = run_cli(["runs", "--collector", collector, "--token", "acme-reader", "--json"], capsys)
    assert (code, err) == (0, "")
    assert {run["run_id"] for run in json.loads(out)["runs"]} == acme
    monkeypatch.setenv(cli_read.TOKEN_ENV, "acme-reader")
    code, out, _ = run_cli(["runs", "--collector", collector, "--limit", "2"], capsys)
    assert code == 0
    assert len(out.splitlines()) == 3
    info = fleet().run(tenant="acme", stop_reason="max_tool_calls")
    code, out, _ = run_cli(["trace", info.run_id, "--collector", collector], capsys)
    assert code == 0
    assert "budget=tool_calls" in out
    assert out.count("execute_tool kb.search") == info.tool_calls
    # another tenant's run does not exist for this token
    globex = fleet().run(tenant="globex", stop_reason="policy_denied").run_id
    code, _, err = run_cli(["trace", globex, "--collector", collector], capsys)
    assert code == 1
    assert "no run" in err


def test_collector_auth_and_parameter_errors_are_exit_2(collector: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["runs", "--collector", collector], capsys)
    assert (code, out) == (2, "")
    assert err.strip() == f"agentwatch runs: collector {collector} answered 401: missing bearer token"
    code, _, err = run_cli(["runs", "--collector", collector, "--token", "acme-reader", "--tenant", "globex"], capsys)
    assert code == 2
    assert "answered 403" in err


def test_unreachable_collector_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = run_cli(["runs", "--collector", url], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"agentwatch runs: cannot reach collector {url}")
    assert len(err.splitlines()) == 1
    code, _, err = run_cli(["runs", "--collector", "ftp://x"], capsys)
    assert code == 2
    assert "http(s)://" in err


def test_default_source_prefers_the_collector_then_the_store(
    collector: str, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli_read.TOKEN_ENV, "acme-reader")
    monkeypatch.setattr(cli_read, "DEFAULT_COLLECTOR", collector)
    monkeypatch.setattr(cli_read, "DEFAULT_CLICKHOUSE", store_url)
    code, out, _ = run_cli(["runs", "--json"], capsys)
    assert code == 0
    assert {run["tenant"] for run in json.loads(out)["runs"]} == {"acme"}  # the collector answered (token's tenant)
    monkeypatch.setattr(cli_read, "DEFAULT_COLLECTOR", f"http://127.0.0.1:{free_port()}")
    code, out, _ = run_cli(["runs", "--json"], capsys)
    assert code == 0
    assert len(json.loads(out)["runs"]) == 10  # no collector: the store itself, every tenant
    monkeypatch.setattr(cli_read, "DEFAULT_CLICKHOUSE", f"chdb://{tmp_path / 'absent'}")
    code, _, err = run_cli(["runs"], capsys)
    assert code == 2
    assert "no collector at" in err
    assert "--clickhouse URL" in err
    assert not (tmp_path / "absent").exists()  # a read command never creates a store


def test_both_sources_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["runs", "--collector", "http://x", "--clickhouse", "chdb://y"], capsys)
    assert exit_info.value.code == 2
