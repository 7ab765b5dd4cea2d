"""The alert and recording rules: generated from one source, valid for promtool, and unit-tested.

The committed ``alerts/`` files must equal a fresh rendering; Prometheus 2.42's ``promtool`` must
accept them with ``--lint-fatal`` and pass the committed unit tests (``alerts/tests/*.yaml``), which
cover every alert firing with exact labels and annotations, and a healthy fleet paging nobody.
Mutated thresholds must break those unit tests (they can fail), a different budget SLO must move
the burn-rate thresholds, and the time-scaled variant used by the end-to-end test must stay valid
and fire within seconds. The runbook has a section per alert whose silence example really works
against a real Alertmanager.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from _paths import REPO
from _promstack import ALERTMANAGER_BIN, ALERTMANAGER_CONFIG, AMTOOL_BIN, PROMTOOL_BIN, Alertmanager, parse_duration

from agentwatch.alerts import cli as alerts_command
from agentwatch.alerts.model import RULE_FILE, RUNBOOK_FILE
from agentwatch.alerts.options import RuleOptions
from agentwatch.alerts.render import stale_files
from agentwatch.alerts.rules import ALERT_NAMES, render_rule_files
from agentwatch.alerts.runbook import render_runbook

pytestmark = [
    pytest.mark.integration,  # real engines or processes: not in `make test-fast`
    pytest.mark.skipif(not PROMTOOL_BIN.exists(), reason="Debian's prometheus (promtool) is not installed"),
]
ROOT = REPO
ALERTS_DIR = ROOT / "alerts"
RULES_PATH = ALERTS_DIR / RULE_FILE
UNIT_TESTS_DIR = ALERTS_DIR / "tests"
RUNBOOK_PATH = ALERTS_DIR / RUNBOOK_FILE

# The names other parts of the system (Alertmanager routes, the end-to-end test) rely on.
CONTRACT_ALERTS = {
    "AgentBudgetBurnFast": "page",
    "AgentBudgetBurnSlow": "page",
    "AgentBudgetBurnTicket": "ticket",
    "AgentStopReasonSpike": None,
    "AgentToolDenialSpike": None,
    "AgentToolDenialSurge": None,
    "AgentCostBurnHigh": None,
    "AgentKillSwitchEngaged": None,
    "AgentRunsVanished": None,
    "CanaryDriftDetected": "page",
    "CanaryDriftSuspected": "ticket",
    "CanaryStopReasonDrift": "page",
    "AgentwatchCollectorDown": None,
    "AgentwatchCollectorDroppingSpans": None,
    "AgentwatchCollectorRejectingSpans": None,
    "AgentwatchCollectorSpoolFilling": None,
    "AgentwatchClickHouseInsertsFailing": None,
    "AgentwatchDriftAnalyzerFailing": "ticket",
}
DASHBOARD_UIDS = {
    "agentwatch-overview",
    "agentwatch-canary",
    "agentwatch-runs",
    "agentwatch-tools",
    "agentwatch-collector",
}
PER_AGENT_COMPONENTS = {"agent", "canary"}


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROMTOOL_BIN), *map(str, args)], capture_output=True, text=True, timeout=300, check=False, cwd=cwd
    )


def rule_document(text: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def alert_rules(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in document["groups"] for rule in group["rules"] if "alert" in rule}


def all_rules(document: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for group in document["groups"]:
        yield from group["rules"]


def unit_test_files() -> list[Path]:
    return sorted(UNIT_TESTS_DIR.glob("*.yaml"))


def alert_rule_tests() -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """(file, test group name, alert_rule_test entry) of every committed unit test."""
    for path in unit_test_files():
        for group in yaml.safe_load(path.read_text())["tests"]:
            for entry in group.get("alert_rule_test", []):
                yield path, group.get("name", ""), entry


def run_unit_tests(workdir: Path, rules_text: str, test_files: Sequence[Path]) -> subprocess.CompletedProcess[str]:
    """Run copies of ``test_files`` against ``rules_text``, laid out like ``alerts/`` (tests/ next to the rules)."""
    tests_dir = workdir / "tests"
    tests_dir.mkdir(parents=True, exist_ok=True)
    (workdir / RULE_FILE).write_text(rules_text)
    copies = []
    for path in test_files:
        copy = tests_dir / path.name
        shutil.copyfile(path, copy)
        copies.append(copy)
    return promtool("test", "rules", *copies, cwd=workdir)


# --- generation ---------------------------------------------------------------------------------


def test_committed_files_equal_a_fresh_rendering() -> None:
    assert stale_files(ALERTS_DIR) == [], "run `agentwatch alerts` and commit the result"
    assert RULES_PATH.read_text() == render_rule_files()[RULE_FILE]
    assert RUNBOOK_PATH.read_text() == render_runbook()


def test_rendering_is_deterministic() -> None:
    assert render_rule_files() == render_rule_files()
    assert render_runbook() == render_runbook()


def test_the_alert_names_are_the_contract() -> None:
    document = rule_document(RULES_PATH.read_text())
    assert set(alert_rules(document)) == set(CONTRACT_ALERTS)
    assert set(ALERT_NAMES) == set(CONTRACT_ALERTS)
    for name, severity in CONTRACT_ALERTS.items():
        if severity is not None:
            assert alert_rules(document)[name]["labels"]["severity"] == severity, name


def test_recording_rules_follow_the_level_metric_operations_convention() -> None:
    document = rule_document(RULES_PATH.read_text())
    records = [rule["record"] for rule in all_rules(document) if "record" in rule]
    assert len(records) == len(set(records)), "a recording rule is defined twice"
    for record in records:
        level, metric, operations = record.split(":")
        assert re.fullmatch(r"[a-z_]+", level), record
        assert metric.startswith("agentwatch_"), record
        assert re.fullmatch(r"[a-z_]+\d+[smhd]", operations), record
    assert "agent_track:agentwatch_runs:rate5m" in records
    assert "agent:agentwatch_budget_stops:ratio_rate1h" in records


def test_every_alert_has_severity_component_and_annotations() -> None:
    document = rule_document(RULES_PATH.read_text())
    for name, rule in alert_rules(document).items():
        assert set(rule["labels"]) == {"severity", "component"}, name
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        assert rule["labels"]["component"] in {"agent", "canary", "collector"}, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == (
            f"https://github.com/agentwatch/agentwatch/blob/main/alerts/runbook.md#{name.lower()}"
        )
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


# --- promtool -----------------------------------------------------------------------------------


def test_promtool_check_rules_lint_fatal_accepts_the_committed_rules() -> None:
    done = promtool("check", "rules", "--lint-fatal", RULES_PATH)
    assert done.returncode == 0, done.stdout + done.stderr
    document = rule_document(RULES_PATH.read_text())
    assert f"SUCCESS: {sum(1 for _ in all_rules(document))} rules found" in done.stdout


def test_promtool_check_rules_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule file with a PromQL syntax error is refused."""
    broken = RULES_PATH.read_text().replace("> 0.144", "> > 0.144", 1)
    assert broken != RULES_PATH.read_text()
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    done = promtool("check", "rules", "--lint-fatal", path)
    assert done.returncode != 0
    assert "parse error" in done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    files = unit_test_files()
    assert {path.name for path in files} >= {
        "budget.yaml",
        "agent.yaml",
        "cost.yaml",
        "canary.yaml",
        "collector.yaml",
        "healthy.yaml",
    }
    done = promtool("test", "rules", *files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(files), done.stdout


def test_every_unit_test_group_sets_an_interval() -> None:
    """Prometheus 2.42's promtool misbehaves without an explicit interval in a test group."""
    for path in unit_test_files():
        document = yaml.safe_load(path.read_text())
        assert document["rule_files"] == [f"../{RULE_FILE}"], path
        for group in document["tests"]:
            assert group.get("interval"), f"{path.name}: {group.get('name')}"


def test_every_alert_is_unit_tested_firing_with_exact_labels_and_annotations() -> None:
    document = rule_document(RULES_PATH.read_text())
    expected = alert_rules(document)
    fired: set[str] = set()
    for path, group_name, entry in alert_rule_tests():
        name = entry["alertname"]
        assert name in expected, f"{path.name}: {group_name}: unknown alert {name}"
        for alert in entry.get("exp_alerts") or []:
            fired.add(name)
            labels = alert["exp_labels"]
            rule_labels = expected[name]["labels"]
            assert labels["severity"] == rule_labels["severity"], (path.name, group_name, name)
            assert labels["component"] == rule_labels["component"], (path.name, group_name, name)
            if rule_labels["component"] in PER_AGENT_COMPONENTS:
                assert labels.get("agent"), f"{name} must keep the agent label ({path.name}: {group_name})"
            assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}, (path.name, name)
    assert fired == set(expected), f"alerts never tested firing: {sorted(set(expected) - fired)}"


