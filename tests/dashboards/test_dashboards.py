"""The Grafana dashboards: rendered from code, valid, wired to their datasources, and every query runs.

- The committed ``deploy/grafana/dashboards/*.json`` are exactly what the code renders, and a changed,
  missing or left-over file is reported (library and ``agentwatch dashboards --check``).
- Every dashboard validates against Grafana's dashboard JSON schema (vendored in
  ``tests/data/grafana/``, see its README for the origin).
- Every datasource a panel, query or variable references is provisioned with the right type, and the
  dashboard provider reads the folder docker compose mounts.
- Every SQL query, macros and variables expanded as Grafana would, runs on a real ClickHouse (chDB)
  holding the example agent's real spans and returns rows; every PromQL query is evaluated by a real
  Prometheus scraping a real collector fed with demo traffic and returns series, except the few
  listed in ``PROMQL_EXPECTED_EMPTY`` with the reason.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev extra
import pytest
import yaml
from _chrows import new_token
from _collector_proc import CollectorProcess
from _otlp_clients import http_request, json_request, json_span, random_span_id
from _paths import REPO
from _promstack import Prometheus
from _readdata import Fleet, fleet, to_rows
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext

from agentwatch.collectors import metric_names
from agentwatch.collectors._examples import load_example
from agentwatch.collectors.ingest.otlp import encode_rows
from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.collectors.store.schema import TRACES_TABLE
from agentwatch.dashboards import dashboards_cli, runs
from agentwatch.dashboards.common import COLLECTOR_JOB
from agentwatch.dashboards.datasources import (
    CLICKHOUSE_DATASOURCE_TYPE,
    DASHBOARDS_MOUNT_PATH,
    DATASOURCE_TYPES,
    PROMETHEUS_DATASOURCE_TYPE,
)
from agentwatch.dashboards.macros import expand_promql, expand_sql
from agentwatch.dashboards.panels import PanelQuery, panel_queries, queries_of, variable_promql
from agentwatch.dashboards.render import dashboards, render_all, stale_files, write_all
from agentwatch.instrumentation import (
    MemoryKillSwitch,
    Policy,
    RunAttributesSpanProcessor,
    ToolGateway,
    agent_run,
    semconv,
)

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

ROOT: Final = REPO
DASHBOARDS_DIR: Final = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCES_YAML: Final = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "agentwatch.yaml"
PROVIDERS_YAML: Final = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "agentwatch.yaml"
COMPOSE_YAML: Final = ROOT / "deploy" / "docker-compose.yaml"
SCHEMA_PATH: Final = ROOT / "tests" / "data" / "grafana" / "dashboard.jsonschema.json"

EXPECTED_DASHBOARDS: Final = {
    "overview.json": "agentwatch-overview",
    "canary.json": "agentwatch-canary",
    "runs.json": "agentwatch-runs",
    "tools.json": "agentwatch-tools",
    "collector.json": "agentwatch-collector",
}
EXPECTED_VARIABLES: Final = {
    "agentwatch-overview": ("agent", "track"),
    "agentwatch-canary": ("agent", "track"),
    "agentwatch-runs": ("tenant", "agent", "track", runs.TRACE_VARIABLE),
    "agentwatch-tools": ("tenant", "agent", "track"),
    "agentwatch-collector": ("instance",),
}

PROMQL_EXPECTED_EMPTY: Final = {
    ("agentwatch-collector", "Spans lost"): (
        "agentwatch_collector_spans_dropped_total appears only when ClickHouse refuses a batch as bad data"
    ),
    ("agentwatch-collector", "Dropped spans/s"): (
        "agentwatch_collector_spans_dropped_total appears only when ClickHouse refuses a batch as bad data"
    ),
}
"""PromQL panels whose series do not exist in demo traffic: they must evaluate, but may be empty."""


def _all_panels(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [panel for top in document.get("panels") or [] for panel in (top, *(top.get("panels") or []))]


def _committed() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


# --- committed files = rendered code -------------------------------------------------------------


def test_committed_dashboards_are_what_the_code_renders() -> None:
    rendered = render_all()
    assert set(rendered) == set(EXPECTED_DASHBOARDS)
    assert sorted(path.name for path in DASHBOARDS_DIR.glob("*.json")) == sorted(rendered)
    for name, text in rendered.items():
        assert (DASHBOARDS_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run agentwatch dashboards"
        )
    assert stale_files(DASHBOARDS_DIR) == []


def test_rendering_is_deterministic_and_sorted() -> None:
    first, second = render_all(), render_all()
    assert first == second
    for text in first.values():
        assert text.endswith("}\n")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_a_changed_missing_or_left_over_file_is_stale(tmp_path: Path) -> None:
    written = write_all(tmp_path)
    assert sorted(path.name for path in written) == sorted(EXPECTED_DASHBOARDS)
    assert stale_files(tmp_path) == []

    overview = tmp_path / "overview.json"
    document = json.loads(overview.read_text())
    document["title"] = "edited in the UI"
    overview.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (tmp_path / "tools.json").unlink()
    (tmp_path / "old-dashboard.json").write_text(json.dumps({"uid": "agentwatch-old", "title": "renamed since"}))
    (tmp_path / "someone-elses.json").write_text(json.dumps({"uid": "team-dashboard"}))
    assert stale_files(tmp_path) == ["overview.json", "tools.json", "old-dashboard.json"]

    write_all(tmp_path)
    assert stale_files(tmp_path) == []
    assert not (tmp_path / "old-dashboard.json").exists()
    assert (tmp_path / "someone-elses.json").exists(), "a dashboard agentwatch did not write is never removed"


def test_cli_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dashboards"
    assert dashboards_cli.main(["--out", str(out), "--check"]) == 1
    assert "overview.json" in capsys.readouterr().err

    assert dashboards_cli.main(["--out", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(EXPECTED_DASHBOARDS)
    assert dashboards_cli.main(["--out", str(out), "--check"]) == 0
    capsys.readouterr()

    canary = out / "canary.json"
    canary.write_text(canary.read_text().replace('"agentwatch-canary"', '"agentwatch-canary-2"'))
    assert dashboards_cli.main(["--out", str(out), "--check"]) == 1
    error = capsys.readouterr().err
    assert "canary.json" in error
    assert "overview.json" not in error


def test_add_command_registers_the_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="agentwatch")
    dashboards_cli.add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dashboards", "--check", "--out", "/tmp/somewhere"])
    assert args.handler is dashboards_cli.run
    assert args.check is True
    assert args.out == Path("/tmp/somewhere")
    defaults = parser.parse_args(["dashboards"])
    assert defaults.check is False
    assert defaults.out == DASHBOARDS_DIR, "from a source checkout the default is the committed folder"


def test_the_generators_names_are_the_collectors_names() -> None:
    """Dashboards and alerts read ``metric_names``; the collector exposes its metrics under exactly those names."""
    from agentwatch.collectors.metrics import CollectorMetrics

    assert metric_names.OTHER == semconv.STOP_REASON_OTHER
    families = CollectorMetrics().registry.collect()
    exposed = {f"{family.name}_total" if family.type == "counter" else family.name for family in families}
    assert exposed == {*metric_names.AGENT_METRICS, *metric_names.COLLECTOR_METRICS}


# --- Grafana's dashboard schema ----------------------------------------------------------------------


def _grafana_schema() -> dict[str, Any]:
    """The vendored schema with two corrections to its variable model, where it is stricter than Grafana.

    - ``query``: Grafana's dashboard kind says ``query?: string | {...}`` (any object; the SDK types it
      ``dict[str, object]``), but the generated JSON Schema wants every property of the object to be
      an object itself, which rejects the ClickHouse plugin's query object (``rawSql`` is a string).
    - ``definition``: the text Grafana lists a query variable by; its editor writes it on every save,
      the kind does not list it.
    """
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    properties = schema["definitions"]["VariableModel"]["properties"]
    as_object = next(branch for branch in properties["query"]["anyOf"] if branch["type"] == "object")
    assert as_object["additionalProperties"]["type"] == "object", "the vendored schema changed: revisit this"
    as_object["additionalProperties"] = {}
    assert "definition" not in properties, "the vendored schema changed: revisit this"
    properties["definition"] = {"type": "string"}
    return schema


@pytest.fixture(scope="module")
def schema_validator() -> jsonschema.Draft7Validator:
    schema = _grafana_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("name", sorted(EXPECTED_DASHBOARDS))
def test_dashboard_validates_against_grafanas_schema(name: str, schema_validator: jsonschema.Draft7Validator) -> None:
    document = json.loads((DASHBOARDS_DIR / name).read_text(encoding="utf-8"))
    errors = [f"{list(error.absolute_path)}: {error.message[:300]}" for error in schema_validator.iter_errors(document)]
    assert errors == []


def _break_unknown_key(document: dict[str, Any]) -> None:
    document["stlye"] = "dark"


def _break_grid(document: dict[str, Any]) -> None:
    document["panels"][1]["gridPos"]["w"] = 30


def _break_variable(document: dict[str, Any]) -> None:
    document["templating"]["list"][0]["multi"] = "yes"


def _break_refresh(document: dict[str, Any]) -> None:
    document["refresh"] = True


def _break_variable_query(document: dict[str, Any]) -> None:
    document["templating"]["list"][0]["query"] = ["SELECT 1"]


def _break_variable_definition(document: dict[str, Any]) -> None:
    document["templating"]["list"][0]["definition"] = {"rawSql": "SELECT 1"}


@pytest.mark.parametrize(
    "breakage",
    [
        _break_unknown_key,
        _break_grid,
        _break_variable,
        _break_refresh,
        _break_variable_query,
        _break_variable_definition,
    ],
)
def test_the_schema_check_catches_a_broken_dashboard(
    breakage: Any, schema_validator: jsonschema.Draft7Validator
) -> None:
    document = copy.deepcopy(dashboards()["tools.json"])
    assert list(schema_validator.iter_errors(document)) == []
    breakage(document)
    assert list(schema_validator.iter_errors(document)) != []


# --- structure, datasources, provisioning ------------------------------------------------------------


def test_uids_titles_and_files() -> None:
    documents = _committed()
    assert {name: document["uid"] for name, document in documents.items()} == EXPECTED_DASHBOARDS
    titles = [document["title"] for document in documents.values()]
    assert len(set(titles)) == len(titles)
    for document in documents.values():
        assert "agentwatch" in document["tags"]
        assert "id" not in document, "provisioned dashboards are identified by uid only"


def test_template_variables() -> None:
    for document in _committed().values():
        variables = {variable["name"]: variable for variable in document["templating"]["list"]}
        assert tuple(variables) == EXPECTED_VARIABLES[document["uid"]]
        for name, variable in variables.items():
            if name == runs.TRACE_VARIABLE:
                assert variable["type"] == "textbox"
                continue
            assert variable["type"] == "query"
            assert variable["multi"] is True
            assert variable["includeAll"] is True
            assert variable["current"]["value"] == ["$__all"], f"{document['uid']} ${name} must default to All"
            expected_type = CLICKHOUSE_DATASOURCE_TYPE if "tenant" in variables else PROMETHEUS_DATASOURCE_TYPE
            assert variable["datasource"]["type"] == expected_type
            if expected_type == CLICKHOUSE_DATASOURCE_TYPE:
                # the plugin's variable model (CHVariableQuery): custom SQL, run from rawSql
                query = variable["query"]
                assert set(query) == {"queryType", "rawSql", "refId"}, query
                assert query["queryType"] == "sql"
                assert query["rawSql"].startswith("SELECT DISTINCT ")
                assert variable["definition"] == query["rawSql"], "the variable list shows the SQL"
            else:
                assert isinstance(variable["query"], str)
                assert "definition" not in variable


def test_panel_ids_are_unique_and_panels_fit_the_grid() -> None:
    for document in _committed().values():
        panels = _all_panels(document)
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids)), document["uid"]
        titles = [panel["title"] for panel in panels if panel["type"] != "row"]
        assert len(titles) == len(set(titles)), f"{document['uid']}: panel titles name panels in reports"
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{document['uid']}/{panel.get('title')}"
            if panel["type"] != "row":
                assert panel.get("title"), f"{document['uid']}: untitled panel"
                assert panel.get("description"), f"{document['uid']}/{panel['title']} has no description"
                assert panel.get("targets"), f"{document['uid']}/{panel['title']} has no query"


def _datasource_references(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every datasource reference in a dashboard: panels, targets, variables, and queries of links."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                yield where, value
            elif key == "datasourceUid":
                yield where, {"uid": value}
            else:
                yield from _datasource_references(value, f"{where}/{node.get('title', key)}")
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_references(item, where)


def _provisioned_datasources() -> dict[str, str]:
    config = yaml.safe_load(DATASOURCES_YAML.read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    return {source["uid"]: source["type"] for source in config["datasources"]}


def test_every_datasource_reference_is_provisioned_with_the_right_type() -> None:
    provisioned = _provisioned_datasources()
    assert provisioned == DATASOURCE_TYPES
    references = [(where, ref) for document in _committed().values() for where, ref in _datasource_references(document)]
    assert len(references) > 100
    for where, reference in references:
        assert reference["uid"] in provisioned, f"{where}: unknown datasource {reference}"
        if "type" in reference:
            assert reference["type"] == provisioned[reference["uid"]], f"{where}: {reference}"


def test_clickhouse_datasource_names_the_schema_the_sql_uses() -> None:
    config = yaml.safe_load(DATASOURCES_YAML.read_text(encoding="utf-8"))
    clickhouse = next(source for source in config["datasources"] if source["type"] == CLICKHOUSE_DATASOURCE_TYPE)
    traces = clickhouse["jsonData"]["traces"]
    assert traces["defaultTable"] == "otel_traces"
    assert traces["otelEnabled"] is True
    assert traces["defaultDatabase"] == clickhouse["jsonData"]["defaultDatabase"]
    assert clickhouse["secureJsonData"]["password"].startswith("${"), "the password comes from the environment"
    # span events and links in the trace view, from the exporter's nested Events.* / Links.* columns
    assert traces["traceEventsColumnPrefix"] == "Events"
    assert traces["traceLinksColumnPrefix"] == "Links"
    assert traces["flattenNested"] is False
    assert traces["defaultTable"] + traces["traceTimestampTableSuffix"] == "otel_traces_trace_id_ts"


def test_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    providers = yaml.safe_load(PROVIDERS_YAML.read_text(encoding="utf-8"))["providers"]
    assert len(providers) == 1
    provider = providers[0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == DASHBOARDS_MOUNT_PATH
    grafana = yaml.safe_load(COMPOSE_YAML.read_text(encoding="utf-8"))["services"]["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = (COMPOSE_YAML.parent / source).resolve() if source.startswith(".") else source
    assert mounts[DASHBOARDS_MOUNT_PATH] == DASHBOARDS_DIR
    assert mounts["/etc/grafana/provisioning"] == DATASOURCES_YAML.parents[1]


_METRIC_NAME = re.compile(r"\b(agentwatch_\w+|up|scrape_duration_seconds)\b")
_KNOWN_SERIES: Final = frozenset(
    [*metric_names.AGENT_METRICS, *metric_names.COLLECTOR_METRICS, "up", "scrape_duration_seconds"]
)
_HISTOGRAM_SUFFIXES: Final = ("_bucket", "_sum", "_count")


def test_promql_uses_only_the_collectors_metric_names() -> None:
    used: set[str] = set()
    for query in panel_queries():
        if query.language != "promql":
            continue
        names = _METRIC_NAME.findall(query.expr)
        assert names, f"{query.panel_title}: no metric selector in {query.expr}"
        for name in names:
            base = next((name.removesuffix(s) for s in _HISTOGRAM_SUFFIXES if name.endswith(s)), name)
            assert name in _KNOWN_SERIES or base in _KNOWN_SERIES, f"{query.panel_title}: unknown series {name}"
            used.add(base if base in _KNOWN_SERIES else name)
    # every agent metric has a panel
    assert set(metric_names.AGENT_METRICS) <= used, set(metric_names.AGENT_METRICS) - used


def test_sql_filters_on_the_sort_key_prefix_and_time() -> None:
    # each variable is narrowed by the ones before it; panels by all three
    narrowed_by = {"$tenant": (), "$agent": ("tenant",), "$track": ("tenant", "agent")}
    columns = {"tenant": "TenantId", "agent": "AgentName", "track": "Track"}
    for query in panel_queries():
        if query.language != "sql":
            continue
        expr = query.expr
        if "otel_traces" in expr:
            # trace lookups read the trace's time window from the trace-id index first
            assert "trace_start" in expr, query
            assert "trace_end" in expr, query
            continue
        time_column = "StartTime" if "FROM agent_runs" in expr else "Timestamp"
        assert f"$__timeFilter({time_column})" in expr, query
        variables = narrowed_by[query.panel_title] if query.kind == "variable" else tuple(columns)
        if "FROM agent_audit" in expr:
            variables = ("tenant", "agent")  # the audit trail (kill switches, approvals) has no track
        for variable in variables:
            condition = f"$__conditionalAll({columns[variable]} IN (${{{variable}:singlequote}}), ${variable})"
            assert condition in expr, f"{query.dashboard_uid}/{query.panel_title} lacks {condition}"


def test_run_rows_link_to_their_trace() -> None:
    document = dashboards()["runs.json"]
    tables = [panel for panel in _all_panels(document) if panel["type"] == "table"]
    assert len(tables) == 3
    for panel in tables:
        assert "TraceId" in panel["targets"][0]["rawSql"], "the plugin adds View trace links to a TraceId column"
        links = panel["fieldConfig"]["defaults"]["links"]
        below, explore = links
        assert f"var-{runs.TRACE_VARIABLE}=${{__data.fields.TraceId}}" in below["url"]
        assert below["url"].startswith(f"/d/{runs.UID}?")
        query = explore["internal"]["query"]
        assert query["queryType"] == "traces"
        assert query["format"] == 3
        assert query["rawSql"] == runs.trace_sql("'${__data.fields.TraceId}'")
    trace_panel = next(panel for panel in _all_panels(document) if panel["type"] == "traces")
    assert trace_panel["targets"][0]["format"] == 3
    assert trace_panel["targets"][0]["queryType"] == "traces"
    for columns in (f"{runs.TRACE_EVENTS} AS logs", f"{runs.TRACE_LINKS} AS references"):
        assert columns in trace_panel["targets"][0]["rawSql"]


def test_panel_queries_cover_every_target_and_variable() -> None:
    queries = panel_queries()
    targets = sum(len(panel.get("targets") or []) for d in dashboards().values() for panel in _all_panels(d))
    variables = sum(
        1 for d in dashboards().values() for variable in d["templating"]["list"] if variable["type"] == "query"
    )
    assert len(queries) == targets + variables
    assert sum(1 for q in queries if q.kind == "variable") == variables
    assert {q.language for q in queries} == {"promql", "sql"}
    assert all(q.ref_id for q in queries if q.kind == "panel")
    assert variable_promql("label_values(agentwatch_runs_total, agent)") == "count by (agent) (agentwatch_runs_total)"
    broken = copy.deepcopy(dashboards()["tools.json"])
    broken["panels"][1]["targets"][0]["datasource"] = {"uid": "nobody", "type": "prometheus"}
    with pytest.raises(ValueError, match="unknown datasource"):
        queries_of(broken)


# --- SQL on a real ClickHouse --------------------------------------------------------------------------


@pytest.fixture
def store(clickhouse_store: ClickHouseStore) -> ClickHouseStore:
    fleet().load(clickhouse_store)
    return clickhouse_store


ALL_SELECTED: Final = {"tenant": "$__all", "agent": "$__all", "track": "$__all"}


def _sql_queries() -> list[PanelQuery]:
    return [query for query in panel_queries() if query.language == "sql"]


def _run_sql(
    store: ClickHouseStore, query: PanelQuery, variables: Mapping[str, str | Sequence[str]], *, hours_ago: float = 0.0
) -> list[dict[str, object]]:
    end = datetime.now(UTC) + timedelta(minutes=5) - timedelta(hours=hours_ago)
    sql = expand_sql(query.expr, start=end - timedelta(hours=1), end=end, variables=variables, interval_s=60)
    try:
        return store.query(sql)
    except Exception as exc:
        raise AssertionError(f"{query.dashboard_uid}/{query.panel_title} failed:\n{sql}\n{exc}") from exc


def _a_trace(data: Fleet) -> tuple[str, int]:
    run = data.run(tenant="acme", stop_reason="max_tool_calls")
    return run.trace_id, run.spans


def test_every_sql_query_returns_rows(store: ClickHouseStore) -> None:
    trace_id, spans = _a_trace(fleet())
    variables = {**ALL_SELECTED, runs.TRACE_VARIABLE: trace_id}
    queries = _sql_queries()
    assert len(queries) >= 20
    for query in queries:
        rows = _run_sql(store, query, variables)
        assert rows, f"{query.dashboard_uid}/{query.panel_title} returned no rows"
        if "$__timeInterval(" in query.expr:
            assert next(iter(rows[0])) == "time", "time series need the time column first"
        if query.panel_title == "Trace of the selected run":
            assert len(rows) == spans
            assert {row["traceID"] for row in rows} == {trace_id}
            assert sum(1 for row in rows if row["parentSpanID"] == "") == 1


def _query(title: str, dashboard_uid: str = runs.UID) -> PanelQuery:
    return next(q for q in _sql_queries() if (q.dashboard_uid, q.panel_title) == (dashboard_uid, title))


def test_sql_numbers_match_the_runs(store: ClickHouseStore) -> None:
    data = fleet()
    assert _run_sql(store, _query("Runs"), ALL_SELECTED) == [{"runs": len(data.runs)}]
    budget = sum(1 for run in data.runs if run.stop_reason in runs.BUDGET_STOP_REASONS)
    policy = sum(1 for run in data.runs if run.stop_reason in runs.POLICY_STOP_REASONS)
    assert budget
    assert policy
    assert _run_sql(store, _query("Stopped by a budget / by policy"), ALL_SELECTED) == [
        {"budget": budget, "policy": policy}
    ]
    stopped = _run_sql(store, _query("Runs ended by a budget or a denial"), ALL_SELECTED)
    assert len(stopped) == budget + policy
    denied = [row for row in stopped if row["stop_reason"] == semconv.StopReason.POLICY_DENIED.value]
    assert denied
    assert all(row["blocked_tool"] == "db.drop_table" and row["policy_rule"] for row in denied)


def test_sql_filters_narrow_to_the_selected_values(store: ClickHouseStore) -> None:
    data = fleet()
    recent = _query("Recent runs")
    acme = {"tenant": ["acme"], "agent": ["support"], "track": ["stable", "canary"]}
    rows = _run_sql(store, recent, acme)
    assert len(rows) == sum(1 for run in data.runs if run.tenant == "acme")
    assert {row["tenant"] for row in rows} == {"acme"}
    canary_only = _run_sql(store, recent, {**acme, "track": ["canary"]})
    assert {row["track"] for row in canary_only} == {"canary"}
    assert len(canary_only) == sum(1 for run in data.runs if (run.tenant, run.track) == ("acme", "canary"))
    assert _run_sql(store, recent, {**ALL_SELECTED, "agent": ["no-such-agent"]}) == []
    tenants = _run_sql(store, _query("$tenant"), ALL_SELECTED)
    assert sorted(str(row["TenantId"]) for row in tenants) == sorted({run.tenant for run in data.runs})


def test_sql_time_filter_excludes_runs_outside_the_range(store: ClickHouseStore) -> None:
    for title in ("Recent runs", "$tenant", "Runs by stop reason"):
        assert _run_sql(store, _query(title), ALL_SELECTED, hours_ago=30) == [], title
    latest_blocked = _query("Latest blocked calls", "agentwatch-tools")
    assert _run_sql(store, latest_blocked, ALL_SELECTED)
    assert _run_sql(store, latest_blocked, ALL_SELECTED, hours_ago=30) == []


def test_trace_panel_is_empty_until_a_run_is_picked(store: ClickHouseStore) -> None:
    trace_panel = _query("Trace of the selected run")
    assert _run_sql(store, trace_panel, {**ALL_SELECTED, runs.TRACE_VARIABLE: ""}) == []
    quote_in_the_box = {**ALL_SELECTED, runs.TRACE_VARIABLE: "x' OR 1=1 OR '"}
    assert _run_sql(store, trace_panel, quote_in_the_box) == [], "the trace ID is quoted, never spliced into SQL"


def _linked_span_rows(linked_to: Mapping[str, object]) -> tuple[str, list[dict[str, object]]]:
    """A trace of one span that links to ``linked_to`` (a fleet row), as ``otel_traces`` rows."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    target = SpanContext(int(str(linked_to["TraceId"]), 16), int(str(linked_to["SpanId"]), 16), is_remote=True)
    tracer = provider.get_tracer("agentwatch.tests")
    with tracer.start_as_current_span("retry", links=[Link(target, {"agentwatch.link.reason": "retry of"})]) as span:
        span.add_event(semconv.EVENT_APPROVAL_REQUESTED, {semconv.EVENT_ATTR_TOOL: "refund.issue"})
    provider.shutdown()
    spans = exporter.get_finished_spans()
    return f"{spans[0].context.trace_id:032x}", to_rows(spans)


