"""``agentwatch replay``: against a store opened directly and a live read API; exit codes; progress; errors."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _chrows import engine_url
from _otlp_clients import running_collector
from _ports import free_port
from _readapi import serve_read_api
from _replaydata import capture_settings, recorded_scenarios
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agentwatch.collectors._examples import load_example
from agentwatch.collectors.cli.main import build_parser
from agentwatch.collectors.config.auth import Authenticator
from agentwatch.collectors.store.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

CUSTOM = "agentwatch_examples.custom_agent:replay_target"
AGENTS_SDK = "agentwatch_examples.openai_agents_support:replay_target"

# A divergent runtime as a user would write it: a file with a factory, named by its path.
DIVERGENT_TARGET = """
from agentwatch.collectors._examples import load_example


custom = load_example("custom_agent")
WRITES = []


class Auditing:
    def __init__(self, version):
        self.inner = custom.ScriptedModel(version=version)
        self.seen = self.inner.seen
        self.audited = False

    def next_turn(self, ticket):
        if self.audited:
            return self.inner.next_turn(ticket)
        self.audited = True
        return custom.ModelTurn((custom.ToolCall("db.write", {"table": "audit", "row": {}}, "c0"),), None, 900, 60)


class Target:
    runtime = "custom"

    def __init__(self):
        self.base = custom.replay_target()
        self.policy = self.base.policy
        self.tools = {**custom.TOOLS, "db.write": lambda table, row: WRITES.append(table)}

    def run(self, request, gateway):
        return custom.handle_ticket(
            request.input, config=self.base.config, tenant_id=request.tenant_id or "", gateway=gateway,
            tracer_provider=request.tracer_provider, settings=request.settings, model=Auditing("v1"),
        )


def factory():
    return Target()
