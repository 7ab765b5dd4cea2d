"""Collector health: is telemetry getting in, getting stored, and being scraped (Prometheus).

Scrape health of the ``agentwatch-collector`` job, ingest and write rates, spans refused to senders
and spans lost after acceptance (which should stay at zero), the in-memory queue and the durable
spool, and ClickHouse insert latency and failures.
"""

from __future__ import annotations

from typing import Final

from grafana_foundation_sdk.models.dashboard import Dashboard

from agentwatch.collectors import metric_names as names
from agentwatch.dashboards.common import (
    COLLECTOR_JOB,
    graph,
    new_dashboard,
    prometheus_variable,
    promql,
    row,
    stat,
    value_mappings,
)

UID: Final = "agentwatch-collector"
SLUG: Final = "collector"
TITLE: Final = "agentwatch / Collector health"

_SEL: Final = f'job="{COLLECTOR_JOB}", instance=~"$instance"'
_RATE: Final = "$__rate_interval"


def build() -> Dashboard:
    """The dashboard model."""
    dashboard = new_dashboard(
        UID,
        TITLE,
        "Ingest, storage and scrape health of the agentwatch collectors.",
        time_from="now-3h",
    ).with_variable(
        prometheus_variable("instance", "Collector", f'label_values(up{{job="{COLLECTOR_JOB}"}}, instance)')
    )
    return (
        dashboard.with_row(row("Health"))
        .with_panel(
            stat(
                "Collectors up",
                "Collector instances Prometheus scraped successfully.",
                promql(f"sum(up{{{_SEL}}})", instant=True),
            )
        )
        .with_panel(
            stat(
                "Store up",
                "Whether every collector's last ClickHouse operation succeeded.",
                promql(f"min({names.COLLECTOR_STORE_UP}{{{_SEL}}})", instant=True),
            ).mappings(value_mappings({0: ("down", "red"), 1: ("up", "green")}))
        )
        .with_panel(
            stat(
                "Spool used",
                "Fullest spool relative to its capacity; at 100% the collector answers 503.",
                promql(
                    f"max({names.COLLECTOR_SPOOL_BYTES}{{{_SEL}}} / {names.COLLECTOR_SPOOL_CAPACITY_BYTES}{{{_SEL}}})",
                    instant=True,
                ),
                unit="percentunit",
            )
        )
        .with_panel(
            stat(
                "Spans lost",
                "Accepted spans that will never be stored (dead-lettered) in the time range. Should be 0.",
                promql(f"sum(increase({names.COLLECTOR_SPANS_DROPPED_TOTAL}{{{_SEL}}}[$__range]))", instant=True),
            )
        )
        .with_panel(
            graph(
                "Scrape health",
                "Scrape success (up) and scrape duration per collector.",
                promql(f"up{{{_SEL}}}", legend="{{instance}} up"),
                promql(f"scrape_duration_seconds{{{_SEL}}}", legend="{{instance}} scrape seconds", ref_id="B"),
                width=24,
                height=6,
            )
        )
        .with_row(row("Ingest"))
        .with_panel(
            graph(
                "Spans received and written/s",
                "Spans decoded from requests, per transport, and spans written to ClickHouse.",
                promql(
                    f"sum by ({names.LABEL_TRANSPORT}) "
                    f"(rate({names.COLLECTOR_SPANS_RECEIVED_TOTAL}{{{_SEL}}}[{_RATE}]))",
                    legend="received {{transport}}",
                ),
                promql(
                    f"sum(rate({names.COLLECTOR_SPANS_WRITTEN_TOTAL}{{{_SEL}}}[{_RATE}]))",
                    legend="written",
                    ref_id="B",
                ),
            )
        )
        .with_panel(
            graph(
                "Requests/s by answer",
                "Export requests per transport and status (HTTP code or gRPC status).",
                promql(
                    f"sum by ({names.LABEL_TRANSPORT}, {names.LABEL_CODE}) "
                    f"(rate({names.COLLECTOR_REQUESTS_TOTAL}{{{_SEL}}}[{_RATE}]))",
                    legend="{{transport}} {{code}}",
                ),
                unit="reqps",
            )
        )
        .with_panel(
            graph(
                "Rejected spans/s",
                "Spans refused to the sender, by reason (invalid, limit, auth, spool_full, ...).",
                promql(
                    f"sum by ({names.LABEL_REASON}) (rate({names.COLLECTOR_SPANS_REJECTED_TOTAL}{{{_SEL}}}[{_RATE}]))",
                    legend="{{reason}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Dropped spans/s",
                "Accepted spans lost before storage (ClickHouse refused the batch as bad data), by reason.",
                promql(
                    f"sum by ({names.LABEL_REASON}) (rate({names.COLLECTOR_SPANS_DROPPED_TOTAL}{{{_SEL}}}[{_RATE}]))",
                    legend="{{reason}}",
                ),
            )
        )
        .with_row(row("Backpressure and storage"))
        .with_panel(
            graph(
                "Queue and spool (spans)",
                "Spans waiting in memory for a write, and spans held in the durable spool.",
                promql(f"sum by (instance) ({names.COLLECTOR_QUEUE_SPANS}{{{_SEL}}})", legend="{{instance}} queue"),
                promql(
                    f"sum by (instance) ({names.COLLECTOR_SPOOL_SPANS}{{{_SEL}}})",
                    legend="{{instance}} spool",
                    ref_id="B",
                ),
            )
        )
        .with_panel(
            graph(
                "Spool size",
                "Bytes in the spool and its capacity.",
                promql(f"sum by (instance) ({names.COLLECTOR_SPOOL_BYTES}{{{_SEL}}})", legend="{{instance}} used"),
                promql(
                    f"sum by (instance) ({names.COLLECTOR_SPOOL_CAPACITY_BYTES}{{{_SEL}}})",
                    legend="{{instance}} capacity",
                    ref_id="B",
                ),
                unit="bytes",
            )
        )
        .with_panel(
            graph(
                "ClickHouse insert latency",
                "Duration of successful inserts (p50, p95, p99).",
                *[
                    promql(
                        f"histogram_quantile({quantile}, sum by (le) "
                        f"(rate({names.COLLECTOR_INSERT_DURATION_SECONDS}_bucket{{{_SEL}}}[{_RATE}])))",
                        legend=f"p{round(quantile * 100)}",
                        ref_id=ref_id,
                    )
                    for quantile, ref_id in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
                ],
                unit="s",
            )
        )
        .with_panel(
            graph(
                "ClickHouse insert failures/s",
                "Failed inserts (retried from the spool; nothing is lost while the spool has room).",
                promql(
                    f"sum by (instance) (rate({names.COLLECTOR_INSERT_FAILURES_TOTAL}{{{_SEL}}}[{_RATE}]))",
                    legend="{{instance}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Drift analyzer rounds/min",
                "Canary drift evaluations by result; failed rounds leave the canary gauges stale.",
                promql(
                    f"sum by (instance, {names.LABEL_RESULT}) "
                    f"(rate({names.COLLECTOR_DRIFT_EVALUATIONS_TOTAL}{{{_SEL}}}[{_RATE}])) * 60",
                    legend=f"{{{{instance}}}} {{{{{names.LABEL_RESULT}}}}}",
                ),
            )
        )
        .build()
    )


__all__ = ["SLUG", "TITLE", "UID", "build"]
