"""deploy/compose/grafana-local.yaml: Grafana alone, reading a collector's SQL endpoint on this machine.

No Docker here, so the file is checked for what would make it fail or lie: the same Grafana image
and plugin as the full stack, only loopback, mounts that exist, provisioning that gives every
dashboard its datasources (same uids, the ClickHouse one pointed at the demo's SQL port with the
full stack's trace settings), and the command ``agentwatch demo --serve`` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from _deploy_model import COMPOSE_FILE, DEPLOY, interpolate, load_compose

from agentwatch.collectors.demo.run import GRAFANA_LOCAL_COMPOSE, SERVE_ADDRESSES
from agentwatch.dashboards.datasources import DASHBOARDS_MOUNT_PATH

GRAFANA_LOCAL = DEPLOY / "compose" / "grafana-local.yaml"
DATASOURCES = DEPLOY / "compose" / "grafana-local-datasources.yaml"
FULL_DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "agentwatch.yaml"


def _service() -> dict[str, Any]:
    compose = load_compose(GRAFANA_LOCAL)
    assert set(compose["services"]) == {"grafana-local"}
    service: dict[str, Any] = compose["services"]["grafana-local"]
    return service


def test_same_grafana_and_plugin_as_the_full_stack_on_loopback_only() -> None:
    service = _service()
    full = load_compose(COMPOSE_FILE)["services"]["grafana"]
    assert service["image"] == full["image"]
    assert service["environment"]["GF_INSTALL_PLUGINS"] == full["environment"]["GF_INSTALL_PLUGINS"]
    # the host's network: the collector's loopback-only SQL port is reachable, Grafana binds loopback
    assert service["network_mode"] == "host"
    assert "ports" not in service
    assert service["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert service["healthcheck"]["test"][-1] == "http://127.0.0.1:3000/api/health"


def test_mounts_exist_and_provision_the_dashboards() -> None:
    service = _service()
    targets = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        targets[target] = source
        if source.startswith("."):
            assert (GRAFANA_LOCAL.parent / source).resolve().exists(), volume
    assert targets[DASHBOARDS_MOUNT_PATH] == "../grafana/dashboards"
    assert targets["/etc/grafana/provisioning/datasources/agentwatch.yaml"] == "./grafana-local-datasources.yaml"
    assert (GRAFANA_LOCAL.parent / targets["/etc/grafana/provisioning/dashboards"] / "agentwatch.yaml").exists()


def _datasources(path: Path, environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(interpolate(path.read_text(encoding="utf-8"), environ))
    return {source["uid"]: source for source in data["datasources"]}


def test_clickhouse_datasource_points_at_the_sql_endpoint_with_the_full_stacks_trace_settings() -> None:
    service = _service()
    environ = {name: interpolate(str(value), {}) for name, value in service["environment"].items()}
    local = _datasources(DATASOURCES, environ)
    full = _datasources(FULL_DATASOURCES, {"CLICKHOUSE_GRAFANA_PASSWORD": "x"})
    assert set(local) == set(full)
    for uid, source in local.items():
        assert source["type"] == full[uid]["type"]
    clickhouse = local["agentwatch-clickhouse"]["jsonData"]
    sql_default = {setting: address for setting, address, _ in SERVE_ADDRESSES}["sql"]
    assert f"{clickhouse['host']}:{clickhouse['port']}" == sql_default  # what `demo --serve` listens on
    assert clickhouse["protocol"] == "http"
    assert clickhouse["defaultDatabase"] == "default"  # the embedded store's database
    expected_traces = {**full["agentwatch-clickhouse"]["jsonData"]["traces"], "defaultDatabase": "default"}
    assert clickhouse["traces"] == expected_traces


def test_demo_prints_this_file() -> None:
    assert GRAFANA_LOCAL_COMPOSE == "deploy/compose/grafana-local.yaml"
    assert (DEPLOY.parent / GRAFANA_LOCAL_COMPOSE).exists()
