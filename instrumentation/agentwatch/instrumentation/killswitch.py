"""Kill switches: let an operator stop agents fast, globally, per agent, per tenant or per agent and tenant.

A ``KillSwitch`` combines sources (in-process memory, a file operators create, an environment
variable) and answers one question, ``check(agent=..., tenant_id=...)``, which the tool gateway and
the run ask before every step and every tool call. That makes ``check`` a hot path: the memory and
environment sources cost a few attribute reads, and the file source stats its file at most once per
``min_interval`` seconds and serves the cached answer in between. A source that cannot be read does
not make ``check`` raise; it is reported in ``KillSwitchState.unavailable`` and the caller chooses to
fail open or closed. Scopes are strings: ``*``, ``agent:<name>``, ``tenant:<id>`` and
``agent:<name>/tenant:<id>``.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Protocol, runtime_checkable

from agentwatch.instrumentation.errors import AgentWatchError

__all__ = [
    "EnvKillSwitch",
    "FileKillSwitch",
    "KillSwitch",
    "KillSwitchSource",
    "KillSwitchState",
    "KillSwitchUnavailable",
    "MemoryKillSwitch",
    "parse_scope",
    "scope_for",
    "scope_parts",
]

logger: Final = logging.getLogger("agentwatch.killswitch")

_GLOBAL: Final = "*"
_AGENT: Final = "agent:"
_TENANT: Final = "tenant:"
_PAIR_SEPARATOR: Final = "/tenant:"
_SCOPE_FORMS: Final = "expected '*', 'agent:<name>', 'tenant:<id>' or 'agent:<name>/tenant:<id>'"
# ',' separates scopes in the environment variable and '#' starts a comment in the file, so a name
# holding either could never be written down; refuse it instead of silently never matching.
_FORBIDDEN_IN_NAMES: Final = frozenset(",#")

_ENV_ALL: Final = frozenset({"1", "true", "on", "all"})
_ENV_NONE: Final = frozenset({"", "0", "false", "off"})

# A kill-switch file lists a handful of scopes; anything this big is a mistake (a log redirected to
# the wrong path), and reading it on the hot path would be slow.
_MAX_FILE_BYTES: Final = 1 << 20
# File systems stamp mtimes with a coarse tick (a few ms on ext4, 2 s on FAT, up to the server on
# NFS): two same-size writes inside one tick leave the stat signature unchanged. A file modified that
# recently is therefore re-read at the next refresh instead of trusted ("racy" in git's sense).
_RACY_WINDOW_NS: Final = 2_000_000_000
# Distinct warning messages remembered per broken source; past this they are no longer logged so a
# source producing ever-changing messages cannot grow memory or flood the log.
_MAX_REMEMBERED_MESSAGES: Final = 64


def _check_name(kind: str, name: str, scope: str) -> None:
    if not name or name != name.strip():
        raise ValueError(f"invalid kill-switch scope {scope!r}: the {kind} must be non-empty without outer spaces")
    if not name.isprintable() or not _FORBIDDEN_IN_NAMES.isdisjoint(name):
        raise ValueError(
            f"invalid kill-switch scope {scope!r}: the {kind} may not contain ',', '#' or control characters"
        )


def _parse_scope(text: str) -> str:
    """Validate a scope and return its canonical form (surrounding whitespace removed).

    Agent names may contain spaces and ``/`` (runtimes name agents freely, "Triage agent"), so the
    pair form is split at the first ``/tenant:``; matching is exact and case-sensitive.
    """
    if not isinstance(text, str):
        raise TypeError(f"kill-switch scope must be a string, got {type(text).__name__}")
    scope = text.strip()
    if scope == _GLOBAL:
        return scope
    if scope.startswith(_AGENT):
        agent, separator, tenant = scope[len(_AGENT) :].partition(_PAIR_SEPARATOR)
        _check_name("agent name", agent, text)
        if separator:
            _check_name("tenant id", tenant, text)
        return scope
    if scope.startswith(_TENANT):
        tenant = scope[len(_TENANT) :]
        if "/agent:" in tenant:
            raise ValueError(f"invalid kill-switch scope {text!r}: write the pair as 'agent:<name>/tenant:<id>'")
        _check_name("tenant id", tenant, text)
        return scope
    raise ValueError(f"invalid kill-switch scope {text!r}: {_SCOPE_FORMS}")


def parse_scope(text: str) -> str:
    """Validate a kill-switch scope and return its canonical form; ValueError says what is accepted."""
    return _parse_scope(text)


def scope_for(agent: str | None = None, tenant_id: str | None = None) -> str:
    """The scope covering ``agent`` and/or ``tenant_id``: ``*`` for neither (validated, canonical)."""
    if agent and tenant_id:
        return _parse_scope(f"{_AGENT}{agent}{_PAIR_SEPARATOR}{tenant_id}")
    if agent:
        return _parse_scope(_AGENT + agent)
    if tenant_id:
        return _parse_scope(_TENANT + tenant_id)
    return _GLOBAL


def scope_parts(scope: str) -> tuple[str | None, str | None]:
    """``(agent, tenant_id)`` of a canonical scope; None where the scope does not name one."""
    if scope.startswith(_AGENT):
        agent, separator, tenant = scope[len(_AGENT) :].partition(_PAIR_SEPARATOR)
        return agent, (tenant if separator else None)
    if scope.startswith(_TENANT):
        return None, scope[len(_TENANT) :]
    return None, None


def _candidate_scopes(agent: str, tenant_id: str | None) -> tuple[str, ...]:
    """Every scope that would cover a run, broadest first (so the reported scope is the one to release)."""
    if tenant_id:
        return (
            _GLOBAL,
            _AGENT + agent,
            _TENANT + tenant_id,
            f"{_AGENT}{agent}{_PAIR_SEPARATOR}{tenant_id}",
        )
    # A run without a tenant is never covered by a tenant scope.
    return (_GLOBAL, _AGENT + agent)


class KillSwitchUnavailable(AgentWatchError):
    """A kill-switch source could not be read; ``source`` names it and ``reason`` says why."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"kill-switch source {source} unavailable: {reason}")


