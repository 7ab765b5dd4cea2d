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


def _effect(metric: Mapping[str, Any]) -> str:
    """The effect, and for a distribution the change of its mean too (what the practical floor judges)."""
    if metric["effect"] is None:
        return "-"
    shown = _number(float(metric["effect"]))
    baseline, canary = metric["baseline"], metric["canary"]
    if "median" in baseline and "mean" in baseline and "mean" in canary and float(baseline["mean"]) > 0:
        change = float(canary["mean"]) / float(baseline["mean"]) - 1
        shown += f", mean {change:+.0%}"
    return shown


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
                str(metric["verdict"]),
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
