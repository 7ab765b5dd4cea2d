"""The drift report as text: a failing row names the effect that decided it, never a bare ``0 [0, 0] fail``."""

from __future__ import annotations

import random
import re
from typing import Any

from agentwatch.collectors.drift import compare
from agentwatch.collectors.drift.model import RunRecord
from agentwatch.collectors.drift.render import render_report


def _runs(track: str, count: int, *, tail_share: float, rng: random.Random) -> list[RunRecord]:
    """Runs that almost all cost the same; a share of them (the heavy tail) cost ten times as much."""
    return [
        RunRecord(track, "completed", 2, 1, 0.01 if rng.random() < tail_share else 0.001, 1.0 + rng.random())
        for _ in range(count)
    ]


def _heavy_tail_report() -> dict[str, Any]:
    rng = random.Random(7)
    report = compare(_runs("stable", 400, tail_share=0.05, rng=rng), _runs("canary", 400, tail_share=0.15, rng=rng))
    return {"agent": "support", "reference_track": "stable", "canary_version": "v2", **report.to_dict()}


def _row(text: str, metric: str) -> str:
    [line] = [line for line in text.splitlines() if line.split(" ", 1)[0] == metric]
    return line


def test_a_failing_cost_row_names_the_mean_shift_that_decided_it() -> None:
    report = _heavy_tail_report()
    cost = next(metric for metric in report["metrics"] if metric["name"] == "cost_usd")
    # the situation the row must not hide: the median does not move, the mean does, and the metric fails
    assert (cost["verdict"], cost["effect"], list(cost["interval"])) == ("fail", 0.0, [0.0, 0.0])
    change = cost["canary"]["mean"] / cost["baseline"]["mean"] - 1
    assert change > 0.1

    row = _row(render_report(report), "cost_usd")
    assert row.endswith(f"fail (mean {change:+.0%})"), row
    assert not re.search(r"\bfail\s*$", row), row  # no bare verdict after a zero effect
    assert not re.search(r"\s0\s+\[0, 0\]\s+\S+\s+fail$", row), row


def test_other_rows_keep_their_verdicts_and_distributions_show_their_mean_change() -> None:
    text = render_report(_heavy_tail_report())
    header = next(line for line in text.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "baseline", "canary", "effect", "interval", "evidence", "verdict"]
    # a ratio of means decides on the ratio it shows: no annotation
    assert re.search(r"^cost_usd_mean\s.*\s1\.\d+\s+\[.*\]\s+p=\S+\s+fail$", text, re.MULTILINE), text
    # distributions that pass say on what change of the mean
    assert _row(text, "steps").endswith("pass (mean +0%)")
    assert re.search(r"pass \(mean [+-]\d+%\)$", _row(text, "duration_s"))
    assert _row(text, "stop_reason").endswith("pass")


def test_a_zero_baseline_mean_reads_as_the_two_means() -> None:
    report = _heavy_tail_report()
    cost = next(metric for metric in report["metrics"] if metric["name"] == "cost_usd")
    cost["baseline"] = {**cost["baseline"], "mean": 0.0}
    row = _row(render_report(report), "cost_usd")
    assert re.search(r"fail \(mean 0 -> \d\S*\)$", row), row
