"""Drift analysis quality: false alarms under continuous monitoring, and power, on simulated traffic.

Traffic comes from ``agentwatch.collectors.drift.simulation``: a production-like stop-reason mix
(85% completed, 8% max_steps, budget stops, errors, policy denials, guardrails), steps tied to the
stop reason, lognormal cost per step, duration growing with steps; the canary gets 10% of runs.

1. False alarms with no real change: a look every 50 runs up to 5,000 runs (100 looks, about
   500 canary runs). A stream "alarms" when any look's verdict is ``fail``. Compared:
   - ``SequentialMonitor`` (default alpha 0.05, all six metric families);
   - naive repeated tests at every look, each at alpha: Pearson chi-square on the stop-reason mix
     (cells pooled to >= 5 expected), one-sided Mann-Whitney on cost;
   - ``compare()`` (fixed horizon, alpha split and practical floors) repeated at every look, on
     five families (the bootstrap mean-cost test is left out to keep the run short);
   - ``compare()`` once, at the end (its intended use): the single-look error rate.
2. Power: max_steps rising from 8% to 13%, and cost per run rising 20%, over streams of up to
   2,000 canary runs (20,000 runs), a look every 50 runs: detection probability by 100, 200, 500,
   1,000 and 2,000 canary runs and the median canary runs to the first ``fail``, for the monitor
   and for repeated ``compare()``; plus ``compare()`` at a single look at each of those sizes.

The monitor's e-values are computed for a whole stream at once with the same functions it uses
(``betting.log_evalue_path``, ``stopreasons.reason_log_evalues`` on cumulative counts); a real
``SequentialMonitor`` fed look by look then builds the report at every look where some e-value
has reached its threshold (a fail needs that), and its e-values are checked against the path.

Run with ``python benchmarks/drift_quality.py [--quick] [--sims N] [--seed S]``; the default takes a
few minutes on two cores.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agentwatch.collectors.drift import DriftSettings, RunColumns, SequentialMonitor, betting, compare, stopreasons
from agentwatch.collectors.drift.config import (
    COST_MEAN_METRIC,
    METRIC_FAMILIES,
    STOP_REASON_CATEGORIES,
    STOP_REASON_METRIC,
)
from agentwatch.collectors.drift.simulation import Profile, simulate

SHARE = 0.1
LOOK_EVERY = 50
NULL_RUNS = 5000
CHECKPOINTS = (100, 200, 500, 1000, 2000)
POWER_RUNS = int(CHECKPOINTS[-1] / SHARE)
ALPHA = 0.05
NAIVE_SETTINGS = DriftSettings(metrics=tuple(name for name in METRIC_FAMILIES if name != COST_MEAN_METRIC))
SCENARIOS: dict[str, Profile] = {
    "max_steps 8% -> 13%": Profile().with_reason("max_steps", 0.13),
    "cost +20%": Profile(cost_factor=1.2),
}


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def prefix(runs: RunColumns, end: int) -> RunColumns:
    mask = np.zeros(len(runs), dtype=np.bool_)
    mask[:end] = True
    return runs.select(mask)


def monitor_paths(runs: RunColumns, looks: npt.NDArray[np.int64]) -> dict[str, npt.NDArray[np.float64]]:
    """Every family's log e-value at each look (a look at run t sees runs [0, t))."""
    paths: dict[str, npt.NDArray[np.float64]] = {}
    for name in METRIC_FAMILIES:
        if name == STOP_REASON_METRIC:
            one_hot = np.zeros((len(runs), len(STOP_REASON_CATEGORIES)), dtype=np.int64)
            one_hot[np.arange(len(runs)), runs.reason] = 1
            canary_counts = np.cumsum(one_hot * runs.canary[:, None], axis=0)[looks - 1]
            baseline_counts = np.cumsum(one_hot * ~runs.canary[:, None], axis=0)[looks - 1]
            per_reason = stopreasons.reason_log_evalues(baseline_counts, canary_counts, SHARE)
            paths[name] = np.minimum(per_reason.sum(axis=1), stopreasons.LOG_E_CAP)
        else:
            kind: betting.ScoreKind = "mean" if name == COST_MEAN_METRIC else "rank"
            column = "cost_usd" if name == COST_MEAN_METRIC else name
            path = betting.log_evalue_path(runs.values(column), runs.canary, SHARE, kind)
            paths[name] = np.minimum(path[looks - 1], stopreasons.LOG_E_CAP)
    return paths