def _trace_rows(store: ClickHouseStore, trace_id: str) -> list[dict[str, Any]]:
    """The trace panel's rows for ``trace_id`` (``logs`` and ``references`` are lists of JSON objects)."""
    rows: list[dict[str, Any]] = []
    for row in _run_sql(store, _query("Trace of the selected run"), {**ALL_SELECTED, runs.TRACE_VARIABLE: trace_id}):
        rows.append(dict(row))
    return rows


def test_trace_view_shows_span_events(store: ClickHouseStore) -> None:
    """Budget, policy and approval events come back as the trace view's ``logs`` of their spans."""
    data = fleet()
    expected = {
        ("acme", "max_tool_calls"): {semconv.EVENT_BUDGET_EXHAUSTED},
        ("globex", "policy_denied"): {semconv.EVENT_POLICY_DENIED},
        ("initech", "approval_rejected"): {semconv.EVENT_APPROVAL_REQUESTED, semconv.EVENT_APPROVAL_REJECTED},
    }
    for (tenant, stop_reason), names in expected.items():
        run = data.run(tenant=tenant, stop_reason=stop_reason)
        rows = _trace_rows(store, run.trace_id)
        assert len(rows) == run.spans
        logs = [log for row in rows for log in row["logs"]]
        assert names <= {log["name"] for log in logs}, logs
        stored: dict[tuple[str, str], Mapping[str, Any]] = {
            (str(row["TraceId"]), str(row["SpanId"])): row for row in data.rows if row["TraceId"] == run.trace_id
        }
        for row in rows:
            source = stored[(str(row["traceID"]), str(row["spanID"]))]
            assert [log["name"] for log in row["logs"]] == list(source["Events.Name"])
            assert row["references"] == []
        for log in logs:
            assert set(log) == {"name", "timestamp", "fields"}
            assert int(log["timestamp"]) > 0, "milliseconds since the epoch, as the plugin sends them"
            assert all(set(field) == {"key", "value"} for field in log["fields"])
    budget_run = data.run(tenant="acme", stop_reason="max_tool_calls")
    budget = next(
        log
        for row in _trace_rows(store, budget_run.trace_id)
        for log in row["logs"]
        if log["name"] == semconv.EVENT_BUDGET_EXHAUSTED
    )
    fields = {field["key"]: field["value"] for field in budget["fields"]}
    assert fields[semconv.EVENT_ATTR_BUDGET] == semconv.BudgetName.TOOL_CALLS.value
    assert {semconv.EVENT_ATTR_LIMIT, semconv.EVENT_ATTR_USED} <= set(fields)


