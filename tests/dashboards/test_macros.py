"""Grafana macro and variable expansion: exact texts per the ClickHouse plugin and Grafana, run in real engines.

The expected strings come from the grafana-clickhouse-datasource plugin's macro definitions and
Grafana's variable formats; the expanded SQL is then parsed and executed by ClickHouse (chDB) on
the example agent's real spans, and expanded PromQL is checked by promtool.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from _readdata import fleet

from agentwatch.collectors.store.clickhouse import ClickHouseStore
from agentwatch.dashboards.macros import (
    ALL_VALUE,
    VariableValue,
    expand_promql,
    expand_sql,
    format_interval,
    is_all,
)

pytest_plugins = ["_chstore"]

# The ClickHouse plugin's own test range: 2014-11-12T11:45:26.371Z .. 2015-11-12T11:45:26.371Z
FROM = datetime(2014, 11, 12, 11, 45, 26, 371_000, tzinfo=UTC)
TO = datetime(2015, 11, 12, 11, 45, 26, 371_000, tzinfo=UTC)
FROM_S, TO_S = 1415792726, 1447328726
FROM_MS, TO_MS = 1415792726371, 1447328726371


def sql(text: str, variables: dict[str, VariableValue] | None = None, **options: object) -> str:
    return expand_sql(text, start=FROM, end=TO, variables=variables or {}, **options)  # type: ignore[arg-type]


# --- the plugin's backend macros ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("$__timeFilter(ts)", f"ts >= toDateTime({FROM_S}) AND ts <= toDateTime({TO_S})"),
        (
            "$__timeFilter_ms(ts)",
            f"ts >= fromUnixTimestamp64Milli({FROM_MS}) AND ts <= fromUnixTimestamp64Milli({TO_MS})",
        ),
        ("$__dateFilter(d)", "d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')"),
        (
            "$__dateTimeFilter(d, ts)",
            f"(d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')) AND "
            f"(ts >= toDateTime({FROM_S}) AND ts <= toDateTime({TO_S}))",
        ),
        (
            "$__dt(d,ts)",
            f"(d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')) AND "
            f"(ts >= toDateTime({FROM_S}) AND ts <= toDateTime({TO_S}))",
        ),
        ("$__fromTime", f"toDateTime({FROM_S})"),
        ("$__toTime", f"toDateTime({TO_S})"),
        ("$__fromTime_ms", f"fromUnixTimestamp64Milli({FROM_MS})"),
        ("$__toTime_ms", f"fromUnixTimestamp64Milli({TO_MS})"),
        ("$__fromTime()", f"toDateTime({FROM_S})"),  # empty brackets belong to the macro
        ("$__timeInterval(ts)", "toStartOfInterval(toDateTime(ts), INTERVAL 20 second)"),
        ("$__timeInterval_ms(ts)", "toStartOfInterval(toDateTime64(ts, 3), INTERVAL 20000 millisecond)"),
        ("$__interval_s", "20"),
    ],
)
def test_each_plugin_macro(query: str, expected: str) -> None:
    assert sql(f"SELECT {query} FROM t", interval_s=20) == f"SELECT {expected} FROM t"


def test_interval_is_at_least_one_second() -> None:
    assert sql("$__interval_s $__timeInterval(ts)", interval_s=0) == (
        "1 toStartOfInterval(toDateTime(ts), INTERVAL 1 second)"
    )


def test_macro_arguments_split_at_top_level_commas_and_are_trimmed() -> None:
    assert sql("$__timeFilter( toDateTime(ts, 'UTC') )") == (
        f"toDateTime(ts, 'UTC') >= toDateTime({FROM_S}) AND toDateTime(ts, 'UTC') <= toDateTime({TO_S})"
    )


def test_longer_macro_names_are_not_eaten_by_shorter_ones() -> None:
    expanded = sql("$__fromTime_ms $__fromTime $__timeFilter_ms(a) $__timeFilter(b)")
    assert expanded == (
        f"fromUnixTimestamp64Milli({FROM_MS}) toDateTime({FROM_S}) "
        f"a >= fromUnixTimestamp64Milli({FROM_MS}) AND a <= fromUnixTimestamp64Milli({TO_MS}) "
        f"b >= toDateTime({FROM_S}) AND b <= toDateTime({TO_S})"
    )


def test_every_occurrence_is_expanded() -> None:
    assert sql("$__timeFilter(a) OR $__timeFilter(a) OR $__timeFilter(b)").count("toDateTime") == 6


def test_time_range_in_another_zone_and_naive_means_utc() -> None:
    plus_three = timezone(timedelta(hours=3))
    local = expand_sql("$__fromTime", start=FROM.astimezone(plus_three), end=TO, variables={})
    naive = expand_sql("$__fromTime", start=FROM.replace(tzinfo=None), end=TO, variables={})
    assert local == naive == f"toDateTime({FROM_S})"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("$__timeFilter(a, b)", r"\$__timeFilter expects 1 argument, received 2"),
        ("$__timeFilter", r"\$__timeFilter expects 1 argument, received 0"),
        ("$__timeFilter (ts)", r"\$__timeFilter expects 1 argument, received 0"),  # as the plugin: no space
        ("$__timeFilter()", r"\$__timeFilter has an empty argument"),
        ("$__dateTimeFilter(d)", r"\$__dateTimeFilter expects 2 arguments, received 1"),
        ("$__timeInterval(ts", r"\$__timeInterval has no closing parenthesis"),
        ("SELECT $__timeFilterz(ts)", r"unknown macro \$__timeFilterz"),
        ("SELECT $__nope", r"unknown macro \$__nope"),
        ("$__timeFrom(ts)", r"unknown macro \$__timeFrom \(use \$__fromTime\)"),
        ("$__rate_interval", r"unknown macro \$__rate_interval"),
    ],
)
def test_macro_errors_name_the_macro(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sql(query)


def test_reversed_time_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="ends"):
        expand_sql("$__fromTime", start=TO, end=FROM, variables={})


# --- Grafana's global variables --------------------------------------------------------------------


def test_global_variables() -> None:
    expanded = sql(
        "$__from $__to ${__from:date:seconds} ${__to:date} ${__from:date:iso} $__interval $__interval_ms "
        "$__range $__range_s $__range_ms",
        interval_s=90,
    )
    range_ms = TO_MS - FROM_MS
    assert expanded.split() == [
        str(FROM_MS),
        str(TO_MS),
        str(FROM_S),
        "2015-11-12T11:45:26.371Z",
        "2014-11-12T11:45:26.371Z",
        "1m",  # Grafana's text keeps the largest unit only
        "90000",
        f"{range_ms // 1000}s",
        str(range_ms // 1000),
        str(range_ms),
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1, "1s"), (30, "30s"), (60, "1m"), (90, "1m"), (300, "5m"), (3600, "1h"), (86400, "1d"), (0.25, "250ms")],
)
def test_format_interval_like_grafana(seconds: float, text: str) -> None:
    assert format_interval(seconds) == text


# --- template variables and formats ---------------------------------------------------------------

SINGLE = "it's"
MULTI = ["a.b", "c'd"]


@pytest.mark.parametrize(
    ("fmt", "single", "multi"),
    [
        (None, "it's", "'a.b','c'd'"),  # the plugin's default: single raw, multi quoted without escaping
        ("singlequote", "'it\\'s'", "'a.b','c\\'d'"),
        ("sqlstring", "'it''s'", "'a.b','c''d'"),
        ("doublequote", '"it\'s"', '"a.b","c\'d"'),
        ("csv", "it's", "a.b,c'd"),
        ("pipe", "it's", "a.b|c'd"),
        ("raw", "it's", "a.b,c'd"),
        ("regex", "it's", "(a\\.b|c'd)"),
        ("glob", "it's", "{a.b,c'd}"),
        ("json", '"it\'s"', '["a.b","c\'d"]'),
        ("text", "it's", "a.b + c'd"),
        ("percentencode", "it's", "%7Ba.b%2Cc'd%7D"),
    ],
)
def test_variable_formats_single_and_multi(fmt: str | None, single: str, multi: str) -> None:
    reference = "$v" if fmt is None else f"${{v:{fmt}}}"
    assert sql(f"x = {reference}", {"v": SINGLE}) == f"x = {single}"
    assert sql(f"x IN ({reference})", {"v": MULTI}) == f"x IN ({multi})"


def test_variable_syntaxes() -> None:
    variables: dict[str, VariableValue] = {"agent": "support", "tenant": ["acme"]}
    expanded = sql(
        "$agent ${agent} [[agent]] [[agent:singlequote]] ${agent:csv} $tenant ${tenant:sqlstring}", variables
    )
    # a one-item selection is still an array: the plugin's default format quotes it
    assert expanded == "support support support 'support' support 'acme' 'acme'"


def test_regex_format_escapes_every_special_character() -> None:
    assert (
        sql("${v:regex}", {"v": r"a\b^c$d*e+f?g.h(i)j|k[l]m{n}o/p"})
        == r"a\\b\^c\$d\*e\+f\?g\.h\(i\)j\|k\[l\]m\{n\}o\/p"
    )
    assert sql("${v:regex}", {"v": ["only.one"]}) == r"only\.one"


def test_empty_selection() -> None:
    assert sql("x IN (${v:singlequote}) AND y IN ($v) AND '${v:csv}'", {"v": []}) == "x IN () AND y IN ('') AND ''"


def test_undefined_variable_is_named() -> None:
    with pytest.raises(ValueError, match=r"undefined variable \$agnet"):
        sql("AgentName = ${agnet:singlequote}", {"agent": "support"})


def test_unknown_format_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown format 'quoted' for variable \$agent"):
        sql("${agent:quoted}", {"agent": "support"})


def test_all_value_recognised_like_grafana() -> None:
    assert is_all(ALL_VALUE)
    assert is_all([ALL_VALUE])
    assert not is_all(["support", ALL_VALUE])
    assert not is_all("support")
    assert not is_all([])


def test_all_outside_conditional_all_needs_the_options() -> None:
    query = "AgentName IN (${agent:singlequote})"
    with pytest.raises(ValueError, match=r"\$agent is All but its values are unknown"):
        sql(query, {"agent": ALL_VALUE})
    options = {"agent": ["billing", "support"]}
    assert sql(query, {"agent": [ALL_VALUE]}, all_values=options) == "AgentName IN ('billing','support')"
    assert sql("${agent:text}", {"agent": ALL_VALUE}, all_values=options) == "All"
    # a custom all value goes in as is, whatever the format
    assert sql(query, {"agent": ALL_VALUE}, all_values={"agent": "AgentName"}) == "AgentName IN (AgentName)"


# --- $__conditionalAll ---------------------------------------------------------------------------

CONDITIONAL = "WHERE $__conditionalAll(AgentName IN (${agent:singlequote}), $agent) AND x"


@pytest.mark.parametrize("value", [ALL_VALUE, [ALL_VALUE], "", []])
def test_conditional_all_drops_the_condition_for_all_or_nothing(value: VariableValue) -> None:
    assert sql(CONDITIONAL, {"agent": value}) == "WHERE 1=1 AND x"


@pytest.mark.parametrize(
    ("value", "condition"),
    [("support", "AgentName IN ('support')"), (["support", "billing"], "AgentName IN ('support','billing')")],
)
def test_conditional_all_keeps_the_condition_for_a_selection(value: VariableValue, condition: str) -> None:
    assert sql(CONDITIONAL, {"agent": value}) == f"WHERE {condition} AND x"


def test_conditional_all_several_nested_and_mixed() -> None:
    query = (
        "$__conditionalAll(AgentName IN (${agent:singlequote}), $agent) AND "
        "$__conditionalAll(has(splitByChar(',', ${tenant:csv}), TenantId), ${tenant}) AND "
        "$__conditionalAll(Track = ${track:sqlstring}, $track) AND $__timeFilter(StartTime)"
    )
    expanded = sql(query, {"agent": ALL_VALUE, "tenant": ["acme", "globex"], "track": "canary"})
    assert expanded == (
        "1=1 AND has(splitByChar(',', acme,globex), TenantId) AND Track = 'canary' AND "
        f"StartTime >= toDateTime({FROM_S}) AND StartTime <= toDateTime({TO_S})"
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("$__conditionalAll(a = 1)", "expects 2 arguments"),
        ("$__conditionalAll(a = 1, $agent, $agent)", "expects 2 arguments"),
        ("$__conditionalAll(a = 1, agent)", "needs a variable"),
        ("$__conditionalAll(a = 1, $nobody)", r"undefined variable \$nobody"),
        ("$__conditionalAll(a IN (1, $agent)", "closing parenthesis"),
    ],
)
def test_conditional_all_errors(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sql(query, {"agent": "support"})


# --- PromQL --------------------------------------------------------------------------------------


def promql(expr: str, variables: dict[str, VariableValue] | None = None, **options: object) -> str:
    return expand_promql(expr, variables=variables or {}, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("interval_s", "scrape_s", "rate_interval"), [(60, 15, "75s"), (15, 15, "60s"), (1, 5, "20s"), (300, 30, "330s")]
)
def test_rate_interval_like_grafana(interval_s: int, scrape_s: int, rate_interval: str) -> None:
    assert promql("$__rate_interval", interval_s=interval_s, scrape_interval_s=scrape_s) == rate_interval


def test_promql_global_variables() -> None:
    assert promql("$__interval $__interval_ms $__range $__range_s $__range_ms", interval_s=30, range_s=7200) == (
        "30s 30000 7200s 7200 7200000"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("support", "support"),
        (["support"], "support"),
        (["support", "billing"], "(support|billing)"),
        ("kb.search", "kb\\\\.search"),  # inside a PromQL string: \\. is the regex \.
        ("a\\b", "a\\\\\\\\b"),
        (ALL_VALUE, ".*"),
        ([ALL_VALUE], ".*"),
    ],
)
def test_promql_variables_are_regex_escaped(value: VariableValue, expected: str) -> None:
    assert promql('x{agent=~"$agent"}', {"agent": value}) == f'x{{agent=~"{expected}"}}'


def test_promql_custom_all_value_and_explicit_formats() -> None:
    variables: dict[str, VariableValue] = {"agent": ALL_VALUE, "track": ["canary", "baseline"]}
    expanded = promql(
        'x{agent=~"${agent}", track=~"${track:regex}"} ${track:pipe}', variables, all_values={"agent": ".+"}
    )
    assert expanded == 'x{agent=~".+", track=~"(canary|baseline)"} canary|baseline'


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('x{agent=~"$agnet"}', r"undefined variable \$agnet"),
        ("rate(x[$__rate_intreval])", r"unknown macro \$__rate_intreval"),
        ("x[$__timeFilter(ts)]", r"unknown macro \$__timeFilter"),
    ],
)
def test_promql_errors(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        promql(expr, {"agent": "support"})


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_expanded_promql_is_valid_for_prometheus(tmp_path: Path) -> None:
    expr = promql(
        'sum by (agent) (rate(agentwatch_runs_total{agent=~"$agent", track=~"$track"}[$__rate_interval]))'
        ' / on(agent) group_left sum by (agent) (increase(agentwatch_runs_total{agent=~"$agent"}[$__range]))',
        {"agent": ["kb.search", "a(b)|c", "back\\slash"], "track": ALL_VALUE},
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n- name: expanded\n  rules:\n  - record: expanded:check\n    expr: '"
        + expr.replace("'", "''")
        + "'\n",
        encoding="utf-8",
    )
    result = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the expanded SQL in ClickHouse ----------------------------------------------------------------


def test_expanded_sql_parses_in_clickhouse(clickhouse_store: ClickHouseStore) -> None:
    query = (
        "SELECT $__timeInterval(StartTime) AS time, $__timeInterval_ms(StartTime) AS time_ms, count() AS runs, "
        "$__interval_s AS step FROM agent_runs "
        "WHERE $__timeFilter(StartTime) AND $__timeFilter_ms(EndTime) AND $__dateFilter(toDate(StartTime)) "
        "AND $__dt(toDate(StartTime), StartTime) AND StartTime BETWEEN $__fromTime AND $__toTime_ms "
        "AND $__conditionalAll(AgentName IN (${agent:singlequote}), $agent) AND TenantId IN ($tenant) "
        "AND Track = ${track:sqlstring} AND match(StopReason, '^(${reason:regex})$') GROUP BY time, time_ms"
    )
    expanded = sql(query, {"agent": ALL_VALUE, "tenant": ["acme", "globex"], "track": "it's", "reason": "max_steps"})
    assert "$__" not in expanded
    formatted = clickhouse_store.command("SELECT formatQuery({q:String})", {"q": expanded})
    assert "toStartOfInterval" in str(formatted)
    assert clickhouse_store.query(expanded) == []  # and it runs on the real schema


@pytest.mark.parametrize("fmt", ["singlequote", "sqlstring"])
def test_quoted_values_round_trip_through_clickhouse(clickhouse_store: ClickHouseStore, fmt: str) -> None:
    value = "it's a \"test\", isn't it"
    expanded = sql(f"SELECT [${{v:{fmt}}}] AS single, [${{m:{fmt}}}] AS multi", {"v": value, "m": [value, "x"]})
    assert clickhouse_store.query(expanded) == [{"single": [value], "multi": [value, "x"]}]


def test_expanded_filters_select_the_right_runs(clickhouse_store: ClickHouseStore) -> None:
    data = fleet()
    data.load(clickhouse_store)
    query = (
        "SELECT TenantId AS tenant, count() AS runs FROM agent_runs "
        "WHERE $__timeFilter(StartTime) AND $__conditionalAll(TenantId IN (${tenant:singlequote}), $tenant) "
        "AND $__conditionalAll(Track IN (${track:singlequote}), $track) GROUP BY tenant ORDER BY tenant"
    )
    now = datetime.now(UTC)
    last_hour = (now - timedelta(hours=1), now + timedelta(minutes=1))

    def runs(variables: dict[str, VariableValue], window: tuple[datetime, datetime] = last_hour) -> dict[str, int]:
        expanded = expand_sql(query, start=window[0], end=window[1], variables=variables)
        return {str(row["tenant"]): int(str(row["runs"])) for row in clickhouse_store.query(expanded)}

    everything = Counter(run.tenant for run in data.runs)
    assert runs({"tenant": ALL_VALUE, "track": ALL_VALUE}) == dict(everything)
    assert runs({"tenant": "acme", "track": ALL_VALUE}) == {"acme": everything["acme"]}
    canary = Counter(run.tenant for run in data.runs if run.track == "canary")
    assert runs({"tenant": ["acme", "globex"], "track": ["canary"]}) == {t: canary[t] for t in ("acme", "globex")}
    yesterday = (now - timedelta(days=2), now - timedelta(days=1))
    assert runs({"tenant": ALL_VALUE, "track": ALL_VALUE}, yesterday) == {}
