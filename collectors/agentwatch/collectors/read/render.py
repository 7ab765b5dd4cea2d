"""Text rendering of the read model, apart from any SQL: what ``agentwatch runs``, ``trace`` and the demo print."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Final

from agentwatch.collectors.read.models import (
    GEN_AI_USAGE_COMPLETION_TOKENS,
    GEN_AI_USAGE_PROMPT_TOKENS,
    OPENINFERENCE_COMPLETION_TOKENS,
    OPENINFERENCE_MODEL,
    OPENINFERENCE_PROMPT_TOKENS,
    OPENINFERENCE_SPAN_KIND,
    OPENINFERENCE_TOOL_NAME,
    TRACELOOP_ENTITY_NAME,
    TRACELOOP_SPAN_KIND,
    RunSummary,
    Stats,
    TraceNode,
    TraceView,
    iso_utc,
)
from agentwatch.instrumentation import semconv

CONTENT_WIDTH: Final = 160
"""How much of one captured-content value ``render_trace(content=True)`` prints on its line."""


def format_duration_ms(milliseconds: float) -> str:
    """``0.42ms``, ``12.3ms``, ``4.21s``, ``3m05s``: short enough for a tree column."""
    if milliseconds < 10:
        return f"{milliseconds:.2f}ms"
    if milliseconds < 1000:
        return f"{milliseconds:.1f}ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def format_usd(value: float) -> str:
    """``$0.0123``, ``$1,234.50``; a non-zero amount below a cent keeps three significant digits
    (``$0.000150``, not ``$0.0002``), so per-call costs stay readable."""
    if 0 < value < 0.01:
        return f"${value:.{2 - math.floor(math.log10(value))}f}"
    return f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def format_cost(value: float, unpriced_llm_calls: int = 0) -> str:
    """A run's cost: ``unknown`` when only unpriced models were called, ``≥$X + unpriced`` when some were."""
    if unpriced_llm_calls <= 0:
        return format_usd(value)
    return "unknown" if value <= 0 else f"≥{format_usd(value)} + unpriced"


def _unpriced_calls(attributes: Mapping[str, str]) -> int:
    """Unpriced LLM calls a run span reports (``agentwatch.run.unpriced_llm_calls`` / ``.cost_unpriced``)."""
    try:
        count = int(attributes.get(semconv.RUN_UNPRICED_LLM_CALLS, "0"))
    except ValueError:
        count = 0
    return max(count, 1 if attributes.get(semconv.RUN_COST_UNPRICED) == "true" else 0)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int]) -> str:
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells)]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def render_runs(rows: Sequence[RunSummary]) -> str:
    """An aligned table, one run per line (what ``agentwatch runs`` prints)."""
    if not rows:
        return "no runs match"
    header = (
        "START (UTC)",
        "RUN",
        "TENANT",
        "AGENT",
        "VERSION",
        "TRACK",
        "STOP REASON",
        "BUDGET",
        "STEPS",
        "TOOLS",
        "LLM",
        "TOKENS IN/OUT",
        "COST",
        "DURATION",
    )
    table = [
        (
            run.start_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            run.run_id,
            run.tenant or "-",
            run.agent,
            run.version or "-",
            run.track,
            run.stop_reason,
            run.budget_exhausted or "-",
            str(run.steps),
            str(run.tool_calls),
            str(run.llm_calls),
            f"{run.input_tokens}/{run.output_tokens}",
            format_cost(run.cost_usd, run.unpriced_llm_calls),
            format_duration_ms(run.duration_s * 1000),
        )
        for run in rows
    ]
    return _table(header, table, right=frozenset({8, 9, 10, 11, 12, 13}))


def _short(attributes: Mapping[str, str], key: str) -> str:
    return attributes.get(key, "")


def _cost(attributes: Mapping[str, str], key: str) -> str:
    raw = attributes.get(key)
    try:
        return format_usd(float(raw)) if raw is not None else ""
    except ValueError:
        return raw or ""


def _run_cost(attributes: Mapping[str, str]) -> str:
    """A run span's cost, ``unknown`` / ``≥$X + unpriced`` when some of its LLM calls had no price."""
    unpriced = _unpriced_calls(attributes)
    if not unpriced:
        return _cost(attributes, semconv.RUN_COST_USD)
    try:
        return format_cost(float(attributes[semconv.RUN_COST_USD]), unpriced)
    except (KeyError, ValueError):
        return "unknown"


def _first(attributes: Mapping[str, str], *keys: str) -> str:
    return next((attributes[key] for key in keys if attributes.get(key)), "")


