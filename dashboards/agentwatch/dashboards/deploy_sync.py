"""Keep the Kubernetes manifests in step with the files they embed, and say which ones drifted.

Kustomize refuses files outside ``deploy/kubernetes/``, so the manifests carry copies: the collector's
settings file (``deploy/collector/agentwatch.yaml``) in a ConfigMap, the ClickHouse server settings
(``deploy/clickhouse/``) in the ClickHouseInstallation, the rule groups of ``alerts/*.yaml`` in a
PrometheusRule, and Grafana's provisioning and dashboards (``deploy/grafana/``) in ConfigMaps. This
module rewrites those copies from their sources: it is the last step of ``agentwatch generate``,
after the dashboards and the rules it embeds.

Everything works on one checkout, named by a ``DeployLayout(root)``: the command runs from a
source checkout, never from an installed package. Embedded files are YAML literal blocks
(``key: |``) replaced in place, so the hand-written rest of a manifest, comments included, is left
alone. The PrometheusRule and the Grafana ConfigMaps (``deploy/kubernetes/grafana.yaml``) are
generated whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

# Where Grafana reaches the two datasources inside a cluster: the Service the Prometheus Operator
# creates for every Prometheus (kube-prometheus-stack installs into "monitoring"), and the
# ClickHouseInstallation's Service (clickhouse-installation.yaml).
K8S_PROMETHEUS_URL: Final = "http://prometheus-operated.monitoring.svc:9090"
K8S_CLICKHOUSE_HOST: Final = "clickhouse-agentwatch.agentwatch.svc"


@dataclass(frozen=True)
class DeployLayout:
    """The files the sync reads and writes, under the root of one checkout."""

    root: Path

    @property
    def deploy(self) -> Path:
        return self.root / "deploy"

    @property
    def kubernetes(self) -> Path:
        return self.deploy / "kubernetes"

    @property
    def alerts(self) -> Path:
        return self.root / "alerts"

    @property
    def collector_config(self) -> Path:
        return self.deploy / "collector" / "agentwatch.yaml"

    @property
    def clickhouse_files(self) -> dict[str, Path]:
        """Key in the ClickHouseInstallation's ``files`` -> the file it copies."""
        clickhouse = self.deploy / "clickhouse"
        return {
            "config.d/agentwatch-small-host.xml": clickhouse / "config.d" / "agentwatch-small-host.xml",
            "users.d/agentwatch-limits.xml": clickhouse / "users.d" / "agentwatch-limits.xml",
        }

    @property
    def prometheus_rule(self) -> Path:
        return self.kubernetes / "prometheus-rule.yaml"

    @property
    def grafana_manifest(self) -> Path:
        return self.kubernetes / "grafana.yaml"

    @property
    def grafana_datasources(self) -> Path:
        return self.deploy / "grafana" / "provisioning" / "datasources" / "agentwatch.yaml"

    @property
    def grafana_provider(self) -> Path:
        return self.deploy / "grafana" / "provisioning" / "dashboards" / "agentwatch.yaml"

    @property
    def grafana_dashboards(self) -> Path:
        return self.deploy / "grafana" / "dashboards"

    def relative(self, path: Path) -> str:
        """``path`` as the repository names it (``deploy/kubernetes/grafana.yaml``)."""
        return path.relative_to(self.root).as_posix()


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


def alert_rule_files(layout: DeployLayout) -> list[Path]:
    """The rule files Prometheus loads (top-level ``alerts/*.yaml``; ``alerts/tests/`` holds unit tests)."""
    return sorted(layout.alerts.glob("*.yaml"))


def alert_groups(layout: DeployLayout) -> list[Any]:
    """Every rule group of ``alerts/*.yaml``, in file order."""
    groups: list[Any] = []
    for path in alert_rule_files(layout):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        groups.extend(data.get("groups") or [])
    return groups