def test_trace_view_shows_span_links(store: ClickHouseStore) -> None:
    """A span's links come back as the trace view's ``references`` (trace, span and link attributes)."""
    data = fleet()
    run = data.run(tenant="acme", stop_reason="completed")
    target = next(row for row in data.rows if row["TraceId"] == run.trace_id and row["ParentSpanId"] == "")
    trace_id, rows = _linked_span_rows(target)
    store.insert_json_rows(TRACES_TABLE, encode_rows(rows), dedup_token=new_token())
    [span] = _trace_rows(store, trace_id)
    [reference] = span["references"]
    assert (reference["traceID"], reference["spanID"]) == (target["TraceId"], target["SpanId"])
    assert reference["tags"] == [{"key": "agentwatch.link.reason", "value": "retry of"}]
    [log] = span["logs"]
    assert log["name"] == semconv.EVENT_APPROVAL_REQUESTED
    assert log["fields"] == [{"key": semconv.EVENT_ATTR_TOOL, "value": "refund.issue"}]


def test_explore_trace_link_runs(store: ClickHouseStore) -> None:
    trace_id, spans = _a_trace(fleet())
    link_sql = runs.trace_sql("'${__data.fields.TraceId}'").replace("${__data.fields.TraceId}", trace_id)
    now = datetime.now(UTC)
    expanded = expand_sql(link_sql, start=now - timedelta(hours=1), end=now, variables={"tenant": ["acme"]})
    rows = store.query(expanded)
    assert len(rows) == spans
    assert store.query(expand_sql(link_sql, start=now, end=now, variables={"tenant": ["globex"]})) == []


