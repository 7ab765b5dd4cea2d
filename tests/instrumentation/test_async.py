"""The asyncio path: ``async with``, async tools and approvers, parallel calls, context across tasks."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from _telemetry import Telemetry, attrs, echo, make_gateway

from agentwatch.instrumentation import (
    ApprovalRequest,
    Budget,
    Policy,
    StopReason,
    ToolDenied,
    ToolGateway,
    get_current_run,
    semconv,
)


async def slow_search(query: str) -> str:
    await asyncio.sleep(0.01)
    run = get_current_run()
    return f"{query}@{run.run_id if run else None}"


def test_async_run_with_parallel_async_tools(telemetry: Telemetry) -> None:
    gateway = ToolGateway(policy=Policy(allow=["kb.*"]), tools={"kb.search": slow_search, "kb.echo": echo})

    async def main() -> Any:
        async with telemetry.run(gateway=gateway) as run:
            async with run.step():
                results = await asyncio.gather(
                    *(run.acall_tool("kb.search", {"query": f"q{i}"}, call_id=f"c{i}") for i in range(5))
                )
                results.append(await run.acall_tool("kb.echo", {"x": 1}))  # a sync tool from async code
            async with run.step():
                # a task created inside the step inherits the run and step through contextvars
                results.append(await asyncio.create_task(run.acall_tool("kb.search", {"query": "late"})))
        return run, results

    run, results = asyncio.run(main())
    assert run.stop_reason is StopReason.COMPLETED
    assert results[:5] == [f"q{i}@{run.run_id}" for i in range(5)]
    assert results[5] == {"x": 1}
    tools = telemetry.tools()
    assert len(tools) == 7
    steps = telemetry.steps()
    first_step = steps[0].context.span_id
    parallel = [s for s in tools if attrs(s).get(semconv.GEN_AI_TOOL_CALL_ID, "").startswith("c")]
    assert len(parallel) == 5
    assert all(s.parent is not None and s.parent.span_id == first_step for s in parallel)
    assert all(attrs(s)[semconv.STEP_INDEX] == 1 for s in parallel)
    late = next(s for s in tools if attrs(s).get(semconv.GEN_AI_TOOL_CALL_ID) is None and s.name.endswith("search"))
    assert attrs(late)[semconv.STEP_INDEX] == 2
    assert attrs(telemetry.run_span())[semconv.RUN_TOOL_CALLS] == 7


def test_sync_tools_called_from_async_code_run_off_the_event_loop(telemetry: Telemetry) -> None:
    # "wait" blocks until "signal" has run: if a sync tool ran on the event loop, the loop would be
    # stuck inside "wait" and "signal" could never start (the wait then times out and says so).
    signalled = threading.Event()

    def wait() -> str:
        run = get_current_run()
        return f"waited={signalled.wait(timeout=5)} run={run.run_id if run else None}"

    def signal() -> str:
        signalled.set()
        return "signalled"

    gateway = ToolGateway(policy=Policy(allow=["kb.*"]), tools={"kb.wait": wait, "kb.signal": signal})

    async def main() -> Any:
        async with telemetry.run(gateway=gateway) as run, run.step():
            results = await asyncio.gather(run.acall_tool("kb.wait", {}), run.acall_tool("kb.signal", {}))
        return run, results

    run, results = asyncio.run(main())
    assert results == [f"waited=True run={run.run_id}", "signalled"]  # the run's context went with the thread
    tools = telemetry.tools()
    assert len(tools) == 2
    assert all(attrs(s)[semconv.STEP_INDEX] == 1 for s in tools)


def test_async_denial_and_budget(telemetry: Telemetry) -> None:
    gateway = ToolGateway(policy=Policy(allow=["kb.*"]), tools={"kb.search": slow_search})

    async def main() -> Any:
        async with telemetry.run(gateway=gateway, budget=Budget(max_tool_calls=3)) as denied_run:
            await denied_run.acall_tool("db.drop", {})
        async with telemetry.run(gateway=gateway, budget=Budget(max_tool_calls=3)) as budget_run:
            for i in range(10):
                async with budget_run.step():
                    await budget_run.acall_tool("kb.search", {"query": str(i)})
        return denied_run, budget_run

    denied_run, budget_run = asyncio.run(main())
    assert denied_run.stop_reason is StopReason.POLICY_DENIED
    assert budget_run.stop_reason is StopReason.MAX_TOOL_CALLS
    assert budget_run.tool_calls == 3


def test_async_tool_is_cut_off_by_the_time_budget(telemetry: Telemetry) -> None:
    import time

    telemetry.with_settings(clock=time.monotonic)

    async def hang() -> None:
        await asyncio.sleep(30)

    gateway = ToolGateway(policy=Policy(allow=["kb.*"]), tools={"kb.hang": hang})

    async def main() -> Any:
        async with telemetry.run(gateway=gateway, budget=Budget(max_seconds=0.2)) as run:
            await run.acall_tool("kb.hang", {})
        return run

    started = time.monotonic()
    run = asyncio.run(main())
    assert time.monotonic() - started < 5
    assert run.stop_reason is StopReason.MAX_TIME
    assert attrs(telemetry.tools()[0])[semconv.TOOL_OUTCOME] == "error"


def test_async_approver_and_cancellation(telemetry: Telemetry) -> None:
    async def approver(request: ApprovalRequest) -> bool:
        await asyncio.sleep(0)
        return request.args.get("ticket_id") == "T-1"

    gateway = make_gateway(approver=approver)

    async def main() -> Any:
        async with telemetry.run(gateway=gateway) as approved:
            await approved.acall_tool("ticket.close", {"ticket_id": "T-1"})
        async with telemetry.run(gateway=gateway) as rejected:
            await rejected.acall_tool("ticket.close", {"ticket_id": "T-2"})
        return approved, rejected

    approved, rejected = asyncio.run(main())
    assert approved.stop_reason is StopReason.COMPLETED
    assert rejected.stop_reason is StopReason.APPROVAL_REJECTED

    async def cancelled_run() -> Any:
        holder: dict[str, Any] = {}

        async def agent() -> None:
            async with telemetry.run() as run:
                holder["run"] = run
                await asyncio.sleep(10)

        task = asyncio.create_task(agent())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return holder["run"]

    run = asyncio.run(cancelled_run())
    assert run.stop_reason is StopReason.CANCELLED


def test_sync_call_of_async_tool_is_a_clear_error(telemetry: Telemetry) -> None:
    gateway = ToolGateway(policy=Policy(allow=["kb.*"]), tools={"kb.search": slow_search})
    with telemetry.run(gateway=gateway) as run:
        with pytest.raises(TypeError, match="acall"):
            run.call_tool("kb.search", {"query": "x"})
        with pytest.raises(ToolDenied):
            run.call_tool("db.x", {})
    assert run.stop_reason is StopReason.COMPLETED
