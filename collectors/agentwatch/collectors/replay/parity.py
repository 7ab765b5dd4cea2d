"""Parity between a recorded run and its replay on another runtime: scores, a report, and its rendering.

Per run: does the stop reason agree, how similar are the tool sequences (one minus the normalised
edit distance over ``(tool, canonical arguments)``), and how far apart are steps, tool calls and
cost. Overall: the share of replayed runs whose stop reason agrees and the mean sequence
similarity, each checked against a threshold. Pure functions over plain data, so a test or a CI job
can score replays it ran itself; the runner lives in ``replay``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from agentwatch.collectors.replay.recordings import RecordedRun

RunStatus = Literal["match", "diverged", "skipped", "failed"]
Verdict = Literal["pass", "fail", "error", "empty"]

_COST_TOLERANCE_USD: Final = 1e-9
_LABEL_ARGUMENTS: Final = 60
_LISTED_CALLS: Final = 2  # a run that skipped a dozen calls is summed up, not listed


def canonical_arguments(text: str) -> str:
    """Captured arguments in one spelling: a JSON object with sorted keys and no spaces; other text as is."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if not isinstance(value, dict):
        return text
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ToolStep:
    """One tool call in a sequence: the tool, its canonical arguments and what the gateway decided."""

    tool: str
    arguments: str
    disposition: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """What sequences are compared on (the disposition is a consequence, not the behaviour)."""
        return (self.tool, self.arguments)

    def to_dict(self) -> dict[str, str]:
        return {"tool": self.tool, "arguments": self.arguments, "disposition": self.disposition}

    def label(self) -> str:
        arguments = self.arguments if len(self.arguments) <= _LABEL_ARGUMENTS else self.arguments[:57] + "..."
        return f"{self.tool}{arguments}" if arguments.startswith("{") else f"{self.tool}({arguments})"


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of whole items."""
    previous = list(range(len(b) + 1))
    for i, item in enumerate(a, start=1):
        current = [i]
        for j, other in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other)))
        previous = current
    return previous[-1]


def sequence_similarity(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """``1 - edit_distance / max(len)``: 1.0 for equal sequences (two empty ones too), 0.0 for disjoint ones."""
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - edit_distance(a, b) / longest


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What the replayed run did, read from its own telemetry."""

    run_id: str
    runtime: str
    stop_reason: str
    steps: int
    tool_calls: int
    llm_calls: int
    cost_usd: float
    output: str | None
    tools: tuple[ToolStep, ...]
    unrecorded: tuple[ToolStep, ...] = ()  # asked for, not in the recording: refused, never executed
    never_made: tuple[ToolStep, ...] = ()  # in the recording, never asked for
    target_error: str | None = None  # what the target raised (a runtime may re-raise a replayed tool error)


@dataclass(frozen=True, slots=True)
class RunParity:
    """One recorded run against its replay; ``divergences`` name every difference in words."""

    run_id: str
    agent: str
    tenant: str
    recorded_runtime: str
    status: RunStatus
    reason: str | None = None  # why a run was skipped or failed
    recorded_stop_reason: str = ""
    replayed_stop_reason: str = ""
    sequence_similarity: float = 0.0
    tool_name_similarity: float = 0.0
    recorded_steps: int = 0
    replayed_steps: int = 0
    recorded_tool_calls: int = 0
    replayed_tool_calls: int = 0
    recorded_cost_usd: float = 0.0
    replayed_cost_usd: float = 0.0
    output_matches: bool | None = None
    unrecorded: tuple[str, ...] = ()
    never_made: tuple[str, ...] = ()
    divergences: tuple[str, ...] = ()
    replay_run_id: str = ""
    target_error: str | None = None
    recorded_tools: tuple[ToolStep, ...] = ()
    replayed_tools: tuple[ToolStep, ...] = ()

    @property
    def replayed(self) -> bool:
        return self.status in ("match", "diverged")

    @property
    def stop_reason_agrees(self) -> bool:
        return self.replayed and self.recorded_stop_reason == self.replayed_stop_reason

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "agent": self.agent,
            "tenant": self.tenant,
            "recorded_runtime": self.recorded_runtime,
            "status": self.status,
        }
        if not self.replayed:
            out["reason"] = self.reason
            return out
        out.update(
            replay_run_id=self.replay_run_id,
            stop_reason={"recorded": self.recorded_stop_reason, "replayed": self.replayed_stop_reason},
            stop_reason_agrees=self.stop_reason_agrees,
            sequence_similarity=round(self.sequence_similarity, 6),
            tool_name_similarity=round(self.tool_name_similarity, 6),
            steps={"recorded": self.recorded_steps, "replayed": self.replayed_steps},
            tool_calls={"recorded": self.recorded_tool_calls, "replayed": self.replayed_tool_calls},
            cost_usd={"recorded": self.recorded_cost_usd, "replayed": self.replayed_cost_usd},
            output_matches=self.output_matches,
            unrecorded_calls=list(self.unrecorded),
            never_made_calls=list(self.never_made),
            divergences=list(self.divergences),
            target_error=self.target_error,
            tool_sequence={
                "recorded": [step.to_dict() for step in self.recorded_tools],
                "replayed": [step.to_dict() for step in self.replayed_tools],
            },
        )
        return out


