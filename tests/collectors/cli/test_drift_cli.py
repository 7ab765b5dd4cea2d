"""``agentwatch drift``, the drift read API routes, the CI/CD manifests and the demo's drift section.

The CLI runs against a store opened directly and against a real read API over HTTP; the routes run
over a real embedded ClickHouse; the Argo Rollouts and Flagger manifests are parsed and checked
against the real routes and flags.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _chrows import engine_url
from _collector_proc import ROOT, CollectorProcess
from _driftrows import STABLE, WORSE, load_runs, synthetic_runs
from _ports import free_port
from _readapi import serve_read_api
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from agentwatch.collectors.cli.drift import EXIT_ERROR, EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, add_drift_command
from agentwatch.collectors.cli.main import build_parser
from agentwatch.collectors.config.auth import Authenticator
from agentwatch.collectors.service.read_api import read_routes
from agentwatch.collectors.store.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=StarletteDeprecationWarning, message=r"Using `httpx`")
    from starlette.testclient import TestClient

pytest_plugins = ["_chstore"]

ROLLOUTS = ROOT / "deploy" / "rollouts"
TOKENS = """tokens:
  - {token: acme-reader, tenant: acme, scopes: [read]}
  - {token: ingest, tenant: acme, scopes: [ingest]}
"""


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="agentwatch")
    add_drift_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["drift", *argv])
    code = args.handler(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def store(clickhouse_store: ClickHouseStore) -> ClickHouseStore:
    """Three agents: a worse canary, a no-change canary, a canary with too few runs, and one without a canary."""
    load_runs(clickhouse_store, synthetic_runs("worse", runs=800, canary=WORSE, canary_share=0.3))
    load_runs(clickhouse_store, synthetic_runs("same", runs=800, canary=STABLE, canary_share=0.3, seed=2))
    load_runs(clickhouse_store, synthetic_runs("thin", runs=8, canary=STABLE, seed=3))
    load_runs(clickhouse_store, synthetic_runs("no-canary", runs=20, canary=STABLE, canary_share=0.0, seed=4))
    return clickhouse_store


@pytest.fixture
def store_url(store: ClickHouseStore, clickhouse_engine: ClickHouseStore, clickhouse_database: str) -> str:
    return engine_url(clickhouse_engine, clickhouse_database)


# --- the command against a store ------------------------------------------------------------------


def test_a_worse_canary_fails_the_gate_with_a_readable_report(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["--agent", "worse", "--clickhouse", store_url], capsys)
    assert code == EXIT_FAIL, err
    headline = out.splitlines()[0]
    assert headline.startswith("FAIL: agent worse, canary v2 vs stable")
    assert "sequential test at alpha 0.05" in headline
    header = next(line for line in out.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "baseline", "canary", "effect", "interval", "evidence", "verdict"]
    assert re.search(r"^stop_reason\s.*\bfail$", out, re.MULTILINE), out
    assert re.search(r"^  - .+", out, re.MULTILINE)  # reasons in words


def test_json_and_exit_codes_per_verdict(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--agent", "worse", "--clickhouse", store_url, "--json", "--fixed"], capsys)
    report = json.loads(out)["drift"]
    assert (code, report["verdict"], report["mode"]) == (EXIT_FAIL, "fail", "fixed")
    assert {"name", "baseline", "canary", "effect", "interval", "evidence", "verdict", "reasons"} <= set(
        report["metrics"][0]
    )
    assert report["counts"]["canary"]
    assert report["sql_checks"]["cost_usd"]["mann_whitney_p"] < 0.05
    code, out, _ = run_cli(["--agent", "same", "--clickhouse", store_url, "--json"], capsys)
    assert json.loads(out)["drift"]["verdict"] != "fail"
    assert code == EXIT_PASS
    code, out, _ = run_cli(["--agent", "thin", "--clickhouse", store_url, "--json"], capsys)
    assert json.loads(out)["drift"]["verdict"] == "inconclusive"
    assert code == EXIT_PASS
    code, _, _ = run_cli(["--agent", "thin", "--clickhouse", store_url, "--fail-on-inconclusive"], capsys)
    assert code == EXIT_INCONCLUSIVE
    code, out, _ = run_cli(["--agent", "no-canary", "--clickhouse", store_url], capsys)
    assert code == EXIT_PASS
    assert "no canary runs" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--agent", "nobody"], "no runs of agent 'nobody'"),
        (["--agent", "worse", "--since", "last week"], "cannot read time"),
        (["--agent", "worse", "--canary-share", "1.5"], "canary_share"),
        (["--agent", "worse", "--alpha", "0.9"], "alpha"),
        (["--agent", "worse", "--watch", "--interval", "0"], "--interval"),
    ],
)
def test_bad_input_is_a_clear_error_and_exit_2(
    store_url: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run_cli([*argv, "--clickhouse", store_url], capsys)
    assert code == EXIT_ERROR
    assert out == ""
    assert err.startswith("agentwatch drift: ")
    assert message in err
    assert "Traceback" not in err


def test_a_store_that_is_down_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--agent", "worse", "--clickhouse", f"http://127.0.0.1:{free_port()}/default"], capsys)
    assert code == EXIT_ERROR
    assert "agentwatch drift:" in err
    assert "Traceback" not in err


def test_watch_stops_at_the_first_fail(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--agent", "worse", "--clickhouse", store_url, "--watch", "--interval", "0.05"], capsys)
    assert code == EXIT_FAIL
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ FAIL: agent worse", out)


def test_watch_prints_only_changes_until_the_timeout(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    began = time.monotonic()
    argv = ["--agent", "thin", "--clickhouse", store_url, "--watch", "--interval", "0.1", "--timeout", "0.5", "--json"]
    code, out, _ = run_cli([*argv, "--fail-on-inconclusive"], capsys)
    assert code == EXIT_INCONCLUSIVE
    assert time.monotonic() - began < 10
    lines = out.splitlines()
    assert len(lines) == 1  # evaluated several times, printed once: the verdict never changed
    assert json.loads(lines[0])["drift"]["verdict"] == "inconclusive"


# --- the read API ---------------------------------------------------------------------------------


class Ready:
    def __call__(self) -> tuple[bool, str]:
        return True, "ready"


@pytest.fixture
def api(store: ClickHouseStore, tmp_path: Path) -> Iterator[TestClient]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(TOKENS, encoding="utf-8")
    routes = read_routes(store=store, authenticator=Authenticator.from_file(tokens), is_ready=Ready())
    with TestClient(Starlette(routes=routes)) as client:
        yield client


AUTH = {"Authorization": "Bearer acme-reader"}


def test_drift_route_returns_the_report_confined_to_the_tenant(api: TestClient) -> None:
    response = api.get("/api/v1/drift", params={"agent": "worse"}, headers=AUTH)
    assert response.status_code == 200, response.text
    report = response.json()["drift"]
    assert report["agent"] == "worse"
    assert report["verdict"] in ("fail", "inconclusive")
    everyone = sum(sum(reasons.values()) for reasons in report["counts"].values())
    assert 0 < everyone < 800  # only acme's runs (the synthetic runs are split between acme and globex)
    assert api.get("/api/v1/drift", params={"agent": "worse", "tenant": "globex"}, headers=AUTH).status_code == 403
    assert api.get("/api/v1/drift", params={"agent": "worse"}).status_code == 401
    assert (
        api.get("/api/v1/drift", params={"agent": "worse"}, headers={"Authorization": "Bearer ingest"}).status_code
        == 403
    )


def test_drift_route_errors(api: TestClient) -> None:
    for params, status, message in (
        ({}, 400, "agent is required"),
        ({"agent": "worse", "since": "soon"}, 400, "cannot read time"),
        ({"agent": "worse", "mode": "magic"}, 400, "mode"),
        ({"agent": "worse", "limit": "5"}, 400, "unknown parameter"),
        ({"agent": "nobody"}, 404, "no runs of agent"),
    ):
        response = api.get("/api/v1/drift", params=params, headers=AUTH)
        assert response.status_code == status, (params, response.text)
        assert message in response.json()["error"]


def test_gate_answers_200_to_go_and_412_to_halt(api: TestClient) -> None:
    halt = api.get("/api/v1/drift/gate", params={"agent": "worse", "mode": "fixed"}, headers=AUTH)
    assert halt.status_code == 412, halt.text
    assert halt.json()["verdict"] == "fail"
    assert halt.json()["go"] is False
    wait = api.get("/api/v1/drift/gate", params={"agent": "thin"}, headers=AUTH)
    assert (wait.status_code, wait.json()["verdict"], wait.json()["go"]) == (200, "inconclusive", True)
    strict = api.get("/api/v1/drift/gate", params={"agent": "thin", "on_inconclusive": "fail"}, headers=AUTH)
    assert strict.status_code == 412
    bad = api.get("/api/v1/drift/gate", params={"agent": "thin", "on_inconclusive": "maybe"}, headers=AUTH)
    assert bad.status_code == 400


def test_gate_reads_a_flagger_webhook_payload(api: TestClient) -> None:
    payload = {
        "name": "support-agent",
        "namespace": "agents",
        "phase": "Progressing",
        "metadata": {"agent": "worse", "mode": "fixed", "on_inconclusive": "pass"},
    }
    response = api.post("/api/v1/drift/gate", json=payload, headers=AUTH)
    assert response.status_code == 412, response.text
    assert response.json()["agent"] == "worse"
    thin = api.post("/api/v1/drift/gate", json={**payload, "metadata": {"agent": "thin"}}, headers=AUTH)
    assert thin.status_code == 200
    typo = api.post("/api/v1/drift/gate", json={**payload, "metadata": {"agnet": "worse"}}, headers=AUTH)
    assert typo.status_code == 400
    assert "agnet" in typo.json()["error"]
    assert api.post("/api/v1/drift/gate", content=b"{not json", headers=AUTH).status_code == 400


@pytest.fixture
def collector_url(store: ClickHouseStore) -> Iterator[str]:
    """The read API over real HTTP, auth off."""
    with serve_read_api(store, Authenticator(), is_ready=Ready()) as url:
        yield url


def test_the_command_through_a_collector(collector_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--agent", "worse", "--collector", collector_url, "--fixed"], capsys)
    assert code == EXIT_FAIL
    assert out.startswith("FAIL: agent worse")
    code, _, err = run_cli(["--agent", "nobody", "--collector", collector_url], capsys)
    assert code == EXIT_ERROR
    assert "no runs of agent 'nobody'" in err
    code, _, err = run_cli(["--agent", "worse", "--collector", f"http://127.0.0.1:{free_port()}"], capsys)
    assert code == EXIT_ERROR
    assert "cannot reach" in err


# --- the manifests --------------------------------------------------------------------------------


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((ROLLOUTS / name).read_text(encoding="utf-8")) if doc]


def _path(url: str) -> str:
    """The path and query of ``url`` (the tests then ask the real routes for it)."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def test_argo_rollouts_templates_use_real_routes_and_flags(api: TestClient) -> None:
    documents = _documents("analysis-template.yaml")
    kinds = [doc["kind"] for doc in documents]
    assert kinds == ["AnalysisTemplate", "AnalysisTemplate", "Rollout"]
    web = documents[0]["spec"]["metrics"][0]
    assert web["successCondition"] == 'result == "pass"'
    assert web["failureCondition"] == 'result == "fail"'
    url = web["provider"]["web"]["url"].replace("{{args.collector}}", "http://x").replace("{{args.agent}}", "worse")
    response = api.get(_path(url), headers=AUTH)
    assert response.status_code == 200, response.text
    # the jsonPath the template reads is where the report keeps the verdict
    assert web["provider"]["web"]["jsonPath"] == "{$.drift.verdict}"
    assert response.json()["drift"]["verdict"] in ("pass", "fail", "inconclusive")
    job = documents[1]["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]["containers"][0]
    argv = [
        arg.replace("{{args.agent}}", "support").replace("{{args.collector}}", "http://x:4318") for arg in job["args"]
    ]
    parsed = build_parser().parse_args(argv)  # every flag exists (argparse exits on an unknown one)
    assert (parsed.command, parsed.agent, parsed.watch, parsed.fail_on_inconclusive) == ("drift", "support", True, True)
    assert parsed.timeout == 1800
    rollout = documents[2]["spec"]["strategy"]["canary"]["analysis"]
    assert rollout["templates"][0]["templateName"] == documents[0]["metadata"]["name"]


def test_flagger_canary_webhooks_use_the_gate(api: TestClient) -> None:
    (canary,) = _documents("flagger-canary.yaml")
    assert canary["kind"] == "Canary"
    hooks = canary["spec"]["analysis"]["webhooks"]
    assert {hook["type"] for hook in hooks} == {"rollout", "confirm-promotion"}
    for hook in hooks:
        path = _path(hook["url"])
        assert path == "/api/v1/drift/gate"
        payload = {"name": "support-agent", "namespace": "agents", "phase": "Progressing", "metadata": hook["metadata"]}
        payload["metadata"] = {**hook["metadata"], "agent": "worse"}
        response = api.post(path, json=payload, headers=AUTH)
        assert response.status_code in (200, 412), response.text  # the parameters are all understood


# --- the demo -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_demo_catches_its_canary_in_the_report_and_the_gauges(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agentwatch.collectors.cli.main", "demo", "--parity-runs", "0", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (drift,) = report["drift"]
    assert drift["agent"] == "support"
    assert drift["verdict"] == "fail", drift
    assert drift["canary_runs"] == 300
    failed = [metric for metric in drift["metrics"] if metric["verdict"] == "fail"]
    assert failed
    assert all(metric["reasons"] for metric in failed)
    assert max(report["drift_gauges"]["support"].values()) == 2  # agentwatch_canary_verdict: fail
    table = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentwatch.collectors.cli.main",
            "drift",
            "--agent",
            "support",
            "--clickhouse",
            "chdb://./agentwatch-data",
            "--since",
            "1h",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert table.returncode == EXIT_FAIL, table.stderr
    assert table.stdout.startswith("FAIL: agent support")


# --- a real collector -----------------------------------------------------------------------------


def _send_fleet(traces_url: str, runs_per_track: int) -> None:
    """The example fleet over OTLP/HTTP with the official exporter, stable and canary alternating."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from agentwatch.collectors._examples import load_example

    fleet = load_example("fleet")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url), max_queue_size=65536))
    try:
        for index in range(runs_per_track):
            for release in (fleet.STABLE, fleet.CANARY):
                fleet.simulate(1, release, tracer_provider=provider, seed=7 + index)
    finally:
        provider.shutdown()


@pytest.mark.slow
def test_a_collector_publishes_the_gauges_serves_the_gate_and_stops_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    collector = CollectorProcess(tmp_path / "collector", extra_args=["--drift-interval-seconds", "0.5"]).start()
    try:
        _send_fleet(collector.traces_url, 300)
        deadline = time.monotonic() + 60
        verdicts: dict[str, float] = {}
        while time.monotonic() < deadline:
            text = collector.metrics_text()
            verdicts = {
                match.group(1): float(match.group(2))
                for match in re.finditer(
                    r'^agentwatch_canary_verdict\{agent="support",metric="([^"]+)"\} (\S+)$', text, re.M
                )
            }
            evalues = re.findall(r'^agentwatch_canary_drift_evalue\{agent="support",metric="[^"]+"\} \S+$', text, re.M)
            if verdicts and max(verdicts.values()) == 2:
                break
            time.sleep(0.5)
        assert verdicts, collector.log()
        assert max(verdicts.values()) == 2  # fail: what CanaryDriftDetected pages on
        assert len(evalues) == len(verdicts) > 5
        code, out, _ = run_cli(["--agent", "support", "--collector", collector.base_url], capsys)
        assert code == EXIT_FAIL
        assert out.startswith("FAIL: agent support")
        status, body = collector.get("/api/v1/drift/gate?agent=support")
        assert status == 412
        assert json.loads(body)["verdict"] == "fail"
    finally:
        assert collector.stop(timeout_s=30) == 0
    assert "Traceback" not in collector.log()
