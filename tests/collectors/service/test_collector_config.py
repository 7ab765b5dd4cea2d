"""Collector configuration: settings precedence and errors, the tokens file, and the CLI's answers to both.

``settings.resolve`` is unit-tested (flags > ``AGENTWATCH_*`` environment > YAML file > defaults);
the command line runs as real subprocesses (chDB hosts one engine path per process), which also
shows that a bad configuration ends with exit status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from _collector_proc import CollectorProcess, query_embedded
from _ports import free_port

from agentwatch.collectors.config.auth import Authenticator, AuthError, Scope
from agentwatch.collectors.config.settings import CollectorSettings, SettingsError, resolve
from agentwatch.collectors.store.control_schema import (
    APPROVALS_TABLE,
    AUDIT_DENIALS_VIEW,
    AUDIT_TABLE,
    KILLSWITCH_TABLE,
)
from agentwatch.collectors.store.schema import (
    MIGRATIONS_TABLE,
    RUNS_TABLE,
    RUNS_VIEW,
    TOOL_CALLS_TABLE,
    TOOL_CALLS_VIEW,
    TRACE_ID_TS_TABLE,
    TRACE_ID_TS_VIEW,
    TRACES_TABLE,
)

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

TABLES = (
    TRACES_TABLE,
    TRACE_ID_TS_TABLE,
    RUNS_TABLE,
    TOOL_CALLS_TABLE,
    KILLSWITCH_TABLE,
    APPROVALS_TABLE,
    AUDIT_TABLE,
)
VIEWS = (TRACE_ID_TS_VIEW, RUNS_VIEW, TOOL_CALLS_VIEW, AUDIT_DENIALS_VIEW)


# --- precedence ---------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file_env_or_flags() -> None:
    assert resolve(environ={}) == CollectorSettings()


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    config = write(
        tmp_path / "collector.yaml",
        "max_body_bytes: 1000\nmax_spans_per_request: 7\nmax_attribute_length: 77\nspool: /from/file\n",
    )
    environ = {
        "AGENTWATCH_MAX_BODY_BYTES": "2000",
        "AGENTWATCH_MAX_SPANS_PER_REQUEST": "8",
        "AGENTWATCH_REDACT": "false",
        "UNRELATED": "x",
    }
    overrides = {"max_body_bytes": "3000", "spool": None}  # None: flag not given
    settings = resolve(config_file=config, overrides=overrides, environ=environ)
    assert settings.max_body_bytes == 3000  # flag
    assert settings.max_spans_per_request == 8  # environment
    assert settings.redact is False  # environment
    assert settings.max_attribute_length == 77  # file
    assert settings.spool == "/from/file"  # file (the flag was not given)
    assert settings.otlp_grpc == CollectorSettings().otlp_grpc  # default


def test_file_accepts_a_collector_section_and_dashed_keys(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "collector:\n  max-body-bytes: 4096\n  insecure_allow_remote: yes\n")
    settings = resolve(config_file=config, environ={})
    assert (settings.max_body_bytes, settings.insecure_allow_remote) == (4096, True)
    assert resolve(config_file=write(tmp_path / "empty.yaml", ""), environ={}) == CollectorSettings()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("max_body_bytes: [1\n", "not valid YAML"),
        ("a: b\n  c: d\n", "line 2"),
        ("max_body_byte: 10\n", "'max_body_byte'"),
        ("max_body_bytes: lots\n", "max_body_bytes"),
        ("max_body_bytes: 1.5\n", "max_body_bytes"),
        ("max_spans_per_request: true\n", "max_spans_per_request"),
        ("batch_timeout_seconds: true\n", "batch_timeout_seconds"),
        ("batch_timeout_seconds: .nan\n", "batch_timeout_seconds"),
        ("redact: maybe\n", "redact"),
        ("otlp_http: [127.0.0.1, 4318]\n", "otlp_http"),
        ("otlp_http: localhost\n", "otlp_http"),
        ("metrics: 127.0.0.1:70000\n", "metrics"),
        ("max_body_bytes: 0\n", "max_body_bytes"),
        ("clickhouse: mysql://db\n", "clickhouse"),
        ("otlp_http: ''\n", "otlp_http"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, named: str) -> None:
    config = write(tmp_path / "bad.yaml", text)
    with pytest.raises(SettingsError) as caught:
        resolve(config_file=config, environ={})
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_environment_and_flags_name_where_they_come_from() -> None:
    with pytest.raises(SettingsError, match="AGENTWATCH_MAX_BODY_BYTES"):
        resolve(environ={"AGENTWATCH_MAX_BODY_BYTES": "1e6"})
    with pytest.raises(SettingsError, match="--max-spans-per-request"):
        resolve(environ={}, overrides={"max_spans_per_request": "ten"})
    with pytest.raises(SettingsError, match="cannot read config file"):
        resolve(config_file="/nonexistent/collector.yaml", environ={})


def test_binding_beyond_loopback_needs_tokens_or_the_explicit_flag(tmp_path: Path) -> None:
    for address in ("0.0.0.0:4318", "[::]:4318", ":4318", "192.0.2.1:4318"):
        with pytest.raises(SettingsError, match="--insecure-allow-remote"):
            CollectorSettings(otlp_http=address).check_exposure()
    with pytest.raises(SettingsError, match="otlp_grpc"):
        CollectorSettings(otlp_grpc="0.0.0.0:4317").check_exposure()
    for address in ("127.0.0.1:4318", "localhost:4318", "[::1]:4318", "127.9.9.9:1"):
        CollectorSettings(otlp_http=address).check_exposure()
    CollectorSettings(otlp_http="0.0.0.0:4318", insecure_allow_remote=True).check_exposure()
    CollectorSettings(otlp_http="0.0.0.0:4318", tokens=str(tmp_path / "tokens.yaml")).check_exposure()


# --- tokens file --------------------------------------------------------------------------------


def test_tokens_file_maps_tokens_and_digests_to_tenants_and_scopes(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"hashed-secret").hexdigest()
    tokens = write(
        tmp_path / "tokens.yaml",
        f"""tokens:
  - token: plain-secret
    tenant: acme
    scopes: [ingest, read]
  - token_sha256: "{digest.upper()}"
    tenant: " globex "
  - token: read-only
    tenant: acme
    scopes: [read]
