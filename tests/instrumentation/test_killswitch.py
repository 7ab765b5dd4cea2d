"""Tests of the kill switch: scope parsing and matching, the memory, file and environment sources,
the file source's stat rate limit and failure handling, warning de-duplication and thread safety.

The file source is driven by an injected fake clock, never by sleeping, and the environment source
by an injected mapping, never by mutating ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _telemetry import FakeClock

from agentwatch.instrumentation import killswitch
from agentwatch.instrumentation.errors import AgentWatchError
from agentwatch.instrumentation.killswitch import (
    EnvKillSwitch,
    FileKillSwitch,
    KillSwitch,
    KillSwitchSource,
    KillSwitchState,
    KillSwitchUnavailable,
    MemoryKillSwitch,
)


class StaticSource:
    """A minimal third-party source: fixed scopes, or a fixed failure."""

    def __init__(self, name: str, scopes: frozenset[str] = frozenset(), error: Exception | None = None) -> None:
        self.name = name
        self.scopes = scopes
        self.error = error

    def engaged_scopes(self) -> frozenset[str]:
        if self.error is not None:
            raise self.error
        return self.scopes


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kill_file(tmp_path: Path) -> Path:
    return tmp_path / "kill"


@pytest.fixture
def file_source(kill_file: Path, clock: FakeClock) -> FileKillSwitch:
    return FileKillSwitch(kill_file, min_interval=1.0, clock=clock)


def _old_mtime(path: Path) -> None:
    """Date the file an hour back so the source trusts its stat signature (it is not "racy")."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 3600 * 10**9))