# --- PromQL on a real Prometheus scraping a real collector ----------------------------------------------

FLEET_RUNS_PER_RELEASE: Final = 25


def _kill_switch_run(provider: TracerProvider) -> None:
    """A run whose kill switch is engaged mid-run: one tool call allowed, the next one killed."""
    switch = MemoryKillSwitch()
    gateway = ToolGateway(
        policy=Policy(allow=["kb.search"]), tools={"kb.search": lambda query: [query]}, kill_switch=switch
    )
    with (
        agent_run(
            "support", tenant_id="acme", version="v1", track="stable", gateway=gateway, tracer_provider=provider
        ) as run,
        run.step(),
    ):
        run.call_tool("kb.search", {"query": "refund policy"})
        switch.engage("agent:support")
        run.call_tool("kb.search", {"query": "refund policy again"})
    assert run.stop_reason is semconv.StopReason.KILL_SWITCH


def _send_demo_traffic(traces_url: str, *, seed: int) -> int:
    """Demo-like traffic (the example fleet on three tracks, the example's five tickets, a kill switch)."""
    fleet_example = load_example("fleet")
    custom_agent = load_example("custom_agent")
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(RunAttributesSpanProcessor())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url)))
    sent = 0
    try:
        baseline = replace(fleet_example.STABLE, track=semconv.Track.BASELINE.value)
        for release in (fleet_example.STABLE, baseline, fleet_example.CANARY):
            outcomes = fleet_example.simulate(FLEET_RUNS_PER_RELEASE, release, tracer_provider=provider, seed=seed)
            sent += sum(outcomes.values())
        for track in ("stable", "canary"):
            sent += len(custom_agent.run_scenarios(tracer_provider=provider, track=track))
        _kill_switch_run(provider)
        sent += 1
    finally:
        provider.shutdown()  # flushes every batch to the collector
    # a span with an all-zero trace id: refused as invalid (a partial success), feeding the rejection metric
    invalid = json_span(trace_id="0" * 32, span_id=random_span_id(), start_ns=time.time_ns(), end_ns=time.time_ns())
    reply = http_request(traces_url, json_request([invalid]), {"Content-Type": "application/json"})
    assert reply.status == 200, reply
    assert reply.json()["partialSuccess"]["rejectedSpans"] in (1, "1")
    return sent