def render_prometheus_rule(layout: DeployLayout) -> str:
    sources = ", ".join(layout.relative(path) for path in alert_rule_files(layout)) or "alerts/*.yaml"
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
        "spec": {"groups": alert_groups(layout)},
    }
    header = (
        f"# Generated from {sources} by `agentwatch generate`: edit the rules' generator\n"
        "# (alerts/agentwatch/alerts/), then run `agentwatch generate`. tests/test_deploy.py checks the groups match.\n"
        "# `release: kube-prometheus-stack` matches that chart's default ruleSelector; change it to what\n"
        "# your Prometheus resource selects.\n"
    )
    return header + dump_yaml(manifest)


def kubernetes_datasources(layout: DeployLayout) -> dict[str, Any]:
    """The compose stack's datasource provisioning with in-cluster addresses (same uids, same users)."""
    provisioning = yaml.safe_load(layout.grafana_datasources.read_text(encoding="utf-8"))
    for datasource in provisioning["datasources"]:
        # a cluster's Grafana has its own default datasource already, and refuses two
        datasource["isDefault"] = False
        if datasource["type"] == "prometheus":
            datasource["url"] = K8S_PROMETHEUS_URL
        elif datasource["type"] == "grafana-clickhouse-datasource":
            datasource["jsonData"]["host"] = K8S_CLICKHOUSE_HOST
        else:
            raise SyncError(
                f"{layout.relative(layout.grafana_datasources)}: no in-cluster address known for a "
                f"{datasource['type']} datasource"
            )
    return dict(provisioning)


def _config_map(
    name: str, data: dict[str, str], *, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> Any:
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": "agentwatch", **labels}}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def render_grafana(layout: DeployLayout) -> str:
    sources = "deploy/grafana/provisioning and deploy/grafana/dashboards"
    header = (
        f"# Generated from {sources} by `agentwatch generate` (run it after changing them).\n"
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
            {"agentwatch.yaml": dump_yaml(kubernetes_datasources(layout))},
            labels={"app.kubernetes.io/component": "grafana", "grafana_datasource": "1"},
        ),
        _config_map(
            "agentwatch-grafana-dashboard-provider",
            {"agentwatch.yaml": layout.grafana_provider.read_text(encoding="utf-8")},
            labels={"app.kubernetes.io/component": "grafana"},
        ),
    ]
    # one ConfigMap per dashboard: each stays far below the 256 KiB a client-side apply can annotate
    for path in sorted(layout.grafana_dashboards.glob("*.json")):
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


def _embed(layout: DeployLayout, path: Path, blocks: Mapping[str, Path]) -> Derived:
    def render(current: str) -> str:
        text = current
        for key, source in blocks.items():
            text = replace_block(text, key, source.read_text(encoding="utf-8"), where=layout.relative(path))
        return text

    return Derived(path, render)


def derived_manifests(layout: DeployLayout) -> list[Derived]:
    """Every manifest that embeds other files of the checkout."""
    return [
        _embed(layout, layout.kubernetes / "collector-config.yaml", {"agentwatch.yaml": layout.collector_config}),
        _embed(layout, layout.kubernetes / "clickhouse-installation.yaml", layout.clickhouse_files),
        Derived(layout.prometheus_rule, lambda _current: render_prometheus_rule(layout)),
        Derived(layout.grafana_manifest, lambda _current: render_grafana(layout)),
    ]


def sync(layout: DeployLayout) -> list[Path]:
    """Rewrite the stale manifests of the checkout; returns the paths rewritten."""
    written = []
    for manifest in derived_manifests(layout):
        if manifest.stale():
            manifest.path.write_text(manifest.expected(), encoding="utf-8")
            written.append(manifest.path)
    return written


__all__ = [
    "K8S_CLICKHOUSE_HOST",
    "K8S_PROMETHEUS_URL",
    "DeployLayout",
    "Derived",
    "SyncError",
    "alert_groups",
    "alert_rule_files",
    "derived_manifests",
    "dump_yaml",
    "kubernetes_datasources",
    "render_grafana",
    "render_prometheus_rule",
    "replace_block",
    "sync",
]