def test_healthy_traffic_pages_nobody_at_several_times() -> None:
    quiet: dict[str, set[str]] = {}
    for path, _group, entry in alert_rule_tests():
        if path.name == "healthy.yaml":
            assert entry["exp_alerts"] == [], entry
            quiet.setdefault(entry["alertname"], set()).add(entry["eval_time"])
    assert set(quiet) == set(CONTRACT_ALERTS)
    for name, times in quiet.items():
        assert len(times) >= 3, f"{name} is checked quiet only at {sorted(times)}"
        assert max(parse_duration(time) for time in times) >= 6 * 3600, name  # past the cost-baseline history


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    """promtool really compares: the same unit test with one label changed fails."""
    source = UNIT_TESTS_DIR / "budget.yaml"
    text = source.read_text()
    assert text.count("agent: billing") >= 1
    mutated = tmp_path / "source" / "budget.yaml"
    mutated.parent.mkdir()
    mutated.write_text(text.replace("agent: billing", "agent: invoices", 1))
    done = run_unit_tests(tmp_path / "run", RULES_PATH.read_text(), [mutated])
    assert done.returncode != 0
    assert "each burn rate has its own threshold" in done.stdout + done.stderr


# Each threshold change must break the unit test that pins it: proof that the tests can fail, and
# that every guard (volume, practical floors, baselines, reason sets) is load-bearing.
MUTATIONS = [
    pytest.param({"budget_min_runs": 1}, "budget.yaml", "a single budget-stopped run does not page", id="volume-guard"),
    pytest.param({"budget_slo": 0.999}, "healthy.yaml", "healthy traffic pages nobody", id="budget-slo"),
    pytest.param({"spike_baseline_factor": 0.5}, "agent.yaml", "own baseline pages", id="spike-baseline"),
    pytest.param({"spike_min_share": 0.5}, "agent.yaml", "own baseline pages", id="spike-share"),
    pytest.param({"denial_min_calls": 5}, "agent.yaml", "possible prompt injection", id="denial-volume"),
    pytest.param({"denial_surge_factor": 30.0}, "agent.yaml", "denials stay a minority", id="surge-factor"),
    pytest.param({"denial_surge_min_denied": 2}, "agent.yaml", "denials stay a minority", id="surge-volume"),
    pytest.param({"cost_usd_per_hour": 2.0}, "healthy.yaml", "healthy traffic pages nobody", id="cost-ceiling"),
    pytest.param({"cost_baseline_factor": 10.0}, "cost.yaml", "far above the agent's own average", id="cost-baseline"),
    pytest.param({"vanished_min_runs": 1}, "agent.yaml", "has none now pages", id="vanished-volume"),
    pytest.param({"canary_min_runs": 10}, "canary.yaml", "volume and practical floors", id="canary-volume"),
    pytest.param({"canary_min_ratio": 1.0}, "canary.yaml", "volume and practical floors", id="canary-ratio"),
    pytest.param({"canary_min_difference": 0.001}, "canary.yaml", "volume and practical floors", id="canary-diff"),
    pytest.param({"canary_z_critical": 12.0}, "canary.yaml", "volume and practical floors", id="canary-z"),
    pytest.param(
        {"canary_bad_stop_reasons": (*RuleOptions().canary_bad_stop_reasons, "cancelled")},
        "canary.yaml",
        "volume and practical floors",
        id="canary-reasons",
    ),
    pytest.param({"canary_suspect_evalue": 4.0}, "canary.yaml", "a high e-value opens a ticket", id="evalue"),
    pytest.param({"spool_fill_ratio": 0.95}, "collector.yaml", "spool above 80", id="spool"),
    pytest.param({"collector_reject_share": 0.005}, "collector.yaml", "rejected spans", id="reject-share"),
    pytest.param({"collector_reject_min_spans": 10}, "collector.yaml", "rejected spans", id="reject-volume"),
]


