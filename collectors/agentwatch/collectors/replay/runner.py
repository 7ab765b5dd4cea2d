"""Replay recorded runs on a target runtime with a replay gateway, and score parity with the recording.

The target is any object with the ``ReplayTarget`` shape, built by a factory named
``module:factory`` (``load_target``). For each recorded run, replay builds a ``ToolGateway`` in
replay mode from the target's policy and tools: every tool call is answered from the recording
(matched on tool and redacted arguments, in order) and no tool ever runs. A call the recording
does not have is refused (rule ``replay_unrecorded``) and reported; recorded calls the replay never
asked for are reported too. Recorded refusals are replayed as refusals: a call the approver
rejected is rejected again, a call the kill switch stopped is stopped again (the gateway's own
policy decides denials afresh). The replayed run's own telemetry is captured in memory, and its
stop reason, tool sequence, steps and cost are scored against the recording (``replay_parity``).

The target protocol, which a team implements once per runtime::

    class MyTarget:
        runtime = "openai-agents"               # agentwatch.runtime of its runs
        policy = config.policy                  # the Policy it is deployed with
        tools = TOOLS                           # name -> function: registered, never executed
        def run(self, request: ReplayRequest, gateway: ToolGateway) -> object:
            # run the agent once on request.input; every tool call through `gateway`; pass
            # request.tracer_provider and request.settings to agent_run (or the runtime's handler)
            ...

``run`` may return anything or raise: the outcome is read from the run's telemetry.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Protocol, runtime_checkable

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.collectors.replay.parity import (
    ParityReport,
    ParityThresholds,
    ReplayOutcome,
    RunParity,
    ToolStep,
    canonical_arguments,
    compare,
    not_replayed,
)
from agentwatch.collectors.replay.recordings import EXECUTED_DISPOSITIONS, RecordedRun, RecordedToolCall
from agentwatch.instrumentation import (
    ApprovalRejected,
    InstrumentationSettings,
    KillSwitchEngaged,
    Policy,
    RecordedCall,
    Recording,
    ToolDenied,
    ToolGateway,
    Track,
    semconv,
)
from agentwatch.instrumentation.redaction import Redactor

_KILL_SWITCH_UNAVAILABLE_RULE: Final = "kill_switch_unavailable"
_CAPTURED_TEXT_KEY: Final = "$captured"
_TRACKS: Final = frozenset(track.value for track in Track)


class TargetError(ValueError):
    """``--target`` cannot be loaded or does not have the ``ReplayTarget`` shape; the message says how to fix it."""


@dataclass(frozen=True)
class ReplayRequest:
    """One recorded run to re-run: its input as captured (redacted) and who it ran for.

    A target passes ``tracer_provider`` and ``settings`` to its run so that replay can read the
    run's telemetry (``settings`` captures content, which the comparison of tool arguments needs).
    """

    input: str
    agent: str
    tenant_id: str | None
    version: str | None
    track: str
    source_run_id: str
    recorded_runtime: str
    tracer_provider: TracerProvider
    settings: InstrumentationSettings


@runtime_checkable
class ReplayTarget(Protocol):
    """A runtime able to run one recorded input with a given replay gateway (see the module docstring)."""

    @property
    def runtime(self) -> str: ...

    @property
    def policy(self) -> Policy: ...

    @property
    def tools(self) -> Mapping[str, Callable[..., Any]]: ...

    def run(self, request: ReplayRequest, gateway: ToolGateway) -> object: ...


# --- loading a target -------------------------------------------------------------------------------


def _import_module(name: str, spec: str) -> ModuleType:
    """A dotted module, an example (``agentwatch_examples.NAME``) or a file (``path/to/file.py``)."""
    try:
        if name.endswith(".py") or "/" in name:
            return _import_file(Path(name))
        if name.startswith("agentwatch_examples."):
            from agentwatch.collectors._examples import load_example

            return load_example(name.removeprefix("agentwatch_examples."))
        return importlib.import_module(name)
    except TargetError:
        raise
    except (ImportError, FileNotFoundError) as exc:
        raise TargetError(f"cannot import {name!r} for --target {spec}: {exc}") from exc
    except Exception as exc:  # the target module itself is broken (syntax, an import-time failure)
        raise TargetError(f"importing {name!r} for --target {spec} failed: {type(exc).__name__}: {exc}") from exc


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    module_name = f"agentwatch_replay_target.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve their module through sys.modules
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def check_target(target: object, spec: str) -> ReplayTarget:
    """``target`` if it has the ``ReplayTarget`` shape, else a ``TargetError`` naming what is missing."""
    problems = []
    if not isinstance(getattr(target, "runtime", None), str):
        problems.append("runtime (a str)")
    if not isinstance(getattr(target, "policy", None), Policy):
        problems.append("policy (an agentwatch Policy)")
    if not isinstance(getattr(target, "tools", None), Mapping):
        problems.append("tools (a mapping of tool name to function)")
    if not callable(getattr(target, "run", None)):
        problems.append("run(request, gateway)")
    if problems or not isinstance(target, ReplayTarget):
        raise TargetError(
            f"{spec} returned a {type(target).__name__} without {', '.join(problems)}: "
            "a replay target has runtime, policy, tools and run(request, gateway)"
        )
    return target


def load_target(spec: str) -> ReplayTarget:
    """Call the factory ``module:factory`` (module may also be a ``.py`` path) and check what it returns."""
    module_name, colon, attribute = spec.rpartition(":")
    if not colon or not module_name or not attribute:
        raise TargetError(
            f"--target must be MODULE:FACTORY (e.g. agentwatch_examples.openai_agents_support:replay_target), "
            f"got {spec!r}"
        )
    module = _import_module(module_name, spec)
    try:
        factory = getattr(module, attribute)
    except AttributeError:
        raise TargetError(f"module {module_name!r} has no attribute {attribute!r} (--target {spec})") from None
    if not callable(factory):
        raise TargetError(
            f"{spec} is a {type(factory).__name__}, not callable: --target names a factory returning a replay target"
        )
    try:
        target = factory()
    except Exception as exc:
        raise TargetError(f"{spec}() failed: {type(exc).__name__}: {exc}") from exc
    return check_target(target, spec)


# --- the replay recording ---------------------------------------------------------------------------


def _as_mapping(text: str) -> dict[str, Any]:
    """Captured arguments as a mapping; text that is not a JSON object is matched as it is."""
    try:
        value = json.loads(text)
    except ValueError:
        return {_CAPTURED_TEXT_KEY: text}
    return value if isinstance(value, dict) else {_CAPTURED_TEXT_KEY: text}


def _arguments_text(args: Mapping[str, Any]) -> str:
    """Inverse of ``_as_mapping``, in canonical form."""
    if set(args) == {_CAPTURED_TEXT_KEY}:
        return str(args[_CAPTURED_TEXT_KEY])
    return canonical_arguments(json.dumps(dict(args), default=str))


def served_value(text: str) -> Any:
    """A captured result as the tool's return value: JSON objects and arrays are parsed, other text stays text.

    Capture keeps a string result unquoted, so ``"42"`` may have been the string or the number: only
    containers are parsed, which is what tools return in practice.
    """
    if not text:
        return None
    if text[0] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


class ReplayRecording(Recording):
    """The tool calls of one recorded run, matched on redacted arguments; recorded refusals are refused again."""

    def __init__(self, calls: Sequence[RecordedToolCall], *, redactor: Redactor) -> None:
        self._redactor = redactor
        self._calls: list[tuple[RecordedToolCall, RecordedCall]] = []
        for call in calls:
            if call.disposition == semconv.ToolDisposition.DENIED.value:
                continue  # the gateway's policy decides denials again; it never reaches the recording
            failed = call.disposition in EXECUTED_DISPOSITIONS and call.outcome == semconv.ToolOutcome.ERROR.value
            served = RecordedCall(
                call.tool,
                _as_mapping(call.arguments),
                result=served_value(call.result),
                error=(call.error or "the recorded call failed") if failed else None,
            )
            self._calls.append((call, served))
        self._stored = {id(served): call for call, served in self._calls}
        self._taken: set[int] = set()
        super().__init__(served for _, served in self._calls)

    def take(self, tool: str, args: Mapping[str, Any]) -> RecordedCall | None:
        captured = self._redactor.to_attribute(dict(args))
        found = super().take(tool, _as_mapping(captured))
        if found is None:
            return None
        self._taken.add(id(found))
        call = self._stored[id(found)]
        if call.disposition not in EXECUTED_DISPOSITIONS:
            raise self._refusal(call, captured)
        return found

    def _refusal(self, call: RecordedToolCall, captured: str) -> Exception:
        """The recorded refusal, recorded on the tool span as the gateway records its own."""
        span = trace.get_current_span()
        span.set_attributes(
            {
                semconv.TOOL_DISPOSITION: call.disposition,
                semconv.TOOL_OUTCOME: semconv.ToolOutcome.BLOCKED.value,
                semconv.POLICY_RULE: call.rule,
                semconv.GEN_AI_TOOL_CALL_ARGUMENTS: captured,
            }
        )
        if call.disposition == semconv.ToolDisposition.REJECTED.value:
            span.add_event(semconv.EVENT_APPROVAL_REJECTED, {semconv.EVENT_ATTR_TOOL: call.tool})
            return ApprovalRejected(call.tool, "rejected in the recording")
        if call.disposition == semconv.ToolDisposition.KILLED.value and call.rule != _KILL_SWITCH_UNAVAILABLE_RULE:
            span.add_event(semconv.EVENT_KILL_SWITCH_ENGAGED, {semconv.EVENT_ATTR_SCOPE: "recorded"})
            return KillSwitchEngaged("recorded", "the kill switch stopped this call in the recording")
        return ToolDenied(call.tool, call.rule or "recorded", f"tool {call.tool!r} was refused in the recording")

    def never_made(self) -> list[RecordedToolCall]:
        """Recorded calls the replay did not ask for, in recorded order."""
        return [call for call, served in self._calls if id(served) not in self._taken]


# --- one run ----------------------------------------------------------------------------------------


def replay_settings(settings: InstrumentationSettings | None = None) -> InstrumentationSettings:
    """Settings for replayed runs: as given (else from the environment), with content capture on to compare them."""
    base = settings if settings is not None else InstrumentationSettings.from_env()
    return replace(base, capture_content=True)


def _attributes(span: ReadableSpan) -> Mapping[str, Any]:
    return span.attributes or {}


def _outcome(
    spans: Sequence[ReadableSpan], recording: ReplayRecording, runtime: str, target_error: str | None
) -> ReplayOutcome | str:
    """What the replayed run did, or why replay cannot tell (a reason string)."""
    raised = f" (it raised {target_error})" if target_error else ""
    runs = [
        span
        for span in spans
        if _attributes(span).get(semconv.GEN_AI_OPERATION_NAME) == semconv.OP_INVOKE_AGENT
        and semconv.RUN_PARENT_ID not in _attributes(span)
    ]
    if not runs:
        return (
            "the target finished without an agentwatch run: it must run the input under agent_run (or its "
            f"runtime's integration) with request.tracer_provider{raised}"
        )
    if len(runs) > 1:
        return f"the target started {len(runs)} runs for one recorded input; a replay target runs it once"
    attributes = _attributes(runs[0])
    run_id = str(attributes.get(semconv.RUN_ID, ""))
    tools = sorted(
        (
            span
            for span in spans
            if _attributes(span).get(semconv.GEN_AI_OPERATION_NAME) == semconv.OP_EXECUTE_TOOL
            and _attributes(span).get(semconv.RUN_ID) == run_id
        ),
        key=lambda span: span.start_time or 0,
    )
    if any(semconv.GEN_AI_TOOL_CALL_ARGUMENTS not in _attributes(span) for span in tools):
        return "the replayed run's tool arguments were not captured: the target must pass request.settings to its run"
    output = attributes.get(semconv.RUN_OUTPUT)
    return ReplayOutcome(
        run_id=run_id,
        runtime=str(attributes.get(semconv.RUNTIME, runtime)),
        stop_reason=str(attributes.get(semconv.STOP_REASON, "")),
        steps=int(attributes.get(semconv.RUN_STEPS, 0)),
        tool_calls=int(attributes.get(semconv.RUN_TOOL_CALLS, 0)),
        llm_calls=int(attributes.get(semconv.RUN_LLM_CALLS, 0)),
        cost_usd=float(attributes.get(semconv.RUN_COST_USD, 0.0)),
        output=str(output) if output is not None else None,
        tools=tuple(
            ToolStep(
                str(_attributes(span).get(semconv.GEN_AI_TOOL_NAME, "")),
                canonical_arguments(str(_attributes(span)[semconv.GEN_AI_TOOL_CALL_ARGUMENTS])),
                str(_attributes(span).get(semconv.TOOL_DISPOSITION, "")),
            )
            for span in tools
        ),
        unrecorded=tuple(ToolStep(tool, _arguments_text(args)) for tool, args in recording.unrecorded),
        never_made=tuple(
            ToolStep(call.tool, canonical_arguments(call.arguments), call.disposition)
            for call in recording.never_made()
        ),
        target_error=target_error,
    )


def replay_run(
    recorded: RecordedRun, target: ReplayTarget, *, settings: InstrumentationSettings | None = None
) -> RunParity:
    """Re-run one recorded run on ``target`` with a replay gateway and score it against the recording."""
    reason = recorded.skip_reason
    if reason is not None:
        return not_replayed(recorded, "skipped", reason)
    settings = replay_settings(settings)
    recording = ReplayRecording(recorded.calls, redactor=settings.redactor)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        gateway = ToolGateway(
            policy=target.policy, tools=target.tools, replay=recording, tracer_provider=provider, settings=settings
        )
    except (TypeError, ValueError) as exc:  # a tool that is not callable, a policy that is not one
        provider.shutdown()
        return not_replayed(recorded, "failed", f"the target's policy or tools cannot make a gateway: {exc}")
    request = ReplayRequest(
        input=recorded.input,
        agent=recorded.agent,
        tenant_id=recorded.tenant or None,
        version=recorded.version or None,
        track=recorded.track if recorded.track in _TRACKS else Track.STABLE.value,
        source_run_id=recorded.run_id,
        recorded_runtime=recorded.runtime,
        tracer_provider=provider,
        settings=settings,
    )
    target_error = None
    try:
        target.run(request, gateway)
    except Exception as exc:  # the runtime's own outcome (a custom loop re-raises a tool error): scored, not fatal
        target_error = f"{type(exc).__name__}: {exc}"
    finally:
        gateway.close()
        provider.shutdown()
    outcome = _outcome(exporter.get_finished_spans(), recording, target.runtime, target_error)
    if isinstance(outcome, str):
        return not_replayed(recorded, "failed", outcome)
    return compare(recorded, outcome)


ProgressCallback = Callable[[int, int, RunParity], None]
"""Called after each run with (runs done, runs in all, that run's parity)."""


def replay(
    recordings: Iterable[RecordedRun],
    target: ReplayTarget,
    *,
    target_name: str = "",
    thresholds: ParityThresholds | None = None,
    settings: InstrumentationSettings | None = None,
    progress: ProgressCallback | None = None,
) -> ParityReport:
    """Replay every recorded run on ``target`` in turn and return the parity report."""
    runs = list(recordings)
    results: list[RunParity] = []
    for recorded in runs:
        results.append(replay_run(recorded, target, settings=settings))
        if progress is not None:
            progress(len(results), len(runs), results[-1])
    return ParityReport(
        target=target_name or type(target).__qualname__,
        runtime=target.runtime,
        thresholds=thresholds or ParityThresholds(),
        runs=tuple(results),
    )


__all__ = [
    "ProgressCallback",
    "ReplayRecording",
    "ReplayRequest",
    "ReplayTarget",
    "TargetError",
    "check_target",
    "load_target",
    "replay",
    "replay_run",
    "replay_settings",
    "served_value",
]