def monitor_first_fail(runs: RunColumns, looks: npt.NDArray[np.int64], alpha: float = ALPHA) -> int | None:
    """Index of the first look whose sequential report fails, or None."""
    paths = monitor_paths(runs, looks)
    threshold = math.log(len(METRIC_FAMILIES) / alpha)
    crossing = {name: path >= threshold for name, path in paths.items()}
    candidates = np.flatnonzero(np.any(np.stack(list(crossing.values())), axis=0))
    if len(candidates) == 0:
        return None
    monitor = SequentialMonitor(canary_share=SHARE, alpha=alpha)
    fed = 0
    for index in candidates:
        end = int(looks[index])
        monitor.extend(_slice(runs, fed, end))
        fed = end
        evidences = monitor.log_evalues()
        for name, path in paths.items():  # the path must be what the monitor itself computes
            if not math.isclose(evidences[name], float(path[index]), rel_tol=1e-9, abs_tol=1e-9):
                raise AssertionError(f"{name}: monitor {evidences[name]} != path {path[index]} at run {end}")
        families = [name for name, flags in crossing.items() if flags[index]]
        if monitor.report(families).verdict == "fail":
            return int(index)
    return None


def _slice(runs: RunColumns, start: int, end: int) -> RunColumns:
    mask = np.zeros(len(runs), dtype=np.bool_)
    mask[start:end] = True
    return runs.select(mask)


def _mann_whitney_p(baseline: npt.NDArray[np.float64], canary: npt.NDArray[np.float64]) -> float:
    """One-sided (canary larger) Mann-Whitney p-value, normal approximation with tie correction."""
    from scipy.stats import norm, rankdata  # type: ignore[import-untyped]

    n, m = len(baseline), len(canary)
    combined = np.concatenate([baseline, canary])
    ranks = rankdata(combined)
    u = float(ranks[n:].sum()) - m * (m + 1) / 2
    _, ties = np.unique(combined, return_counts=True)
    total = n + m
    variance = n * m / 12 * ((total + 1) - float(np.sum(ties**3 - ties)) / (total * (total - 1)))
    if variance <= 0:
        return 1.0
    return float(norm.sf((u - n * m / 2 - 0.5) / math.sqrt(variance)))


def _chi_square_p(runs: RunColumns) -> float:
    from scipy.stats import chi2_contingency

    baseline = stopreasons.counts_of(runs.reason[~runs.canary])
    canary = stopreasons.counts_of(runs.reason[runs.canary])
    cells = stopreasons.pooled_cells(baseline, canary, 5.0)
    if len(cells) < 2:
        return 1.0
    table = [[baseline[cell].sum() for cell in cells], [canary[cell].sum() for cell in cells]]
    return float(chi2_contingency(table, correction=False).pvalue)


def _fails(base: RunColumns, cand: RunColumns, settings: DriftSettings | None = None) -> bool:
    return compare(base, cand, alpha=ALPHA, settings=settings).verdict == "fail"


