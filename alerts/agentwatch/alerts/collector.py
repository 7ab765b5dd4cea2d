"""Alerts on the collector itself: down, dropping or rejecting spans, spool filling, ClickHouse
inserts failing, the drift analyzer failing. They select the collector's scrape job, so a fleet of
collectors alerts per instance.
"""

from __future__ import annotations

from agentwatch.alerts.model import Alert, Runbook
from agentwatch.alerts.options import COMPONENT_COLLECTOR, MINUTE, PAGE, TICKET, RuleOptions
from agentwatch.alerts.promql import Clock, counted_events, num, percent, sum_increase, sum_rate, union
from agentwatch.collectors.metric_names import (
    CANARY_DRIFT_EVALUE,
    CANARY_VERDICT,
    COLLECTOR_DRIFT_EVALUATIONS_TOTAL,
    COLLECTOR_INSERT_FAILURES_TOTAL,
    COLLECTOR_SPANS_DROPPED_TOTAL,
    COLLECTOR_SPANS_RECEIVED_TOTAL,
    COLLECTOR_SPANS_REJECTED_TOTAL,
    COLLECTOR_SPOOL_BYTES,
    COLLECTOR_SPOOL_CAPACITY_BYTES,
    COLLECTOR_STORE_UP,
    DRIFT_FAILED,
    DRIFT_OK,
    LABEL_RESULT,
)


