"""Runs as columns: the numeric form every statistic works on, validated once.

``RunRecord`` is convenient one run at a time; the tests want arrays. ``RunColumns`` holds one
array per field in arrival order (the analyzer orders by ``EndTime, RunId``), and is also what a
caller holding ClickHouse columns or a simulator can build directly, skipping the per-run objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agentwatch.collectors.drift.config import BASELINE_TRACKS, CANARY_TRACK, STOP_REASON_CATEGORIES, normalise_reason
from agentwatch.collectors.drift.model import RunRecord

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

REASON_INDEX = {reason: index for index, reason in enumerate(STOP_REASON_CATEGORIES)}
"""Stop reason -> column of a count vector (``completed`` first, then the bad reasons, ``other`` last)."""


@dataclass(frozen=True, slots=True)
class RunColumns:
    """Runs in arrival order: ``canary`` flags the canary's runs, ``reason`` indexes ``STOP_REASON_CATEGORIES``."""

    canary: BoolArray
    reason: IntArray
    steps: FloatArray
    tool_calls: FloatArray
    cost_usd: FloatArray
    duration_s: FloatArray

    def __post_init__(self) -> None:
        size = len(self.canary)
        for name in ("reason", "steps", "tool_calls", "cost_usd", "duration_s"):
            if len(getattr(self, name)) != size:
                raise ValueError(f"RunColumns.{name} has {len(getattr(self, name))} values, canary has {size}")
        if size and (self.reason.min() < 0 or self.reason.max() >= len(STOP_REASON_CATEGORIES)):
            raise ValueError("RunColumns.reason must index STOP_REASON_CATEGORIES")
        for name in ("steps", "tool_calls", "cost_usd", "duration_s"):
            values = getattr(self, name)
            if size and not np.all(np.isfinite(values)):
                raise ValueError(f"{name} has NaN or infinite values: drop or repair those runs first")
            if size and values.min() < 0:
                raise ValueError(f"{name} has negative values: a run cannot have negative {name}")

    def __len__(self) -> int:
        return len(self.canary)

    def values(self, metric: str) -> FloatArray:
        """The column of a distribution metric (``cost_usd``, ``steps``, ``tool_calls``, ``duration_s``)."""
        column: FloatArray = getattr(self, metric)
        return column

    def select(self, mask: BoolArray) -> RunColumns:
        """The runs where ``mask`` is true, order kept."""
        return RunColumns(
            self.canary[mask],
            self.reason[mask],
            self.steps[mask],
            self.tool_calls[mask],
            self.cost_usd[mask],
            self.duration_s[mask],
        )

    @staticmethod
    def concat(parts: Sequence[RunColumns]) -> RunColumns:
        """The runs of ``parts`` one after another."""
        if not parts:
            return empty_columns()
        return RunColumns(
            np.concatenate([part.canary for part in parts]),
            np.concatenate([part.reason for part in parts]),
            np.concatenate([part.steps for part in parts]),
            np.concatenate([part.tool_calls for part in parts]),
            np.concatenate([part.cost_usd for part in parts]),
            np.concatenate([part.duration_s for part in parts]),
        )


def empty_columns() -> RunColumns:
    """No runs."""
    no_floats = np.zeros(0, dtype=np.float64)
    return RunColumns(
        np.zeros(0, dtype=np.bool_), np.zeros(0, dtype=np.int64), no_floats, no_floats, no_floats, no_floats
    )


def columns_from_records(records: Sequence[RunRecord], *, canary: bool | None = None) -> RunColumns:
    """Columns of ``records`` in their order.

    ``canary`` forces every run onto one side (``compare`` knows which list is which); with None the
    run's ``track`` decides: ``canary`` is the canary, ``baseline`` or ``stable`` the baseline, and
    any other track is an error.
    """
    if canary is None:
        unknown = sorted({r.track for r in records if r.track != CANARY_TRACK and r.track not in BASELINE_TRACKS})
        if unknown:
            raise ValueError(f"unknown track(s) {unknown}: expected {CANARY_TRACK!r} or one of {list(BASELINE_TRACKS)}")
        flags = np.fromiter((r.track == CANARY_TRACK for r in records), dtype=np.bool_, count=len(records))
    else:
        flags = np.full(len(records), canary, dtype=np.bool_)

    def column(field: str) -> FloatArray:
        try:
            return np.fromiter((float(getattr(r, field)) for r in records), dtype=np.float64, count=len(records))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{field} must be a number in every run: {error}") from None

    reasons = np.fromiter(
        (REASON_INDEX[normalise_reason(r.stop_reason)] for r in records), dtype=np.int64, count=len(records)
    )
    return RunColumns(flags, reasons, column("steps"), column("tool_calls"), column("cost_usd"), column("duration_s"))
