"""``agentwatch replay``: re-run recorded runs on another runtime and report parity with the recording.

Recorded runs come from a running collector's read API (``--collector URL``) or a store opened here
(``--clickhouse URL``), chosen as for ``agentwatch runs``; they are selected by id or by the same
filters. ``--target module:factory`` names the runtime to replay on (see ``agentwatch.collectors.replay.runner``).
Progress goes to stderr (when it is a terminal, or with ``--progress``); the report is a table, or
JSON with ``--json``.

Exit codes: 0 parity met; 1 parity below a threshold; 2 error (bad usage, store or collector
unreachable, a target that cannot be loaded, or a replay that produced no run); 3 nothing to compare
(no run matched, or none had a recording).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import IO, Final

from agentwatch.collectors.cli.read import (
    CollectorSource,
    ReadError,
    StoreSource,
    add_source_flags,
    choose_source,
)
from agentwatch.collectors.read.filters import InvalidQuery
from agentwatch.collectors.replay.parity import ParityReport, ParityThresholds, RunParity
from agentwatch.collectors.replay.recordings import RecordedRun, RecordingFilter, filter_params

EXIT_PARITY: Final = 0
EXIT_BELOW_THRESHOLD: Final = 1
EXIT_ERROR: Final = 2
EXIT_NOTHING: Final = 3
_EXIT_BY_VERDICT: Final = {
    "pass": EXIT_PARITY,
    "fail": EXIT_BELOW_THRESHOLD,
    "error": EXIT_ERROR,
    "empty": EXIT_NOTHING,
}
_EXAMPLE_RUNS: Final = 3  # run ids shown per skip reason; the JSON report lists them all
_SKIP_DETAILS: Final = (  # per-run details of a skip reason, left out so that runs group by cause
    (re.compile(r"tool call \d+ \(([^)]*)\)"), r"a tool call (\1)"),
    (re.compile(r"only \d+ of its \d+ tool calls are in the store"), "some of its tool calls are not in the store"),
)


# --- where recordings come from ---------------------------------------------------------------------


class CollectorRecordings(CollectorSource):
    """Recordings from a running collector (``GET /api/v1/recordings``)."""

    def recordings(self, params: dict[str, str], flt: RecordingFilter) -> list[RecordedRun]:
        document = self.get_document("/api/v1/recordings", params)
        if document is None:
            raise ReadError(f"{self.description} has no /api/v1/recordings: upgrade it, or pass --clickhouse URL")
        return [RecordedRun.from_dict(row) for row in document.get("recordings", [])]


class StoreRecordings(StoreSource):
    """Recordings from a store opened by this process."""

    def recordings(self, params: dict[str, str], flt: RecordingFilter) -> list[RecordedRun]:
        from agentwatch.collectors.replay.recordings import load_recordings

        result: list[RecordedRun] = self.run_query(lambda: load_recordings(self.store, flt))
        return result


def open_recordings(args: argparse.Namespace) -> CollectorRecordings | StoreRecordings:
    """The source the flags name, or the local collector, or the default embedded store if it exists."""
    return choose_source(args, CollectorRecordings, StoreRecordings)


# --- progress and rendering -----------------------------------------------------------------------------


class ProgressBar:
    """A one-line bar on ``stream``, redrawn after each run; silent when disabled."""

    def __init__(self, stream: IO[str], *, enabled: bool, width: int = 30) -> None:
        self.stream = stream
        self.enabled = enabled
        self.width = width

    def __call__(self, done: int, total: int, parity: RunParity) -> None:
        if not self.enabled:
            return
        filled = self.width * done // max(total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\rreplaying [{bar}] {done}/{total} {parity.run_id[:12]} {parity.status:<8}")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _cells(run: RunParity) -> list[str]:
    if not run.replayed:
        return [run.run_id[:12], run.tenant or "-", run.recorded_stop_reason or "-", "-", "-", "-", run.status]
    stop = run.recorded_stop_reason
    if not run.stop_reason_agrees:
        stop = f"{run.recorded_stop_reason} -> {run.replayed_stop_reason}"
    cost = run.replayed_cost_usd - run.recorded_cost_usd
    return [
        run.run_id[:12],
        run.tenant or "-",
        stop,
        f"{run.sequence_similarity:.2f}",
        f"{run.recorded_steps}->{run.replayed_steps}",
        f"{cost:+.6f}",
        run.status,
    ]


def skip_cause(reason: str) -> str:
    """A skip reason without its per-run details (which tool call, how many), so runs group by cause."""
    for pattern, replacement in _SKIP_DETAILS:
        reason = pattern.sub(replacement, reason)
    return reason


def skipped_by_cause(runs: Sequence[RunParity]) -> list[tuple[str, list[str]]]:
    """The skipped runs' ids per cause, the most frequent cause first (then in order of appearance)."""
    causes: dict[str, list[str]] = {}
    for run in runs:
        if run.status == "skipped":
            causes.setdefault(skip_cause(run.reason or "no reason given"), []).append(run.run_id)
    return sorted(causes.items(), key=lambda item: -len(item[1]))


def _skip_line(cause: str, run_ids: Sequence[str]) -> str:
    shown = ", ".join(run_ids[:_EXAMPLE_RUNS])
    more = f" and {len(run_ids) - _EXAMPLE_RUNS} more" if len(run_ids) > _EXAMPLE_RUNS else ""
    runs = "run" if len(run_ids) == 1 else "runs"
    return f"skipped {len(run_ids)} {runs}: {cause}; {shown}{more}"