def _tokens(a: Mapping[str, str]) -> str:
    """``tokens=IN/OUT`` from the GenAI conventions, OpenInference or the older GenAI names; "" without any."""
    for input_key, output_key in (
        (semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
        (OPENINFERENCE_PROMPT_TOKENS, OPENINFERENCE_COMPLETION_TOKENS),
        (GEN_AI_USAGE_PROMPT_TOKENS, GEN_AI_USAGE_COMPLETION_TOKENS),
    ):
        if input_key in a or output_key in a:
            return f"tokens={a.get(input_key, '0')}/{a.get(output_key, '0')}"
    return ""


def _dialect_parts(node: TraceNode) -> list[str]:
    """What a foreign span says about itself: its GenAI operation, OpenInference or Traceloop kind, entity."""
    a = node.attributes
    parts: list[str] = []
    operation = semconv.span_operation(a)  # agentwatch's own (handoff, guardrail) or a GenAI operation
    if node.kind == "other" and operation:
        parts.append(f"op={operation}")
    if a.get(OPENINFERENCE_SPAN_KIND):
        parts.append(f"openinference={a[OPENINFERENCE_SPAN_KIND]}")
    traceloop = "/".join(filter(None, (a.get(TRACELOOP_SPAN_KIND), a.get(TRACELOOP_ENTITY_NAME))))
    if traceloop:
        parts.append(f"traceloop={traceloop}")
    if node.kind == "other" and a.get(semconv.GEN_AI_AGENT_NAME):
        parts.append(f"agent={a[semconv.GEN_AI_AGENT_NAME]}")
    return parts


def _event_parts(node: TraceNode) -> list[str]:
    """Span events by name (agentwatch's without their prefix), a repeated name once with its count."""
    counts: dict[str, int] = {}
    for event in node.events:
        name = event.name.removeprefix("agentwatch.")
        counts[name] = counts.get(name, 0) + 1
    return [f"!{name}" + (f"×{count}" if count > 1 else "") for name, count in counts.items()]


def describe(node: TraceNode) -> str:
    """The key facts of one span on one line: disposition and rule of a tool, model/tokens/cost of an LLM call ...

    Foreign spans (any GenAI dialect or plain OTel) show what their dialect says: model and tokens of
    an LLM call, a tool's name, the OpenInference or Traceloop span kind, a non-internal span kind.
    """
    a = node.attributes
    parts: list[str] = []
    if node.kind == "run" and (semconv.RUN_ID in a or semconv.STOP_REASON in a):
        parts.append(f"stop={_short(a, semconv.STOP_REASON) or '?'}")
        if a.get(semconv.BUDGET_EXHAUSTED):
            parts.append(f"budget={a[semconv.BUDGET_EXHAUSTED]}")
        for label, key in (("steps", semconv.RUN_STEPS), ("tools", semconv.RUN_TOOL_CALLS)):
            if key in a:
                parts.append(f"{label}={a[key]}")
        if semconv.GEN_AI_USAGE_INPUT_TOKENS in a:
            parts.append(
                f"tokens={a[semconv.GEN_AI_USAGE_INPUT_TOKENS]}/{a.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, '0')}"
            )
        if semconv.RUN_COST_USD in a:
            parts.append(f"cost={_run_cost(a)}")
    elif node.kind == "run":  # another instrumentation's agent span
        if a.get(semconv.GEN_AI_AGENT_NAME):
            parts.append(f"agent={a[semconv.GEN_AI_AGENT_NAME]}")
        if _tokens(a):
            parts.append(_tokens(a))
    elif node.kind == "step":
        parts.append(f"#{_short(a, semconv.STEP_INDEX)}")
    elif node.kind == "llm":
        model = _first(a, semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_REQUEST_MODEL, OPENINFERENCE_MODEL)
        if model:
            parts.append(f"model={model}")
        if _tokens(a):
            parts.append(_tokens(a))
        if semconv.COST_USD in a:
            parts.append(f"cost={_cost(a, semconv.COST_USD)}")
        elif a.get(semconv.COST_UNPRICED) == "true":
            parts.append("cost=unknown(unpriced)")
    elif node.kind == "tool":
        tool = _first(a, semconv.GEN_AI_TOOL_NAME, OPENINFERENCE_TOOL_NAME, TRACELOOP_ENTITY_NAME)
        if tool and tool not in node.name:
            parts.append(f"tool={tool}")
        decision = "/".join(filter(None, (a.get(semconv.TOOL_DISPOSITION), a.get(semconv.TOOL_OUTCOME))))
        if decision:
            parts.append(decision)
        if a.get(semconv.POLICY_RULE):
            parts.append(f"rule={a[semconv.POLICY_RULE]}")
        if a.get(semconv.TOOL_RISK):
            parts.append(f"risk={a[semconv.TOOL_RISK]}")
    parts.extend(_dialect_parts(node))
    if node.span_kind not in ("Internal", "Unspecified", ""):
        parts.append(f"({node.span_kind.lower()})")
    if node.status == "Error":
        parts.append(f"ERROR {a.get(semconv.ERROR_TYPE) or node.status_message}".rstrip())
    parts.extend(_event_parts(node))
    return "  ".join(parts)


def _one_line(value: str, width: int) -> str:
    """A content value on one line (line breaks shown as ``\\n``), cut to ``width`` characters with ``…``."""
    flat = value.replace("\r", "").replace("\n", "\\n")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render_trace(view: TraceView, *, content: bool = False, content_width: int = CONTENT_WIDTH) -> str:
    """An indented tree with start offsets and durations (what ``agentwatch trace`` prints).

    With ``content=True`` each span's captured content (as redacted at ingest) follows its line, one
    attribute a line, cut to ``content_width`` characters.
    """
    run = view.run
    lines: list[str] = []
    if run is not None:
        lines.append(
            f"run {run.run_id}  agent={run.agent} version={run.version or '-'} track={run.track} "
            f"tenant={run.tenant or '-'}  stop={run.stop_reason}"
            + (f" budget={run.budget_exhausted}" if run.budget_exhausted else "")
            + f"  cost={format_cost(run.cost_usd, run.unpriced_llm_calls)}"
        )
    services = sorted({node.service_name for node in view.nodes() if node.service_name})
    lines += [
        f"trace {view.trace_id}  {view.span_count} spans  {format_duration_ms(view.duration_ms)}  "
        f"started {iso_utc(view.start_time)}"
        + (f"  services={','.join(services)}" if run is None and services else "")
        + ("  (truncated)" if view.truncated else ""),
        "",
        f"{'START':>10} {'DURATION':>10}  SPAN",
    ]

    def emit(node: TraceNode, prefix: str, branch: str) -> None:
        label = f"{prefix}{branch}{node.name}"
        detail = describe(node)
        timing = f"{format_duration_ms(node.start_offset_ms):>10} {format_duration_ms(node.duration_ms):>10}"
        lines.append(f"{timing}  {label}" + (f"  {detail}" if detail else ""))
        child_prefix = prefix + ("" if not branch else ("│  " if branch == "├─ " else "   "))
        if content and node.content:
            under = child_prefix + ("│  " if node.children else "   ")
            for key, value in node.content.items():
                lines.append(f"{'':>21}  {under}» {key}: {_one_line(value, content_width)}")
        for index, child in enumerate(node.children):
            emit(child, child_prefix, "└─ " if index == len(node.children) - 1 else "├─ ")

    for root in view.roots:
        emit(root, "", "")
    if not view.roots:
        lines.append(f"{'':>21}  (no spans stored for this trace)")
    return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f}%)" if whole else str(part)


