"""The drift analyzer over a real embedded ClickHouse: window, ordering, bounds, verdicts, gauges, the loop.

Rows go straight into ``agent_runs`` (exact times) or, for the example fleet, through the real
instrumentation, the OTLP decoder and the materialized views.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from _chrows import engine_url, now_ns
from _driftrows import DAY_NS, STABLE, WORSE, fleet_rows, load_runs, load_spans, run_row, synthetic_runs
from _ports import free_port
from scipy import stats as scipy_stats  # type: ignore[import-untyped]  # no stubs in the dev extra

from agentwatch.collectors.config.settings import CollectorSettings, SettingsError, resolve
from agentwatch.collectors.drift import analyzer as da
from agentwatch.collectors.drift.analyzer import (
    AgentNotFound,
    DriftLoop,
    DriftOptions,
    GaugePublisher,
    analyze,
    analyze_all,
    canary_agents,
)
from agentwatch.collectors.metric_names import CANARY_DRIFT_EVALUE, CANARY_VERDICT
from agentwatch.collectors.metrics import CollectorMetrics
from agentwatch.collectors.read.filters import InvalidQuery
from agentwatch.collectors.store.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

SEQUENTIAL = DriftOptions()
FIXED = DriftOptions(mode="fixed")


def drift_lines(metrics: CollectorMetrics) -> list[str]:
    """The exposition lines of the two drift gauges (what Prometheus scrapes)."""
    text = metrics.exposition().decode()
    return sorted(line for line in text.splitlines() if line.startswith((CANARY_DRIFT_EVALUE, CANARY_VERDICT)))


# --- the query layer ------------------------------------------------------------------------------


def test_records_follow_end_time_then_run_id_whatever_the_insert_order(clickhouse_store: ClickHouseStore) -> None:
    begin = now_ns() - DAY_NS
    rows = [
        run_row(agent="a", track="canary", version="v2", stop_reason="completed", start_ns=begin, run_id="c1"),
        # same EndTime as c1: RunId breaks the tie
        run_row(agent="a", track="stable", version="v1", stop_reason="error", start_ns=begin, run_id="b1"),
        run_row(agent="a", track="stable", version="v1", stop_reason="completed", start_ns=begin + 10**9, run_id="a0"),
        # started first but ended last
        run_row(
            agent="a", track="canary", version="v2", stop_reason="max_steps", start_ns=begin, duration_s=9, run_id="z"
        ),
    ]
    for row in reversed(rows):
        load_runs(clickhouse_store, [row])
    scope = da._Scope(agent="a", tenant=None, canary_version="v2", start_ns=begin, end_ns=None)
    records = da._records(clickhouse_store, scope, "stable", limit=100)
    assert [(r.track, r.stop_reason) for r in records] == [
        ("stable", "error"),
        ("canary", "completed"),
        ("stable", "completed"),
        ("canary", "max_steps"),
    ]
    assert [r.track for r in da._records(clickhouse_store, scope, "stable", limit=2)] == ["stable", "canary"]


def test_window_starts_at_the_newest_canary_versions_first_run(clickhouse_store: ClickHouseStore) -> None:
    begin = now_ns() - DAY_NS
    old = synthetic_runs("a", runs=40, canary=STABLE, start_ns=begin, canary_version="v1.9", seed=1)
    new = synthetic_runs("a", runs=60, canary=STABLE, start_ns=begin + 3600 * 10**9, seed=2)
    load_runs(clickhouse_store, old + new)
    moment = datetime.now(UTC)
    first_new_canary = min(int(str(r["StartTime"]).replace(".", "")) for r in new if r["Track"] == "canary")
    assert da._find_canary(clickhouse_store, "a", SEQUENTIAL, moment) == ("v2", first_new_canary)
    result = analyze(clickhouse_store, "a", FIXED, now=moment)
    assert result.canary_version == "v2"
    expected_canary = sum(1 for r in new if r["Track"] == "canary")
    first_canary = next(r for r in new if r["Track"] == "canary")
    expected_stable = sum(1 for r in new if r["Track"] == "stable" and r["StartTime"] >= first_canary["StartTime"])
    assert sum(result.counts["canary"].values()) == expected_canary
    assert sum(result.counts["stable"].values()) == expected_stable
    assert result.runs_in_window == result.runs_used == expected_canary + expected_stable


def test_counts_per_track_and_stop_reason_are_the_rows(clickhouse_store: ClickHouseStore) -> None:
    rows = synthetic_runs("a", runs=200, canary=WORSE, reference_track="baseline")
    rows += synthetic_runs("a", runs=50, canary=STABLE, seed=9, start_ns=now_ns() - DAY_NS + 10**9)  # stable track
    load_runs(clickhouse_store, rows)
    result = analyze(clickhouse_store, "a", FIXED)
    assert result.reference_track == "baseline"  # baseline present: stable is not the reference
    for track in ("canary", "baseline"):
        expected: dict[str, int] = {}
        for row in rows:
            if row["Track"] == track and row["StartTime"] >= result_start(result):
                expected[str(row["StopReason"])] = expected.get(str(row["StopReason"]), 0) + 1
        assert result.counts[track] == expected, track


def result_start(result: da.AgentDrift) -> str:
    assert result.window_start is not None
    nanos = da._to_ns(result.window_start)
    return f"{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}"


def test_sql_cross_check_agrees_with_scipy(clickhouse_store: ClickHouseStore) -> None:
    rows = synthetic_runs("a", runs=300, canary=WORSE, start_ns=now_ns() - DAY_NS)
    load_runs(clickhouse_store, rows)
    result = analyze(clickhouse_store, "a", FIXED)
    first = min(r["StartTime"] for r in rows if r["Track"] == "canary")
    window = [r for r in rows if r["StartTime"] >= first]
    canary = [float(r["CostUsd"]) for r in window if r["Track"] == "canary"]
    stable = [float(r["CostUsd"]) for r in window if r["Track"] == "stable"]
    check = result.sql_checks["cost_usd"]
    expected = scipy_stats.mannwhitneyu(stable, canary, alternative="two-sided", method="asymptotic")
    assert check["mann_whitney_p"] == pytest.approx(expected.pvalue, rel=1e-3)
    assert check["canary_mean"] == pytest.approx(sum(canary) / len(canary))
    assert check["baseline_mean"] == pytest.approx(sum(stable) / len(stable))
    assert check["canary_median"] is not None
    assert check["canary_median"] > check["baseline_median"]  # type: ignore[operator]


def test_max_runs_evaluates_a_prefix_and_says_so(clickhouse_store: ClickHouseStore) -> None:
    load_runs(clickhouse_store, synthetic_runs("a", runs=120, canary=STABLE))
    result = analyze(clickhouse_store, "a", replace(FIXED, max_runs=30))
    assert result.runs_used == 30 < result.runs_in_window
    assert any("first 30 of" in reason for reason in result.report.reasons)


def test_unknown_agent_and_agent_without_canary(clickhouse_store: ClickHouseStore) -> None:
    load_runs(clickhouse_store, synthetic_runs("only-stable", runs=30, canary=STABLE, canary_share=0.0))
    with pytest.raises(AgentNotFound, match="nobody"):
        analyze(clickhouse_store, "nobody", SEQUENTIAL)
    result = analyze(clickhouse_store, "only-stable", SEQUENTIAL)
    assert result.verdict == "inconclusive"
    assert "no canary runs" in result.report.reasons[0]
    assert canary_agents(clickhouse_store, SEQUENTIAL, now=datetime.now(UTC)) == []


def test_tenant_confines_the_analysis(clickhouse_store: ClickHouseStore) -> None:
    rows = synthetic_runs("a", runs=100, canary=WORSE)
    load_runs(clickhouse_store, rows)
    acme = analyze(clickhouse_store, "a", replace(FIXED, tenant="acme"))
    everyone = analyze(clickhouse_store, "a", FIXED)
    assert 0 < acme.runs_in_window < everyone.runs_in_window
    with pytest.raises(AgentNotFound):
        analyze(clickhouse_store, "a", replace(FIXED, tenant="initech"))


def test_options_are_validated() -> None:
    with pytest.raises(InvalidQuery, match="mode"):
        DriftOptions(mode="bayesian")  # type: ignore[arg-type]
    with pytest.raises(InvalidQuery, match="alpha"):
        DriftOptions(alpha=0.9)
    agent, options = da.options_from_params({"agent": "a", "since": "2h", "canary_share": "0.2"}, SEQUENTIAL)
    assert agent == "a"
    assert options.share_for("a") == 0.2
    assert options.since is not None
    for params, message in (
        ({}, "agent is required"),
        ({"agent": "a", "since": "yesterday"}, "cannot read time"),
        ({"agent": "a", "canary_share": "1.5"}, "canary_share"),
        ({"agent": "a", "alpha": "x"}, "alpha must be a number"),
    ):
        with pytest.raises(InvalidQuery, match=message):
            da.options_from_params(params, SEQUENTIAL)


def test_drift_settings_from_flags_env_and_file(tmp_path: Path) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text("drift_interval_seconds: 5\ndrift_canary_share: support=0.1,0.25\n", encoding="utf-8")
    settings = resolve(
        config_file=config, environ={"AGENTWATCH_DRIFT_ALPHA": "0.01"}, overrides={"drift_window": "24h"}
    )
    assert (settings.drift_interval_seconds, settings.drift_alpha, settings.drift_window) == (5.0, 0.01, "24h")
    options = DriftOptions.from_settings(settings)
    assert options.window == timedelta(hours=24)
    assert (options.share_for("support"), options.share_for("billing")) == (0.1, 0.25)
    assert resolve(environ={"AGENTWATCH_DRIFT_ENABLED": "false"}).drift_enabled is False
    for bad, message in (
        ({"drift_interval_seconds": "0"}, "drift_interval_seconds"),
        ({"drift_alpha": "0.7"}, "drift_alpha"),
        ({"drift_window": "forever"}, "drift_window"),
        ({"drift_since": "last tuesday"}, "drift_since"),
        ({"drift_canary_share": "support=2"}, "drift_canary_share"),
        ({"drift_canary_share": "=0.1"}, "names no agent"),
        ({"drift_max_runs": "0"}, "drift_max_runs"),
    ):
        with pytest.raises(SettingsError, match=message):
            resolve(environ={}, overrides=bad)


# --- verdicts on real traffic -------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_canary_rows() -> list[dict[str, object]]:
    return fleet_rows(300)


@pytest.fixture(scope="module")
def no_change_canary_rows() -> list[dict[str, object]]:
    return fleet_rows(300, canary_like_stable=True)


@pytest.mark.slow
@pytest.mark.parametrize("options", [SEQUENTIAL, FIXED], ids=["sequential", "fixed"])
def test_the_demo_canary_fails_with_reasons(
    clickhouse_store: ClickHouseStore, demo_canary_rows: list[dict[str, object]], options: DriftOptions
) -> None:
    load_spans(clickhouse_store, demo_canary_rows)
    result = analyze(clickhouse_store, "support", options)
    assert result.report.canary_runs == 300
    assert result.report.baseline_runs == 299  # the first stable run came before the canary's first
    assert result.verdict == "fail", result.to_dict()
    failed = {metric.name for metric in result.report.metrics if metric.verdict == "fail"}
    assert failed
    assert all(metric.reasons for metric in result.report.metrics if metric.verdict == "fail")
    assert any(reason.startswith("canary is worse on") for reason in result.report.reasons)
    # costs are deterministic for the seeds (durations are wall time): the higher cost per run shows
    cost = result.report.metric("cost_usd_mean")
    assert cost is not None
    assert cost.effect is not None
    assert cost.effect > 1.2  # the canary's mean cost over the baseline's
    if options.mode == "fixed":
        assert "cost_usd_mean" in failed
    else:
        assert cost.evidence > 1 / options.alpha  # strong evidence on the gauge, short of the corrected threshold


@pytest.mark.slow
@pytest.mark.parametrize("options", [SEQUENTIAL, FIXED], ids=["sequential", "fixed"])
def test_a_no_change_canary_does_not_fail(
    clickhouse_store: ClickHouseStore, no_change_canary_rows: list[dict[str, object]], options: DriftOptions
) -> None:
    load_spans(clickhouse_store, no_change_canary_rows)
    result = analyze(clickhouse_store, "support", options)
    assert result.report.canary_runs == 300
    assert result.verdict != "fail", result.to_dict()


# --- gauges and replicas --------------------------------------------------------------------------


def test_gauges_are_published_per_agent_and_metric(clickhouse_store: ClickHouseStore) -> None:
    load_runs(clickhouse_store, synthetic_runs("worse", runs=600, canary=WORSE, canary_share=0.3))
    load_runs(clickhouse_store, synthetic_runs("thin", runs=6, canary=STABLE, seed=3))
    metrics = CollectorMetrics()
    GaugePublisher(metrics).publish(analyze_all(clickhouse_store, SEQUENTIAL))
    assert metrics.registry.get_sample_value(CANARY_VERDICT, {"agent": "worse", "metric": "stop_reason"}) is not None
    verdicts = {
        (sample.labels["agent"], sample.labels["metric"]): sample.value
        for family in metrics.registry.collect()
        if family.name == CANARY_VERDICT
        for sample in family.samples
    }
    assert max(value for (agent, _), value in verdicts.items() if agent == "worse") == 2  # fail
    assert max(value for (agent, _), value in verdicts.items() if agent == "thin") == 1  # too little data
    evalue = metrics.registry.get_sample_value(CANARY_DRIFT_EVALUE, {"agent": "worse", "metric": "stop_reason"})
    assert evalue is not None
    assert evalue >= 20
    assert any(line.startswith(f'{CANARY_VERDICT}{{agent="worse",metric="') for line in drift_lines(metrics))


def test_two_replicas_over_one_store_publish_identical_gauges(
    clickhouse_store: ClickHouseStore, clickhouse_engine: ClickHouseStore, clickhouse_database: str
) -> None:
    rows = synthetic_runs("support", runs=800, canary=WORSE, canary_share=0.2, reference_track="baseline")
    rows += synthetic_runs("billing", runs=300, canary=STABLE, seed=5)
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    for start in range(0, len(shuffled), 97):  # many parts, inserted out of order
        load_runs(clickhouse_store, shuffled[start : start + 97])
    replicas = []
    for _ in range(2):
        store = ClickHouseStore.open(engine_url(clickhouse_engine, clickhouse_database))
        metrics = CollectorMetrics()
        loop = DriftLoop(store, metrics, SEQUENTIAL, interval_s=3600)
        assert loop.run_once()
        replicas.append((store, metrics))
    clickhouse_store.command(f"OPTIMIZE TABLE {clickhouse_database}.agent_runs FINAL")  # merged parts: same answer
    third = CollectorMetrics()
    DriftLoop(clickhouse_store, third, SEQUENTIAL, interval_s=3600).run_once()
    first, second = (drift_lines(metrics) for _, metrics in replicas)
    assert len(first) > 10
    assert first == second == drift_lines(third)
    for store, _ in replicas:
        store.close()


def test_a_finished_canary_stops_publishing(clickhouse_store: ClickHouseStore) -> None:
    load_runs(clickhouse_store, synthetic_runs("a", runs=50, canary=STABLE, start_ns=now_ns() - 3 * DAY_NS))
    metrics = CollectorMetrics()
    moment = datetime.now(UTC)
    loop = DriftLoop(clickhouse_store, metrics, DriftOptions(window=timedelta(days=7)), clock=lambda: moment)
    assert loop.run_once()
    assert drift_lines(metrics)
    loop.options = DriftOptions(window=timedelta(days=1))  # the canary's runs are now older than the window
    assert loop.run_once()
    assert drift_lines(metrics) == []


def test_the_loop_survives_a_store_outage_and_stops_promptly() -> None:
    store = ClickHouseStore.open(f"http://127.0.0.1:{free_port()}/default")
    metrics = CollectorMetrics()
    metrics.set_drift("support", "stop_reason", 30.0, "fail")  # the last known answer stays while the store is down
    loop = DriftLoop(store, metrics, SEQUENTIAL, interval_s=3600)
    rounds = "agentwatch_collector_drift_evaluations_total"
    assert metrics.registry.get_sample_value(rounds, {"result": "failed"}) == 0  # present before the first failure
    assert loop.run_once() is False
    assert loop.failures == 1
    assert loop.last_error
    assert metrics.registry.get_sample_value(CANARY_VERDICT, {"agent": "support", "metric": "stop_reason"}) == 2
    # the stale gauges are visible: AgentwatchDriftAnalyzerFailing alerts on these counters
    assert metrics.registry.get_sample_value(rounds, {"result": "failed"}) == 1
    assert metrics.registry.get_sample_value(rounds, {"result": "ok"}) == 0
    loop.start()
    time.sleep(0.2)
    began = time.monotonic()
    loop.stop()
    assert time.monotonic() - began < 2
    assert loop.failures >= 2
    store.close()


def test_the_loop_waits_for_readiness(clickhouse_store: ClickHouseStore) -> None:
    load_runs(clickhouse_store, synthetic_runs("a", runs=20, canary=STABLE))
    metrics = CollectorMetrics()
    ready = False
    loop = DriftLoop(clickhouse_store, metrics, SEQUENTIAL, is_ready=lambda: ready)
    assert loop.run_once() is False
    assert drift_lines(metrics) == []
    assert loop.failures == 0
    ready = True
    assert loop.run_once() is True
    assert drift_lines(metrics)
    assert metrics.registry.get_sample_value("agentwatch_collector_drift_evaluations_total", {"result": "ok"}) == 1


def test_collector_settings_turn_the_loop_off() -> None:
    assert CollectorSettings(drift_enabled=False).validate().drift_enabled is False