def naive_first_alarms(runs: RunColumns, looks: npt.NDArray[np.int64], *, with_tests: bool) -> dict[str, int | None]:
    """First look at which each naive procedure alarms (None: never)."""
    family_alpha = NAIVE_SETTINGS.family_alpha(ALPHA)
    first: dict[str, int | None] = {"chi-square": None, "mann-whitney": None, "compare": None}
    for index, end in enumerate(looks):
        seen = prefix(runs, int(end))
        base, cand = seen.select(~seen.canary), seen.select(seen.canary)
        if len(cand) < 2 or len(base) < 2:
            continue
        chi_p = _chi_square_p(seen)
        ranks_p = {name: _mann_whitney_p(base.values(name), cand.values(name)) for name in ("cost_usd", "steps",
                   "tool_calls", "duration_s")}  # fmt: skip
        if with_tests and first["chi-square"] is None and chi_p <= ALPHA:
            first["chi-square"] = index
        if with_tests and first["mann-whitney"] is None and ranks_p["cost_usd"] <= ALPHA:
            first["mann-whitney"] = index
        # compare() fails only when a family's p-value clears alpha / families: screen cheaply first
        # (the G-test is compare's own; the rank p-values match scipy's up to rounding, hence the margin).
        mix = stopreasons.g_test(stopreasons.counts_of(base.reason), stopreasons.counts_of(cand.reason), 5.0)
        screened = (mix is not None and mix.p_value <= family_alpha) or min(ranks_p.values()) <= family_alpha * 1.5
        if first["compare"] is None and screened and _fails(base, cand, NAIVE_SETTINGS):
            first["compare"] = index
        if all(value is not None for value in first.values()) or (not with_tests and first["compare"] is not None):
            break
    return first


@dataclass
class NullResult:
    sims: int
    monitor_alarms: int
    naive_sims: int
    naive_alarms: dict[str, int]
    single_look_alarms: int
    seconds: float