""",
    )
    auth = Authenticator.from_file(tokens)
    assert auth.authenticate("Bearer plain-secret", Scope.READ).tenant == "acme"
    assert auth.authenticate("bearer   hashed-secret ", Scope.INGEST).tenant == "globex"  # default scope: ingest
    with pytest.raises(AuthError) as denied:
        auth.authenticate("Bearer hashed-secret", Scope.READ)
    assert denied.value.status == 403
    with pytest.raises(AuthError) as unknown:
        auth.authenticate(f"Bearer {digest}", Scope.INGEST)  # the digest itself is not a token
    assert unknown.value.status == 401


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("tokens: [\n", "not valid YAML"),
        ("{}\n", "non-empty 'tokens:' list"),
        ("tokens: []\n", "non-empty 'tokens:' list"),
        ("tokens:\n  - just-a-string\n", "entry 1"),
        ("tokens:\n  - tenant: acme\n", "entry 1: needs token"),
        ("tokens:\n  - token: 42\n    tenant: acme\n", "entry 1: needs token"),
        ("tokens:\n  - token_sha256: abcd\n    tenant: acme\n", "64 hex digits"),
        ("tokens:\n  - token: t\n", "entry 1: tenant"),
        ("tokens:\n  - token: t\n    tenant: '  '\n", "entry 1: tenant"),
        ("tokens:\n  - token: t\n    tenant: a\n    scopes: [write]\n", "unknown scope"),
        ("tokens:\n  - token: t\n    tenant: a\n    scopes: read\n", "scopes must be a list"),
        ("tokens:\n  - {token: t, tenant: a}\n  - {token: t, tenant: b}\n", "entry 2: duplicate token"),
    ],
)
def test_bad_tokens_files_are_clear_errors(tmp_path: Path, text: str, named: str) -> None:
    tokens = write(tmp_path / "tokens.yaml", text)
    with pytest.raises(SettingsError) as caught:
        Authenticator.from_file(tokens)
    assert named in str(caught.value)
    assert str(tokens) in str(caught.value)
    assert "\n" not in str(caught.value)


# --- the command line ---------------------------------------------------------------------------


def agentwatch(*args: str, cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentwatch.collectors.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def assert_one_line_exit_2(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("agentwatch collector: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("syntax.yaml", b"max_body_bytes: [1\n", "not valid YAML"),
        ("unknown.yaml", b"max_bodybytes: 1\n", "max_bodybytes"),
        ("type.yaml", b"max_spans_per_request: many\n", "max_spans_per_request"),
        ("binary.yaml", b"spool: \xff\xfe\n", "not UTF-8"),
    ],
)
def test_cli_bad_config_file_exits_2_with_one_line(tmp_path: Path, name: str, content: bytes, needle: str) -> None:
    (tmp_path / name).write_bytes(content)
    done = agentwatch("collector", "--config", name, cwd=tmp_path)
    assert_one_line_exit_2(done, name, needle)
    assert not (tmp_path / "agentwatch-data").exists()  # nothing was started


def test_cli_bad_tokens_file_exits_2_with_one_line(tmp_path: Path) -> None:
    write(tmp_path / "tokens.yaml", "tokens:\n  - token: t\n    tenant: a\n    scopes: [admin]\n")
    done = agentwatch("collector", "--tokens", "tokens.yaml", "--otlp-grpc", "", "--metrics", "", cwd=tmp_path)
    assert_one_line_exit_2(done, "tokens.yaml", "unknown scope")


@pytest.mark.parametrize("flag", ["--otlp-http", "--otlp-grpc"])
def test_cli_refuses_a_public_address_without_tokens(tmp_path: Path, flag: str) -> None:
    done = agentwatch("collector", flag, f"0.0.0.0:{free_port()}", cwd=tmp_path)
    assert_one_line_exit_2(done, "0.0.0.0", "--tokens", "--insecure-allow-remote")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--clickhouse", "http://writer:hunter2@db:port/obs"], ["clickhouse", "invalid port", "***"]),
        (["--clickhouse", "chdb://"], ["clickhouse", "missing path"]),
        (["--clickhouse", "mysql://db/obs"], ["clickhouse"]),
        (["--database", "obs-prod"], ["database", "obs-prod"]),
        (["--max-body-bytes", "1.5"], ["--max-body-bytes"]),
        (["--otlp-grpc", "localhost"], ["otlp_grpc", "HOST:PORT"]),
        (["--clickhouse", "chdb:///proc/agentwatch-cannot-be-here"], ["cannot start the embedded ClickHouse"]),
    ],
)
def test_cli_bad_settings_exit_2_with_one_line(tmp_path: Path, args: list[str], needles: list[str]) -> None:
    done = agentwatch(
        "collector", "--otlp-http", "127.0.0.1:0", "--otlp-grpc", "", "--metrics", "", *args, cwd=tmp_path
    )
    assert_one_line_exit_2(done, *needles)
    assert "hunter2" not in done.stderr


def test_cli_refuses_a_spool_in_use_by_another_collector(tmp_path: Path) -> None:
    first = CollectorProcess(tmp_path / "first").start()
    try:
        spool = first.workdir / "spool"
        done = agentwatch(
            "collector",
            *("--spool", str(spool), "--clickhouse", f"chdb://{tmp_path / 'second'}"),
            *("--otlp-http", "127.0.0.1:0", "--otlp-grpc", "", "--metrics", ""),
            cwd=tmp_path,
        )
        assert_one_line_exit_2(done, str(spool), "in use")
        assert first.get("/healthz")[0] == 200  # the running collector is untouched
    finally:
        assert first.stop() == 0


def test_cli_starts_on_a_public_address_with_the_explicit_flag(tmp_path: Path) -> None:
    collector = CollectorProcess(tmp_path)
    collector.extra_args = ["--otlp-http", f"0.0.0.0:{collector.http_port}", "--insecure-allow-remote"]
    collector.start()
    try:
        status, body = collector.get("/readyz")
        assert status == 200, body
        assert "listens beyond loopback" not in collector.log()
    finally:
        assert collector.stop() == 0, collector.log()


def test_cli_schema_print_has_every_create(tmp_path: Path) -> None:
    done = agentwatch("schema", "--print", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    statements = [s.strip() for s in done.stdout.split(";\n") if s.strip()]
    # the migrations in order: migration 5 drops two views to make them again with a wider filter
    assert all(s.startswith(("CREATE ", "ALTER TABLE ", "DROP VIEW IF EXISTS ")) for s in statements), statements
    for table in (*TABLES, MIGRATIONS_TABLE):
        assert any(s.startswith(f"CREATE TABLE IF NOT EXISTS `default`.`{table}`") for s in statements), table
    for view in VIEWS:
        assert any(s.startswith(f"CREATE MATERIALIZED VIEW IF NOT EXISTS `default`.`{view}`") for s in statements)
    assert "ON CLUSTER" not in done.stdout
    assert "Replicated" not in done.stdout
    assert "toIntervalDay(30)" in done.stdout


def test_cli_schema_print_for_a_cluster(tmp_path: Path) -> None:
    done = agentwatch("schema", "--print", "--cluster", "c1", "--database", "obs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    statements = [s.strip() for s in done.stdout.split(";\n") if s.strip()]
    assert all("ON CLUSTER `c1`" in s.splitlines()[0] for s in statements), statements
    for table in TABLES:
        # a replicated local table per shard, and a Distributed table over it under the public name
        local = next(s for s in statements if f"`obs`.`{table}_local`" in s.splitlines()[0])
        assert "ENGINE = Replicated" in local
        public = next(s for s in statements if f"`obs`.`{table}` " in s.splitlines()[0])
        assert f"ENGINE = Distributed('c1', 'obs', '{table}_local'" in public
    assert "ENGINE = MergeTree" not in done.stdout


def test_cli_schema_apply_then_nothing_pending(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = agentwatch("schema", "--apply", "--clickhouse", f"chdb://{store}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied migrations: 1")
    second = agentwatch("schema", "--apply", "--clickhouse", f"chdb://{store}", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "applied migrations: none (schema is current)"
    [names] = query_embedded(store, "SELECT name FROM system.tables WHERE database = 'default' ORDER BY name")
    assert {row[0] for row in names} >= {*TABLES, *VIEWS, MIGRATIONS_TABLE}


def test_cli_schema_apply_uses_the_database_of_the_url(tmp_path: Path) -> None:
    store = tmp_path / "store"
    done = agentwatch("schema", "--apply", "--clickhouse", f"chdb://{store}?database=obs", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [obs, default] = query_embedded(
        store,
        f"SELECT count() FROM system.tables WHERE database = 'obs' AND name = '{TRACES_TABLE}'",
        f"SELECT count() FROM system.tables WHERE database = 'default' AND name = '{TRACES_TABLE}'",
    )
    assert (obs, default) == ([["1"]], [["0"]])