@runtime_checkable
class KillSwitchSource(Protocol):
    """Where engaged scopes come from.

    ``engaged_scopes`` is called on every check, so it must be cheap; it returns canonical scopes
    and raises ``KillSwitchUnavailable`` when the source cannot be read.
    """

    @property
    def name(self) -> str:
        """Human-readable identity of the source (``memory``, ``file:/etc/agentwatch/kill``)."""
        ...

    def engaged_scopes(self) -> frozenset[str]:
        """The scopes engaged right now."""
        ...


class MemoryKillSwitch:
    """In-process kill switch, for an admin endpoint or a signal handler; thread-safe.

    Writers swap an immutable frozenset under a lock; readers take no lock because reading one
    attribute is atomic, which keeps ``engaged_scopes`` at a few tens of nanoseconds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scopes: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return "memory"

    def engage(self, scope: str = "*") -> None:
        """Engage ``scope``; engaging an engaged scope is a no-op. Raises ValueError for an invalid scope."""
        canonical = _parse_scope(scope)
        with self._lock:
            self._scopes = self._scopes | {canonical}

    def release(self, scope: str = "*") -> None:
        """Release exactly ``scope`` (``release("*")`` leaves narrower scopes engaged; see ``release_all``)."""
        canonical = _parse_scope(scope)
        with self._lock:
            self._scopes = self._scopes - {canonical}

    def release_all(self) -> None:
        """Release every scope."""
        with self._lock:
            self._scopes = frozenset()

    def engaged_scopes(self) -> frozenset[str]:
        return self._scopes

    def __repr__(self) -> str:
        return f"MemoryKillSwitch({sorted(self._scopes)!r})"


# The file source caches either the parsed scopes or the message of the last failure.
_FileResult = frozenset[str] | str
_StatSignature = tuple[int, int, int, int, int]


class FileKillSwitch:
    """Kill switch driven by a file: one scope per line, ``#`` comments and blank lines ignored.

    A missing file means nothing is engaged (operators create it to engage, delete it to release).
    The file is stat'ed at most once per ``min_interval`` seconds and re-read only when its
    signature (inode, size, mtime, ctime) changes; in between the cached answer is served. A file
    that exists but cannot be used (a directory, unreadable, invalid UTF-8, an invalid scope line,
    too large) raises ``KillSwitchUnavailable`` on every call until it becomes readable again; the
    last good set is never served in its place, because a stale "nothing engaged" could hide an
    engage the operator is trying to make. Thread-safe.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(min_interval, int | float) or not math.isfinite(min_interval) or min_interval < 0:
            raise ValueError(f"min_interval must be a finite number of seconds >= 0, got {min_interval!r}")
        # Absolute, so a later os.chdir() in the host process cannot move the switch.
        self._path = os.path.abspath(os.fspath(path))
        self._name = f"file:{self._path}"
        self._min_interval = float(min_interval)
        self._clock = clock
        self._lock = threading.Lock()
        self._signature: _StatSignature | None = None
        self._result: _FileResult = frozenset()
        # -inf: the first call always looks at the file.
        self._next_check = -math.inf

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> str:
        """Absolute path of the file."""
        return self._path

    def engaged_scopes(self) -> frozenset[str]:
        # Fast path without the lock: _result is written before _next_check, so a reader that sees
        # the new deadline also sees the new result (at worst it sees the previous one, one refresh old).
        if self._clock() < self._next_check:
            result = self._result
        else:
            with self._lock:
                now = self._clock()
                if now >= self._next_check:  # another thread may have refreshed while we waited
                    self._result = self._refresh()
                    self._next_check = now + self._min_interval
                result = self._result
        if isinstance(result, str):
            raise KillSwitchUnavailable(self._name, result)
        return result

    def _refresh(self) -> _FileResult:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            self._signature = None
            return frozenset()
        except OSError as exc:
            self._signature = None
            return f"cannot stat the file: {exc}"
        if stat.S_ISDIR(st.st_mode):
            self._signature = None
            return "the path is a directory, expected a file with one scope per line"
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        # Re-read after a failure even if the signature is unchanged: the cause may lie outside the
        # file (a parent directory's permissions), and retrying costs one read per interval.
        if signature == self._signature and not isinstance(self._result, str):
            return self._result
        result = self._read()
        racy = time.time_ns() - st.st_mtime_ns < _RACY_WINDOW_NS
        self._signature = None if racy or isinstance(result, str) else signature
        return result

    def _read(self) -> _FileResult:
        try:
            with open(self._path, "rb") as handle:
                data = handle.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return frozenset()  # deleted between stat and open: released
        except OSError as exc:
            return f"cannot read the file: {exc}"
        if len(data) > _MAX_FILE_BYTES:
            return f"the file is larger than {_MAX_FILE_BYTES} bytes; it should list a few scopes"
        try:
            # utf-8-sig: tolerate the byte-order mark some editors write.
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return f"the file is not valid UTF-8: {exc}"
        scopes: set[str] = set()
        for number, line in enumerate(text.splitlines(), start=1):
            content = line.partition("#")[0].strip()
            if not content:
                continue
            try:
                scopes.add(_parse_scope(content))
            except ValueError as exc:
                return f"line {number}: {exc}"
        return frozenset(scopes)

    def __repr__(self) -> str:
        return f"FileKillSwitch({self._path!r}, min_interval={self._min_interval!r})"


