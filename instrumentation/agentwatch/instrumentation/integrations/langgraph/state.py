"""What the LangGraph handler keeps: the integration's names, per-run state, and what all handlers share.

One ``RunState`` per agentwatch run (one graph invocation), one ``Entry`` per LangChain run inside
it (a chain, a node, a model call, a tool). Shared by every handler in the process: which handler
records which invocation (``claim`` / ``release``), and the log filter that keeps LangChain quiet
about the stops a handler raises on purpose.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from opentelemetry import trace
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._guard import end_span, start_span
from agentwatch.instrumentation._llm import LLMCall
from agentwatch.instrumentation._run import AgentRun
from agentwatch.instrumentation.errors import RunStopped
from agentwatch.instrumentation.integrations.langgraph.tools import Activation

RUNTIME: Final = "langgraph"
"""Value of ``agentwatch.runtime`` on runs recorded by this integration."""

METADATA_AGENT: Final = "agentwatch_agent"
METADATA_TENANT_ID: Final = "agentwatch_tenant_id"
METADATA_VERSION: Final = "agentwatch_version"
METADATA_TRACK: Final = "agentwatch_track"
METADATA_CONVERSATION_ID: Final = "agentwatch_conversation_id"

# Runtime-specific span attributes (outside the shared contract, for people reading a trace).
LANGGRAPH_STEP: Final = semconv.LANGGRAPH_STEP
LANGGRAPH_NODES: Final = semconv.LANGGRAPH_NODES
LANGGRAPH_RECURSION_LIMIT: Final = semconv.LANGGRAPH_RECURSION_LIMIT
UNGOVERNED_RULE: Final = semconv.POLICY_RULE_UNGOVERNED
"""``agentwatch.policy.rule`` of a tool call that did not go through the gateway."""

_NEW_STEP_EACH_CALL: Final = -1  # "superstep" of model calls outside any graph: each call is a turn


# --- per-run state --------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Step:
    index: int
    span: Span
    nodes: set[str] = field(default_factory=set)


@dataclass(eq=False, slots=True)
class RunState:
    """One agentwatch run and where its graph is: current superstep, current step, open entries."""

    run: AgentRun
    root_id: UUID
    graph_id: UUID | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    superstep: int | None = None
    superstep_started_ns: int = 0
    superstep_nodes: list[str] = field(default_factory=list)
    previous_supersteps_ended_ns: int | None = None
    stepped_superstep: int | None = None  # the superstep whose model call opened the current step
    step: Step | None = None
    last_node_end_ns: int | None = None
    entries: set[UUID] = field(default_factory=set)
    finished: bool = False

    def parent_span(self) -> Span:
        return self.step.span if self.step is not None else self.run.span

    def step_index(self) -> int | None:
        return self.step.index if self.step is not None else None

    def finish_superstep(self) -> None:
        """Credit the superstep's nodes to the step that was current when it ended (caller holds the lock)."""
        if self.step is not None:
            self.step.nodes.update(self.superstep_nodes)
        self.superstep_nodes = []

    def close_step(self, end_ns: int | None) -> None:
        step = self.step
        if step is None:
            return
        self.step = None
        if step.nodes:
            step.span.set_attribute(LANGGRAPH_NODES, sorted(step.nodes))
        end_span(step.span, strict=self.run.settings.strict, end_time=end_ns)

    def step_for_model_call(self) -> None:
        """Open a new step if this model call starts a turn (the first model call of its superstep)."""
        superstep = self.superstep if self.superstep is not None else _NEW_STEP_EACH_CALL
        with self.lock:
            if superstep != _NEW_STEP_EACH_CALL and self.stepped_superstep == superstep:
                return
            run = self.run
            index = run.admit_step()  # raises when the step budget, the time or the kill switch says no
            started = self.superstep_started_ns if self.superstep is not None else time.time_ns()
            self.close_step(self.previous_supersteps_ended_ns)
            attributes: dict[str, AttributeValue] = run.span_attributes()
            attributes[semconv.OPERATION_NAME] = semconv.OP_STEP  # not a GenAI operation
            attributes[semconv.STEP_INDEX] = index
            if self.superstep is not None:
                attributes[LANGGRAPH_STEP] = self.superstep
            span = start_span(
                run.tracer,
                semconv.step_span_name(run.agent),
                attributes,
                context=trace.set_span_in_context(run.span),
                strict=run.settings.strict,
                start_time=started,
            )
            self.step = Step(index=index, span=span)
            self.stepped_superstep = superstep


@dataclass(eq=False, slots=True)
class Entry:
    """A LangChain run (chain, node, model call, tool) inside an agentwatch run."""

    state: RunState
    kind: str  # root | node | chain | llm | tool
    inner_span: Span | None = None  # a handler-made tool span this run is inside (children go under it)
    activation: Activation | None = None
    llm: LLMCall | None = None
    tool: str | None = None
    tool_span: Span | None = None
    tool_args: Any = None
    call_id: str | None = None
    parent_span: Span | None = None


# --- deliberate stops are not callback failures -----------------------------------------------------


def _stop_names() -> set[str]:
    names: set[str] = set()
    pending: list[type[BaseException]] = [RunStopped]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return names


class _DeliberateStopFilter(logging.Filter):
    """Drops LangChain's "Error in ... callback" warning when the handler stopped a run on purpose.

    A refused step or model call is raised from a callback (that is how a callback stops a graph);
    it is recorded on the run span and in the audit log, so LangChain's warning would only be noise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.handler_names: set[str] = set()  # class names of the handlers whose stops are deliberate

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg != "Error in %s.%s callback: %s" or not isinstance(args, tuple) or len(args) != 3:
            return True
        handler_name, _, error = args
        if handler_name not in self.handler_names or not isinstance(error, str):
            return True
        return error.split("(", 1)[0] not in _stop_names()


_stop_filter: Final = _DeliberateStopFilter()
_stop_filter_lock: Final = threading.Lock()


def install_stop_filter(handler_name: str) -> None:
    """Silence LangChain's warning about a deliberate stop raised by the handler class ``handler_name``."""
    logger = logging.getLogger("langchain_core.callbacks.manager")
    with _stop_filter_lock:
        _stop_filter.handler_names.add(handler_name)
        if _stop_filter not in logger.filters:
            logger.addFilter(_stop_filter)


# Roots claimed by a handler, so a handler given explicitly and the instrument() one never both
# record the same invocation (the explicit one sees the root first: config callbacks come first).
_claims: dict[UUID, BaseCallbackHandler] = {}
_claims_lock: Final = threading.Lock()


def claim(root_id: UUID, handler: BaseCallbackHandler) -> bool:
    with _claims_lock:
        owner = _claims.setdefault(root_id, handler)
        return owner is handler


def release(root_id: UUID, handler: BaseCallbackHandler) -> None:
    with _claims_lock:
        if _claims.get(root_id) is handler:
            del _claims[root_id]