def _wait_for_runs(prometheus: Prometheus, runs_sent: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    seen = 0.0
    while time.monotonic() < deadline:
        result = prometheus.query(f"sum({metric_names.RUNS_TOTAL})")["result"]
        seen = float(result[0]["value"][1]) if result else 0.0
        if seen >= runs_sent:
            return
        time.sleep(0.25)
    raise TimeoutError(f"Prometheus saw {seen} runs of {runs_sent} within {timeout_s}s:\n{prometheus.log_tail()}")


def _wait_for_series(prometheus: Prometheus, name: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if prometheus.query(name)["result"]:
            return
        time.sleep(0.25)
    raise TimeoutError(f"Prometheus saw no {name} within {timeout_s}s:\n{prometheus.log_tail()}")


@pytest.fixture(scope="module")
def prometheus_with_traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, str]]:
    """A collector fed with two waves of demo traffic, scraped every second by Prometheus."""
    workdir = tmp_path_factory.mktemp("promstack")
    # the drift analyzer re-evaluates every second, so the canary gauges exist once the traffic is in
    collector = CollectorProcess(workdir / "collector", extra_args=["--drift-interval-seconds", "1"]).start()
    try:
        instance = f"127.0.0.1:{collector.metrics_port}"
        with Prometheus(workdir / "prometheus", scrape_targets=[instance]) as prometheus:
            prometheus.wait_scraped(60)
            # two waves, each after Prometheus has seen the previous one, so counters have a rate
            sent = _send_demo_traffic(collector.traces_url, seed=1)
            _wait_for_runs(prometheus, sent)
            sent += _send_demo_traffic(collector.traces_url, seed=2)
            _wait_for_runs(prometheus, sent)
            _wait_for_series(prometheus, metric_names.CANARY_VERDICT)
            time.sleep(2)  # a few more scrapes after the last change
            yield prometheus, instance
    finally:
        collector.stop()