def recorded_steps(run: RecordedRun) -> tuple[ToolStep, ...]:
    """The recorded tool sequence, arguments in canonical form."""
    return tuple(ToolStep(call.tool, canonical_arguments(call.arguments), call.disposition) for call in run.calls)


def _first_difference(recorded: Sequence[ToolStep], replayed: Sequence[ToolStep]) -> str | None:
    for index in range(max(len(recorded), len(replayed))):
        mine = recorded[index] if index < len(recorded) else None
        theirs = replayed[index] if index < len(replayed) else None
        if mine is None or theirs is None or mine.key != theirs.key:
            was = mine.label() if mine is not None else "no call"
            now = theirs.label() if theirs is not None else "no call"
            return f"tool sequence differs from call {index + 1}: recorded {was}, replayed {now}"
    return None


def _never_made(steps: Sequence[ToolStep]) -> str:
    if len(steps) == 1:
        return f"never called the recorded {steps[0].label()}"
    shown = ", ".join(step.label() for step in steps[:_LISTED_CALLS])
    more = f" and {len(steps) - _LISTED_CALLS} more" if len(steps) > _LISTED_CALLS else ""
    return f"never called {len(steps)} recorded calls: {shown}{more}"


def compare(recorded: RecordedRun, replayed: ReplayOutcome) -> RunParity:
    """Score one replay against its recording."""
    mine = recorded_steps(recorded)
    theirs = replayed.tools
    divergences: list[str] = []
    if recorded.stop_reason != replayed.stop_reason:
        divergences.append(f"stop reason {recorded.stop_reason} -> {replayed.stop_reason}")
    divergences.extend(
        f"called {step.label()}, which the recording does not have: refused, not executed"
        for step in replayed.unrecorded
    )
    if replayed.never_made:
        divergences.append(_never_made(replayed.never_made))
    difference = _first_difference(mine, theirs)
    if difference is not None:
        divergences.append(difference)
    if recorded.steps != replayed.steps:
        divergences.append(f"steps {recorded.steps} -> {replayed.steps}")
    if abs(recorded.cost_usd - replayed.cost_usd) > _COST_TOLERANCE_USD:
        divergences.append(f"cost ${recorded.cost_usd:.6f} -> ${replayed.cost_usd:.6f}")
    output_matches = None
    if recorded.output and replayed.output is not None:
        output_matches = recorded.output == replayed.output
        if not output_matches:
            divergences.append("the final output differs")
    return RunParity(
        run_id=recorded.run_id,
        agent=recorded.agent,
        tenant=recorded.tenant,
        recorded_runtime=recorded.runtime,
        status="diverged" if divergences else "match",
        recorded_stop_reason=recorded.stop_reason,
        replayed_stop_reason=replayed.stop_reason,
        sequence_similarity=sequence_similarity([s.key for s in mine], [s.key for s in theirs]),
        tool_name_similarity=sequence_similarity([s.tool for s in mine], [s.tool for s in theirs]),
        recorded_steps=recorded.steps,
        replayed_steps=replayed.steps,
        recorded_tool_calls=recorded.tool_calls,
        replayed_tool_calls=replayed.tool_calls,
        recorded_cost_usd=recorded.cost_usd,
        replayed_cost_usd=replayed.cost_usd,
        output_matches=output_matches,
        unrecorded=tuple(step.label() for step in replayed.unrecorded),
        never_made=tuple(step.label() for step in replayed.never_made),
        divergences=tuple(divergences),
        replay_run_id=replayed.run_id,
        target_error=replayed.target_error,
        recorded_tools=mine,
        replayed_tools=theirs,
    )


