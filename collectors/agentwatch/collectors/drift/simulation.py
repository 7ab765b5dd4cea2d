"""Synthetic agent runs for checking the drift statistics: realistic mixes, reproducible from a seed.

A run ends ``completed`` about 85% of the time; budget stops, errors, policy denials and guardrails
share the rest. Steps depend on the stop reason (a ``max_steps`` run used the whole step budget),
tool calls follow steps, cost is lognormal per step (so heavy-tailed per run) and duration grows
with steps. A ``Profile`` describes one track; the canary's may move the mix or scale cost/steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from agentwatch.collectors.drift.columns import REASON_INDEX, RunColumns

DEFAULT_MIX: dict[str, float] = {
    "completed": 0.85,
    "max_steps": 0.08,
    "max_usd": 0.02,
    "error": 0.02,
    "max_time": 0.01,
    "policy_denied": 0.01,
    "guardrail": 0.005,
    "max_tool_calls": 0.005,
}
STEP_BUDGET = 12


@dataclass(frozen=True, slots=True)
class Profile:
    """How one track's runs are distributed: the stop-reason mix and multipliers on cost and steps."""

    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    cost_factor: float = 1.0
    extra_steps: float = 0.0

    def __post_init__(self) -> None:
        if abs(sum(self.mix.values()) - 1.0) > 1e-9:
            raise ValueError(f"mix must sum to 1, sums to {sum(self.mix.values())}")

    def with_reason(self, reason: str, share: float) -> Profile:
        """The same profile with ``reason`` at ``share``, taken from (or given back to) ``completed``."""
        mix = dict(self.mix)
        mix["completed"] -= share - mix.get(reason, 0.0)
        mix[reason] = share
        return replace(self, mix=mix)


def simulate(
    rng: np.random.Generator,
    runs: int,
    canary_share: float,
    baseline: Profile | None = None,
    canary: Profile | None = None,
) -> RunColumns:
    """``runs`` runs in arrival order, each a canary run with probability ``canary_share``."""
    baseline, canary = baseline or Profile(), canary or Profile()
    is_canary = rng.random(runs) < canary_share
    reasons = np.empty(runs, dtype=np.int64)
    steps = np.empty(runs, dtype=np.float64)
    cost = np.empty(runs, dtype=np.float64)
    for flag, profile in ((False, baseline), (True, canary)):
        rows = is_canary == flag
        count = int(rows.sum())
        names = list(profile.mix)
        drawn = rng.choice(len(names), size=count, p=[profile.mix[name] for name in names])
        codes = np.array([REASON_INDEX[name] for name in names], dtype=np.int64)[drawn]
        base_steps = 2 + rng.poisson(3.0 + profile.extra_steps, size=count)
        early = 1 + rng.poisson(1.5, size=count)  # a run stopped by a guard or an error ends early
        run_steps = np.where(codes == REASON_INDEX["completed"], np.minimum(base_steps, STEP_BUDGET - 1), early)
        run_steps = np.where(codes == REASON_INDEX["max_steps"], STEP_BUDGET, run_steps)
        per_step = rng.lognormal(np.log(0.004), 0.6, size=count)
        reasons[rows], steps[rows] = codes, run_steps
        cost[rows] = run_steps * per_step * profile.cost_factor
    tool_calls = rng.binomial(steps.astype(np.int64), 0.6).astype(np.float64)
    duration = steps * rng.lognormal(np.log(1.5), 0.5, size=runs) + 0.5
    return RunColumns(is_canary, reasons, steps, tool_calls, cost, duration)
