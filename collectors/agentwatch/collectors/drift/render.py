"""A drift report as text: the verdict line, a row per metric, then the reasons.

What ``agentwatch drift`` prints and the demo shows; it reads the report's JSON form (the same the
read API serves), so it renders a report from a store or from a running collector alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

_SUMMARY_KEYS: Final = ("share", "median", "mean")


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 0.01 <= abs(value) < 1000:
        return f"{value:.3g}"
    return f"{value:,.0f}" if 1000 <= abs(value) < 100_000 else f"{value:.2e}"


def _summary(values: Mapping[str, float]) -> str:
    if "median" in values and "mean" in values:  # a distribution: its floor is judged on the mean
        count = f" (n={int(values['n'])})" if "n" in values else ""
        return f"median {_number(float(values['median']))}, mean {_number(float(values['mean']))}{count}"
    for key in _SUMMARY_KEYS:
        if key in values:
            shown = f"{values[key] * 100:.1f}%" if key == "share" else _number(float(values[key]))
            return f"{key} {shown}" + (f" (n={int(values['n'])})" if "n" in values else "")
    rest = [f"{key} {_number(float(value))}" for key, value in values.items() if key != "n"]
    return ", ".join(rest[:1]) or (f"n={int(values['n'])}" if "n" in values else "-")


def _is_distribution(metric: Mapping[str, Any]) -> bool:
    """A rank-compared metric: its effect is a median shift, its floor is judged on the change of the mean."""
    baseline, canary = metric["baseline"], metric["canary"]
    return "median" in baseline and "mean" in baseline and "mean" in canary


def _effect(metric: Mapping[str, Any]) -> str:
    """The effect in the metric's natural unit (for a distribution the Hodges-Lehmann shift)."""
    if metric["effect"] is None:
        return "-"
    return _number(float(metric["effect"]))


def _mean_change(metric: Mapping[str, Any]) -> str:
    """A distribution's change of the mean, what its practical floor judges: ``mean +56%``."""
    before, after = float(metric["baseline"]["mean"]), float(metric["canary"]["mean"])
    if before > 0:
        return f"mean {after / before - 1:+.0%}"
    return f"mean {_number(before)} -> {_number(after)}"


def _verdict(metric: Mapping[str, Any]) -> str:
    """The verdict, and next to it the effect that decided it when the effect column does not show it.

    A distribution's ``fail`` or ``pass`` is decided on the change of its mean (with the evidence in
    its own column), while its effect is the median shift, often 0 [0, 0] for costs with a heavy tail:
    ``fail (mean +56%)`` says what failed. Other metrics' effects are the ratios their floors judge.
    """
    verdict = str(metric["verdict"])
    if _is_distribution(metric) and metric["effect"] is not None:
        return f"{verdict} ({_mean_change(metric)})"
    return verdict


def _reason(name: str, reason: str) -> str:
    """A metric's reason, prefixed with the metric's name unless it already starts with it."""
    named = reason.startswith(f"{name}:") or reason.startswith(f"{name.rpartition(':')[2]}:")
    return reason if named else f"{name}: {reason}"


def _evidence(metric: Mapping[str, Any]) -> str:
    value = float(metric["evidence"])
    return f"e={_number(value)}" if metric["evidence_kind"] == "e_value" else f"p={value:.2g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip() for cells in [header, *rows]]


def headline(report: Mapping[str, Any]) -> str:
    """One line: the verdict, the agent, who was compared with whom, how much data."""
    version = f" {report['canary_version']}" if report.get("canary_version") else ""
    return (
        f"{str(report['verdict']).upper()}: agent {report['agent']}, canary{version} vs "
        f"{report['reference_track']}, {report['canary_runs']} vs {report['baseline_runs']} runs, "
        f"{report['mode']} test at alpha {report['alpha']:g}"
    )


def render_report(report: Mapping[str, Any]) -> str:
    """The report a release engineer acts on: the verdict line, one row per metric, then the reasons."""
    lines = [headline(report)]
    if report.get("window_start"):
        end = report.get("window_end") or "now"
        share = report.get("canary_share")
        share_text = f"; canary share {share:.3g} ({report['share_source']})" if share is not None else ""
        lines.append(f"window {report['window_start']} .. {end}{share_text}")
    metrics: list[Mapping[str, Any]] = list(report.get("metrics") or [])
    if metrics:
        rows = [
            [
                str(metric["name"]),
                _summary(metric["baseline"]),
                _summary(metric["canary"]),
                _effect(metric),
                "-" if metric["interval"] is None else "[" + ", ".join(_number(v) for v in metric["interval"]) + "]",
                _evidence(metric),
                _verdict(metric),
            ]
            for metric in metrics
        ]
        lines.append("")
        lines.extend(_table(["metric", "baseline", "canary", "effect", "interval", "evidence", "verdict"], rows))
    reasons = [*report.get("reasons", []), *(_reason(m["name"], r) for m in metrics for r in m.get("reasons", []))]
    if reasons:
        lines.append("")
        lines.extend(f"  - {reason}" for reason in reasons)
    return "\n".join(lines)


__all__ = ["headline", "render_report"]