@pytest.mark.parametrize(("overrides", "test_file", "failing_test"), MUTATIONS)
def test_a_mutated_threshold_breaks_its_unit_test(
    tmp_path: Path, overrides: dict[str, Any], test_file: str, failing_test: str
) -> None:
    mutated = render_rule_files(RuleOptions(**overrides))[RULE_FILE]
    assert mutated != RULES_PATH.read_text()
    done = run_unit_tests(tmp_path, mutated, [UNIT_TESTS_DIR / test_file])
    output = done.stdout + done.stderr
    assert done.returncode != 0, f"{overrides} did not break {test_file}:\n{output}"
    assert "FAILED" in output
    failed_groups = re.findall(r"name: (.*?),\n", output)
    assert failed_groups, output
    assert any(failing_test in group for group in failed_groups), failed_groups


# --- options ------------------------------------------------------------------------------------


def burn_thresholds(document: Mapping[str, Any]) -> dict[str, set[float]]:
    found = {}
    for name in ("AgentBudgetBurnFast", "AgentBudgetBurnSlow", "AgentBudgetBurnTicket"):
        expr = alert_rules(document)[name]["expr"]
        found[name] = {float(value) for value in re.findall(r"ratio_rate\w+ > ([0-9.e-]+)", expr)}
    return found