def render_report(report: ParityReport) -> str:
    """The replayed runs as a table, divergences and failures in words, one line per skip cause, the verdict.

    Skipped runs (no usable recording) are not listed one by one: a fleet recorded without content
    capture would bury the replayed runs under identical lines. ``--json`` lists every run.
    """
    header = ["RUN", "TENANT", "STOP REASON", "TOOL SEQ", "STEPS", "COST Δ USD", "STATUS"]
    rows = [_cells(run) for run in report.runs if run.status != "skipped"]
    lines = [f"Replay on {report.runtime} ({report.target}): {len(report.runs)} recorded runs"]
    if rows:
        widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
        for cells in [header, *rows]:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
    details = [
        run for run in report.runs if run.status != "skipped" and (run.divergences or run.reason or run.target_error)
    ]
    if details:
        lines.append("")
    for run in details:
        lines.append(f"{run.run_id} ({run.status}):")
        lines.extend(f"  - {text}" for text in (*run.divergences, *((run.reason,) if run.reason else ())))
        if run.target_error:
            lines.append(f"  - the target raised {run.target_error}")
    skipped = skipped_by_cause(report.runs)
    if skipped:
        lines.append("")
        lines.extend(_skip_line(cause, run_ids) for cause, run_ids in skipped)
    thresholds = report.thresholds
    replayed = len(report.replayed)
    agreeing = sum(run.stop_reason_agrees for run in report.replayed)
    lines += [
        "",
        f"replayed {replayed}, matching {report.count('match')}, diverged {report.count('diverged')}, "
        f"skipped {report.count('skipped')}, failed {report.count('failed')}",
        f"stop-reason agreement {agreeing}/{replayed} = {_percent(report.agreement)} "
        f"(min {_percent(thresholds.min_agreement)})",
        f"tool-sequence similarity {_percent(report.mean_similarity)} mean (min {_percent(thresholds.min_similarity)})",
    ]
    verdicts = {
        "pass": "-> parity met",
        "fail": "-> PARITY BELOW THRESHOLD",
        "error": "-> ERROR: some replays produced no run (see above)",
        "empty": "-> nothing to compare: no run matched, or none had a recording (enable content capture)",
    }
    lines.append(verdicts[report.verdict])
    return "\n".join(lines)


# --- the command ---------------------------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"agentwatch replay: {message}", file=sys.stderr)
    return code


def _selection(args: argparse.Namespace) -> tuple[dict[str, str], RecordingFilter]:
    params = filter_params(
        [
            ("agent", args.agent),
            ("track", args.track),
            ("tenant", args.tenant),
            ("since", args.since),
            ("until", args.until),
            ("limit", args.limit),
            ("run_ids", ",".join(args.run_ids) if args.run_ids else None),
        ]
    )
    return params, RecordingFilter.from_params(params)


def replay_command(args: argparse.Namespace) -> int:
    """``agentwatch replay``: load the target, read the recordings, replay them, report, exit by verdict."""
    from agentwatch.collectors.replay.runner import TargetError, load_target, replay
    from agentwatch.collectors.replay.sdk_logging import quiet_missing_api_key_warning

    quiet_missing_api_key_warning()  # replays run without an OpenAI key: the SDK's exporter skips, by design

    try:
        thresholds = ParityThresholds(min_agreement=args.min_agreement, min_similarity=args.min_similarity)
        params, flt = _selection(args)
    except (ValueError, InvalidQuery) as exc:
        return _fail(str(exc))
    try:
        target = load_target(args.target)
    except TargetError as exc:
        return _fail(str(exc))
    try:
        source = open_recordings(args)
    except ReadError as exc:
        return _fail(str(exc), EXIT_ERROR)
    try:
        recordings = source.recordings(params, flt)
    except (ReadError, InvalidQuery) as exc:
        return _fail(str(exc), EXIT_ERROR)
    finally:
        source.close()
    progress = ProgressBar(sys.stderr, enabled=args.progress or sys.stderr.isatty())
    report = replay(recordings, target, target_name=args.target, thresholds=thresholds, progress=progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render_report(report))
    return _EXIT_BY_VERDICT[report.verdict]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def add_replay_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``replay`` to the ``agentwatch`` command (its handler returns the exit code)."""
    replay = subparsers.add_parser(
        "replay",
        help="re-run recorded runs on another runtime and report parity",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="replay these runs (default: by the filters)")
    replay.add_argument(
        "--target",
        required=True,
        metavar="MODULE:FACTORY",
        help="factory of the runtime to replay on, e.g. agentwatch_examples.openai_agents_support:replay_target "
        "(MODULE may be a .py path)",
    )
    replay.add_argument("--agent", help="only this agent")
    replay.add_argument("--track", help="only this track (stable, canary, baseline)")
    replay.add_argument("--tenant", help="only this tenant (a tenant-scoped token is always confined to its own)")
    replay.add_argument("--since", help="started at or after: 15m, 2h, 7d or ISO-8601")
    replay.add_argument("--until", help="started at or before: 15m, 2h, 7d or ISO-8601")
    replay.add_argument("--limit", help="at most this many runs, newest first (default 50)")
    add_source_flags(replay)
    replay.add_argument(
        "--min-agreement", type=_fraction, default=0.95, help="least share of runs whose stop reason agrees (0.95)"
    )
    replay.add_argument(
        "--min-similarity", type=_fraction, default=0.90, help="least mean tool-sequence similarity (0.90)"
    )
    replay.add_argument("--json", action="store_true", help="machine-readable report")
    replay.add_argument("--progress", action="store_true", help="progress on stderr even when not a terminal")
    replay.set_defaults(handler=replay_command)


__all__ = [
    "EXIT_BELOW_THRESHOLD",
    "EXIT_ERROR",
    "EXIT_NOTHING",
    "EXIT_PARITY",
    "add_replay_command",
    "open_recordings",
    "render_report",
    "replay_command",
    "skip_cause",
    "skipped_by_cause",
]