def collector_alerts(options: RuleOptions, clock: Clock) -> tuple[Alert, ...]:
    job = f'job="{options.collector_job}"'
    instance_silence = "instance=collector-0:9464"
    reject_window = clock.window(10 * MINUTE)
    drop_window = clock.window(10 * MINUTE)
    insert_window = clock.window(5 * MINUTE)
    by_target = "job, instance"
    down = Alert(
        name="AgentwatchCollectorDown",
        expr=f"up{{{job}}} == 0\nor\nabsent(up{{{job}}})",
        hold_seconds=2 * MINUTE,
        severity=PAGE,
        component=COMPONENT_COLLECTOR,
        # absent() yields no instance label: say so instead of leaving a hole in the sentence
        summary=(
            "agentwatch collector {{ if $labels.instance }}{{ $labels.instance }} is down"
            "{{ else }}job {{ $labels.job }} has no scrape target{{ end }}"
        ),
        description=(
            f"Prometheus cannot scrape the agentwatch collector{{{{ if $labels.instance }}}} "
            f"{{{{ $labels.instance }}}}{{{{ end }}}} (job {options.collector_job}), or the job has no target. "
            f"Agent telemetry is not being received or not measured; agent alerts are suppressed while this fires."
        ),
        runbook=Runbook(
            meaning=(
                f"`up{{{job}}}` is 0 (the scrape of the collector's `/metrics` fails) or there is no such "
                f"series at all (the scrape job is missing or has no targets). Without the collector, agents' "
                f"OTLP exporters retry and then drop spans, and every agent metric freezes, so Alertmanager "
                f"suppresses the agent alerts while this pages."
            ),
            checks=(
                "Is the process running? `curl -s http://HOST:4318/healthz` and `/readyz` (readyz is false "
                "while the store is unreachable); check the service logs (`agentwatch collector` logs to stderr).",
                "Is `/metrics` reachable from Prometheus (`curl -s http://HOST:9464/metrics | head`)? A "
                "collector bound to 127.0.0.1 cannot be scraped from another host.",
                "In Prometheus, Status → Targets shows the scrape error for the job.",
                "An embedded (chdb://) store is owned by one process: a second collector on the same data "
                "directory refuses to start.",
            ),
            dashboard="agentwatch-collector",
            silence=instance_silence,
        ),
    )
    dropped = f"{COLLECTOR_SPANS_DROPPED_TOTAL}{{{job}}}"
    dropping = Alert(
        name="AgentwatchCollectorDroppingSpans",
        expr=f"sum by ({by_target}, reason) (\n{union(counted_events(dropped, drop_window))}\n) > 0",
        hold_seconds=0,
        severity=PAGE,
        component=COMPONENT_COLLECTOR,
        summary="agentwatch collector {{ $labels.instance }} dropped accepted spans ({{ $labels.reason }})",
        description=(
            f'The collector {{{{ $labels.instance }}}} dropped {{{{ $value | printf "%.0f" }}}} spans it had '
            f"acknowledged, in the last {drop_window} (reason {{{{ $labels.reason }}}}). Acknowledged spans "
            f"should always reach ClickHouse."
        ),
        runbook=Runbook(
            meaning=(
                f"`{COLLECTOR_SPANS_DROPPED_TOTAL}` counts spans the collector acknowledged (HTTP 200) "
                f"that will not reach ClickHouse; it should stay at zero (the first drop counts). Reason "
                f"`store_rejected` means ClickHouse refused a batch as bad data: the batch is kept as a "
                f"dead letter (`<spool directory>/dead-letter/<token>.jsonl`) instead of blocking the spool."
            ),
            checks=(
                "Read the collector log: each dead-lettered batch is logged with ClickHouse's reason.",
                "Inspect the dead-letter file; a schema mismatch (a collector upgraded without "
                "`agentwatch schema --apply`, a column changed by hand) is the usual cause.",
                "After fixing the cause, re-insert the dead letters into `otel_traces` (they are JSON rows).",
            ),
            dashboard="agentwatch-collector",
            silence=instance_silence,
        ),
    )
    rejected = f"{COLLECTOR_SPANS_REJECTED_TOTAL}{{{job}}}"
    received = f"{COLLECTOR_SPANS_RECEIVED_TOTAL}{{{job}}}"
    rejecting = Alert(
        name="AgentwatchCollectorRejectingSpans",
        expr=(
            f"(\n"
            f"    {sum_rate(rejected, reject_window, f'{by_target}, reason')}\n"
            f"  / on ({by_target}) group_left\n"
            f"    {sum_rate(received, reject_window, by_target)}\n"
            f") > {num(options.collector_reject_share)}\n"
            f"and on ({by_target})\n"
            f"  {sum_increase(received, reject_window, by_target)} >= {num(options.collector_reject_min_spans)}"
        ),
        hold_seconds=15 * MINUTE,
        severity=TICKET,
        component=COMPONENT_COLLECTOR,
        summary="agentwatch collector {{ $labels.instance }} rejects spans ({{ $labels.reason }})",
        description=(
            f"{{{{ $value | humanizePercentage }}}} of the spans received by collector {{{{ $labels.instance }}}} "
            f"over the last {reject_window} were refused with reason {{{{ $labels.reason }}}} (threshold "
            f"{percent(options.collector_reject_share)})."
        ),
        runbook=Runbook(
            meaning=(
                f"More than {percent(options.collector_reject_share)} of received spans were refused to their "
                f"senders over the last {reject_window} (at least {num(options.collector_reject_min_spans)} "
                f"spans received). The `reason` label says why: `invalid` (malformed spans, reported back in "
                f"`partial_success`), `limit` (body, span count or attribute limits), `auth` (bad or missing "
                f"bearer token), `spool_full` or `spool_error` (the collector could not make them durable and "
                f"answered 503, so senders retry)."
            ),
            checks=(
                "`spool_full`: see AgentwatchCollectorSpoolFilling and AgentwatchClickHouseInsertsFailing; the "
                "store is not keeping up.",
                "`auth`: a sender uses a rotated or wrong token; check the tokens file and the senders' "
                "`OTEL_EXPORTER_OTLP_HEADERS`.",
                "`limit`: a sender batches too much (lower its exporter's batch size) or attributes are "
                "too long; `invalid`: a sender emits malformed spans (ids of the wrong length, bad timestamps).",
                "The collector dashboard shows the request codes by transport.",
            ),
            dashboard="agentwatch-collector",
            silence=f"{instance_silence} reason=invalid",
        ),
    )
    spool = Alert(
        name="AgentwatchCollectorSpoolFilling",
        expr=(
            f"  {COLLECTOR_SPOOL_BYTES}{{{job}}}\n"
            f"/\n"
            f"  ({COLLECTOR_SPOOL_CAPACITY_BYTES}{{{job}}} > 0)\n"
            f"> {num(options.spool_fill_ratio)}"
        ),
        hold_seconds=5 * MINUTE,
        severity=TICKET,
        component=COMPONENT_COLLECTOR,
        summary="agentwatch collector {{ $labels.instance }} spool is {{ $value | humanizePercentage }} full",
        description=(
            f"The durable spool of collector {{{{ $labels.instance }}}} is {{{{ $value | humanizePercentage }}}} "
            f"full (threshold {percent(options.spool_fill_ratio)}). When it is full the collector answers 503 "
            f"and senders must retry or drop spans."
        ),
        runbook=Runbook(
            meaning=(
                f"Acknowledged spans wait in the fsynced local spool until they are in ClickHouse. The spool "
                f"holds more than {percent(options.spool_fill_ratio)} of its capacity, so ClickHouse is down or "
                f"slower than the incoming traffic. Nothing is lost yet; once the spool is full the collector "
                f"refuses new spans with 503 + Retry-After (AgentwatchCollectorRejectingSpans, reason "
                f"`spool_full`) and agents' exporters eventually drop them."
            ),
            checks=(
                "Check AgentwatchClickHouseInsertsFailing and the insert latency panel of the collector "
                "dashboard: down, or slow?",
                "Check ClickHouse itself (disk space, too many parts, replication queue for a cluster).",
                "If ClickHouse is healthy but slow, give the collector a larger spool (`spool_max_bytes` in the "
                "config file or `AGENTWATCH_SPOOL_MAX_BYTES`, on a disk with room) or scale ClickHouse; never "
                "delete spool files (they are acknowledged data).",
            ),
            dashboard="agentwatch-collector",
            silence=instance_silence,
        ),
    )
    failures = f"{COLLECTOR_INSERT_FAILURES_TOTAL}{{{job}}}"
    inserts = Alert(
        name="AgentwatchClickHouseInsertsFailing",
        expr=(
            f"  {sum_rate(failures, insert_window, by_target)} > 0\n"
            f"or\n"
            f"  max by ({by_target}) ({COLLECTOR_STORE_UP}{{{job}}}) == 0"
        ),
        hold_seconds=5 * MINUTE,
        severity=TICKET,
        component=COMPONENT_COLLECTOR,
        summary="agentwatch collector {{ $labels.instance }} cannot write to ClickHouse",
        description=(
            f"ClickHouse inserts of collector {{{{ $labels.instance }}}} failed in the last {insert_window}, or "
            f"the store is marked down. Spans accumulate in the spool meanwhile; nothing is lost while it has room."
        ),
        runbook=Runbook(
            meaning=(
                f"`{COLLECTOR_INSERT_FAILURES_TOTAL}` grew over the last {insert_window} or "
                f"`{COLLECTOR_STORE_UP}` is 0: the collector cannot reach ClickHouse (or ClickHouse "
                f"refuses its inserts) and retries with backoff. Acknowledged spans stay in the spool, so this "
                f"is a ticket until the spool fills (AgentwatchCollectorSpoolFilling); the read API and "
                f"dashboards backed by ClickHouse show stale data meanwhile."
            ),
            checks=(
                "Read the collector log: the first `ClickHouse unavailable, spooling: ...` line gives the error.",
                "Check ClickHouse: `SELECT 1` through the same URL and credentials, disk space, "
                "`system.errors`, for a cluster the ZooKeeper/Keeper quorum.",
                "`readyz` on the collector turns false while the store is down; load balancers may stop "
                "sending traffic to it, which is intended.",
            ),
            dashboard="agentwatch-collector",
            silence=instance_silence,
        ),
    )
    drift_window = clock.window(15 * MINUTE)
    rounds = COLLECTOR_DRIFT_EVALUATIONS_TOTAL

    def drift_rounds(result: str) -> str:
        selector = f'{rounds}{{{job}, {LABEL_RESULT}="{result}"}}'
        return f"sum by ({by_target}) (increase({selector}[{drift_window}])) > 0"

    drift = Alert(
        name="AgentwatchDriftAnalyzerFailing",
        expr=f"  {drift_rounds(DRIFT_FAILED)}\nunless\n  {drift_rounds(DRIFT_OK)}",
        hold_seconds=5 * MINUTE,
        severity=TICKET,
        component=COMPONENT_COLLECTOR,
        summary="agentwatch collector {{ $labels.instance }} cannot evaluate canary drift",
        description=(
            f"Every drift analyzer round of collector {{{{ $labels.instance }}}} failed over the last "
            f"{drift_window}: the canary gauges keep their last values, so a worse canary would not page."
        ),
        runbook=Runbook(
            meaning=(
                f'`{rounds}{{{LABEL_RESULT}="{DRIFT_FAILED}"}}` grew and no round succeeded '
                f"over {drift_window}. The analyzer reads `agent_runs` once a minute and publishes "
                f"`{CANARY_VERDICT}` and `{CANARY_DRIFT_EVALUE}`; while it fails those gauges are "
                f"stale, so CanaryDriftDetected cannot fire for a canary that got worse meanwhile. "
                f"CanaryStopReasonDrift (PromQL only) still watches the stop-reason mix."
            ),
            checks=(
                "Read the collector log: `drift analysis skipped` (the store is unreachable: see "
                "AgentwatchClickHouseInsertsFailing) or `drift analysis failed` with a traceback (a bug: report it).",
                "Run `agentwatch drift --agent NAME --clickhouse URL` by hand to get the same report and its error.",
                "Hold canary promotions until the analyzer publishes again.",
            ),
            dashboard="agentwatch-canary",
            silence=instance_silence,
        ),
    )
    return down, dropping, rejecting, spool, inserts, drift


__all__ = ["collector_alerts"]
