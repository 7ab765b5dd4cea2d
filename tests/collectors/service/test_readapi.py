"""The collector's read API over a real embedded ClickHouse: filters, tenant isolation, errors, trace JSON."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _readdata import fleet
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from agentwatch.collectors.config.auth import Authenticator
from agentwatch.collectors.service.read_api import read_routes
from agentwatch.collectors.store.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

with warnings.catch_warnings():
    # starlette asks for the `httpx2` fork; the plain httpx installed here works the same for tests
    warnings.filterwarnings("ignore", category=StarletteDeprecationWarning, message=r"Using `httpx`")
    from starlette.testclient import TestClient

pytest_plugins = ["_chstore"]

TOKENS = """
tokens:
  - token: acme-reader
    tenant: acme
    scopes: [read]
  - token: globex-reader
    tenant: globex
    scopes: [read, ingest]
  - token: acme-ingest-only
    tenant: acme
    scopes: [ingest]
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Readiness:
    """What the collector's ``is_ready`` reports; a test flips it."""

    def __init__(self) -> None:
        self.state = (True, "store reachable, schema applied")

    def __call__(self) -> tuple[bool, str]:
        return self.state


def make_client(store: ClickHouseStore, authenticator: Authenticator, ready: Readiness | None = None) -> TestClient:
    routes = read_routes(store=store, authenticator=authenticator, is_ready=ready or Readiness())
    return TestClient(Starlette(routes=routes))


@pytest.fixture
def store(clickhouse_store: ClickHouseStore) -> ClickHouseStore:
    fleet().load(clickhouse_store)
    return clickhouse_store


@pytest.fixture
def authenticator(tmp_path: Path) -> Authenticator:
    path = tmp_path / "tokens.yaml"
    path.write_text(TOKENS, encoding="utf-8")
    return Authenticator.from_file(path)


@pytest.fixture
def secured(store: ClickHouseStore, authenticator: Authenticator) -> Iterator[TestClient]:
    with make_client(store, authenticator) as client:
        yield client


@pytest.fixture
def open_api(store: ClickHouseStore) -> Iterator[TestClient]:
    """Auth disabled (no tokens file): every tenant is visible, ``tenant=`` filters."""
    with make_client(store, Authenticator()) as client:
        yield client


def run_ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {run["run_id"] for run in response.json()["runs"]}


# --- runs -----------------------------------------------------------------------------------------


def test_runs_lists_every_run_as_json(open_api: TestClient) -> None:
    response = open_api.get("/api/v1/runs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    runs = response.json()["runs"]
    assert {run["run_id"] for run in runs} == {info.run_id for info in fleet().runs}
    first = runs[0]
    assert first["start_time"].endswith("Z")
    assert first["start_time"] >= runs[-1]["start_time"]
    for key in ("tenant", "agent", "version", "track", "runtime", "duration_s", "stop_reason", "budget_exhausted"):
        assert key in first
    for key in ("steps", "tool_calls", "llm_calls", "input_tokens", "output_tokens", "cost_usd", "trace_id"):
        assert key in first


def test_runs_filters(open_api: TestClient) -> None:
    everything = fleet().runs
    assert run_ids(open_api.get("/api/v1/runs", params={"track": "canary"})) == {
        r.run_id for r in everything if r.track == "canary"
    }
    assert run_ids(open_api.get("/api/v1/runs", params={"stop_reason": "max_tool_calls"})) == {
        r.run_id for r in everything if r.stop_reason == "max_tool_calls"
    }
    assert run_ids(open_api.get("/api/v1/runs", params={"tenant": "initech", "track": "stable"})) == {
        fleet().run(tenant="initech", stop_reason="approval_rejected").run_id
    }
    assert run_ids(open_api.get("/api/v1/runs", params={"agent": "nobody"})) == set()
    assert len(run_ids(open_api.get("/api/v1/runs", params={"since": "1h", "limit": "4"}))) == 4
    assert run_ids(open_api.get("/api/v1/runs", params={"until": "2h"})) == set()
    assert len(run_ids(open_api.get("/api/v1/runs", params={"since": "2020-01-01T00:00:00Z"}))) == 10


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, "cannot read time 'yesterday'"),
        ({"until": "3 parsecs"}, "cannot read time"),
        ({"limit": "lots"}, "limit must be an integer"),
        ({"limit": "0"}, "limit must be an integer from 1 to 1000"),
        ({"limit": "100000"}, "from 1 to 1000"),
        ({"stop_reason": "exploded"}, "unknown stop reason 'exploded'"),
        ({"since": "1h", "until": "2h"}, "since is later than until"),
        ({"stop-reason": "completed"}, "unknown parameter 'stop-reason'"),
        ({"agent": "a" * 300}, "agent must be"),
    ],
)
def test_bad_parameters_are_400_with_a_message(open_api: TestClient, params: dict[str, str], message: str) -> None:
    response = open_api.get("/api/v1/runs", params=params)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_a_repeated_parameter_is_400(open_api: TestClient) -> None:
    response = open_api.get("/api/v1/runs?track=stable&track=canary")
    assert response.status_code == 400
    assert "more than once" in response.json()["error"]


