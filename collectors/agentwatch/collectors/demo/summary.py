"""Turns exported spans into the run summary the demo prints: a pure function over span data.

Only span attributes are read (never the Python objects of the run), so the summary proves what
the telemetry carries: stop reasons, budgets hit, gateway decisions and cost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentwatch.instrumentation import semconv


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    agent: str
    tenant_id: str
    track: str
    stop_reason: str
    steps: int
    tool_calls: int
    llm_calls: int
    cost_usd: float
    budget_exhausted: str | None
    duration_ms: float
    unpriced_llm_calls: int = 0
    """LLM calls without a price: ``cost_usd`` is then a lower bound (``unknown`` if nothing was priced)."""

    @property
    def cost_label(self) -> str:
        """The cost as printed: dollars, ``≥`` dollars when some calls were unpriced, or ``unknown``."""
        if not self.unpriced_llm_calls:
            return f"{self.cost_usd:.5f}"
        return "unknown" if self.cost_usd <= 0 else f"≥{self.cost_usd:.5f}"


@dataclass
class Summary:
    runs: list[RunRow] = field(default_factory=list)
    gateway: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (tool, disposition, outcome)
    spans: int = 0

    @property
    def stop_reasons(self) -> Counter[str]:
        return Counter(run.stop_reason for run in self.runs)

    @property
    def budgets_hit(self) -> Counter[str]:
        return Counter(run.budget_exhausted for run in self.runs if run.budget_exhausted)

    @property
    def total_cost_usd(self) -> float:
        return sum(run.cost_usd for run in self.runs)

    @property
    def unpriced_runs(self) -> int:
        """Runs with an unpriced LLM call: their cost is unknown, so ``total_cost_usd`` is a lower bound."""
        return sum(1 for run in self.runs if run.unpriced_llm_calls)


def _get(attributes: Mapping[str, Any], key: str, default: Any) -> Any:
    value = attributes.get(key)
    return default if value is None else value


def summarize(spans: Iterable[Any]) -> Summary:
    """Summarize finished spans (``ReadableSpan`` or anything with name/attributes/start_time/end_time)."""
    summary = Summary()
    for span in spans:
        summary.spans += 1
        attributes: Mapping[str, Any] = span.attributes or {}
        operation = attributes.get(semconv.GEN_AI_OPERATION_NAME)
        if operation == semconv.OP_INVOKE_AGENT:
            duration = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            summary.runs.append(
                RunRow(
                    run_id=str(_get(attributes, semconv.RUN_ID, "")),
                    agent=str(_get(attributes, semconv.GEN_AI_AGENT_NAME, "")),
                    tenant_id=str(_get(attributes, semconv.TENANT_ID, "")),
                    track=str(_get(attributes, semconv.TRACK, "stable")),
                    stop_reason=str(_get(attributes, semconv.STOP_REASON, semconv.STOP_REASON_OTHER)),
                    steps=int(_get(attributes, semconv.RUN_STEPS, 0)),
                    tool_calls=int(_get(attributes, semconv.RUN_TOOL_CALLS, 0)),
                    llm_calls=int(_get(attributes, semconv.RUN_LLM_CALLS, 0)),
                    cost_usd=float(_get(attributes, semconv.RUN_COST_USD, 0.0)),
                    budget_exhausted=attributes.get(semconv.BUDGET_EXHAUSTED),
                    duration_ms=duration,
                    unpriced_llm_calls=max(
                        int(_get(attributes, semconv.RUN_UNPRICED_LLM_CALLS, 0)),
                        1 if attributes.get(semconv.RUN_COST_UNPRICED) else 0,
                    ),
                )
            )
        elif operation == semconv.OP_EXECUTE_TOOL:
            summary.gateway[
                (
                    str(_get(attributes, semconv.GEN_AI_TOOL_NAME, "?")),
                    str(_get(attributes, semconv.TOOL_DISPOSITION, "?")),
                    str(_get(attributes, semconv.TOOL_OUTCOME, "?")),
                )
            ] += 1
    return summary


def render(summary: Summary, *, width: int = 100) -> str:
    """A readable plain-text report."""
    lines = [f"{len(summary.runs)} runs, {summary.spans} spans exported", ""]
    lines.append(f"{'tenant':<10} {'track':<8} {'stop reason':<18} {'steps':>5} {'tools':>5} {'cost $':>10}  budget")
    for run in summary.runs:
        lines.append(
            f"{run.tenant_id:<10} {run.track:<8} {run.stop_reason:<18} {run.steps:>5} {run.tool_calls:>5} "
            f"{run.cost_label:>10}  {run.budget_exhausted or '-'}"
        )
    lines.append("")
    lines.append("stop reasons:   " + ", ".join(f"{k} {v}" for k, v in sorted(summary.stop_reasons.items())))
    budgets = summary.budgets_hit
    lines.append("budgets hit:    " + (", ".join(f"{k} {v}" for k, v in sorted(budgets.items())) or "none"))
    per_run = summary.total_cost_usd / max(1, len(summary.runs))
    unpriced = summary.unpriced_runs
    lines.append(
        f"total cost:     {'≥' if unpriced else ''}${summary.total_cost_usd:.5f} (${per_run:.5f} per run)"
        + (f"; {unpriced} run(s) called unpriced models, their cost is unknown" if unpriced else "")
    )
    lines.append("")
    lines.append(f"{'tool':<18} {'disposition':<14} {'outcome':<8} {'calls':>5}")
    for (tool, disposition, outcome), count in sorted(summary.gateway.items()):
        lines.append(f"{tool:<18} {disposition:<14} {outcome:<8} {count:>5}")
    return "\n".join(line[:width] for line in lines)
