"""Continuous monitoring: a report after every batch without inflating false alarms.

``SequentialMonitor`` keeps anytime-valid evidence (e-values: test supermartingales under "no
change") for each metric family and fails a metric only when its e-value reaches 1/alpha_f, with
alpha_f = alpha / (number of families) (e-value Bonferroni; per stop reason, alpha_f / 11), *and*
the practical floor is reached. By Ville's inequality the chance that a no-change canary ever
fails, over any number of looks, is at most alpha (the floors and the conservative combination
make it much lower in practice: the drift benchmark measures it).

- stop-reason mix: the conditional Beta-binomial e-process of ``stopreasons`` (Lindon & Malek);
- cost, steps, tool calls, duration: the betting e-process of ``betting`` (rank scores);
- mean cost: the same with bounded mean scores.

What is *not* anytime-valid: the effects and intervals shown next to the evidence (risk ratios,
Hodges-Lehmann shifts, the mean ratio's delta-method interval) are fixed-horizon estimates
recomputed at each look; they drive the practical floors and ``pass`` (the interval rules the
floor out), so a ``pass`` read at a data-dependent moment is not error-controlled the way a
``fail`` is. The e-values assume the canary really receives ``canary_share`` of the runs at
random; a traffic-share mismatch is tested too and, when found, stop-reason fails become
``inconclusive`` (the rank and mean tests are nearly insensitive to the share: their scores are
centred on the baseline).

Order and determinism: records are taken in the order given; the analyzer orders by
``(EndTime, RunId)``. The state depends only on that sequence, not on how it was cut into
batches (e-values are exact functions of counts, or fixed-point sums of per-run terms), so
``SequentialMonitor(...).update(history)`` in one call equals any sequence of smaller updates,
bit for bit. Count-based helpers for the stop-reason e-values live in ``stopreasons``
(``stop_reason_log_evalue``, ``reason_log_evalues``, ``traffic_share_log_evalue``) for callers
that hold per-track counts from a ``GROUP BY``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agentwatch.collectors.drift import betting, distributions, stopreasons
from agentwatch.collectors.drift.assess import (
    Evidence,
    build_report,
    distribution_metric,
    mean_ratio_metric,
    reason_metrics,
)
from agentwatch.collectors.drift.columns import FloatArray, RunColumns, columns_from_records, empty_columns
from agentwatch.collectors.drift.config import (
    BAD_STOP_REASONS,
    COST_MEAN_METRIC,
    COST_METRIC,
    DISTRIBUTION_METRICS,
    STOP_REASON_CATEGORIES,
    STOP_REASON_METRIC,
    DriftSettings,
    check_alpha,
)
from agentwatch.collectors.drift.model import DriftReport, MetricDrift, RunRecord

_SCORED: dict[str, tuple[str, betting.ScoreKind]] = {
    **{name: (name, "rank") for name in DISTRIBUTION_METRICS},
    COST_MEAN_METRIC: (COST_METRIC, "mean"),
}
"""Betting metric -> (column it reads, score kind)."""


@dataclass(slots=True)
class _Bettor:
    """One metric's betting state: the reference's source, how many baseline runs it has seen, the sums."""

    column: str
    kind: betting.ScoreKind
    history: FloatArray = field(default_factory=lambda: np.zeros(0))
    baseline_seen: int = 0
    sums: list[int] = field(default_factory=lambda: [0] * len(betting.BET_FRACTIONS))
    cache: betting.ReferenceCache = field(default_factory=betting.ReferenceCache)

    def extend(self, runs: RunColumns, canary_share: float) -> None:
        values = runs.values(self.column)
        scores = betting.scores(
            values,
            runs.canary,
            history=self.history,
            baseline_seen=self.baseline_seen,
            kind=self.kind,
            cache=self.cache,
        )
        batch = betting.fixed_point_log_factors(runs.canary, scores, canary_share).sum(axis=0)
        self.sums = [total + int(part) for total, part in zip(self.sums, batch, strict=True)]
        if len(self.history) < betting.MAX_REFERENCE:
            self.history = np.concatenate([self.history, values[~runs.canary]])[: betting.MAX_REFERENCE]
        self.baseline_seen += int(np.count_nonzero(~runs.canary))

    def log_evalue(self) -> float:
        return min(betting.log_evalue(self.sums), stopreasons.LOG_E_CAP)


class SequentialMonitor:
    """Anytime-valid canary drift: feed runs of both tracks in arrival order, read a report any time.

    ``canary_share`` is the fraction of runs routed to the canary (0.1 for 10%). ``update`` may be
    called after every batch (every minute) or once with the whole history: the result is the same.
    """

    def __init__(self, *, canary_share: float, alpha: float = 0.05, settings: DriftSettings | None = None) -> None:
        self.canary_share = stopreasons.check_share(canary_share)
        self.alpha = check_alpha(alpha)
        self.settings = settings or DriftSettings()
        self._baseline_counts = np.zeros(len(STOP_REASON_CATEGORIES), dtype=np.int64)
        self._canary_counts = np.zeros_like(self._baseline_counts)
        self._bettors = {name: _Bettor(*_SCORED[name]) for name in self.settings.metrics if name in _SCORED}
        self._chunks: list[RunColumns] = []
        self._runs: RunColumns | None = empty_columns()

    @property
    def family_alpha(self) -> float:
        """Alpha per metric family (Bonferroni across families)."""
        return self.settings.family_alpha(self.alpha)

    def update(self, records: Sequence[RunRecord] | RunColumns) -> DriftReport:
        """Add runs (``canary`` track vs ``baseline``/``stable``) in arrival order; the report so far."""
        self.extend(records)
        return self.report()

    def extend(self, records: Sequence[RunRecord] | RunColumns) -> None:
        """Add runs without building a report (cheap: e-values only; see ``log_evalues``)."""
        runs = records if isinstance(records, RunColumns) else columns_from_records(records)
        if len(runs) == 0:
            return
        self._baseline_counts += stopreasons.counts_of(runs.reason[~runs.canary])
        self._canary_counts += stopreasons.counts_of(runs.reason[runs.canary])
        for bettor in self._bettors.values():
            bettor.extend(runs, self.canary_share)
        self._chunks.append(runs)
        self._runs = None

    @property
    def baseline_runs(self) -> int:
        return int(self._baseline_counts.sum())

    @property
    def canary_runs(self) -> int:
        return int(self._canary_counts.sum())

    def log_evalues(self) -> dict[str, float]:
        """Natural log of each family's e-value (``stop_reason`` and the betting metrics)."""
        result: dict[str, float] = {}
        for name in self.settings.metrics:
            if name == STOP_REASON_METRIC:
                result[name] = stopreasons.stop_reason_log_evalue(
                    self._baseline_counts,
                    self._canary_counts,
                    self.canary_share,
                    ratio=self.settings.floors.reason_ratio,
                )
            else:
                result[name] = self._bettors[name].log_evalue()
        return result

    def alarm_possible(self) -> bool:
        """Whether any family's e-value has reached its threshold (a fail needs this; the floors decide)."""
        threshold = math.log(1.0 / self.family_alpha)
        return any(value >= threshold for value in self.log_evalues().values())

    def _all_runs(self) -> RunColumns:
        if self._runs is None:
            self._runs = RunColumns.concat(self._chunks)
            self._chunks = [self._runs]
        return self._runs

    def report(self, families: Sequence[str] | None = None) -> DriftReport:
        """The sequential report on everything seen so far (only ``families`` of the tested ones, if given).

        A family's verdict does not depend on the others, so a partial report's metrics are the
        full report's (the alpha split stays that of all tested families).
        """
        wanted = self.settings.metrics if families is None else tuple(families)
        unknown = [name for name in wanted if name not in self.settings.metrics]
        if unknown:
            raise ValueError(f"families {unknown} are not monitored; monitored: {list(self.settings.metrics)}")
        runs = self._all_runs()
        base, cand = runs.select(~runs.canary), runs.select(runs.canary)
        confidence = 1.0 - self.alpha
        threshold = 1.0 / self.family_alpha
        log_e = self.log_evalues()
        extra: list[str] = []
        distrust = self._traffic_share_mismatch()
        if distrust:
            extra.append(distrust)
        metrics: list[MetricDrift] = []
        for name in wanted:
            evidence = _evidence(log_e[name], threshold)
            if name == STOP_REASON_METRIC:
                metrics.extend(self._reason_metrics(evidence, confidence, distrust))
            elif name == COST_MEAN_METRIC:
                estimate = distributions.delta_mean_ratio(base.cost_usd, cand.cost_usd, confidence)
                metrics.append(
                    mean_ratio_metric(
                        name,
                        base.cost_usd,
                        cand.cost_usd,
                        estimate=estimate,
                        evidence=evidence,
                        settings=self.settings,
                        confidence=confidence,
                    )
                )
            else:
                metrics.append(
                    distribution_metric(
                        name,
                        base.values(name),
                        cand.values(name),
                        evidence=evidence,
                        settings=self.settings,
                        confidence=confidence,
                    )
                )
        extra.append(f"canary share {self.canary_share:g}; e-values are anytime-valid, intervals are not")
        return build_report(
            metrics,
            baseline_runs=len(base),
            canary_runs=len(cand),
            mode="sequential",
            alpha=self.alpha,
            settings=self.settings,
            extra=extra,
        )

    def _reason_metrics(self, mix: Evidence, confidence: float, distrust: str | None) -> list[MetricDrift]:
        per_reason = stopreasons.reason_log_evalues(
            self._baseline_counts, self._canary_counts, self.canary_share, ratio=self.settings.floors.reason_ratio
        )
        reason_threshold = len(BAD_STOP_REASONS) / self.family_alpha
        evidence = {index: _evidence(float(per_reason[index]), reason_threshold) for index in range(len(per_reason))}
        return reason_metrics(
            self._baseline_counts,
            self._canary_counts,
            mix_evidence=mix,
            reason_evidence=evidence,
            settings=self.settings,
            confidence=confidence,
            distrust=distrust,
        )

    def _traffic_share_mismatch(self) -> str | None:
        n_b, n_c = self.baseline_runs, self.canary_runs
        log_e = stopreasons.traffic_share_log_evalue(n_b, n_c, self.canary_share)
        if log_e < math.log(1.0 / self.alpha):
            return None
        observed = n_c / (n_b + n_c)
        return (
            f"the canary received {observed:.2%} of runs, not the configured {self.canary_share:.2%} "
            f"(e-value {math.exp(log_e):.3g}): stop-reason evidence assumes the configured share, so it cannot fail; "
            "set canary_share to the real routing share"
        )


def _evidence(log_e: float, threshold: float) -> Evidence:
    return Evidence(math.exp(log_e), "e_value", log_e >= math.log(threshold), threshold)