def render_stats(view: Stats) -> str:
    """The fleet report the demo prints: stop reasons per track, budgets, denials, cost, top tools."""
    if not view.stop_reasons:
        return "no runs in this window"
    tracks = sorted({(row["agent"], row["track"]) for row in view.stop_reasons})
    totals = {key: sum(int(r["runs"]) for r in view.stop_reasons if (r["agent"], r["track"]) == key) for key in tracks}
    reasons = sorted({str(row["stop_reason"]) for row in view.stop_reasons})
    counts = {(r["agent"], r["track"], r["stop_reason"]): int(r["runs"]) for r in view.stop_reasons}
    sections = [
        "Runs by stop reason",
        _table(
            ("STOP REASON", *(f"{agent}/{track}" for agent, track in tracks)),
            [
                (
                    reason,
                    *(_share(counts.get((agent, track, reason), 0), totals[(agent, track)]) for agent, track in tracks),
                )
                for reason in reasons
            ]
            + [("total", *(str(totals[key]) for key in tracks))],
            right=frozenset(range(1, len(tracks) + 1)),
        ),
        "",
        "Cost and effort per run",
        _table(
            ("AGENT/TRACK", "RUNS", "MEAN COST", "P95 COST", "TOTAL", "MEAN STEPS", "MEAN DURATION"),
            [
                (
                    f"{row['agent']}/{row['track']}",
                    str(row["runs"]),
                    format_usd(float(row["mean_usd"])),
                    format_usd(float(row["p95_usd"])),
                    format_usd(float(row["total_usd"])),
                    f"{float(row['mean_steps']):.2f}",
                    format_duration_ms(float(row["mean_duration_s"]) * 1000),
                )
                for row in view.cost
            ],
            right=frozenset(range(1, 7)),
        ),
    ]
    if view.budgets:
        sections += [
            "",
            "Budgets hit",
            _table(
                ("AGENT/TRACK", "BUDGET", "RUNS"),
                [(f"{r['agent']}/{r['track']}", str(r["budget"]), str(r["runs"])) for r in view.budgets],
                right=frozenset({2}),
            ),
        ]
    if view.denials:
        sections += [
            "",
            "Tool calls the gateway stopped",
            _table(
                ("AGENT/TRACK", "TOOL", "DISPOSITION", "RULE", "CALLS"),
                [
                    (
                        f"{r['agent']}/{r['track']}",
                        str(r["tool"]),
                        str(r["disposition"]),
                        str(r["rule"]),
                        str(r["calls"]),
                    )
                    for r in view.denials
                ],
                right=frozenset({4}),
            ),
        ]
    if view.top_tools:
        sections += [
            "",
            "Top tools",
            _table(
                ("AGENT", "TOOL", "CALLS", "STOPPED", "ERRORS"),
                [
                    (str(r["agent"]), str(r["tool"]), str(r["calls"]), str(r["denied"]), str(r["errors"]))
                    for r in view.top_tools
                ],
                right=frozenset({2, 3, 4}),
            ),
        ]
    return "\n".join(sections)


__all__ = [
    "CONTENT_WIDTH",
    "describe",
    "format_cost",
    "format_duration_ms",
    "format_usd",
    "render_runs",
    "render_stats",
    "render_trace",
]
