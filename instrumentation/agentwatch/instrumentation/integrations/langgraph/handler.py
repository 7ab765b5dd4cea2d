"""``AgentwatchCallbackHandler``: LangChain's callbacks of a graph invocation recorded as one agentwatch run.

See the package for how the callbacks map onto the contract (run, steps, model and tool calls).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._budget import Budget
from agentwatch.instrumentation._guard import end_span, error_description, start_span, telemetry_failed
from agentwatch.instrumentation._installed import current_settings
from agentwatch.instrumentation._run import AgentRun, agent_run
from agentwatch.instrumentation.errors import BudgetExceeded, RunStopped
from agentwatch.instrumentation.integrations.langgraph.messages import (
    default_input,
    default_output,
    is_graph_root,
    is_recursion_error,
    message_record,
    model_name,
    nonempty_string,
    provider_name,
    recursion_limit,
    reply_of,
    tool_result,
)
from agentwatch.instrumentation.integrations.langgraph.state import (
    LANGGRAPH_RECURSION_LIMIT,
    METADATA_AGENT,
    METADATA_CONVERSATION_ID,
    METADATA_TENANT_ID,
    METADATA_TRACK,
    METADATA_VERSION,
    RUNTIME,
    UNGOVERNED_RULE,
    Entry,
    RunState,
    claim,
    install_stop_filter,
    release,
)
from agentwatch.instrumentation.integrations.langgraph.tools import GOVERNED_METADATA_KEY, Activation, ToolCallSite
from agentwatch.instrumentation.semconv import BudgetName, ToolDisposition, ToolOutcome, Track

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from agentwatch.instrumentation._gateway import ToolGateway
    from agentwatch.instrumentation._settings import InstrumentationSettings
    from agentwatch.instrumentation.killswitch import KillSwitch, KillSwitchSource

_TRACKS: Final = frozenset(track.value for track in Track)
_FINISHED_RUNS_KEPT: Final = 256  # finished runs kept for invoke_graph / take_run, oldest dropped


# --- the handler ------------------------------------------------------------------------------------


class AgentwatchCallbackHandler(BaseCallbackHandler):
    """Records each graph (or chain) invocation it sees as an agentwatch run and enforces its budgets.

    Pass it in ``config={"callbacks": [handler]}`` (one handler can serve many concurrent
    invocations) or let ``instrument()`` add it everywhere. ``agent`` defaults to the graph's name.
    With ``graphs_only`` (what ``instrument()`` uses) only LangGraph graphs become runs; otherwise
    any root chain the handler is given does too. ``input_mapper`` / ``output_mapper`` choose what
    is recorded as the run's input and output when content capture is on (default: the user's text
    and the final answer of a messages state).
    """

    # A refused step, model call or tool call is raised from the callback: that is what stops the
    # graph. Inline, so the callback runs in the runnable's own context and order.
    raise_error: bool = True
    run_inline: bool = True

    def __init__(
        self,
        agent: str | None = None,
        *,
        tenant_id: str | None = None,
        version: str | None = None,
        track: str = "stable",
        budget: Budget | None = None,
        gateway: ToolGateway | None = None,
        conversation_id: str | None = None,
        kill_switch: KillSwitch | KillSwitchSource | None = None,
        tracer_provider: TracerProvider | None = None,
        settings: InstrumentationSettings | None = None,
        graphs_only: bool = False,
        input_mapper: Callable[[Any], Any] = default_input,
        output_mapper: Callable[[Any], Any] = default_output,
    ) -> None:
        super().__init__()
        if agent is not None and (not isinstance(agent, str) or not agent.strip()):
            raise TypeError("agent must be a non-empty string naming the agent (or None for the graph's name)")
        if track not in _TRACKS:
            raise ValueError(f"track must be one of {sorted(_TRACKS)}, got {track!r}")
        self.agent = agent
        self.tenant_id = tenant_id
        self.version = version
        self.track = track
        self.budget = budget if budget is not None else Budget()
        self.gateway = gateway
        self.conversation_id = conversation_id
        self.kill_switch = kill_switch
        self.tracer_provider = tracer_provider
        self.settings = settings
        self.graphs_only = graphs_only
        self.input_mapper = input_mapper
        self.output_mapper = output_mapper
        self._entries: dict[UUID, Entry] = {}
        self._lock = threading.Lock()
        self._finished: OrderedDict[UUID, AgentRun] = OrderedDict()
        self._last_run: AgentRun | None = None
        install_stop_filter(AgentwatchCallbackHandler.__name__)

    # -- what callers read ---------------------------------------------------------------------

    @property
    def last_run(self) -> AgentRun | None:
        """The run that finished last (with concurrent invocations, prefer ``take_run``)."""
        return self._last_run

    def take_run(self, root_run_id: UUID) -> AgentRun | None:
        """The finished run of the invocation whose LangChain ``run_id`` is ``root_run_id`` (once)."""
        with self._lock:
            return self._finished.pop(root_run_id, None)

    def tool_call_site(self, lc_run_id: UUID) -> ToolCallSite | None:
        """Where the governed tool run ``lc_run_id`` happens (run, step, parent span, model call id)."""
        entry = self._entries.get(lc_run_id)
        if entry is None or entry.kind != "tool" or entry.state.finished:
            return None
        parent = entry.parent_span if entry.parent_span is not None else entry.state.parent_span()
        return ToolCallSite(run=entry.state.run, step=entry.state.step_index(), parent=parent, call_id=entry.call_id)

    # -- LangChain callbacks ---------------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._guarded("a chain start", self._chain_started, inputs, run_id, parent_run_id, metadata or {}, kwargs)

    def on_chain_end(
        self, outputs: dict[str, Any], *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._guarded("a chain end", self._chain_ended, run_id, outputs, None)

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._guarded("a chain error", self._chain_ended, run_id, None, error)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._guarded(
            "a chat model start",
            self._model_started,
            run_id=run_id,
            parent_run_id=parent_run_id,
            serialized=serialized,
            metadata=metadata or {},
            kwargs=kwargs,
            input_messages=lambda: [message_record(m) for batch in messages for m in batch],
            operation=semconv.OP_CHAT,
        )

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._guarded(
            "an LLM start",
            self._model_started,
            run_id=run_id,
            parent_run_id=parent_run_id,
            serialized=serialized,
            metadata=metadata or {},
            kwargs=kwargs,
            input_messages=lambda: [{"role": "user", "content": prompt} for prompt in prompts],
            operation="text_completion",
        )

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._guarded("an LLM end", self._model_ended, run_id, response, None)

    def on_llm_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._guarded("an LLM error", self._model_ended, run_id, None, error)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        arguments = inputs if inputs is not None else input_str
        name = (
            nonempty_string(serialized.get("name") if serialized else None)
            or nonempty_string(kwargs.get("name"))
            or "tool"
        )
        self._guarded(
            "a tool start",
            self._tool_started,
            run_id=run_id,
            parent_run_id=parent_run_id,
            name=name,
            arguments=arguments,
            metadata=metadata or {},
            call_id=nonempty_string(kwargs.get("tool_call_id")),
        )

    def on_tool_end(self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._guarded("a tool end", self._tool_ended, run_id, output, None)

    def on_tool_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self._guarded("a tool error", self._tool_ended, run_id, None, error)

    # Tool callbacks are gated by ``ignore_agent`` in LangChain, so that one stays False.
    @property
    def ignore_retriever(self) -> bool:
        return True

    @property
    def ignore_retry(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    # -- plumbing --------------------------------------------------------------------------------

    def _strict(self) -> bool:
        return (self.settings if self.settings is not None else current_settings()).strict

    def _guarded(self, action: str, function: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Run one callback: deliberate stops propagate (they stop the graph), telemetry bugs never do."""
        try:
            function(*args, **kwargs)
        except RunStopped:
            raise
        except Exception as exc:
            telemetry_failed(f"handling {action}", exc, strict=self._strict())

    def _register(self, run_id: UUID, entry: Entry) -> None:
        with self._lock:
            self._entries[run_id] = entry
            entry.state.entries.add(run_id)

    def _unregister(self, run_id: UUID) -> Entry | None:
        with self._lock:
            entry = self._entries.pop(run_id, None)
            if entry is not None:
                entry.state.entries.discard(run_id)
            return entry

    def _parent(self, parent_run_id: UUID | None) -> Entry | None:
        if parent_run_id is None:
            return None
        entry = self._entries.get(parent_run_id)
        if entry is None or entry.state.finished:
            return None
        return entry

    # -- chains: the run, its graph's nodes, anything else -----------------------------------------

    def _chain_started(
        self,
        inputs: Any,
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: Mapping[str, Any],
        kwargs: Mapping[str, Any],
    ) -> None:
        parent = self._parent(parent_run_id)
        if parent is None:
            if is_graph_root(metadata) or (parent_run_id is None and not self.graphs_only):
                self._run_started(run_id, inputs, metadata, nonempty_string(kwargs.get("name")))
            return
        state = parent.state
        if state.graph_id is None and is_graph_root(metadata):
            state.graph_id = run_id  # a graph inside a chain the run started with: its supersteps are the steps
        superstep = metadata.get("langgraph_step")
        if parent_run_id == state.graph_id and isinstance(superstep, int):
            node = nonempty_string(metadata.get("langgraph_node")) or nonempty_string(kwargs.get("name")) or "node"
            self._node_started(state, run_id, superstep, node)
            return
        self._register(run_id, Entry(state, "chain", inner_span=parent.inner_span))

    def _run_started(self, run_id: UUID, inputs: Any, metadata: Mapping[str, Any], name: str | None) -> None:
        if not claim(run_id, self):
            return  # another agentwatch handler records this invocation

        def meta(key: str) -> str | None:
            value = metadata.get(key)
            return str(value) if value is not None and value != "" else None

        try:
            scope = agent_run(
                meta(METADATA_AGENT) or self.agent or name or RUNTIME,
                tenant_id=meta(METADATA_TENANT_ID) or self.tenant_id,
                version=meta(METADATA_VERSION) or self.version,
                track=meta(METADATA_TRACK) or self.track,
                budget=self.budget,
                gateway=self.gateway,
                runtime=RUNTIME,
                conversation_id=meta(METADATA_CONVERSATION_ID) or self.conversation_id or meta("thread_id"),
                kill_switch=self.kill_switch,
                tracer_provider=self.tracer_provider,
                settings=self.settings,
            )
            run = scope.run
            run._start()
        except BaseException:
            release(run_id, self)
            raise
        state = RunState(run=run, root_id=run_id, graph_id=run_id if is_graph_root(metadata) else None)
        self._register(run_id, Entry(state, "root"))
        if run.settings.capture_content:
            run.record_input(self.input_mapper(inputs))

    def _node_started(self, state: RunState, run_id: UUID, superstep: int, node: str) -> None:
        run = state.run
        run.check()  # an explicit stop, a terminal budget, the kill switch or the time budget end it here
        with state.lock:
            if superstep != state.superstep:
                state.finish_superstep()
                state.superstep = superstep
                state.superstep_started_ns = time.time_ns()
                state.previous_supersteps_ended_ns = state.last_node_end_ns
            state.superstep_nodes.append(node)
            step, parent = state.step_index(), state.parent_span()
        entry = Entry(state, "node")
        entry.activation = Activation(run, step, parent)
        self._register(run_id, entry)

    def _chain_ended(self, run_id: UUID, outputs: Any, error: BaseException | None) -> None:
        entry = self._unregister(run_id)
        if entry is None:
            return
        if entry.activation is not None:
            entry.activation.restore()
        if entry.kind == "node":
            with entry.state.lock:
                entry.state.last_node_end_ns = time.time_ns()
        elif entry.kind == "root":
            self._run_finished(entry.state, outputs, error)

    def _run_finished(self, state: RunState, outputs: Any, error: BaseException | None) -> None:
        run = state.run
        with state.lock:
            if state.finished:
                return
            state.finished = True
            state.finish_superstep()
            state.close_step(state.last_node_end_ns)
        with self._lock:
            for entry_id in state.entries:
                self._entries.pop(entry_id, None)
            state.entries.clear()
        release(state.root_id, self)
        stop = error
        if error is not None and is_recursion_error(error):
            # LangGraph's own superstep limit ended the run: a step budget, whoever set it.
            limit = recursion_limit(error)
            if limit is not None:
                run.span.set_attribute(LANGGRAPH_RECURSION_LIMIT, limit)
            used = limit if limit is not None else run.steps
            stop = BudgetExceeded(BudgetName.STEPS, used, used)
        try:
            if error is None and run.settings.capture_content:
                run.record_output(self.output_mapper(outputs))
        finally:
            run._finish(stop)
            with self._lock:
                self._finished[state.root_id] = run
                while len(self._finished) > _FINISHED_RUNS_KEPT:
                    self._finished.popitem(last=False)
                self._last_run = run

    # -- steps ---------------------------------------------------------------------------------------

    # -- model calls -------------------------------------------------------------------------------

    def _model_started(
        self,
        *,
        run_id: UUID,
        parent_run_id: UUID | None,
        serialized: Mapping[str, Any] | None,
        metadata: Mapping[str, Any],
        kwargs: Mapping[str, Any],
        input_messages: Callable[[], list[dict[str, Any]]],
        operation: str,
    ) -> None:
        parent = self._parent(parent_run_id)
        if parent is None:
            return
        state = parent.state
        run = state.run
        params = kwargs.get("invocation_params")
        model = model_name(serialized, metadata, params if isinstance(params, Mapping) else {})
        if parent.inner_span is None:
            state.step_for_model_call()
        step = state.step_index()
        parent_span = parent.inner_span if parent.inner_span is not None else state.parent_span()
        messages = input_messages() if run.settings.capture_content else None
        call = run.llm_call(model=model, provider=provider_name(metadata), operation=operation, input_messages=messages)
        # LLMCall takes its parent and step from the context: make them the ones this call belongs to.
        placement = Activation(run, step, parent_span)
        try:
            call.start()
        finally:
            placement.restore()
        entry = Entry(state, "llm", inner_span=parent.inner_span, llm=call)
        entry.activation = Activation(run, step, call._span)  # provider SDK spans go under the call
        self._register(run_id, entry)

    def _model_ended(self, run_id: UUID, response: LLMResult | None, error: BaseException | None) -> None:
        entry = self._unregister(run_id)
        if entry is None or entry.llm is None:
            return
        if entry.activation is not None:
            entry.activation.restore()
        call = entry.llm
        if response is not None:
            reply = reply_of(response)
            call.set_usage(
                input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens,
                cached_input_tokens=reply.cached_input_tokens,
            )
            call.set_response(
                model=reply.response_model,
                finish_reasons=reply.finish_reasons,
                response_id=reply.response_id,
                output_messages=list(reply.messages) if entry.state.run.settings.capture_content else None,
            )
        call.finish(error=error)

    # -- tool calls --------------------------------------------------------------------------------

    def _tool_started(
        self,
        *,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        arguments: Any,
        metadata: Mapping[str, Any],
        call_id: str | None,
    ) -> None:
        parent = self._parent(parent_run_id)
        if parent is None:
            return
        state = parent.state
        run = state.run
        parent_span = parent.inner_span if parent.inner_span is not None else state.parent_span()
        entry = Entry(state, "tool", inner_span=parent.inner_span, call_id=call_id, parent_span=parent_span)
        if metadata.get(GOVERNED_METADATA_KEY):
            self._register(run_id, entry)  # the gateway admits, spans and records it
            return
        run.admit_tool_call()  # refused before it starts when over budget, like a gateway call
        step = state.step_index()
        attributes: dict[str, AttributeValue] = run.span_attributes()
        attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OP_EXECUTE_TOOL
        attributes[semconv.GEN_AI_TOOL_NAME] = name
        attributes[semconv.GEN_AI_TOOL_TYPE] = "function"
        attributes[semconv.POLICY_RULE] = UNGOVERNED_RULE
        if step is not None:
            attributes[semconv.STEP_INDEX] = step
        if call_id:
            attributes[semconv.GEN_AI_TOOL_CALL_ID] = call_id
        span = start_span(
            run.tracer,
            semconv.tool_span_name(name),
            attributes,
            context=trace.set_span_in_context(parent_span),
            strict=run.settings.strict,
        )
        entry.tool, entry.tool_span, entry.tool_args, entry.inner_span = name, span, arguments, span
        entry.activation = Activation(run, step, span)
        self._register(run_id, entry)

    def _tool_ended(self, run_id: UUID, output: Any, error: BaseException | None) -> None:
        entry = self._unregister(run_id)
        if entry is None or entry.tool_span is None or entry.tool is None:
            return
        if entry.activation is not None:
            entry.activation.restore()
        run, span = entry.state.run, entry.tool_span
        outcome = ToolOutcome.OK if error is None else ToolOutcome.ERROR
        span.set_attributes(
            {semconv.TOOL_DISPOSITION: ToolDisposition.ALLOWED.value, semconv.TOOL_OUTCOME: outcome.value}
        )
        settings = run.settings
        if settings.capture_content:
            span.set_attribute(semconv.GEN_AI_TOOL_CALL_ARGUMENTS, settings.redactor.to_attribute(entry.tool_args))
            result = tool_result(output) if error is None else None
            if result is not None:
                span.set_attribute(semconv.GEN_AI_TOOL_CALL_RESULT, settings.redactor.to_attribute(result))
        if error is not None:
            span.set_attribute(semconv.ERROR_TYPE, type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, error_description(error, settings)))
        run.tool_call_recorded(entry.tool, ToolDisposition.ALLOWED, outcome)
        end_span(span, strict=settings.strict)