# --- one run, its trace ---------------------------------------------------------------------------


def test_one_run(open_api: TestClient) -> None:
    info = fleet().run(tenant="globex", stop_reason="policy_denied")
    response = open_api.get(f"/api/v1/runs/{info.run_id}")
    assert response.status_code == 200
    run = response.json()["run"]
    assert (run["run_id"], run["tenant"], run["stop_reason"]) == (info.run_id, "globex", "policy_denied")
    assert run["input"] == ""
    missing = open_api.get("/api/v1/runs/does-not-exist")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no such run"}


def test_trace_tree_json(open_api: TestClient) -> None:
    info = fleet().run(tenant="acme", stop_reason="completed", track="canary")
    response = open_api.get(f"/api/v1/runs/{info.run_id}/trace")
    assert response.status_code == 200
    trace = response.json()["trace"]
    assert trace["trace_id"] == info.trace_id
    assert trace["span_count"] == info.spans
    assert trace["run"]["run_id"] == info.run_id
    [root] = trace["roots"]
    assert root["kind"] == "run"
    assert [step["kind"] for step in root["children"]] == ["step"] * info.steps
    grandchildren = [node["kind"] for step in root["children"] for node in step["children"]]
    assert grandchildren.count("llm") == info.steps
    assert grandchildren.count("tool") == info.tool_calls
    tool = next(node for step in root["children"] for node in step["children"] if node["kind"] == "tool")
    assert tool["attributes"]["agentwatch.tool.disposition"] in {"allowed", "approved"}
    assert tool["duration_ms"] >= 0
    assert tool["start_offset_ms"] > 0
    assert open_api.get("/api/v1/runs/nope/trace").status_code == 404


# --- auth and tenant isolation --------------------------------------------------------------------


def test_auth_is_required_when_tokens_are_configured(secured: TestClient) -> None:
    for path in ("/api/v1/runs", "/api/v1/stats", "/api/v1/runs/x", "/api/v1/runs/x/trace"):
        missing = secured.get(path)
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert "error" in missing.json()
        assert secured.get(path, headers=bearer("wrong")).status_code == 401
        forbidden = secured.get(path, headers=bearer("acme-ingest-only"))
        assert forbidden.status_code == 403
        assert "read" in forbidden.json()["error"]


def test_a_tenant_token_sees_only_its_tenant(secured: TestClient) -> None:
    acme = {r.run_id for r in fleet().runs if r.tenant == "acme"}
    assert run_ids(secured.get("/api/v1/runs", headers=bearer("acme-reader"))) == acme
    assert run_ids(secured.get("/api/v1/runs", headers=bearer("acme-reader"), params={"tenant": "acme"})) == acme
    globex = run_ids(secured.get("/api/v1/runs", headers=bearer("globex-reader")))
    assert globex == {r.run_id for r in fleet().runs if r.tenant == "globex"}
    # asking for another tenant is refused outright, not silently narrowed
    other = secured.get("/api/v1/runs", headers=bearer("acme-reader"), params={"tenant": "globex"})
    assert other.status_code == 403