def test_the_budget_slo_sets_the_burn_rate_thresholds() -> None:
    default = burn_thresholds(rule_document(RULES_PATH.read_text()))
    assert default == {"AgentBudgetBurnFast": {0.144}, "AgentBudgetBurnSlow": {0.06}, "AgentBudgetBurnTicket": {0.01}}
    strict = burn_thresholds(rule_document(render_rule_files(RuleOptions(budget_slo=0.999))[RULE_FILE]))
    assert strict == {"AgentBudgetBurnFast": {0.0144}, "AgentBudgetBurnSlow": {0.006}, "AgentBudgetBurnTicket": {0.001}}
    assert "99.9%" in render_runbook(RuleOptions(budget_slo=0.999))


def budget_burn_test(
    *, stop_share_percent: int, interval: str, eval_time: str, description: str | None
) -> dict[str, Any]:
    """A unit test of AgentBudgetBurnFast: 100 runs per interval, ``stop_share_percent`` of them on max_usd.

    ``description`` is the expected description of the page, None when no page is expected.
    """
    labels = 'job="agentwatch-collector",instance="collector:9464",agent="support",track="stable"'
    expected = []
    if description is not None:
        annotations = {
            "summary": "Agent support is burning its budget-stop error budget 14.4x too fast",
            "description": description,
            "runbook_url": "https://github.com/agentwatch/agentwatch/blob/main/alerts/runbook.md#agentbudgetburnfast",
        }
        labels_expected = {"severity": "page", "component": "agent", "agent": "support"}
        expected.append({"exp_labels": labels_expected, "exp_annotations": annotations})
    return {
        "rule_files": [f"../{RULE_FILE}"],
        "evaluation_interval": interval,
        "tests": [
            {
                "name": f"{stop_share_percent} % budget stops",
                "interval": interval,
                "input_series": [
                    {
                        "series": f'agentwatch_runs_total{{{labels},stop_reason="completed"}}',
                        "values": f"0+{100 - stop_share_percent}x200",
                    },
                    {
                        "series": f'agentwatch_runs_total{{{labels},stop_reason="max_usd"}}',
                        "values": f"0+{stop_share_percent}x200",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": eval_time, "alertname": "AgentBudgetBurnFast", "exp_alerts": expected}
                ],
            }
        ],
    }


def write_test(path: Path, document: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False))
    return path


