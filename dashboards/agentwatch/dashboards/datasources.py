"""The two Grafana datasources every agentwatch dashboard queries, by stable uid.

Dashboards reference datasources by uid, and Grafana's provisioning file
(``deploy/grafana/provisioning/datasources/agentwatch.yaml``) creates them with the same uids, so a
provisioned Grafana shows working panels without anyone picking a datasource by hand. A test keeps
both sides in agreement. Plain constants only (no Grafana SDK import), so any module can use them.
"""

from __future__ import annotations

from typing import Final

PROMETHEUS_DATASOURCE_UID: Final = "agentwatch-prometheus"
PROMETHEUS_DATASOURCE_TYPE: Final = "prometheus"
CLICKHOUSE_DATASOURCE_UID: Final = "agentwatch-clickhouse"
CLICKHOUSE_DATASOURCE_TYPE: Final = "grafana-clickhouse-datasource"

DATASOURCE_TYPES: Final = {
    PROMETHEUS_DATASOURCE_UID: PROMETHEUS_DATASOURCE_TYPE,
    CLICKHOUSE_DATASOURCE_UID: CLICKHOUSE_DATASOURCE_TYPE,
}
"""uid -> plugin type of every datasource a dashboard may reference."""

DASHBOARDS_MOUNT_PATH: Final = "/var/lib/grafana/dashboards/agentwatch"
"""Where Grafana finds ``deploy/grafana/dashboards`` (the dashboard provider's ``options.path``)."""


__all__ = [
    "CLICKHOUSE_DATASOURCE_TYPE",
    "CLICKHOUSE_DATASOURCE_UID",
    "DASHBOARDS_MOUNT_PATH",
    "DATASOURCE_TYPES",
    "PROMETHEUS_DATASOURCE_TYPE",
    "PROMETHEUS_DATASOURCE_UID",
]
