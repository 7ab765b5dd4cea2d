"""The demo's replay section: runs recorded on one runtime re-run on another, one parity line per direction.

The example agent's five tickets (a completed order lookup, a run stopped by its tool-call budget,
a denied write, an approved and a rejected approval) run once on the custom loop and once on the
OpenAI Agents SDK with content capture on, and are exported to the demo's collector like any other
traffic. Once stored, each runtime's recordings are replayed onto the other (``agentwatch replay``'s
core, reading from ClickHouse): tools answer from the recording, nothing runs for real, and the
report says whether the other runtime stops for the same reasons with the same tool calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from opentelemetry.sdk.trace import TracerProvider

from agentwatch.collectors._examples import load_example
from agentwatch.collectors.replay.parity import ParityReport
from agentwatch.collectors.replay.recordings import RecordingFilter, load_recordings
from agentwatch.collectors.replay.runner import replay, replay_settings
from agentwatch.collectors.store.clickhouse import ClickHouseStore

DIRECTIONS: Final = (("custom", "openai-agents"), ("openai-agents", "custom"))
"""(recorded on, replayed onto): the custom loop to the Agents SDK, and back."""


def _example_for(runtime: str) -> Any:
    fleet = load_example("fleet")
    return load_example(fleet.RUNTIME_EXAMPLES[runtime])


def record_scenarios(provider: TracerProvider) -> int:
    """Run the example's tickets on every source runtime with content capture on; the number of runs."""
    settings = replay_settings()  # the environment's settings with content capture on
    sources = dict.fromkeys(source for source, _ in DIRECTIONS)
    return sum(
        len(_example_for(runtime).run_scenarios(tracer_provider=provider, settings=settings)) for runtime in sources
    )


@dataclass(frozen=True)
class ReplayResult:
    """One direction's parity report."""

    source: str
    target: str
    report: ParityReport

    def to_dict(self) -> dict[str, Any]:
        replayed = self.report.replayed
        return {
            "recorded_on": self.source,
            "replayed_onto": self.target,
            "runs": len(self.report.runs),
            "replayed": len(replayed),
            "stop_reasons_agree": sum(run.stop_reason_agrees for run in replayed),
            "agreement": self.report.agreement,
            "tool_sequence_similarity": self.report.mean_similarity,
            "steps_delta": sum(run.replayed_steps - run.recorded_steps for run in replayed),
            "cost_delta_usd": round(sum(run.replayed_cost_usd - run.recorded_cost_usd for run in replayed), 9),
            "verdict": self.report.verdict,
        }


def replay_recorded(store: ClickHouseStore, *, since: datetime, until: datetime | None = None) -> list[ReplayResult]:
    """Replay the runs recorded in [since, until) onto the other runtime of each direction."""
    recordings = load_recordings(store, RecordingFilter(since=since, until=until, limit=100))
    results = []
    for source, target in DIRECTIONS:
        runs = [run for run in recordings if run.runtime == source]
        report = replay(runs, _example_for(target).replay_target(), target_name=f"{target} example")
        results.append(ReplayResult(source, target, report))
    return results


def render_replay(results: list[ReplayResult]) -> str:
    """One line per direction, then the verdict."""
    lines = ["Replay for migration parity (recorded runs re-run on the other runtime; tools answer from the recording)"]
    for result in results:
        row = result.to_dict()
        similarity = row["tool_sequence_similarity"]
        verdict = "parity" if row["verdict"] == "pass" else str(row["verdict"])
        lines.append(
            f"  {result.source:>13} -> {result.target:<13}  {row['replayed']} runs  "
            f"stop reasons agree {row['stop_reasons_agree']}/{row['replayed']}  "
            f"tool sequences {'n/a' if similarity is None else f'{similarity:.2f}'}  "
            f"steps {row['steps_delta']:+d}  cost {row['cost_delta_usd']:+.6f} USD  -> {verdict}"
        )
    lines.append("  (agentwatch replay --target MODULE:FACTORY does the same for your runs)")
    return "\n".join(lines)