def not_replayed(recorded: RecordedRun, status: Literal["skipped", "failed"], reason: str) -> RunParity:
    """A run that was skipped (no usable recording) or whose replay failed (the target broke)."""
    return RunParity(
        run_id=recorded.run_id,
        agent=recorded.agent,
        tenant=recorded.tenant,
        recorded_runtime=recorded.runtime,
        status=status,
        reason=reason,
        recorded_stop_reason=recorded.stop_reason,
    )


# --- the report ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParityThresholds:
    """The bar a replay must clear: stop-reason agreement and mean tool-sequence similarity (0..1)."""

    min_agreement: float = 0.95
    min_similarity: float = 0.90

    def __post_init__(self) -> None:
        for name in ("min_agreement", "min_similarity"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")


@dataclass(frozen=True)
class ParityReport:
    """Every run's parity and the overall verdict against ``thresholds``."""

    target: str
    runtime: str
    thresholds: ParityThresholds
    runs: tuple[RunParity, ...] = field(default_factory=tuple)

    @property
    def replayed(self) -> tuple[RunParity, ...]:
        return tuple(run for run in self.runs if run.replayed)

    def count(self, status: RunStatus) -> int:
        return sum(1 for run in self.runs if run.status == status)

    @property
    def agreement(self) -> float | None:
        """Share of replayed runs whose stop reason agrees (None when nothing was replayed)."""
        replayed = self.replayed
        return sum(run.stop_reason_agrees for run in replayed) / len(replayed) if replayed else None

    @property
    def mean_similarity(self) -> float | None:
        replayed = self.replayed
        return sum(run.sequence_similarity for run in replayed) / len(replayed) if replayed else None

    @property
    def verdict(self) -> Verdict:
        """``error`` if a replay failed, ``empty`` if none ran, else ``pass``/``fail`` against the thresholds."""
        if self.count("failed"):
            return "error"
        agreement, similarity = self.agreement, self.mean_similarity
        if agreement is None or similarity is None:
            return "empty"
        if agreement >= self.thresholds.min_agreement and similarity >= self.thresholds.min_similarity:
            return "pass"
        return "fail"

    def stop_reason_pairs(self) -> dict[str, int]:
        """``recorded -> replayed`` counts over replayed runs (the confusion matrix, flattened)."""
        pairs = Counter(f"{run.recorded_stop_reason} -> {run.replayed_stop_reason}" for run in self.replayed)
        return dict(sorted(pairs.items()))

    def to_dict(self) -> dict[str, Any]:
        replayed = self.replayed
        step_deltas = [run.replayed_steps - run.recorded_steps for run in replayed]
        return {
            "target": self.target,
            "runtime": self.runtime,
            "verdict": self.verdict,
            "thresholds": {
                "min_agreement": self.thresholds.min_agreement,
                "min_similarity": self.thresholds.min_similarity,
            },
            "summary": {
                "runs": len(self.runs),
                "replayed": len(replayed),
                "matching": self.count("match"),
                "diverged": self.count("diverged"),
                "skipped": self.count("skipped"),
                "failed": self.count("failed"),
                "stop_reason_agreement": self.agreement,
                "mean_sequence_similarity": self.mean_similarity,
                "mean_step_delta": sum(step_deltas) / len(step_deltas) if step_deltas else None,
                "recorded_cost_usd": round(sum(run.recorded_cost_usd for run in replayed), 9),
                "replayed_cost_usd": round(sum(run.replayed_cost_usd for run in replayed), 9),
                "unrecorded_calls": sum(len(run.unrecorded) for run in replayed),
                "never_made_calls": sum(len(run.never_made) for run in replayed),
                "stop_reasons": self.stop_reason_pairs(),
            },
            "runs": [run.to_dict() for run in self.runs],
        }


__all__ = [
    "ParityReport",
    "ParityThresholds",
    "ReplayOutcome",
    "RunParity",
    "RunStatus",
    "ToolStep",
    "Verdict",
    "canonical_arguments",
    "compare",
    "edit_distance",
    "not_replayed",
    "recorded_steps",
    "sequence_similarity",
]