def test_a_stricter_budget_slo_pages_where_the_default_does_not(tmp_path: Path) -> None:
    """2 % budget stops: under the 14.4 % of SLO 0.99, above the 1.44 % of SLO 0.999."""
    description = (
        "2% of the runs of agent support ended on a budget stop over the last 1h (and over the last 5m); the SLO "
        "allows 0.1%, so this burns the error budget 14.4x too fast: 2% of the 30d budget per 1h, all of it in 2d2h."
    )
    test_file = write_test(
        tmp_path / "source" / "two_percent.yaml",
        budget_burn_test(stop_share_percent=2, interval="1m", eval_time="30m", description=description),
    )
    strict = run_unit_tests(
        tmp_path / "strict", render_rule_files(RuleOptions(budget_slo=0.999))[RULE_FILE], [test_file]
    )
    assert strict.returncode == 0, strict.stdout + strict.stderr
    default = run_unit_tests(tmp_path / "default", RULES_PATH.read_text(), [test_file])
    assert default.returncode != 0, default.stdout + default.stderr
    assert "got:[]" in (default.stdout + default.stderr).replace(" ", "").replace("\n", "")


@pytest.mark.parametrize("budget_slo", [0.0, 1.0, 1.5, -0.1])
def test_an_impossible_budget_slo_is_refused(budget_slo: float) -> None:
    with pytest.raises(ValueError, match="budget_slo"):
        RuleOptions(budget_slo=budget_slo)


@pytest.mark.parametrize("time_scale", [0.0, -1.0, float("nan"), float("inf")])
def test_an_impossible_time_scale_is_refused(time_scale: float) -> None:
    with pytest.raises(ValueError, match="time_scale"):
        RuleOptions(time_scale=time_scale)


# --- time scale ---------------------------------------------------------------------------------

DURATION_IN_EXPR = re.compile(r"\[(\w+)\]|offset (\w+)")
E2E_SCALE = 1 / 120


def expr_durations(document: Mapping[str, Any]) -> list[float]:
    return [
        parse_duration(window or offset)
        for rule in all_rules(document)
        for window, offset in DURATION_IN_EXPR.findall(rule["expr"])
    ]