def _promql_queries() -> list[PanelQuery]:
    return [query for query in panel_queries() if query.language == "promql"]


def test_expected_empty_promql_panels_exist() -> None:
    titles = {(query.dashboard_uid, query.panel_title) for query in _promql_queries()}
    assert set(PROMQL_EXPECTED_EMPTY) <= titles, set(PROMQL_EXPECTED_EMPTY) - titles


@pytest.mark.slow
@pytest.mark.parametrize("selection", ["all", "one agent, two tracks"])
def test_every_promql_query_returns_series(prometheus_with_traffic: tuple[Prometheus, str], selection: str) -> None:
    prometheus, instance = prometheus_with_traffic
    if selection == "all":
        variables: dict[str, str | list[str]] = {"agent": "$__all", "track": "$__all", "instance": "$__all"}
    else:
        variables = {"agent": ["support"], "track": ["stable", "canary"], "instance": [instance]}
    empty: list[str] = []
    evaluated = 0
    for query in _promql_queries():
        expr = variable_promql(query.expr) if query.kind == "variable" else query.expr
        expanded = expand_promql(expr, variables=variables, interval_s=15, range_s=900, scrape_interval_s=1)
        result = prometheus.query(expanded)["result"]  # raises unless Prometheus accepted and evaluated it
        evaluated += 1
        if not result and (query.dashboard_uid, query.panel_title) not in PROMQL_EXPECTED_EMPTY:
            empty.append(f"{query.dashboard_uid}/{query.panel_title} [{query.ref_id}]: {expanded}")
    assert evaluated == len(_promql_queries()) > 40
    assert empty == [], "queries without series:\n" + "\n".join(empty)


