"""Instrumentation settings, read once (from arguments, a config file, then the environment).

Environment variables are read when settings are built, never deep inside a call path; a run
takes the settings it was given or the ones ``configure()`` installed. Clock and id generator
are settings too, so tests get deterministic ids and times.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from agentwatch.instrumentation.pricing import PriceTable
from agentwatch.instrumentation.redaction import DEFAULT_MAX_LENGTH, Redactor
from agentwatch.instrumentation.semconv import CAPTURE_CONTENT_ENV

MAX_CONTENT_LENGTH_ENV: Final = "AGENTWATCH_MAX_CONTENT_LENGTH"
"""Longest captured content (characters, after redaction) before it is truncated."""

STRICT_ENV: Final = "AGENTWATCH_STRICT"
"""``true`` makes internal telemetry errors raise instead of being logged (default: under pytest)."""

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def parse_bool(raw: str, *, variable: str) -> bool:
    """Parse a boolean environment value, rejecting anything ambiguous."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{variable}={raw!r}: expected true or false")


def _new_run_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class InstrumentationSettings:
    """Everything a run needs besides its arguments.

    ``strict`` makes telemetry failures raise (tests) instead of being logged (production).
    ``audit_tool_calls`` / ``audit_stop_reasons`` emit one log record per tool call / per run on
    the ``agentwatch.audit`` logger (the seed config's ``logging`` section).
    """

    capture_content: bool = False
    max_content_length: int = DEFAULT_MAX_LENGTH
    strict: bool = False
    audit_tool_calls: bool = True
    audit_stop_reasons: bool = True
    redactor: Redactor = field(default_factory=Redactor)
    price_table: PriceTable | None = None
    clock: Callable[[], float] = time.monotonic
    id_generator: Callable[[], str] = _new_run_id

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InstrumentationSettings:
        """Build settings from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        capture = parse_bool(env.get(CAPTURE_CONTENT_ENV, "false"), variable=CAPTURE_CONTENT_ENV)
        max_length = DEFAULT_MAX_LENGTH
        if MAX_CONTENT_LENGTH_ENV in env:
            try:
                max_length = int(env[MAX_CONTENT_LENGTH_ENV])
            except ValueError as exc:
                raise ValueError(f"{MAX_CONTENT_LENGTH_ENV} must be an integer") from exc
        strict = "pytest" in sys.modules
        if STRICT_ENV in env:
            strict = parse_bool(env[STRICT_ENV], variable=STRICT_ENV)
        return cls(
            capture_content=capture,
            max_content_length=max_length,
            strict=strict,
            redactor=Redactor(max_length=max_length),
        )

    def prices(self) -> PriceTable:
        """The price table in force (the shipped one unless overridden)."""
        return self.price_table if self.price_table is not None else PriceTable.default()