def test_the_time_scaled_rules_pass_promtool_check(tmp_path: Path) -> None:
    path = tmp_path / "scaled.yaml"
    path.write_text(render_rule_files(RuleOptions(time_scale=E2E_SCALE))[RULE_FILE])
    done = promtool("check", "rules", "--lint-fatal", path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_time_scale_scales_windows_and_for_with_a_floor() -> None:
    default = rule_document(RULES_PATH.read_text())
    scaled = rule_document(render_rule_files(RuleOptions(time_scale=E2E_SCALE))[RULE_FILE])
    nominal, fast = expr_durations(default), expr_durations(scaled)
    assert len(nominal) == len(fast) > 0
    for before, after in zip(nominal, fast, strict=True):
        # whole seconds, scaled, never below the 5 s floor (five scrapes at a 1 s scrape interval)
        assert after == max(5, round(before * E2E_SCALE)), (before, after)
    assert 5 in fast  # 5m is clamped to the floor
    assert 3 * 86400 * E2E_SCALE in fast  # 3d becomes 36m
    default_alerts, scaled_alerts = alert_rules(default), alert_rules(scaled)
    for name, rule in default_alerts.items():
        hold = parse_duration(rule.get("for", "0s"))
        scaled_hold = parse_duration(scaled_alerts[name].get("for", "0s"))
        assert scaled_hold == (max(1, round(hold * E2E_SCALE)) if hold else 0), name
    # the recording-rule names keep their nominal windows: the alerts refer to the same names
    assert [rule.get("record") for rule in all_rules(default)] == [rule.get("record") for rule in all_rules(scaled)]


def test_the_time_scaled_budget_alert_pages_within_seconds(tmp_path: Path) -> None:
    """What the end-to-end test relies on: at 1/120, 20 % budget stops page within ten seconds of 1 s evaluations.

    The description speaks of the scaled windows (1h is 30s, 5m is clamped to 5s, the 30d period is 6h).
    """
    scaled = render_rule_files(RuleOptions(time_scale=E2E_SCALE))[RULE_FILE]
    description = (
        "20% of the runs of agent support ended on a budget stop over the last 30s (and over the last 5s); the SLO "
        "allows 1%, so this burns the error budget 14.4x too fast: 2% of the 6h budget per 30s, all of it in 25m."
    )
    burning = write_test(
        tmp_path / "source" / "burning.yaml",
        budget_burn_test(stop_share_percent=20, interval="1s", eval_time="10s", description=description),
    )
    healthy = write_test(
        tmp_path / "source" / "healthy.yaml",
        budget_burn_test(stop_share_percent=0, interval="1s", eval_time="60s", description=None),
    )
    done = run_unit_tests(tmp_path / "run", scaled, [burning, healthy])
    assert done.returncode == 0, done.stdout + done.stderr


# --- runbook ------------------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    sections: dict[str, str] = {}
    current = None
    for line in RUNBOOK_PATH.read_text().splitlines():
        if line.startswith("## "):
            current = github_anchor(line[3:])
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def test_the_runbook_has_a_complete_section_per_alert() -> None:
    sections = runbook_sections()
    for name in CONTRACT_ALERTS:
        anchor = name.lower()
        assert anchor in sections, f"runbook.md has no section #{anchor}"
        body = sections[anchor]
        assert "**What it means.**" in body, name
        assert re.search(r"\*\*First checks\.\*\*\n\n1\. ", body), name
        uids = set(re.findall(r"agentwatch-(?:overview|canary|runs|tools|collector)\b", body))
        assert uids, f"{name}: no dashboard"
        assert uids <= DASHBOARD_UIDS, name
        assert "amtool silence add" in body, name
        assert f"alertname={name} " in body, name


def silence_commands() -> dict[str, list[str]]:
    """The runbook's amtool examples, as argument lists, by alert."""
    commands = {}
    for anchor, body in runbook_sections().items():
        for block in re.findall(r"```sh\n(.*?)```", body, flags=re.DOTALL):
            words = shlex.split(block.replace("\\\n", " "))
            if words[:3] == ["amtool", "silence", "add"]:
                commands[anchor] = words
    return commands


@pytest.mark.skipif(not (AMTOOL_BIN.exists() and ALERTMANAGER_BIN.exists()), reason="Alertmanager is not installed")
def test_the_runbook_silence_examples_work_against_alertmanager(tmp_path: Path) -> None:
    commands = silence_commands()
    assert set(commands) == {name.lower() for name in CONTRACT_ALERTS}
    with Alertmanager(tmp_path / "alertmanager", ALERTMANAGER_CONFIG) as alertmanager:
        for anchor, words in commands.items():
            args = [
                f"--alertmanager.url={alertmanager.url}" if w.startswith("--alertmanager.url=") else w for w in words
            ]
            done = subprocess.run([str(AMTOOL_BIN), *args[1:]], capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, f"{anchor}: {done.stdout}{done.stderr}"
            assert re.fullmatch(r"[0-9a-f-]{36}\n", done.stdout), done.stdout
        silences = alertmanager.get_json("/api/v2/silences")
    silenced = {
        matcher["value"] for silence in silences for matcher in silence["matchers"] if matcher["name"] == "alertname"
    }
    assert silenced == set(CONTRACT_ALERTS)


# --- command line -------------------------------------------------------------------------------


def alerts_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="agentwatch")
    alerts_command.add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["alerts", *argv])
    result: int = args.handler(args)
    return result


def test_the_command_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "alerts"
    assert alerts_cli("--out", str(out)) == 0
    assert (out / RULE_FILE).read_text() == RULES_PATH.read_text()
    assert (out / RUNBOOK_FILE).read_text() == RUNBOOK_PATH.read_text()
    assert alerts_cli("--out", str(out), "--check") == 0
    (out / RUNBOOK_FILE).write_text("edited by hand\n")
    capsys.readouterr()
    assert alerts_cli("--out", str(out), "--check") == 1
    assert RUNBOOK_FILE in capsys.readouterr().err
    # the committed files hold the default SLO, not another one
    assert alerts_cli("--out", str(ALERTS_DIR), "--check") == 0
    assert alerts_cli("--out", str(ALERTS_DIR), "--check", "--budget-slo", "0.999") == 1
    assert alerts_cli("--out", str(out), "--budget-slo", "1.5") == 2