"""


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = build_parser().parse_args(["replay", *argv])
    code: int = args.handler(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def store(clickhouse_store: ClickHouseStore) -> ClickHouseStore:
    recorded_scenarios("custom_agent").load(clickhouse_store)
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


def test_parity_table_and_exit_zero_from_the_store(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["--clickhouse", store_url, "--target", AGENTS_SDK], capsys)
    assert code == 0, out + err
    assert err == ""  # no progress bar: stderr is not a terminal here
    lines = out.splitlines()
    assert lines[0].startswith("Replay on openai-agents (agentwatch_examples.openai_agents_support:replay_target)")
    assert lines[1].split() == ["RUN", "TENANT", "STOP", "REASON", "TOOL", "SEQ", "STEPS", "COST", "Δ", "USD", "STATUS"]
    assert sum(line.endswith("match") for line in lines) == 5
    assert "stop-reason agreement 5/5 = 100.0% (min 95.0%)" in out
    assert lines[-1] == "-> parity met"


def test_json_report_and_progress_on_stderr(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    fleet = recorded_scenarios("custom_agent")
    code, out, err = run_cli(
        ["--clickhouse", store_url, "--target", CUSTOM, "--json", "--progress", *fleet.run_ids[:2]], capsys
    )
    assert code == 0
    report = json.loads(out)
    assert report["verdict"] == "pass"
    assert report["summary"]["replayed"] == 2
    assert {run["run_id"] for run in report["runs"]} == set(fleet.run_ids[:2])
    assert report["runs"][0]["stop_reason"]["recorded"] == report["runs"][0]["stop_reason"]["replayed"]
    assert "replaying [" in err
    assert err.rstrip().endswith("match")
    assert "2/2" in err


def test_a_divergent_runtime_fails_parity_with_exit_one(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target_file = tmp_path / "divergent_target.py"
    target_file.write_text(DIVERGENT_TARGET, encoding="utf-8")
    code, out, _ = run_cli(["--clickhouse", store_url, "--target", f"{target_file}:factory"], capsys)
    assert code == 1, out
    assert "-> PARITY BELOW THRESHOLD" in out
    assert "stop-reason agreement 1/5 = 20.0%" in out
    assert out.count('called db.write{"row":{},"table":"audit"}, which the recording does not have') == 5
    assert sys.modules["agentwatch_replay_target.divergent_target"].WRITES == []  # refused, never executed


def test_thresholds_decide_the_exit_code(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target_file = tmp_path / "lenient_target.py"
    target_file.write_text(DIVERGENT_TARGET, encoding="utf-8")
    argv = ["--clickhouse", store_url, "--target", f"{target_file}:factory", "--json"]
    code, out, _ = run_cli([*argv, "--min-agreement", "0.2", "--min-similarity", "0"], capsys)
    assert code == 0
    assert json.loads(out)["verdict"] == "pass"
    with pytest.raises(SystemExit) as exit_info:
        run_cli([*argv, "--min-agreement", "1.5"], capsys)
    assert exit_info.value.code == 2
    assert "expected a number from 0 to 1" in capsys.readouterr().err


def test_through_the_read_api_a_token_sees_only_its_tenant(collector: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["--collector", collector, "--token", "acme-reader", "--target", CUSTOM, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert {run["tenant"] for run in report["runs"]} == {"acme"}
    assert report["summary"]["replayed"] == 3
    globex = next(run_id for run_id, ticket, _ in recorded_scenarios("custom_agent").runs if "IGNORE" in ticket)
    code, out, _ = run_cli(["--collector", collector, "--token", "acme-reader", "--target", CUSTOM, globex], capsys)
    assert code == 3  # another tenant's run is not found, so nothing is compared
    assert "not found in the store" in out
    code, _, err = run_cli(
        ["--collector", collector, "--tenant", "globex", "--token", "acme-reader", "--target", CUSTOM], capsys
    )
    assert code == 2
    assert "403" in err


def test_nothing_to_compare_exits_three(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--clickhouse", store_url, "--target", CUSTOM, "--agent", "nobody"], capsys)
    assert code == 3
    assert "nothing to compare" in out


def test_bad_target_and_bad_filters_are_usage_errors(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["--clickhouse", store_url, "--target", "no_such_module:factory"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("agentwatch replay: cannot import 'no_such_module'")
    code, _, err = run_cli(["--clickhouse", store_url, "--target", "agentwatch_examples.custom_agent:TOOLS"], capsys)
    assert code == 2
    assert "is a dict, not callable" in err
    code, _, err = run_cli(["--clickhouse", store_url, "--target", CUSTOM, "--since", "yesterday"], capsys)
    assert code == 2
    assert "cannot read time 'yesterday'" in err


def test_store_or_collector_down_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, _, err = run_cli(["--clickhouse", f"http://default:pw@127.0.0.1:{port}/default", "--target", CUSTOM], capsys)
    assert code == 2
    assert err.startswith(f"agentwatch replay: store http://default:***@127.0.0.1:{port}/default")
    assert "pw@" not in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["--collector", f"http://127.0.0.1:{port}", "--target", CUSTOM], capsys)
    assert code == 2
    assert err.startswith(f"agentwatch replay: cannot reach collector http://127.0.0.1:{port}")


def test_the_recordings_route_refuses_unknown_and_malformed_parameters(collector: str) -> None:
    refusals = (("colour=blue", "unknown parameter 'colour'"), ("run_ids=a%20b", "run id 'a b' is malformed"))
    for query, message in refusals:
        request = urllib.request.Request(
            f"{collector}/api/v1/recordings?{query}", headers={"Authorization": "Bearer acme-reader"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
        assert message in json.loads(refused.value.read())["error"]


def test_agents_sdk_runs_recorded_through_a_live_collector_replay_on_the_custom_loop(
    clickhouse_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the whole path: the Agents SDK example with content capture, the official OTLP/HTTP exporter,
    # the collector (decode, redact, spool, ClickHouse, views), its read API, then replay
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    with running_collector(clickhouse_url, tmp_path) as collector:
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.traces_url)))
        results = load_example("openai_agents_support").run_scenarios(
            tracer_provider=provider, settings=capture_settings()
        )
        provider.shutdown()
        collector.drain()
        code, out, err = run_cli(["--collector", collector.base_url, "--target", CUSTOM, "--json"], capsys)
    assert code == 0, out + err
    report = json.loads(out)
    assert {run["run_id"] for run in report["runs"]} == {run.run_id for _, run in results}
    assert report["summary"]["matching"] == 5
    assert {run["recorded_runtime"] for run in report["runs"]} == {"openai-agents"}
