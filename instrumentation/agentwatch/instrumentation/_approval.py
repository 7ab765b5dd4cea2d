"""Human approvals for risky tools: the request, the decision, and calling an approver safely.

An approver is a callable or an object with ``approve(request)``; sync or async; it answers with a
bool or an ``ApprovalDecision``. Whatever goes wrong counts as a rejection: a timeout, an approver
that raises, an answer of the wrong type. A blocking approver (a person in a chat thread) runs in
a worker thread so the timeout holds even for sync code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """What an approver sees: the tool, its real arguments, and who is asking."""

    tool: str
    args: Mapping[str, Any]
    agent: str
    run_id: str | None
    tenant_id: str | None
    call_id: str | None
    rule: str


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """An approver's answer; ``token`` is passed to the tool as ``approval_token`` if it takes one."""

    approved: bool
    approver: str | None = None
    reason: str | None = None
    token: str | None = None


ApprovalAnswer: TypeAlias = bool | ApprovalDecision


@runtime_checkable
class Approver(Protocol):
    """An object that approves tool calls."""

    def approve(self, request: ApprovalRequest) -> ApprovalAnswer | Awaitable[ApprovalAnswer]: ...


ApproverLike: TypeAlias = (
    Approver | Callable[[ApprovalRequest], ApprovalAnswer] | Callable[[ApprovalRequest], Awaitable[ApprovalAnswer]]
)


def _approve_function(approver: ApproverLike) -> Callable[[ApprovalRequest], Any]:
    if isinstance(approver, Approver):
        return approver.approve
    if callable(approver):
        return approver
    raise TypeError(f"approver must be callable or have an approve(request) method, got {type(approver).__name__}")


def _as_decision(answer: object) -> ApprovalDecision:
    if isinstance(answer, ApprovalDecision):
        return answer
    if isinstance(answer, bool):
        return ApprovalDecision(approved=answer, reason=None if answer else "rejected by approver")
    return ApprovalDecision(approved=False, reason=f"approver returned {type(answer).__name__}, expected bool")


def _run_to_completion(function: Callable[[ApprovalRequest], Any], request: ApprovalRequest) -> object:
    # Runs in a worker thread: an async approver gets its own event loop there.
    answer = function(request)
    if inspect.isawaitable(answer):
        return asyncio.run(_await(answer))
    return answer


async def _await(awaitable: Awaitable[object]) -> object:
    return await awaitable


class ApprovalCaller:
    """Calls one approver with a timeout, from sync or async code."""

    def __init__(self, approver: ApproverLike | None, *, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("approval timeout must be positive")
        self._function = None if approver is None else _approve_function(approver)
        self._is_async = self._function is not None and inspect.iscoroutinefunction(self._function)
        self.timeout = timeout
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return self._function is not None

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="agentwatch-approval"
                )
            return self._executor

    def decide(self, request: ApprovalRequest) -> ApprovalDecision:
        """Ask the approver from sync code; never raises."""
        if self._function is None:
            return ApprovalDecision(False, reason="no approver configured for a tool that requires approval")
        future = self._pool().submit(_run_to_completion, self._function, request)
        try:
            return _as_decision(future.result(timeout=self.timeout))
        except concurrent.futures.TimeoutError:
            future.cancel()
            return ApprovalDecision(False, reason=f"approver timed out after {self.timeout:g}s")
        except Exception as exc:
            return ApprovalDecision(False, reason=f"approver failed: {type(exc).__name__}: {exc}")

    async def adecide(self, request: ApprovalRequest) -> ApprovalDecision:
        """Ask the approver from async code; never raises (except cancellation)."""
        function = self._function
        if function is None:
            return ApprovalDecision(False, reason="no approver configured for a tool that requires approval")
        try:
            if self._is_async:
                answer = await asyncio.wait_for(function(request), timeout=self.timeout)
            else:
                loop = asyncio.get_running_loop()
                answer = await asyncio.wait_for(
                    loop.run_in_executor(self._pool(), _run_to_completion, function, request), timeout=self.timeout
                )
            return _as_decision(answer)
        except TimeoutError:
            return ApprovalDecision(False, reason=f"approver timed out after {self.timeout:g}s")
        except Exception as exc:
            return ApprovalDecision(False, reason=f"approver failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
