"""Tool policy: which tools an agent may call, which need a human, and which are forbidden.

Default deny: a tool that matches no rule is denied. Deny beats everything, then approval, then
allow. Patterns are shell-style wildcards over dotted names (``db.*``, ``*.read``, ``*``).
Decisions are pure functions of the tool name, so they are cached per name.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from agentwatch.instrumentation.errors import ConfigError
from agentwatch.instrumentation.semconv import ToolRisk

Verdict = Literal["allow", "approval", "deny"]

DEFAULT_DENY_RULE = "default_deny"
"""Rule name recorded when no rule matched (``agentwatch.policy.rule``)."""

_DECISION_CACHE_LIMIT = 4096  # a model can invent tool names; never let the cache grow with them


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The policy's answer for one tool: the verdict, the rule that decided and the risk tier."""

    verdict: Verdict
    rule: str
    risk: ToolRisk


class _PatternSet:
    """Compiled wildcard patterns; ``match`` returns the first pattern that matches."""

    def __init__(self, kind: str, patterns: Iterable[str]) -> None:
        self.patterns: tuple[str, ...] = tuple(_validated(kind, p) for p in patterns)
        self._compiled = tuple((p, re.compile(fnmatch.translate(p))) for p in self.patterns)

    def match(self, tool: str) -> str | None:
        for pattern, regex in self._compiled:
            if regex.match(tool):
                return pattern
        return None


def _validated(kind: str, pattern: object) -> str:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigError(f"policy.{kind}", f"tool patterns must be non-empty strings, got {pattern!r}")
    return pattern.strip()


class Policy:
    """Default-deny tool policy.

    ``allow``: tools the agent may call freely. ``require_approval``: tools it may call only once
    an approver grants the call (they need not also be listed in ``allow``). ``deny``: tools it may
    never call, whatever else matches. ``writes``: tools with side effects that need no approval;
    they are tagged ``write`` risk, which matters when a kill-switch source cannot be read (write
    and approval tools then fail closed).
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        require_approval: Iterable[str] = (),
        deny: Iterable[str] = (),
        writes: Iterable[str] = (),
    ) -> None:
        if isinstance(allow, str) or isinstance(require_approval, str) or isinstance(deny, str):
            raise ConfigError("policy", "allow, require_approval and deny take lists of tool names, not a string")
        self._allow = _PatternSet("allow", allow)
        self._approval = _PatternSet("require_approval", require_approval)
        self._deny = _PatternSet("deny", deny)
        self._writes = _PatternSet("writes", writes)
        self._cache: dict[str, PolicyDecision] = {}
        self._lock = threading.Lock()

    @property
    def allow(self) -> tuple[str, ...]:
        return self._allow.patterns

    @property
    def require_approval(self) -> tuple[str, ...]:
        return self._approval.patterns

    @property
    def deny(self) -> tuple[str, ...]:
        return self._deny.patterns

    @property
    def writes(self) -> tuple[str, ...]:
        return self._writes.patterns

    def decide(self, tool: str) -> PolicyDecision:
        """Decide about ``tool``: deny rules first, then approval, then allow, else default deny."""
        cached = self._cache.get(tool)
        if cached is not None:
            return cached
        decision = self._decide_uncached(tool)
        with self._lock:
            if len(self._cache) >= _DECISION_CACHE_LIMIT:
                self._cache.clear()
            self._cache[tool] = decision
        return decision

    def _decide_uncached(self, tool: str) -> PolicyDecision:
        approval = self._approval.match(tool)
        if approval is not None:
            risk = ToolRisk.APPROVAL
        elif self._writes.match(tool) is not None:
            risk = ToolRisk.WRITE
        else:
            risk = ToolRisk.READ
        denied = self._deny.match(tool)
        if denied is not None:
            return PolicyDecision("deny", f"deny:{denied}", risk)
        if approval is not None:
            return PolicyDecision("approval", f"approval:{approval}", risk)
        allowed = self._allow.match(tool)
        if allowed is not None:
            return PolicyDecision("allow", f"allow:{allowed}", risk)
        return PolicyDecision("deny", DEFAULT_DENY_RULE, risk)

    def __repr__(self) -> str:
        return (
            f"Policy(allow={list(self.allow)!r}, require_approval={list(self.require_approval)!r}, "
            f"deny={list(self.deny)!r}, writes={list(self.writes)!r})"
        )
