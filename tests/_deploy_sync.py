"""Keep the Kubernetes manifests in step with the files they embed, and say which ones drifted.

Kustomize refuses files outside ``deploy/kubernetes/``, so the manifests carry copies: the collector's
settings file (``deploy/collector/agentwatch.yaml``) in a ConfigMap, the ClickHouse server settings
(``deploy/clickhouse/``) in the ClickHouseInstallation, the rule groups of ``alerts/*.yaml`` in a
PrometheusRule, and Grafana's provisioning and dashboards (``deploy/grafana/``) in ConfigMaps. This
module rewrites those copies from their sources; ``tests/test_deploy.py`` fails while any is stale.

    .venv/bin/python tests/_deploy_sync.py           # rewrite the stale manifests
    .venv/bin/python tests/_deploy_sync.py --check   # list them, exit 1 if any

Embedded files are YAML literal blocks (``key: |``) replaced in place, so the hand-written rest of a
manifest, comments included, is left alone. The PrometheusRule and the Grafana ConfigMaps
(``deploy/kubernetes/grafana.yaml``) are generated whole.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
ALERTS = ROOT / "alerts"
GRAFANA = DEPLOY / "grafana"

COLLECTOR_CONFIG = DEPLOY / "collector" / "agentwatch.yaml"
CLICKHOUSE_FILES = {
    "config.d/agentwatch-small-host.xml": DEPLOY / "clickhouse" / "config.d" / "agentwatch-small-host.xml",
    "users.d/agentwatch-limits.xml": DEPLOY / "clickhouse" / "users.d" / "agentwatch-limits.xml",
}
PROMETHEUS_RULE = K8S / "prometheus-rule.yaml"
GRAFANA_MANIFEST = K8S / "grafana.yaml"
GRAFANA_DATASOURCES = GRAFANA / "provisioning" / "datasources" / "agentwatch.yaml"
GRAFANA_PROVIDER = GRAFANA / "provisioning" / "dashboards" / "agentwatch.yaml"
GRAFANA_DASHBOARDS = GRAFANA / "dashboards"

# Where Grafana reaches the two datasources inside a cluster: the Service the Prometheus Operator
# creates for every Prometheus (kube-prometheus-stack installs into "monitoring"), and the
# ClickHouseInstallation's Service (clickhouse-installation.yaml).
K8S_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
K8S_CLICKHOUSE_HOST = "clickhouse-agentwatch.agentwatch.svc"


class SyncError(ValueError):
    """A manifest cannot be brought in step (its anchor line is missing or ambiguous)."""


def replace_block(text: str, key: str, content: str, *, where: str) -> str:
    """Replace the literal block under ``key: |`` (exactly one such line) with ``content``."""
    pattern = re.compile(rf"^(?P<indent> *)(?:{re.escape(key)}|\"{re.escape(key)}\"): \|[ \t]*$", re.MULTILINE)
    matches = list(pattern.finditer(text))
    if len(matches) != 1:
        raise SyncError(f"{where}: expected one '{key}: |' line, found {len(matches)}")
    match = matches[0]
    indent = len(match.group("indent"))
    if content.startswith((" ", "\t")) or not content.endswith("\n") or content.endswith("\n\n"):
        # a leading space would need an indentation indicator, and `|` keeps exactly one final newline
        raise SyncError(f"{where}: {key}: content must not start with a space and must end with one newline")
    lines = text[match.end() + 1 :].split("\n") if match.end() < len(text) else []
    consumed = 0
    for line in lines:
        if line.strip() and len(line) - len(line.lstrip(" ")) <= indent:
            break
        consumed += 1
    # blank lines right before the next key belong to the layout, not to the block
    while consumed and not lines[consumed - 1].strip():
        consumed -= 1
    body_indent = " " * (indent + 2)
    body = [body_indent + line if line else "" for line in content[:-1].split("\n")]
    rest = lines[consumed:]
    return text[: match.end() + 1] + "\n".join([*body, *rest])


def _literal_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


class _BlockDumper(yaml.SafeDumper):
    """Dumps multi-line strings (PromQL, descriptions) as literal blocks, as people write them."""


_BlockDumper.add_representer(str, _literal_str)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=1000)


def alert_rule_files() -> list[Path]:
    """The rule files Prometheus loads (top-level ``alerts/*.yaml``; ``alerts/tests/`` holds unit tests)."""
    return sorted(ALERTS.glob("*.yaml"))


def alert_groups() -> list[Any]:
    groups: list[Any] = []
    for path in alert_rule_files():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        groups.extend(data.get("groups") or [])
    return groups


def render_prometheus_rule() -> str:
    sources = ", ".join(str(path.relative_to(ROOT)) for path in alert_rule_files()) or "alerts/*.yaml"
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "agentwatch",
            "labels": {
                "app.kubernetes.io/name": "agentwatch",
                "app.kubernetes.io/component": "alerts",
                "release": "kube-prometheus-stack",
            },
        },
        "spec": {"groups": alert_groups()},
    }
    header = (
        f"# Generated from {sources} by tests/_deploy_sync.py: edit the rules there (or their generator),\n"
        "# then run `.venv/bin/python tests/_deploy_sync.py`. tests/test_deploy.py checks the groups match.\n"
        "# `release: kube-prometheus-stack` matches that chart's default ruleSelector; change it to what\n"
        "# your Prometheus resource selects.\n"
    )
    return header + dump_yaml(manifest)


def kubernetes_datasources() -> dict[str, Any]:
    """The compose stack's datasource provisioning with in-cluster addresses (same uids, same users)."""
    provisioning = yaml.safe_load(GRAFANA_DATASOURCES.read_text(encoding="utf-8"))
    for datasource in provisioning["datasources"]:
        # a cluster's Grafana has its own default datasource already, and refuses two
        datasource["isDefault"] = False
        if datasource["type"] == "prometheus":
            datasource["url"] = K8S_PROMETHEUS_URL
        elif datasource["type"] == "grafana-clickhouse-datasource":
            datasource["jsonData"]["host"] = K8S_CLICKHOUSE_HOST
        else:
            raise SyncError(f"{GRAFANA_DATASOURCES}: no in-cluster address known for a {datasource['type']} datasource")
    return dict(provisioning)


def _config_map(
    name: str, data: dict[str, str], *, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> Any:
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": "agentwatch", **labels}}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def render_grafana() -> str:
    sources = "deploy/grafana/provisioning and deploy/grafana/dashboards"
    header = (
        f"# Generated from {sources} by tests/_deploy_sync.py (run it after changing them).\n"
        "# Grafana's provisioning for an in-cluster Grafana. With kube-prometheus-stack's Grafana, the\n"
        "# sidecars pick up the datasources (label grafana_datasource) and the dashboards (label\n"
        "# grafana_dashboard) once they search every namespace; Grafana needs CLICKHOUSE_GRAFANA_PASSWORD\n"
        "# in its environment (the grafana_password of the agentwatch-clickhouse Secret). A Grafana of your\n"
        "# own mounts agentwatch-grafana-datasources and agentwatch-grafana-dashboard-provider under\n"
        "# /etc/grafana/provisioning/ and the dashboard ConfigMaps at the provider's path.\n"
    )
    documents = [
        _config_map(
            "agentwatch-grafana-datasources",
            {"agentwatch.yaml": dump_yaml(kubernetes_datasources())},
            labels={"app.kubernetes.io/component": "grafana", "grafana_datasource": "1"},
        ),
        _config_map(
            "agentwatch-grafana-dashboard-provider",
            {"agentwatch.yaml": GRAFANA_PROVIDER.read_text(encoding="utf-8")},
            labels={"app.kubernetes.io/component": "grafana"},
        ),
    ]
    # one ConfigMap per dashboard: each stays far below the 256 KiB a client-side apply can annotate
    for path in sorted(GRAFANA_DASHBOARDS.glob("*.json")):
        documents.append(
            _config_map(
                f"agentwatch-dashboard-{path.stem}",
                {path.name: path.read_text(encoding="utf-8")},
                labels={"app.kubernetes.io/component": "grafana", "grafana_dashboard": "1"},
                annotations={"grafana_folder": "agentwatch"},
            )
        )
    return header + "---\n".join(dump_yaml(document) for document in documents)


@dataclass(frozen=True)
class Derived:
    """One manifest and how to compute its up-to-date text from the current one."""

    path: Path
    render: Callable[[str], str]

    def expected(self) -> str:
        current = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        return self.render(current)

    def stale(self) -> bool:
        return not self.path.exists() or self.path.read_text(encoding="utf-8") != self.expected()


def _embed(path: Path, blocks: dict[str, Path]) -> Derived:
    def render(current: str) -> str:
        text = current
        for key, source in blocks.items():
            text = replace_block(text, key, source.read_text(encoding="utf-8"), where=str(path.relative_to(ROOT)))
        return text

    return Derived(path, render)


def derived_manifests() -> list[Derived]:
    return [
        _embed(K8S / "collector-config.yaml", {"agentwatch.yaml": COLLECTOR_CONFIG}),
        _embed(K8S / "clickhouse-installation.yaml", CLICKHOUSE_FILES),
        Derived(PROMETHEUS_RULE, lambda _current: render_prometheus_rule()),
        Derived(GRAFANA_MANIFEST, lambda _current: render_grafana()),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Refresh the files the Kubernetes manifests embed.")
    parser.add_argument("--check", action="store_true", help="only list stale manifests; exit 1 if any")
    args = parser.parse_args(argv)
    stale = [manifest for manifest in derived_manifests() if manifest.stale()]
    for manifest in stale:
        name = manifest.path.relative_to(ROOT)
        if args.check:
            print(f"stale: {name}")
        else:
            manifest.path.write_text(manifest.expected(), encoding="utf-8")
            print(f"updated: {name}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
