"""The drift analyzer in production: ``agent_runs`` in ClickHouse → a ``DriftReport`` per agent with a canary.

For one agent the analysis reads, from the shared store only (no state kept between evaluations):

- the canary: the newest version seen on the ``canary`` track, and its window, which starts at that
  version's first run (or at a configured ``since``) and ends now (or at ``until``);
- the reference: the ``baseline`` track when it has runs in the window, else ``stable`` (DESIGN.md);
- ClickHouse aggregates over the whole window: run counts per track and stop reason (``GROUP BY``),
  means and medians per side and a ``mannWhitneyUTest`` per distribution, reported beside the
  statistical core's own numbers as an independent cross-check;
- the per-run rows the statistical core needs, ordered by ``(EndTime, RunId, TenantId)`` and bounded
  by ``max_runs``: a prefix of that order, so a sequential test sees the same stream a replica
  evaluating a minute later sees, only shorter.

Every collector replica recomputes the same function of the same rows, so replicas publish identical
gauges and ``max by (agent, metric)`` in the alert rules sees one answer.

The sequential test needs the share of traffic the canary receives (the null hypothesis: a run of
either track is a canary run with that probability, whatever its outcome). It comes from
configuration when given (exact guarantee). Otherwise it is estimated as the canary's share of the
window's runs, recomputed at each evaluation: the test then conditions on an estimate made from the
same data, so its false-alarm guarantee is approximate (the estimation error adds about a chi-square
with one degree of freedom, halved, to the log e-value; it does not grow with the run count).
Configure the share, or use the fixed-horizon test (``mode="fixed"``), which needs none, for an exact
guarantee.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from agentwatch.collectors.config.settings import CollectorSettings, parse_canary_shares, parse_duration
from agentwatch.collectors.drift import DriftReport, RunRecord
from agentwatch.collectors.metrics import CollectorMetrics, clean_label
from agentwatch.collectors.read.filters import InvalidQuery, StoreReader, check_window, parse_since
from agentwatch.collectors.store.clickhouse import StoreError
from agentwatch.collectors.store.schema import RUNS_TABLE
from agentwatch.instrumentation import semconv

log = logging.getLogger("agentwatch.collector.drift")

Mode = Literal["sequential", "fixed"]
MODES: Final[tuple[Mode, ...]] = ("sequential", "fixed")
CANARY: Final = semconv.Track.CANARY.value
BASELINE: Final = semconv.Track.BASELINE.value
STABLE: Final = semconv.Track.STABLE.value
DEFAULT_WINDOW: Final = timedelta(days=7)
DEFAULT_MAX_RUNS: Final = 100_000
NO_DATA_METRIC: Final = "stop_reason"
"""The ``metric`` label published when a canary has too little data for any metric to be computed."""

# numeric columns of agent_runs compared between the tracks, by the core's metric names
_NUMERIC_COLUMNS: Final = (
    ("cost_usd", "CostUsd"),
    ("steps", "Steps"),
    ("tool_calls", "ToolCalls"),
    ("duration_s", "DurationSeconds"),
)


class AgentNotFound(LookupError):
    """The agent has no runs at all in the window (a typo is likelier than a silent agent)."""


@dataclass(frozen=True, slots=True)
class DriftOptions:
    """How to evaluate: test, level, window and bounds. ``since=None`` starts at the canary's first run."""

    mode: Mode = "sequential"
    alpha: float = 0.05
    since: datetime | None = None
    until: datetime | None = None
    window: timedelta = DEFAULT_WINDOW
    canary_shares: Mapping[str, float] = field(default_factory=dict)
    max_runs: int = DEFAULT_MAX_RUNS
    tenant: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidQuery(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0 < self.alpha < 0.5:
            raise InvalidQuery(f"alpha must be between 0 and 0.5 (e.g. 0.05), got {self.alpha!r}")
        check_window(self.since, self.until)
        if self.max_runs < 2:
            raise InvalidQuery(f"max_runs must be at least 2, got {self.max_runs}")

    def share_for(self, agent: str) -> float | None:
        """The configured canary share of ``agent`` (its own, else the default), or None."""
        return self.canary_shares.get(agent, self.canary_shares.get(""))

    @classmethod
    def from_settings(cls, settings: CollectorSettings) -> DriftOptions:
        """The collector's ``drift_*`` settings (already validated)."""
        return cls(
            alpha=settings.drift_alpha,
            since=parse_since(settings.drift_since) if settings.drift_since else None,
            window=timedelta(seconds=parse_duration(settings.drift_window, setting="drift_window")),
            canary_shares=parse_canary_shares(settings.drift_canary_share),
            max_runs=settings.drift_max_runs,
        )


DRIFT_PARAMETERS: Final = frozenset({"agent", "since", "until", "mode", "alpha", "canary_share", "tenant"})
"""Query parameters of ``GET /api/v1/drift`` (the gate adds ``on_inconclusive``)."""


def options_from_params(params: Mapping[str, str], defaults: DriftOptions) -> tuple[str, DriftOptions]:
    """(agent, options) from request parameters over the collector's defaults; ``InvalidQuery`` if malformed."""
    agent = params.get("agent", "")
    if not agent or len(agent) > 256 or any(ord(char) < 32 for char in agent):
        raise InvalidQuery("agent is required: 1-256 printable characters (e.g. agent=support)")
    changes: dict[str, Any] = {}
    for name in ("since", "until"):
        if name in params:
            changes[name] = parse_since(params[name])
    if "mode" in params:
        changes["mode"] = params["mode"]
    for name in ("alpha", "canary_share"):
        if name in params:
            try:
                value = float(params[name])
            except ValueError:
                raise InvalidQuery(f"{name} must be a number, got {params[name]!r}") from None
            if name == "canary_share":
                if not 0 < value < 1:
                    raise InvalidQuery(f"canary_share must be between 0 and 1 exclusive, got {params[name]!r}")
                changes["canary_shares"] = {**defaults.canary_shares, agent: value}
            else:
                changes["alpha"] = value
    if "tenant" in params:
        changes["tenant"] = params["tenant"]
    return agent, replace(defaults, **changes)


@dataclass(frozen=True, slots=True)
class AgentDrift:
    """One agent's canary against its reference: the core's report plus where the data came from."""

    agent: str
    report: DriftReport
    reference_track: str
    canary_version: str | None
    window_start: datetime | None
    window_end: datetime | None
    canary_share: float | None
    share_source: Literal["configured", "estimated", "unused"]
    runs_in_window: int
    runs_used: int
    counts: Mapping[str, Mapping[str, int]]
    sql_checks: Mapping[str, Mapping[str, float | None]]

    @property
    def verdict(self) -> str:
        return self.report.verdict

    def to_dict(self) -> dict[str, Any]:
        """The read API's and ``agentwatch drift --json``'s shape: the report's fields plus the context."""
        return {
            "agent": self.agent,
            **self.report.to_dict(),
            "reference_track": self.reference_track,
            "canary_version": self.canary_version,
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "canary_share": self.canary_share,
            "share_source": self.share_source,
            "runs_in_window": self.runs_in_window,
            "runs_used": self.runs_used,
            "counts": {track: dict(reasons) for track, reasons in self.counts.items()},
            "sql_checks": {name: dict(values) for name, values in self.sql_checks.items()},
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z") if moment else None


def _to_ns(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _from_ns(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos // 1_000_000_000, UTC) + timedelta(microseconds=(nanos % 1_000_000_000) // 1000)


# --- queries --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Scope:
    """The rows of one evaluation: agent, tenant, canary version and the time bounds (StartTime)."""

    agent: str
    tenant: str | None
    canary_version: str | None
    start_ns: int
    end_ns: int | None

    def where(self, *extra: str) -> tuple[str, dict[str, Any]]:
        conditions = ["AgentName = {agent:String}", "StartTime >= fromUnixTimestamp64Nano({start_ns:Int64})"]
        parameters: dict[str, Any] = {"agent": self.agent, "start_ns": self.start_ns, "canary": CANARY}
        if self.tenant is not None:
            conditions.append("TenantId = {tenant:String}")
            parameters["tenant"] = self.tenant
        if self.end_ns is not None:
            conditions.append("StartTime <= fromUnixTimestamp64Nano({end_ns:Int64})")
            parameters["end_ns"] = self.end_ns
        if self.canary_version is not None:
            # earlier canary versions are other releases, not this canary
            conditions.append("(Track != {canary:String} OR AgentVersion = {version:String})")
            parameters["version"] = self.canary_version
        return "WHERE " + " AND ".join([*conditions, *extra]), parameters


def canary_agents(store: StoreReader, options: DriftOptions, *, now: datetime) -> list[str]:
    """Agents with canary runs in the window (sorted): what the collector's loop evaluates."""
    lookback_ns, end_ns = _bounds(options, now)
    conditions = ["Track = {canary:String}", "StartTime >= fromUnixTimestamp64Nano({lookback_ns:Int64})"]
    parameters: dict[str, Any] = {"canary": CANARY, "lookback_ns": lookback_ns}
    if options.tenant is not None:
        conditions.append("TenantId = {tenant:String}")
        parameters["tenant"] = options.tenant
    if end_ns is not None:
        conditions.append("StartTime <= fromUnixTimestamp64Nano({end_ns:Int64})")
        parameters["end_ns"] = end_ns
    rows = store.query(
        f"SELECT DISTINCT AgentName AS agent FROM {RUNS_TABLE} WHERE {' AND '.join(conditions)} ORDER BY agent",
        parameters,
    )
    return [str(row["agent"]) for row in rows]


def _bounds(options: DriftOptions, now: datetime) -> tuple[int, int | None]:
    """(earliest StartTime considered, latest or None) in ns. The clock enters only through the window's
    far edge, floored to the minute so replicas evaluating seconds apart agree."""
    if options.since is not None:
        lookback = options.since
    else:
        edge = now - options.window
        lookback = edge.replace(second=0, microsecond=0)
    return _to_ns(lookback), (_to_ns(options.until) if options.until is not None else None)


def _find_canary(store: StoreReader, agent: str, options: DriftOptions, now: datetime) -> tuple[str, int] | None:
    """The newest canary version of ``agent`` and the StartTime (ns) of its first run in the window."""
    lookback_ns, end_ns = _bounds(options, now)
    scope = _Scope(agent=agent, tenant=options.tenant, canary_version=None, start_ns=lookback_ns, end_ns=end_ns)
    where, parameters = scope.where("Track = {canary:String}")
    rows = store.query(
        f"""SELECT argMax(AgentVersion, (EndTime, RunId, TenantId)) AS version, count() AS runs
            FROM {RUNS_TABLE} FINAL {where}""",
        parameters,
    )
    if not rows or int(rows[0]["runs"]) == 0:
        return None
    version = str(rows[0]["version"])
    first = store.query(
        f"""SELECT toUnixTimestamp64Nano(min(StartTime)) AS first_ns
            FROM {RUNS_TABLE} FINAL {where} AND AgentVersion = {{version:String}}""",
        {**parameters, "version": version},
    )
    return version, int(first[0]["first_ns"])


def _track_counts(store: StoreReader, scope: _Scope) -> dict[str, dict[str, int]]:
    where, parameters = scope.where()
    rows = store.query(
        f"""SELECT Track AS track, StopReason AS stop_reason, count() AS runs
            FROM {RUNS_TABLE} FINAL {where}
            GROUP BY track, stop_reason ORDER BY track, stop_reason""",
        parameters,
    )
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(str(row["track"]), {})[str(row["stop_reason"])] = int(row["runs"])
    return counts


def _sql_checks(store: StoreReader, scope: _Scope, reference: str) -> dict[str, dict[str, float | None]]:
    """Means, medians and ClickHouse's Mann–Whitney U test per numeric metric, over the whole window."""
    aggregates = ", ".join(
        f"avgIf({column}, is_canary = 0) AS {name}_baseline_mean, avgIf({column}, is_canary) AS {name}_canary_mean, "
        f"quantileExactIf(0.5)({column}, is_canary = 0) AS {name}_baseline_median, "
        f"quantileExactIf(0.5)({column}, is_canary) AS {name}_canary_median, "
        f"mannWhitneyUTest('two-sided')(toFloat64({column}), is_canary).2 AS {name}_mann_whitney_p"
        for name, column in _NUMERIC_COLUMNS
    )
    where, parameters = scope.where("Track IN ({canary:String}, {reference:String})")
    rows = store.query(
        f"""SELECT {aggregates}
            FROM (SELECT *, toUInt8(Track = {{canary:String}}) AS is_canary FROM {RUNS_TABLE} FINAL {where})""",
        {**parameters, "reference": reference},
    )
    row = rows[0]
    checks: dict[str, dict[str, float | None]] = {}
    for name, _ in _NUMERIC_COLUMNS:
        values: dict[str, float | None] = {}
        for key in ("baseline_mean", "canary_mean", "baseline_median", "canary_median", "mann_whitney_p"):
            value = float(row[f"{name}_{key}"])
            values[key] = value if math.isfinite(value) else None
        checks[name] = values
    return checks


def _records(store: StoreReader, scope: _Scope, reference: str, limit: int) -> list[RunRecord]:
    """The canary's and the reference's runs in ``(EndTime, RunId, TenantId)`` order, the first ``limit``."""
    where, parameters = scope.where("Track IN ({canary:String}, {reference:String})")
    rows = store.query(
        f"""SELECT Track, StopReason, Steps, ToolCalls, CostUsd, DurationSeconds
            FROM {RUNS_TABLE} FINAL {where}
            ORDER BY EndTime, RunId, TenantId
            LIMIT {{limit:UInt64}}""",
        {**parameters, "reference": reference, "limit": limit},
    )
    return [
        RunRecord(
            track=str(row["Track"]),
            stop_reason=str(row["StopReason"]),
            steps=int(row["Steps"]),
            tool_calls=int(row["ToolCalls"]),
            cost_usd=float(row["CostUsd"]),
            duration_s=float(row["DurationSeconds"]),
        )
        for row in rows
    ]


def agent_exists(store: StoreReader, agent: str, options: DriftOptions, *, now: datetime) -> bool:
    """Whether ``agent`` has any run in the window (to tell a typo from an agent without a canary)."""
    lookback_ns, end_ns = _bounds(options, now)
    scope = _Scope(agent=agent, tenant=options.tenant, canary_version=None, start_ns=lookback_ns, end_ns=end_ns)
    where, parameters = scope.where()
    rows = store.query(f"SELECT count() AS runs FROM {RUNS_TABLE} {where}", parameters)
    return bool(rows) and int(rows[0]["runs"]) > 0


# --- the analysis ---------------------------------------------------------------------------------


def _no_canary(agent: str, options: DriftOptions, reason: str) -> AgentDrift:
    report = DriftReport(
        verdict="inconclusive",
        metrics=(),
        baseline_runs=0,
        canary_runs=0,
        mode=options.mode,
        alpha=options.alpha,
        reasons=(reason,),
    )
    return AgentDrift(
        agent=agent,
        report=report,
        reference_track=STABLE,
        canary_version=None,
        window_start=options.since,
        window_end=options.until,
        canary_share=None,
        share_source="unused",
        runs_in_window=0,
        runs_used=0,
        counts={},
        sql_checks={},
    )


def analyze(store: StoreReader, agent: str, options: DriftOptions, *, now: datetime | None = None) -> AgentDrift:
    """Canary against baseline (or stable) for ``agent``; raises ``AgentNotFound`` if it has no runs at all.

    Deterministic in the store's content: the same rows give the same report, whichever process asks.
    """
    moment = now or datetime.now(UTC)
    found = _find_canary(store, agent, options, moment)
    if found is None:
        if not agent_exists(store, agent, options, now=moment):
            raise AgentNotFound(f"no runs of agent {agent!r} in the window")
        return _no_canary(agent, options, f"no canary runs of agent {agent!r} in the window")
    version, first_ns = found
    start_ns = _to_ns(options.since) if options.since is not None else first_ns
    end_ns = _to_ns(options.until) if options.until is not None else None
    scope = _Scope(agent=agent, tenant=options.tenant, canary_version=version, start_ns=start_ns, end_ns=end_ns)
    counts = _track_counts(store, scope)
    reference = BASELINE if counts.get(BASELINE) else STABLE
    in_window = sum(sum(counts.get(track, {}).values()) for track in (CANARY, reference))
    checks = _sql_checks(store, scope, reference) if counts.get(CANARY) and counts.get(reference) else {}
    records = _records(store, scope, reference, options.max_runs)
    report, share, source = _run_core(records, agent, options)
    if len(records) < in_window:
        note = f"evaluated the first {len(records)} of {in_window} runs in the window (max_runs)"
        report = replace(report, reasons=(*report.reasons, note))
    return AgentDrift(
        agent=agent,
        report=report,
        reference_track=reference,
        canary_version=version,
        window_start=_from_ns(start_ns),
        window_end=options.until,
        canary_share=share,
        share_source=source,
        runs_in_window=in_window,
        runs_used=len(records),
        counts=counts,
        sql_checks=checks,
    )


def _run_core(
    records: Sequence[RunRecord], agent: str, options: DriftOptions
) -> tuple[DriftReport, float | None, Literal["configured", "estimated", "unused"]]:
    from agentwatch.collectors.drift import SequentialMonitor, compare

    canary = [record for record in records if record.track == CANARY]
    baseline = [record for record in records if record.track != CANARY]
    if options.mode == "fixed":
        return compare(baseline, canary, alpha=options.alpha), None, "unused"
    share = options.share_for(agent)
    if share is not None:
        source: Literal["configured", "estimated"] = "configured"
    elif canary and baseline:
        share, source = len(canary) / len(records), "estimated"
    else:
        # one side is empty: nothing to test, any share gives the same inconclusive answer
        share, source = 0.5, "estimated"
    monitor = SequentialMonitor(canary_share=share, alpha=options.alpha)
    return monitor.update(list(records)), share, source


def analyze_all(store: StoreReader, options: DriftOptions, *, now: datetime | None = None) -> list[AgentDrift]:
    """Every agent with canary runs in the window, sorted by name."""
    moment = now or datetime.now(UTC)
    return [analyze(store, agent, options, now=moment) for agent in canary_agents(store, options, now=moment)]


# --- publishing -------------------------------------------------------------------------------------


def gauge_values(result: AgentDrift) -> list[tuple[str, float, str]]:
    """(metric, e-value, verdict) per metric of ``result``; a canary without metrics is one inconclusive row.

    Only anytime-valid evidence is an e-value; a fixed-horizon p-value publishes 1 (no evidence).
    """
    rows: list[tuple[str, float, str]] = [
        (item.name, item.evidence if item.evidence_kind == "e_value" else 1.0, item.verdict)
        for item in result.report.metrics
    ]
    return rows or [(NO_DATA_METRIC, 1.0, "inconclusive")]


class GaugePublisher:
    """Sets ``agentwatch_canary_drift_evalue`` and ``agentwatch_canary_verdict`` from a round of results,
    and removes the series of canaries that are gone (a finished canary must not page forever)."""

    def __init__(self, metrics: CollectorMetrics) -> None:
        self.metrics = metrics
        self._published: set[tuple[str, str]] = set()

    def publish(self, results: Sequence[AgentDrift]) -> None:
        current: set[tuple[str, str]] = set()
        for result in results:
            for metric, evalue, verdict in gauge_values(result):
                self.metrics.set_drift(result.agent, metric, evalue, verdict)
                current.add((clean_label(result.agent), clean_label(metric)))
        for labels in sorted(self._published - current):
            for gauge in (self.metrics.drift_evalue, self.metrics.verdict):
                with contextlib.suppress(KeyError):  # capped to "other" when published: none of its own
                    gauge.remove(*labels)
        self._published = current


class DriftLoop:
    """Re-evaluates every canary each ``interval_s`` and publishes the gauges, in a daemon thread.

    Never raises into the collector: a store outage is logged and retried at the next interval (the
    gauges keep their last values, readiness is untouched), and ``stop()`` ends the thread promptly.
    """

    def __init__(
        self,
        store: StoreReader,
        metrics: CollectorMetrics,
        options: DriftOptions,
        *,
        interval_s: float = 60.0,
        is_ready: Callable[[], bool] = lambda: True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.options = options
        self.interval_s = interval_s
        self.publisher = GaugePublisher(metrics)
        self._is_ready = is_ready
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.evaluations = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_results: list[AgentDrift] = []

    def run_once(self) -> bool:
        """One evaluation round; True when it published. Failures are logged, never raised."""
        if not self._is_ready():
            return False
        try:
            results = analyze_all(self.store, self.options, now=self._clock())
            self.publisher.publish(results)
        except StoreError as exc:
            self.failures += 1
            self.publisher.metrics.record_drift_evaluation(ok=False)
            self.last_error = str(exc)
            log.warning("drift analysis skipped, retrying in %.0f s: %s", self.interval_s, exc)
            return False
        except Exception as exc:  # a bug must cost one round of gauges, never the collector
            self.failures += 1
            self.publisher.metrics.record_drift_evaluation(ok=False)
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("drift analysis failed, retrying in %.0f s", self.interval_s)
            return False
        if self.last_error is not None:
            log.info("drift analysis recovered")
        self.last_error = None
        self.last_results = results
        self.evaluations += 1
        self.publisher.metrics.record_drift_evaluation(ok=True)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            waiting_for_store = not self._is_ready()
            self.run_once()
            # while the store comes up (schema being applied), look again soon rather than an interval later
            self._stop.wait(min(self.interval_s, 1.0) if waiting_for_store else self.interval_s)

    def start(self) -> DriftLoop:
        self._thread = threading.Thread(target=self._run, name="agentwatch-drift", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the round in progress (if any); waits at most ``timeout_s``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


__all__ = [
    "MODES",
    "AgentDrift",
    "AgentNotFound",
    "DriftLoop",
    "DriftOptions",
    "GaugePublisher",
    "Mode",
    "agent_exists",
    "analyze",
    "analyze_all",
    "canary_agents",
    "gauge_values",
]