@pytest.fixture
def stat_counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every os.stat call the kill-switch module makes while the test runs."""
    calls: list[str] = []
    real_stat = os.stat

    def counting_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        calls.append(os.fspath(path))
        return real_stat(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "stat", counting_stat)
        yield calls


# --- scopes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("*", "*"),
        ("  *\t", "*"),
        ("agent:planner", "agent:planner"),
        ("agent:Triage agent", "agent:Triage agent"),
        ("agent:team/planner", "agent:team/planner"),
        ("tenant:acme-42", "tenant:acme-42"),
        (" agent:planner/tenant:acme ", "agent:planner/tenant:acme"),
    ],
)
def test_valid_scopes_are_canonicalised(given: str, canonical: str) -> None:
    memory = MemoryKillSwitch()
    memory.engage(given)
    assert memory.engaged_scopes() == frozenset({canonical})


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "   ",
        "**",
        "all",
        "planner",
        "Agent:planner",
        "agent:",
        "agent: planner",
        "tenant:",
        "agent:planner/tenant:",
        "tenant:acme/agent:planner",
        "agent:a,b",
        "agent:a#b",
        "agent:a\x00",
        "tenant:a\nb",
    ],
)
def test_invalid_scopes_raise_a_clear_value_error(junk: str) -> None:
    memory = MemoryKillSwitch()
    with pytest.raises(ValueError, match="invalid kill-switch scope"):
        memory.engage(junk)
    with pytest.raises(ValueError, match="invalid kill-switch scope"):
        memory.release(junk)
    assert memory.engaged_scopes() == frozenset()


def test_non_string_scope_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be a string"):
        MemoryKillSwitch().engage(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scope", "agent", "tenant", "expected"),
    [
        ("*", "planner", None, True),
        ("*", "planner", "acme", True),
        ("agent:planner", "planner", None, True),
        ("agent:planner", "planner", "acme", True),
        ("agent:planner", "coder", "acme", False),
        ("agent:planner", "Planner", None, False),
        ("tenant:acme", "planner", "acme", True),
        ("tenant:acme", "coder", "acme", True),
        ("tenant:acme", "planner", "globex", False),
        ("tenant:acme", "planner", None, False),
        ("tenant:acme", "planner", "", False),
        ("agent:planner/tenant:acme", "planner", "acme", True),
        ("agent:planner/tenant:acme", "planner", "globex", False),
        ("agent:planner/tenant:acme", "coder", "acme", False),
        ("agent:planner/tenant:acme", "planner", None, False),
    ],
)
def test_scope_matching(scope: str, agent: str, tenant: str | None, expected: bool) -> None:
    memory = MemoryKillSwitch()
    memory.engage(scope)
    state = KillSwitch(memory).check(agent=agent, tenant_id=tenant)
    assert state.engaged is expected
    assert state.scope == (scope if expected else None)
    assert state.source == ("memory" if expected else None)
    assert state.unavailable == ()


def test_broadest_matching_scope_is_reported() -> None:
    memory = MemoryKillSwitch()
    memory.engage("agent:planner/tenant:acme")
    memory.engage("tenant:acme")
    switch = KillSwitch(memory)
    assert switch.check(agent="planner", tenant_id="acme").scope == "tenant:acme"
    memory.engage("agent:planner")
    assert switch.check(agent="planner", tenant_id="acme").scope == "agent:planner"
    memory.engage()
    assert switch.check(agent="planner", tenant_id="acme").scope == "*"


# --- state -----------------------------------------------------------------------------------


def test_clear_state_constant() -> None:
    assert KillSwitchState(engaged=False, scope=None, source=None, unavailable=()) == KillSwitchState.CLEAR
    assert KillSwitch().check(agent="planner", tenant_id=None) is KillSwitchState.CLEAR
    assert KillSwitch(MemoryKillSwitch()).check(agent="planner", tenant_id="acme") is KillSwitchState.CLEAR
    with pytest.raises(dataclasses.FrozenInstanceError):
        KillSwitchState.CLEAR.engaged = True  # type: ignore[misc]


def test_public_api() -> None:
    assert sorted(killswitch.__all__) == sorted(
        [
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
    )
    assert killswitch.scope_for() == "*"
    assert killswitch.scope_for("support", "acme") == "agent:support/tenant:acme"
    assert killswitch.scope_parts("agent:support/tenant:acme") == ("support", "acme")
    assert killswitch.scope_parts("tenant:acme") == (None, "acme")
    assert killswitch.parse_scope(" agent:a ") == "agent:a"
    error = KillSwitchUnavailable("file:/x", "it is a directory")
    assert isinstance(error, AgentWatchError)
    assert "file:/x" in str(error)
    assert "it is a directory" in str(error)


# --- memory source ---------------------------------------------------------------------------


def test_memory_engage_release_per_scope_kind() -> None:
    memory = MemoryKillSwitch()
    switch = KillSwitch(memory)
    assert memory.name == "memory"
    assert not switch.check(agent="planner", tenant_id="acme").engaged

    memory.engage()
    assert switch.check(agent="anyone", tenant_id=None).scope == "*"
    memory.release()
    assert not switch.check(agent="anyone", tenant_id=None).engaged

    memory.engage("agent:planner")
    assert switch.check(agent="planner", tenant_id=None).engaged
    assert not switch.check(agent="coder", tenant_id=None).engaged
    memory.release("agent:planner")
    assert not switch.check(agent="planner", tenant_id=None).engaged

    memory.engage("tenant:acme")
    assert switch.check(agent="coder", tenant_id="acme").engaged
    assert not switch.check(agent="coder", tenant_id="globex").engaged
    memory.release("tenant:acme")
    assert not switch.check(agent="coder", tenant_id="acme").engaged

    memory.engage("agent:planner/tenant:acme")
    assert switch.check(agent="planner", tenant_id="acme").engaged
    assert not switch.check(agent="planner", tenant_id="globex").engaged
    memory.release("agent:planner/tenant:acme")
    assert memory.engaged_scopes() == frozenset()


def test_memory_release_is_exact_and_release_all_clears() -> None:
    memory = MemoryKillSwitch()
    memory.engage("agent:planner")
    memory.engage("agent:planner")  # idempotent
    memory.engage("tenant:acme")
    memory.engage()
    memory.release()  # releases only the global scope
    assert memory.engaged_scopes() == frozenset({"agent:planner", "tenant:acme"})
    memory.release("agent:coder")  # not engaged: no-op
    assert memory.engaged_scopes() == frozenset({"agent:planner", "tenant:acme"})
    memory.release_all()
    assert memory.engaged_scopes() == frozenset()


# --- file source -----------------------------------------------------------------------------


def test_file_lifecycle_missing_create_edit_delete(
    file_source: FileKillSwitch, kill_file: Path, clock: FakeClock
) -> None:
    switch = KillSwitch(file_source)
    assert file_source.name == f"file:{kill_file}"

    # Missing is the normal, released state.
    assert switch.check(agent="planner", tenant_id="acme") is KillSwitchState.CLEAR

    kill_file.write_text("agent:planner\n")
    clock.advance(0.5)
    assert not switch.check(agent="planner", tenant_id="acme").engaged  # not stat'ed again yet
    clock.advance(0.5)
    state = switch.check(agent="planner", tenant_id="acme")
    assert state == KillSwitchState(engaged=True, scope="agent:planner", source=f"file:{kill_file}")

    kill_file.write_text("tenant:globex\n")
    clock.advance(1.0)
    assert not switch.check(agent="planner", tenant_id="acme").engaged
    assert switch.check(agent="planner", tenant_id="globex").scope == "tenant:globex"

    kill_file.unlink()
    clock.advance(1.0)
    assert switch.check(agent="planner", tenant_id="globex") is KillSwitchState.CLEAR


def test_file_format_comments_blank_lines_and_bom(file_source: FileKillSwitch, kill_file: Path) -> None:
    kill_file.write_bytes(
        b"\xef\xbb\xbf# incident 4711: stop the planner for acme\n"
        b"\n"
        b"   agent:planner/tenant:acme   # paged at 03:12\r\n"
        b"\t\n"
        b"tenant:globex\n"
        b"# agent:coder\n"
        b"agent:Triage agent"
    )
    assert file_source.engaged_scopes() == frozenset(
        {"agent:planner/tenant:acme", "tenant:globex", "agent:Triage agent"}
    )


def test_file_change_is_not_seen_before_min_interval(
    file_source: FileKillSwitch, kill_file: Path, clock: FakeClock, stat_counter: list[str]
) -> None:
    kill_file.write_text("agent:planner\n")
    assert file_source.engaged_scopes() == frozenset({"agent:planner"})
    assert len(stat_counter) == 1

    kill_file.write_text("agent:coder\n")
    for _ in range(1000):
        assert file_source.engaged_scopes() == frozenset({"agent:planner"})
        clock.advance(0.0009)  # 0.9 s in total: still inside the interval
    assert len(stat_counter) == 1

    clock.advance(0.1)
    assert file_source.engaged_scopes() == frozenset({"agent:coder"})
    assert len(stat_counter) == 2
    assert stat_counter == [str(kill_file)] * 2


def test_missing_file_is_stat_ed_once_per_interval(
    file_source: FileKillSwitch, clock: FakeClock, stat_counter: list[str]
) -> None:
    for second in range(5):
        for _ in range(100):
            assert file_source.engaged_scopes() == frozenset()
        assert len(stat_counter) == second + 1
        clock.advance(1.0)


def test_unchanged_file_is_not_re_read(
    file_source: FileKillSwitch, kill_file: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    kill_file.write_text("agent:planner\n")
    _old_mtime(kill_file)
    opened: list[str] = []
    real_open = open

    def counting_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    # Shadow the builtin inside the module only.
    monkeypatch.setattr(killswitch, "open", counting_open, raising=False)
    for _ in range(10):
        assert file_source.engaged_scopes() == frozenset({"agent:planner"})
        clock.advance(1.0)
    assert opened == [str(kill_file)]


def _scopes_with_frozen_stat(
    source: FileKillSwitch, frozen: os.stat_result, monkeypatch: pytest.MonkeyPatch
) -> frozenset[str]:
    """Query ``source`` while os.stat reports ``frozen`` (patched only for this call)."""
    with monkeypatch.context() as patch:
        patch.setattr(os, "stat", lambda *_args, **_kwargs: frozen)
        return source.engaged_scopes()


def test_recently_modified_file_is_re_read_even_if_its_signature_is_unchanged(
    file_source: FileKillSwitch, kill_file: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulate a coarse mtime tick: two same-size writes that leave stat() identical.
    kill_file.write_text("agent:aaaa\n")
    frozen = kill_file.stat()
    assert _scopes_with_frozen_stat(file_source, frozen, monkeypatch) == frozenset({"agent:aaaa"})
    kill_file.write_text("agent:bbbb\n")
    clock.advance(1.0)
    assert _scopes_with_frozen_stat(file_source, frozen, monkeypatch) == frozenset({"agent:bbbb"})


def test_old_file_with_unchanged_signature_is_served_from_cache(
    file_source: FileKillSwitch, kill_file: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counterpart of the test above: proves the signature, not the clock alone, decides re-reads.
    kill_file.write_text("agent:aaaa\n")
    _old_mtime(kill_file)
    frozen = kill_file.stat()
    assert _scopes_with_frozen_stat(file_source, frozen, monkeypatch) == frozenset({"agent:aaaa"})
    kill_file.write_text("agent:bbbb\n")
    clock.advance(1.0)
    assert _scopes_with_frozen_stat(file_source, frozen, monkeypatch) == frozenset({"agent:aaaa"})


def test_failure_is_retried_even_if_the_signature_is_unchanged(
    file_source: FileKillSwitch, kill_file: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cause of a failure may lie outside the file (permissions, a parent directory), so a broken
    # file is re-read at every interval, not only when its stat signature changes.
    kill_file.write_text("agent:a,bc\n")
    _old_mtime(kill_file)
    frozen = kill_file.stat()
    with pytest.raises(KillSwitchUnavailable, match="line 1"):
        _scopes_with_frozen_stat(file_source, frozen, monkeypatch)
    kill_file.write_text("agent:abcd\n")
    clock.advance(1.0)
    assert _scopes_with_frozen_stat(file_source, frozen, monkeypatch) == frozenset({"agent:abcd"})


def _make_directory(path: Path) -> None:
    path.mkdir()


def _write_invalid_utf8(path: Path) -> None:
    path.write_bytes(b"agent:planner\n\xff\xfe\n")


def _write_invalid_scope(path: Path) -> None:
    path.write_text("agent:planner\n\nstop everything\n")


@pytest.mark.parametrize(
    ("breaker", "reason"),
    [
        (_make_directory, "is a directory"),
        (_write_invalid_utf8, "not valid UTF-8"),
        (_write_invalid_scope, "line 3: invalid kill-switch scope 'stop everything'"),
    ],
)
def test_unreadable_file_is_unavailable_until_fixed(
    file_source: FileKillSwitch,
    kill_file: Path,
    clock: FakeClock,
    breaker: Callable[[Path], None],
    reason: str,
) -> None:
    memory = MemoryKillSwitch()
    switch = KillSwitch(file_source, memory)
    breaker(kill_file)

    for _ in range(3):  # keeps raising, on the cached failure and after re-checking
        with pytest.raises(KillSwitchUnavailable, match=reason) as caught:
            file_source.engaged_scopes()
        assert caught.value.source == f"file:{kill_file}"
        state = switch.check(agent="planner", tenant_id="acme")
        assert not state.engaged
        assert len(state.unavailable) == 1
        assert f"file:{kill_file}" in state.unavailable[0]
        assert reason in state.unavailable[0]
        clock.advance(1.0)

    # An engaged scope in a readable source wins over the unavailable one.
    memory.engage("tenant:acme")
    state = switch.check(agent="planner", tenant_id="acme")
    assert state.engaged
    assert (state.scope, state.source) == ("tenant:acme", "memory")
    assert len(state.unavailable) == 1

    # Fixed: readable again at the next interval.
    if kill_file.is_dir():
        kill_file.rmdir()
    kill_file.write_text("*\n")
    clock.advance(1.0)
    assert file_source.engaged_scopes() == frozenset({"*"})
    assert switch.check(agent="planner", tenant_id="acme").unavailable == ()


def test_broken_file_never_serves_the_stale_set(file_source: FileKillSwitch, kill_file: Path, clock: FakeClock) -> None:
    kill_file.write_text("*\n")
    assert file_source.engaged_scopes() == frozenset({"*"})
    kill_file.write_text("*\nnonsense\n")
    clock.advance(1.0)
    for _ in range(5):
        with pytest.raises(KillSwitchUnavailable, match="line 2"):
            file_source.engaged_scopes()
        clock.advance(0.3)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_is_unavailable(file_source: FileKillSwitch, kill_file: Path, clock: FakeClock) -> None:
    kill_file.write_text("*\n")
    kill_file.chmod(0)
    try:
        with pytest.raises(KillSwitchUnavailable, match="cannot read the file"):
            file_source.engaged_scopes()
        # chmod changes only the ctime; the failure is retried at the next interval regardless.
        kill_file.chmod(0o600)
        clock.advance(1.0)
        assert file_source.engaged_scopes() == frozenset({"*"})
    finally:
        kill_file.chmod(0o600)


def test_read_error_is_unavailable(
    file_source: FileKillSwitch, kill_file: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs as root too (where chmod cannot deny a read): the module's open() raises instead.
    kill_file.write_text("*\n")

    def denied(path: Any, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", os.fspath(path))

    with monkeypatch.context() as patch:
        patch.setattr(killswitch, "open", denied, raising=False)
        for _ in range(2):
            with pytest.raises(KillSwitchUnavailable, match=r"cannot read the file.*Permission denied"):
                file_source.engaged_scopes()
            clock.advance(1.0)
    assert file_source.engaged_scopes() == frozenset({"*"})


def test_oversized_file_is_unavailable(file_source: FileKillSwitch, kill_file: Path) -> None:
    kill_file.write_text("# padding\n" * 200_000)
    with pytest.raises(KillSwitchUnavailable, match="larger than"):
        file_source.engaged_scopes()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_file_min_interval_is_validated(kill_file: Path, bad: float) -> None:
    with pytest.raises(ValueError, match="min_interval"):
        FileKillSwitch(kill_file, min_interval=bad)


def test_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = FileKillSwitch("kill")
    assert source.name == f"file:{tmp_path / 'kill'}"


# --- environment source ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "on", "On", "all", " all "])
def test_env_global_keywords(value: str) -> None:
    assert EnvKillSwitch(environ={"AGENTWATCH_KILL_SWITCH": value}).engaged_scopes() == frozenset({"*"})


@pytest.mark.parametrize("value", ["", "  ", "0", "false", "False", "off", "OFF"])
def test_env_off_keywords(value: str) -> None:
    assert EnvKillSwitch(environ={"AGENTWATCH_KILL_SWITCH": value}).engaged_scopes() == frozenset()


def test_env_scope_list_and_live_changes() -> None:
    environ: dict[str, str] = {}
    source = EnvKillSwitch(environ=environ)
    switch = KillSwitch(source)
    assert source.name == "env:AGENTWATCH_KILL_SWITCH"
    assert switch.check(agent="planner", tenant_id="acme") is KillSwitchState.CLEAR

    environ["AGENTWATCH_KILL_SWITCH"] = " agent:planner , tenant:globex,agent:coder/tenant:acme,"
    assert source.engaged_scopes() == frozenset({"agent:planner", "tenant:globex", "agent:coder/tenant:acme"})
    assert switch.check(agent="planner", tenant_id=None).scope == "agent:planner"
    assert switch.check(agent="coder", tenant_id="acme").scope == "agent:coder/tenant:acme"
    assert not switch.check(agent="coder", tenant_id="initech").engaged

    environ["AGENTWATCH_KILL_SWITCH"] = "*"
    assert switch.check(agent="coder", tenant_id="initech").scope == "*"
    del environ["AGENTWATCH_KILL_SWITCH"]
    assert switch.check(agent="coder", tenant_id="initech") is KillSwitchState.CLEAR


def test_env_custom_variable_and_invalid_entries() -> None:
    environ = {"STOP_AGENTS": "agent:planner,stop-now"}
    source = EnvKillSwitch("STOP_AGENTS", environ=environ)
    assert source.name == "env:STOP_AGENTS"
    for _ in range(2):  # the failure is cached but raised afresh each time
        with pytest.raises(KillSwitchUnavailable, match=r"env:STOP_AGENTS.*'stop-now'"):
            source.engaged_scopes()
    state = KillSwitch(source).check(agent="planner", tenant_id=None)
    assert not state.engaged
    assert len(state.unavailable) == 1
    environ["STOP_AGENTS"] = "agent:planner"
    assert KillSwitch(source).check(agent="planner", tenant_id=None).engaged


@pytest.mark.skipif("PATH" not in os.environ, reason="needs some variable that is set")
def test_env_reads_os_environ_by_default() -> None:
    # PATH is certainly not a list of scopes; reading it proves os.environ is the default mapping
    # without the test having to set anything in the real environment.
    with pytest.raises(KillSwitchUnavailable, match="env:PATH"):
        EnvKillSwitch("PATH").engaged_scopes()


@pytest.mark.parametrize("bad", ["", "A=B"])
def test_env_variable_name_is_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="environment variable"):
        EnvKillSwitch(bad, environ={})


# --- KillSwitch ------------------------------------------------------------------------------


def test_every_source_is_consulted() -> None:
    first = MemoryKillSwitch()
    broken = StaticSource("broken", error=KillSwitchUnavailable("broken", "down"))
    env = EnvKillSwitch(environ={"AGENTWATCH_KILL_SWITCH": "tenant:acme"})
    switch = KillSwitch(first, broken, env)
    assert switch.sources == (first, broken, env)

    state = switch.check(agent="planner", tenant_id="acme")
    assert state == KillSwitchState(
        engaged=True,
        scope="tenant:acme",
        source="env:AGENTWATCH_KILL_SWITCH",
        unavailable=("kill-switch source broken unavailable: down",),
    )
    # The first engaged source is reported, and the broken one is still listed.
    first.engage("agent:planner")
    state = switch.check(agent="planner", tenant_id="acme")
    assert (state.scope, state.source) == ("agent:planner", "memory")
    assert state.unavailable == ("kill-switch source broken unavailable: down",)


def test_unexpected_source_error_counts_as_unavailable() -> None:
    switch = KillSwitch(StaticSource("custom", error=RuntimeError("boom")))
    state = switch.check(agent="planner", tenant_id=None)
    assert not state.engaged
    assert state.unavailable == ("kill-switch source custom failed: RuntimeError: boom",)


def test_third_party_source_satisfies_the_protocol() -> None:
    source = StaticSource("custom", frozenset({"agent:planner"}))
    assert isinstance(source, KillSwitchSource)
    typed: KillSwitchSource = source
    assert KillSwitch(typed).check(agent="planner", tenant_id=None).source == "custom"


def test_from_spec() -> None:
    memory = MemoryKillSwitch()
    env = EnvKillSwitch(environ={})
    switch = KillSwitch(memory)
    assert KillSwitch.from_spec(None) is None
    assert KillSwitch.from_spec([]) is None
    assert KillSwitch.from_spec(switch) is switch
    single = KillSwitch.from_spec(memory)
    assert single is not None
    assert single.sources == (memory,)
    several = KillSwitch.from_spec([memory, env])
    assert several is not None
    assert several.sources == (memory, env)
    for junk in ["*", b"*", 42, object()]:
        with pytest.raises(TypeError, match="kill_switch must be"):
            KillSwitch.from_spec(junk)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="engaged_scopes"):
        KillSwitch.from_spec([memory, "*"])  # type: ignore[list-item]


def test_warning_logged_once_per_distinct_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentwatch.killswitch")
    environ = {"AGENTWATCH_KILL_SWITCH": "bogus"}
    switch = KillSwitch(EnvKillSwitch(environ=environ), MemoryKillSwitch())

    def warnings() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "agentwatch.killswitch"
        ]

    for _ in range(100):
        assert len(switch.check(agent="planner", tenant_id=None).unavailable) == 1
    assert len(warnings()) == 1
    assert "env:AGENTWATCH_KILL_SWITCH" in warnings()[0]
    assert "'bogus'" in warnings()[0]

    environ["AGENTWATCH_KILL_SWITCH"] = "nonsense"
    for _ in range(100):
        switch.check(agent="planner", tenant_id=None)
    environ["AGENTWATCH_KILL_SWITCH"] = "bogus"  # already logged for this source
    for _ in range(100):
        switch.check(agent="planner", tenant_id=None)
    assert len(warnings()) == 2
    assert "'nonsense'" in warnings()[1]

    # Recovery is logged once; a later outage is news again and logged afresh.
    environ["AGENTWATCH_KILL_SWITCH"] = ""
    for _ in range(10):
        assert switch.check(agent="planner", tenant_id=None) is KillSwitchState.CLEAR
    recovered = [r for r in caplog.records if r.levelno == logging.INFO and "readable again" in r.getMessage()]
    assert len(recovered) == 1
    environ["AGENTWATCH_KILL_SWITCH"] = "bogus"
    switch.check(agent="planner", tenant_id=None)
    assert len(warnings()) == 3


def test_warnings_are_kept_apart_per_source(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agentwatch.killswitch")
    error = KillSwitchUnavailable("same", "same reason")
    switch = KillSwitch(StaticSource("same", error=error), StaticSource("same", error=error))
    for _ in range(10):
        assert len(switch.check(agent="planner", tenant_id=None).unavailable) == 2
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_broken_file_logs_once(
    file_source: FileKillSwitch, kill_file: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentwatch.killswitch")
    kill_file.mkdir()
    switch = KillSwitch(file_source)
    for _ in range(50):
        assert switch.check(agent="planner", tenant_id=None).unavailable
        clock.advance(0.5)
    assert len(caplog.records) == 1
    assert "is a directory" in caplog.records[0].getMessage()


# --- thread safety ---------------------------------------------------------------------------


def _run_threads(count: int, target: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def runner(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def test_memory_switch_concurrent_engage_release_check() -> None:
    memory = MemoryKillSwitch()
    switch = KillSwitch(memory, EnvKillSwitch(environ={}))
    threads, rounds = 16, 500

    def work(index: int) -> None:
        agent = f"agent-{index}"
        for _ in range(rounds):
            memory.engage(f"agent:{agent}")
            # Only this thread touches this scope, so a lost update by another writer would show here.
            state = switch.check(agent=agent, tenant_id="acme")
            assert state.engaged, state
            assert state.scope == f"agent:{agent}"
            memory.engage(f"agent:{agent}/tenant:t{index}")
            memory.release(f"agent:{agent}")
            assert switch.check(agent=agent, tenant_id="acme") is KillSwitchState.CLEAR
            memory.release(f"agent:{agent}/tenant:t{index}")
        if index % 2 == 0:
            memory.engage(f"tenant:t{index}")

    assert _run_threads(threads, work) == []
    assert memory.engaged_scopes() == frozenset(f"tenant:t{index}" for index in range(0, threads, 2))
    for index in range(threads):
        assert switch.check(agent="x", tenant_id=f"t{index}").engaged is (index % 2 == 0)


def test_file_switch_concurrent_checks_while_the_file_is_replaced(kill_file: Path) -> None:
    # min_interval=0 with the real clock: every check stats, so readers race the writer.
    source = FileKillSwitch(kill_file, min_interval=0.0)
    switch = KillSwitch(source)
    valid = {frozenset(), frozenset({"agent:planner"}), frozenset({"tenant:acme", "*"})}
    contents = ["agent:planner\n", "tenant:acme\n*\n"]
    stop = threading.Event()

    def work(index: int) -> None:
        if index == 0:
            try:
                for round_ in range(300):
                    staging = kill_file.with_suffix(".tmp")
                    staging.write_text(contents[round_ % 2])
                    os.replace(staging, kill_file)  # atomic, as operators should do
                    if round_ % 50 == 0:
                        kill_file.unlink()
            finally:
                stop.set()
            return
        while not stop.is_set():
            assert source.engaged_scopes() in valid
            assert switch.check(agent="planner", tenant_id=None).unavailable == ()

    assert _run_threads(8, work) == []