@pytest.mark.slow
def test_promql_numbers_reflect_the_traffic(prometheus_with_traffic: tuple[Prometheus, str]) -> None:
    prometheus, _ = prometheus_with_traffic
    variables = {"agent": "$__all", "track": "$__all", "instance": "$__all"}

    def value(dashboard_uid: str, title: str) -> float:
        query = next(q for q in _promql_queries() if (q.dashboard_uid, q.panel_title) == (dashboard_uid, title))
        expanded = expand_promql(query.expr, variables=variables, interval_s=15, range_s=900, scrape_interval_s=1)
        result = prometheus.query(expanded)["result"]
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    assert value("agentwatch-overview", "Kill-switch stops") >= 1
    assert 0 < value("agentwatch-overview", "Completed") < 1
    assert value("agentwatch-collector", "Collectors up") == 1
    assert value("agentwatch-collector", "Store up") == 1
    # the drift analyzer's answer for the canary of "support": a verdict code, and an e-value
    assert value("agentwatch-canary", "Canary verdict") in (0, 1, 2)
    tracks = prometheus.query(f"count by (track) ({metric_names.RUNS_TOTAL})")["result"]
    assert {series["metric"]["track"] for series in tracks} == {"stable", "baseline", "canary"}
    assert COLLECTOR_JOB in {series["metric"]["job"] for series in prometheus.query("up")["result"]}