class EnvKillSwitch:
    """Kill switch driven by an environment variable, read on every check.

    The value is a comma-separated list of scopes; ``1``, ``true``, ``on`` and ``all`` mean ``*``,
    and an empty value, ``0``, ``false`` and ``off`` mean nothing (case-insensitive). An invalid
    entry raises ``KillSwitchUnavailable``. The last value and its parse are cached, so a check
    costs one mapping lookup while the variable is unchanged.
    """

    def __init__(self, variable: str = "AGENTWATCH_KILL_SWITCH", *, environ: Mapping[str, str] | None = None) -> None:
        if not isinstance(variable, str) or not variable or "=" in variable:
            raise ValueError(f"invalid environment variable name {variable!r}")
        self._variable = variable
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._name = f"env:{variable}"
        # (raw value, scopes or failure message); replaced as a whole, so it is safe to read without a lock.
        self._cache: tuple[str | None, frozenset[str] | str] = (None, frozenset())

    @property
    def name(self) -> str:
        return self._name

    def engaged_scopes(self) -> frozenset[str]:
        raw = self._environ.get(self._variable)
        cached_raw, result = self._cache
        if raw != cached_raw:
            result = self._parse(raw)
            self._cache = (raw, result)
        if isinstance(result, str):
            raise KillSwitchUnavailable(self._name, result)
        return result

    @staticmethod
    def _parse(raw: str | None) -> frozenset[str] | str:
        value = (raw or "").strip()
        keyword = value.lower()
        if keyword in _ENV_NONE:
            return frozenset()
        if keyword in _ENV_ALL:
            return frozenset({_GLOBAL})
        scopes: set[str] = set()
        for entry in value.split(","):
            if not entry.strip():
                continue  # tolerate "a,,b" and a trailing comma
            try:
                scopes.add(_parse_scope(entry))
            except ValueError as exc:
                return str(exc)
        return frozenset(scopes)

    def __repr__(self) -> str:
        return f"EnvKillSwitch({self._variable!r})"


@dataclass(frozen=True, slots=True)
class KillSwitchState:
    """Outcome of one check.

    ``engaged``: a scope covering the run is engaged; ``scope`` is that scope and ``source`` the name
    of the source that has it. ``unavailable``: messages of the sources that could not be read; it
    can be non-empty whether or not ``engaged`` is true.
    """

    engaged: bool
    scope: str | None = None
    source: str | None = None
    unavailable: tuple[str, ...] = ()

    CLEAR: ClassVar[KillSwitchState]
    """Nothing engaged and every source readable."""


