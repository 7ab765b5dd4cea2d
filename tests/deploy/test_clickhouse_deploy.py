"""deploy/clickhouse: the server overrides parse, name real settings (checked against the engine) and are documented."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from _paths import REPO

from agentwatch.collectors.store.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration  # real engines or processes: not in `make test-fast`

pytest_plugins = ["_chstore"]

DEPLOY = REPO / "deploy" / "clickhouse"
SERVER = DEPLOY / "config.d" / "agentwatch-small-host.xml"
USERS = DEPLOY / "users.d" / "agentwatch-limits.xml"
SYSTEM_LOGS = (
    "query_log",
    "trace_log",
    "metric_log",
    "asynchronous_metric_log",
    "part_log",
    "text_log",
    "processors_profile_log",
)
SECTIONS = {"query_cache", "merge_tree"}


def _root(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "clickhouse"
    return root


def _text(root: ET.Element, path: str) -> str:
    element = root.find(path)
    assert element is not None, f"{path} missing"
    return (element.text or "").strip()


def test_server_overrides_have_the_key_settings() -> None:
    root = _root(SERVER)
    assert 0.3 <= float(_text(root, "max_server_memory_usage_to_ram_ratio")) <= 0.8
    assert int(_text(root, "mark_cache_size")) <= 1 << 30
    assert int(_text(root, "index_mark_cache_size")) <= 1 << 30
    assert 1 <= int(_text(root, "background_pool_size")) <= 8
    assert int(_text(root, "background_schedule_pool_size")) <= 64
    assert int(_text(root, "query_cache/max_size_in_bytes")) <= 1 << 28
    for log in SYSTEM_LOGS:
        assert _text(root, f"{log}/ttl").startswith("event_date + INTERVAL"), log
        assert int(_text(root, f"{log}/flush_interval_milliseconds")) >= 7500, log
        assert _text(root, f"{log}/partition_by") == "event_date", log
    assert int(_text(root, "metric_log/collect_interval_milliseconds")) >= 5000
    assert _text(root, "text_log/level") in {"warning", "error", "information"}
    removed = root.find("query_thread_log")
    assert removed is not None
    assert removed.get("remove") == "1"


def test_user_limits_have_the_key_settings() -> None:
    default = _root(USERS).find("profiles/default")
    assert default is not None
    assert 0 < int(_text(default, "max_memory_usage")) <= 4 << 30
    assert 1 <= int(_text(default, "max_threads")) <= 4
    assert int(_text(default, "max_execution_time")) > 0
    assert _text(default, "log_processors_profiles") == "0"
    readonly = _root(USERS).find("profiles/agentwatch_readonly")
    assert readonly is not None
    assert _text(readonly, "readonly") == "2"
    assert _text(readonly, "profile") == "default"


def _names(store: ClickHouseStore, table: str) -> set[str]:
    return {str(row["name"]) for row in store.query(f"SELECT name FROM system.{table}")}


def test_every_setting_name_is_known_to_the_engine(clickhouse_engine: ClickHouseStore) -> None:
    root = _root(SERVER)
    server_settings = _names(clickhouse_engine, "server_settings")
    scalars = [child.tag for child in root if len(child) == 0 and child.get("remove") is None]
    unknown = [name for name in scalars if name not in server_settings]
    assert unknown == []
    merge_tree = root.find("merge_tree")
    assert merge_tree is not None
    assert [c.tag for c in merge_tree if c.tag not in _names(clickhouse_engine, "merge_tree_settings")] == []
    query_settings = _names(clickhouse_engine, "settings")
    for profile in _root(USERS).findall("profiles/*"):
        assert [c.tag for c in profile if c.tag != "profile" and c.tag not in query_settings] == [], profile.tag
    sections = {child.tag for child in root if len(child) > 0}
    assert sections - SECTIONS == {tag for tag in sections if tag.endswith("_log")}


@pytest.mark.parametrize("log", SYSTEM_LOGS)
def test_system_log_clauses_parse(clickhouse_engine: ClickHouseStore, log: str) -> None:
    root = _root(SERVER)
    ddl = (
        "CREATE TABLE t (event_date Date, event_time DateTime) ENGINE = MergeTree "
        f"PARTITION BY {_text(root, f'{log}/partition_by')} ORDER BY event_time "
        f"TTL {_text(root, f'{log}/ttl')} SETTINGS {_text(root, f'{log}/settings')}"
    )
    assert clickhouse_engine.query("SELECT formatQuery({q:String}) AS f", {"q": ddl})[0]["f"]


def test_readme_explains_every_setting() -> None:
    readme = (DEPLOY / "README.md").read_text()
    root = _root(SERVER)
    names = {child.tag for child in root if child.tag not in SECTIONS}
    names |= {f"{child.tag}.{c.tag}" for child in root if child.tag in SECTIONS for c in child}
    names |= {child.tag for profile in _root(USERS).findall("profiles/*") for child in profile} - {"profile"}
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert missing == []