def test_another_tenants_run_is_404_even_by_id(secured: TestClient) -> None:
    globex_run = fleet().run(tenant="globex", stop_reason="policy_denied").run_id
    for path in (f"/api/v1/runs/{globex_run}", f"/api/v1/runs/{globex_run}/trace"):
        assert secured.get(path, headers=bearer("globex-reader")).status_code == 200
        hidden = secured.get(path, headers=bearer("acme-reader"))
        assert hidden.status_code == 404
        assert hidden.json() == {"error": "no such run"}  # indistinguishable from an unknown run
        assert secured.get(path, headers=bearer("acme-reader"), params={"tenant": "globex"}).status_code == 403


def test_stats_are_confined_to_the_tenant(secured: TestClient) -> None:
    response = secured.get("/api/v1/stats", headers=bearer("globex-reader"))
    assert response.status_code == 200
    stats = response.json()["stats"]
    assert stats["tenant"] == "globex"
    assert {row["stop_reason"] for row in stats["stop_reasons"]} == {"policy_denied"}
    assert sum(row["runs"] for row in stats["stop_reasons"]) == 2
    assert {row["tool"] for row in stats["denials"]} == {"db.drop_table"}


# --- stats ----------------------------------------------------------------------------------------


def test_stats(open_api: TestClient) -> None:
    response = open_api.get("/api/v1/stats", params={"since": "1h"})
    assert response.status_code == 200
    stats = response.json()["stats"]
    assert stats["since"].endswith("Z")
    reasons: dict[str, int] = {}
    for row in stats["stop_reasons"]:
        reasons[row["stop_reason"]] = reasons.get(row["stop_reason"], 0) + row["runs"]
    assert reasons == {"completed": 4, "max_tool_calls": 2, "policy_denied": 2, "approval_rejected": 2}
    assert {row["budget"] for row in stats["budgets"]} == {"tool_calls"}
    assert {row["disposition"] for row in stats["denials"]} == {"denied", "rejected"}
    assert {row["track"] for row in stats["cost"]} == {"stable", "canary"}
    assert all(row["total_usd"] > 0 and row["runs"] == 5 for row in stats["cost"])
    assert stats["top_tools"][0]["tool"] == "kb.search"
    canary = open_api.get("/api/v1/stats", params={"track": "canary"}).json()["stats"]
    assert {row["track"] for row in canary["cost"]} == {"canary"}
    assert open_api.get("/api/v1/stats", params={"limit": "3"}).status_code == 400
    assert open_api.get("/api/v1/stats", params={"since": "soon"}).status_code == 400


# --- availability ---------------------------------------------------------------------------------


def test_not_ready_is_503_with_the_reason(store: ClickHouseStore) -> None:
    ready = Readiness()
    ready.state = (False, "cannot reach ClickHouse at http://db:8123")
    with make_client(store, Authenticator(), ready) as client:
        response = client.get("/api/v1/runs")
        assert response.status_code == 503
        assert "cannot reach ClickHouse" in response.json()["error"]
        assert response.headers["retry-after"].isdigit()
        ready.state = (True, "ok")
        assert client.get("/api/v1/runs").status_code == 200


def test_auth_is_checked_before_readiness(store: ClickHouseStore, authenticator: Authenticator) -> None:
    ready = Readiness()
    ready.state = (False, "starting")
    with make_client(store, authenticator, ready) as client:
        assert client.get("/api/v1/runs").status_code == 401
        assert client.get("/api/v1/runs", headers=bearer("acme-reader")).status_code == 503


def test_a_store_that_fails_is_503_not_a_crash(clickhouse_url: str) -> None:
    store = ClickHouseStore.open(clickhouse_url)
    store.ensure_schema()
    store.close()  # every query now fails with StoreUnavailable, as when the server goes away
    with make_client(store, Authenticator()) as client:
        response = client.get("/api/v1/runs")
        assert response.status_code == 503
        assert response.headers["retry-after"].isdigit()
        assert client.get("/api/v1/runs/x/trace").status_code == 503


def test_a_missing_schema_is_503(clickhouse_url: str) -> None:
    with ClickHouseStore.open(clickhouse_url) as store, make_client(store, Authenticator()) as client:
        assert client.get("/api/v1/runs").status_code == 503
        assert client.get("/api/v1/stats").status_code == 503