KillSwitchState.CLEAR = KillSwitchState(engaged=False)


class KillSwitch:
    """A set of kill-switch sources, checked before every step and every tool call.

    ``check`` consults every source. An engaged scope covering the run wins: the state is engaged
    even if another source is unavailable. Sources that could not be read (they raised
    ``KillSwitchUnavailable``, or anything else, which counts the same) are listed in
    ``unavailable``; ``check`` itself never raises for them. What an unavailable source means is the
    caller's decision: the tool gateway fails closed for write and approval tools (a kill switch
    nobody can read might be engaged) and fails open for read-only ones. Each distinct failure
    message is logged at WARNING once per source on ``agentwatch.killswitch``, so a broken file
    checked thousands of times a second logs once; when the source is readable again an INFO line
    says so and the next outage is logged afresh.
    """

    def __init__(self, *sources: KillSwitchSource) -> None:
        for source in sources:
            if not callable(getattr(source, "engaged_scopes", None)):
                raise TypeError(f"kill-switch sources need an engaged_scopes() method, got {source!r}")
        self._sources: tuple[KillSwitchSource, ...] = sources
        self._lock = threading.Lock()
        # Index of a failing source -> messages already logged for it. Keyed by position because
        # names may repeat (two memory switches). Only touched on failure and on recovery.
        self._failing: dict[int, set[str]] = {}

    @classmethod
    def from_spec(cls, spec: KillSwitch | KillSwitchSource | Sequence[KillSwitchSource] | None) -> KillSwitch | None:
        """Accept what a user may pass as ``kill_switch=``: None, a KillSwitch, a source or a list of sources.

        None and an empty list give None (no kill switch).
        """
        if spec is None:
            return None
        if isinstance(spec, KillSwitch):
            return spec
        if isinstance(spec, KillSwitchSource):
            return cls(spec)
        # A str is a Sequence too; its characters are not sources. Widened to object so the checks
        # stay meaningful to the type checker (they guard untyped callers).
        given: object = spec
        if isinstance(given, str | bytes) or not isinstance(given, Sequence):
            raise TypeError(
                f"kill_switch must be a KillSwitch, a kill-switch source or a list of sources, got {spec!r}"
            )
        return cls(*spec) if spec else None

    @property
    def sources(self) -> tuple[KillSwitchSource, ...]:
        """The sources, in the order they are consulted."""
        return self._sources

    def check(self, *, agent: str, tenant_id: str | None) -> KillSwitchState:
        """Whether a scope covering ``agent`` (for ``tenant_id``) is engaged in any source."""
        candidates = _candidate_scopes(agent, tenant_id)
        scope: str | None = None
        source_name: str | None = None
        unavailable: list[str] | None = None
        for index, source in enumerate(self._sources):
            try:
                engaged = source.engaged_scopes()
            except Exception as exc:
                message = self._failed(index, source, exc)
                if unavailable is None:
                    unavailable = []
                unavailable.append(message)
                continue
            if self._failing and index in self._failing:
                self._recovered(index, source)
            if scope is None and engaged:
                for candidate in candidates:
                    if candidate in engaged:
                        scope, source_name = candidate, _source_name(source)
                        break
        if scope is None and unavailable is None:
            return KillSwitchState.CLEAR
        return KillSwitchState(
            engaged=scope is not None, scope=scope, source=source_name, unavailable=tuple(unavailable or ())
        )

    def _failed(self, index: int, source: KillSwitchSource, exc: Exception) -> str:
        if isinstance(exc, KillSwitchUnavailable):
            message = str(exc)
        else:
            # A buggy custom source counts as unavailable rather than crashing every step of every run.
            message = f"kill-switch source {_source_name(source)} failed: {type(exc).__name__}: {exc}"
        with self._lock:
            logged = self._failing.setdefault(index, set())
            if message in logged or len(logged) >= _MAX_REMEMBERED_MESSAGES:
                return message
            logged.add(message)
        logger.warning("%s; the caller decides whether to fail open or closed", message)
        return message

    def _recovered(self, index: int, source: KillSwitchSource) -> None:
        with self._lock:
            if self._failing.pop(index, None) is None:
                return  # another thread reported the recovery first
        logger.info("kill-switch source %s is readable again", _source_name(source))

    def __repr__(self) -> str:
        return f"KillSwitch({', '.join(repr(source) for source in self._sources)})"


def _source_name(source: KillSwitchSource) -> str:
    # The name itself may be what is broken in a custom source; never let logging raise.
    try:
        return str(source.name)
    except Exception:
        return repr(source)
