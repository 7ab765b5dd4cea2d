"""``load_config``: the seed article's YAML unchanged, the same shape in JSON, precise errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from _paths import DATA, REPO

from agentwatch.instrumentation import Budget, ConfigError, load_config

SEED_ARTICLE = REPO.parent / "shared" / "seed-article.txt"


def test_seed_yaml_loads_unchanged() -> None:
    config = load_config(DATA / "seed_config.yaml")
    assert config.budget == Budget(max_steps=25, max_tool_calls=12)
    assert config.policy.require_approval == ("db.write", "email.send", "ticket.close")
    assert config.policy.decide("email.send").verdict == "approval"
    assert config.policy.decide("kb.search").verdict == "deny"  # default deny: nothing else is allowed
    assert config.logging.tool_calls is True
    assert config.logging.stop_reasons is True
    assert config.logging.capture_content is False
    assert config.tool_gateway == "owned"
    assert config.runtime == "managed_or_custom"


@pytest.mark.skipif(not SEED_ARTICLE.exists(), reason="the seed article is beside the repository only in a workspace")
def test_test_data_is_the_article_verbatim() -> None:
    article = SEED_ARTICLE.read_text(encoding="utf-8")
    match = re.search(r"^YAML\n(architecture:.*?stop_reasons: true)\n", article, re.S | re.M)
    assert match is not None
    assert match.group(1) + "\n" == (DATA / "seed_config.yaml").read_text(encoding="utf-8")


def test_same_shape_in_json(tmp_path: Path) -> None:
    data = yaml.safe_load((DATA / "seed_config.yaml").read_text())
    path = tmp_path / "agentwatch.json"
    path.write_text(json.dumps(data))
    assert load_config(path).budget == load_config(DATA / "seed_config.yaml").budget
    assert load_config(data).policy.require_approval == ("db.write", "email.send", "ticket.close")


def test_extensions() -> None:
    config = load_config(
        {
            "budgets": {"max_steps": 10, "max_seconds": 60, "max_usd": 0.5},
            "approvals": {"required_for": ["db.write"], "timeout_seconds": 30},
            "tools": {"allow": ["kb.*"], "deny": ["kb.admin"], "writes": ["ticket.*"]},
            "logging": {"capture_content": True, "max_content_length": 512},
            "kill_switch": {"env": "KILL", "file": "/tmp/agentwatch-kill"},
            "pricing": {"house-model": {"input": 1.0, "output": 2.0}},
        }
    )
    assert config.budget == Budget(max_steps=10, max_seconds=60.0, max_usd=0.5)
    assert config.approval_timeout == 30.0
    assert config.policy.decide("kb.admin").verdict == "deny"
    assert config.policy.decide("ticket.create").risk.value == "write"
    assert config.logging.capture_content is True
    assert config.logging.max_content_length == 512
    switch = config.kill_switch.build()
    assert switch is not None
    assert len(switch.sources) == 2
    assert config.pricing["house-model"]["input"] == 1.0


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"budgets": {"max_steps": "25"}}, "budgets.max_steps", "positive integer"),
        ({"budgets": {"max_stepz": 25}}, "budgets.max_stepz", "unknown field"),
        ({"budgets": {"max_steps": -1}}, "budgets.max_steps", "positive integer"),
        ({"budgets": {"max_usd": True}}, "budgets.max_usd", "positive number"),
        ({"budgets": [25]}, "budgets", "must be a mapping"),
        ({"approvals": {"required_for": "db.write"}}, "approvals.required_for", "list of tool names"),
        ({"approvals": {"required_for": ["db.write", 3]}}, "approvals.required_for[1]", "non-empty string"),
        ({"logging": {"tool_calls": "yes"}}, "logging.tool_calls", "true or false"),
        ({"architecture": {"tool_gateway": "vendor"}}, "architecture.tool_gateway", "must be one of"),
        ({"architectur": {}}, "architectur", "unknown field"),
        ({"pricing": {"m": {"input": -1, "output": 1}}}, "pricing.m.input", ""),
        ({"pricing": {"m": {"inptu": 1}}}, "pricing.m.inptu", "unknown field"),
    ],
)
def test_bad_values_name_the_field(data: dict[str, object], field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(data)
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("budgets:\n  max_steps: [25\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+") as caught:
        load_config(broken)
    assert caught.value.source == str(broken)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"budgets": }')
    with pytest.raises(ConfigError, match="invalid JSON at line 1"):
        load_config(bad_json)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(top)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).budget.unlimited


def test_gateway_from_config_enforces_it() -> None:
    config = load_config({"tools": {"allow": ["kb.search"]}, "approvals": {"required_for": ["ticket.close"]}})
    gateway = config.gateway({"kb.search": lambda query: query})
    assert gateway.policy.decide("ticket.close").verdict == "approval"
    assert gateway.tools == ("kb.search",)