def run_null(sims: int, naive_sims: int, seed: int, progress: Callable[[str], None]) -> NullResult:
    started = time.perf_counter()
    looks = np.arange(LOOK_EVERY, NULL_RUNS + 1, LOOK_EVERY)
    rng = np.random.default_rng(seed)
    monitor_alarms = 0
    naive_alarms = {"chi-square": 0, "mann-whitney": 0, "compare": 0}
    single = 0
    for sim in range(sims):
        runs = simulate(rng, NULL_RUNS, SHARE)
        monitor_alarms += monitor_first_fail(runs, looks) is not None
        if sim < naive_sims:
            for name, first in naive_first_alarms(runs, looks, with_tests=True).items():
                naive_alarms[name] += first is not None
            base, cand = runs.select(~runs.canary), runs.select(runs.canary)
            single += _fails(base, cand)
        if (sim + 1) % max(1, sims // 10) == 0:
            progress(f"  no change: {sim + 1}/{sims} streams, {monitor_alarms} monitor alarms")
    return NullResult(sims, monitor_alarms, naive_sims, naive_alarms, single, time.perf_counter() - started)


@dataclass
class PowerResult:
    scenario: str
    sims: int
    monitor_detect: list[int | None]  # canary runs at the first fail
    naive_detect: list[int | None]
    single_sims: int
    single_look: dict[int, int]  # canary runs -> fails of one compare() at that size
    seconds: float


def canary_runs_at(runs: RunColumns, looks: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.asarray(np.cumsum(runs.canary)[looks - 1], dtype=np.int64)


def run_power(name: str, profile: Profile, sims: int, single_sims: int, seed: int) -> PowerResult:
    started = time.perf_counter()
    looks = np.arange(LOOK_EVERY, POWER_RUNS + 1, LOOK_EVERY)
    rng = np.random.default_rng(seed)
    monitor_detect: list[int | None] = []
    naive_detect: list[int | None] = []
    single = dict.fromkeys(CHECKPOINTS, 0)
    for sim in range(sims):
        runs = simulate(rng, POWER_RUNS, SHARE, canary=profile)
        canary_counts = canary_runs_at(runs, looks)
        first = monitor_first_fail(runs, looks)
        monitor_detect.append(None if first is None else int(canary_counts[first]))
        naive = naive_first_alarms(runs, looks, with_tests=False)["compare"]
        naive_detect.append(None if naive is None else int(canary_counts[naive]))
        if sim < single_sims:
            cumulative = np.cumsum(runs.canary)
            for size in CHECKPOINTS:
                end = int(np.searchsorted(cumulative, size) + 1)
                seen = prefix(runs, min(end, len(runs)))
                single[size] += _fails(seen.select(~seen.canary), seen.select(seen.canary), NAIVE_SETTINGS)
    return PowerResult(name, sims, monitor_detect, naive_detect, single_sims, single, time.perf_counter() - started)


def _rate(count: int, total: int) -> str:
    low, high = wilson(count, total)
    return f"{count / total:6.2%}  [{low:.2%}, {high:.2%}]" if total else "-"


def _detected_by(detections: Sequence[int | None], size: int) -> float:
    return sum(1 for item in detections if item is not None and item <= size) / len(detections)


def _median(detections: Sequence[int | None]) -> str:
    """Median canary runs to detection (streams never detected count as infinitely late)."""
    ordered = sorted(math.inf if item is None else item for item in detections)
    value = statistics.median(ordered) if ordered else math.inf
    return f"> {CHECKPOINTS[-1]}" if math.isinf(value) else f"{value:.0f}"


def render(null: NullResult, power: list[PowerResult]) -> str:
    lines = [
        f"False alarms with no change: {NULL_RUNS} runs, {SHARE:.0%} canary, a look every {LOOK_EVERY} runs "
        f"({NULL_RUNS // LOOK_EVERY} looks), alpha {ALPHA}; rate [95% Wilson interval]",
        f"  {'SequentialMonitor (any look fails)':<52} {_rate(null.monitor_alarms, null.sims)}  ({null.sims} streams)",
        f"  {'naive chi-square on the mix at every look (p<=a)':<52} "
        f"{_rate(null.naive_alarms['chi-square'], null.naive_sims)}  ({null.naive_sims} streams)",
        f"  {'naive Mann-Whitney on cost at every look (p<=a)':<52} "
        f"{_rate(null.naive_alarms['mann-whitney'], null.naive_sims)}",
        f"  {'compare() at every look (split alpha, floors)':<52} "
        f"{_rate(null.naive_alarms['compare'], null.naive_sims)}",
        f"  {'compare() once, at the end':<52} {_rate(null.single_look_alarms, null.naive_sims)}",
        f"  ({null.seconds:.0f} s)",
        "",
        "Power: detection probability by N canary runs (a look every 50 runs), median canary runs to detection",
    ]
    header = "  " + f"{'scenario / procedure':<40}" + "".join(f"{size:>8}" for size in CHECKPOINTS) + f"{'median':>10}"
    lines.append(header)
    for result in power:
        lines.append(f"  {result.scenario} ({result.sims} streams, {result.seconds:.0f} s)")
        for label, detections in (
            ("SequentialMonitor", result.monitor_detect),
            ("compare() every look", result.naive_detect),
        ):
            cells = "".join(f"{_detected_by(detections, size):8.0%}" for size in CHECKPOINTS)
            lines.append(f"    {label:<38}{cells}{_median(detections):>10}")
        cells = "".join(f"{result.single_look[size] / result.single_sims:8.0%}" for size in CHECKPOINTS)
        lines.append(f"    {'compare() once at N (' + str(result.single_sims) + ' streams)':<38}{cells}{'-':>10}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=2000, help="no-change streams for the monitor (default 2000)")
    parser.add_argument("--quick", action="store_true", help="a fast, rough run (a few hundred streams)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args(argv)
    sims = 300 if args.quick else args.sims
    if sims < 10:
        parser.error("--sims must be at least 10")
    naive_sims = max(10, sims // 10)
    power_sims = max(10, sims // 20)
    single_sims = max(10, power_sims // 2)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    null = run_null(sims, naive_sims, args.seed, progress)
    power = []
    for offset, (name, profile) in enumerate(SCENARIOS.items(), start=1):
        progress(f"  power: {name}")
        power.append(run_power(name, profile, power_sims, single_sims, args.seed + offset))
    print(render(null, power))
    return 0


if __name__ == "__main__":
    sys.exit(main())
