"""Grafana's query expansion, reproduced offline, so every dashboard query can run against a real engine.

Grafana never sends a panel's text as written: template variables are interpolated in the browser
and data-source macros are expanded after that. To check a dashboard's SQL against ClickHouse and
its PromQL against Prometheus, the tests and the benchmarks expand queries the same way here.

``expand_sql`` follows the grafana-clickhouse-datasource plugin (v4), in the plugin's order:

1. ``$__conditionalAll(condition, $var)`` (done by the plugin's frontend before anything else):
   the condition, or ``1=1`` when ``$var`` is All (``$__all``) or empty.
2. Template variables and Grafana's global variables (``$__from``, ``$__to``, ``$__interval``,
   ``$__interval_ms``, ``$__range``, ``$__range_s``, ``$__range_ms``) with Grafana's syntaxes
   (``$var``, ``${var}``, ``${var:format}``, ``[[var]]``, ``[[var:format]]``). Without a format the
   plugin's own rule applies: a multi-value becomes ``'a','b'`` and a single value is inserted
   as is, unquoted (use ``${var:singlequote}`` or ``${var:sqlstring}`` for a quoted string).
3. The plugin's backend macros, longest name first, arguments split at top-level commas:
   ``$__timeFilter(col)`` → ``col >= toDateTime(FROM) AND col <= toDateTime(TO)`` (Unix seconds),
   ``$__timeFilter_ms(col)`` with ``fromUnixTimestamp64Milli(MS)``, ``$__dateFilter(col)`` with
   ``toDate('YYYY-MM-DD')``, ``$__dateTimeFilter(dateCol, timeCol)`` (alias ``$__dt``),
   ``$__fromTime``, ``$__toTime``, ``$__fromTime_ms``, ``$__toTime_ms``,
   ``$__timeInterval(col)`` → ``toStartOfInterval(toDateTime(col), INTERVAL N second)``,
   ``$__timeInterval_ms(col)`` → ``toStartOfInterval(toDateTime64(col, 3), INTERVAL N millisecond)``,
   ``$__interval_s`` → ``N`` (the panel interval in seconds, at least 1).

``expand_promql`` follows Grafana's Prometheus data source: ``$__interval``, ``$__rate_interval``
(``max(interval + scrape interval, 4 × scrape interval)``), ``$__range`` and friends, and
variables regex-escaped for a ``=~`` matcher (every agentwatch variable is multi-value with All):
one value stays one value, several become ``(a|b)``, All becomes the variable's custom all value
(``.*`` unless told otherwise).

Where Grafana would silently send something broken, these functions raise ``ValueError`` naming
the culprit instead: an unknown macro, an undefined variable, a macro with the wrong number of
arguments, an unknown format, or an All value that cannot be expanded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import quote

ALL_VALUE: Final = "$__all"
"""The value Grafana stores for a variable set to All."""

ALL_TEXT: Final = "All"
"""What the ``text`` format shows for a variable set to All."""

DEFAULT_PROMQL_ALL_VALUE: Final = ".*"
"""Custom all value of the Prometheus dashboards' variables (matches every label value, even empty)."""

DEFAULT_SCRAPE_INTERVAL_S: Final = 15
"""Grafana's fallback scrape interval for ``$__rate_interval`` when the data source sets none."""

VariableValue = str | Sequence[str]
"""A single value (``"support"``) or a multi-value selection (``["support", "billing"]``)."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Grafana's variable syntaxes: $name, [[name]] / [[name:format]], ${name} / ${name.path} / ${name:format}
# (JS \w is ASCII, hence re.ASCII).
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}",
    re.ASCII,
)
_LEFTOVER_MACRO = re.compile(r"\$__(\w+)", re.ASCII)
_CONDITIONAL_ALL = "$__conditionalAll("
_VARIABLE_REFERENCE = re.compile(r"^(?:\$(\w+)|\$\{(\w+)\}|\[\[(\w+)\]\])$", re.ASCII)
_REGEX_SPECIALS = re.compile(r"[\\^$*+?.()|\[\]{}/]")
# Grafana's Prometheus data source (classic behaviour): backslashes doubled twice, metacharacters
# escaped with a doubled backslash, because the value lands inside a PromQL double-quoted string.
_PROMQL_REGEX_SPECIALS = re.compile(r"[$^*{}\[\]+?.()|]")

# Generic macros of Grafana's SQL plugin library that the ClickHouse plugin inherits but whose
# output is not ClickHouse-friendly (RFC 3339 strings, datepart()): refused with a pointer.
_UNSUPPORTED_MACROS: Final = {
    "timeFrom": "$__fromTime",
    "timeTo": "$__toTime",
    "timeGroup": "$__timeInterval(col)",
    "table": "the table name",
    "column": "the column name",
}


# --- time and interval helpers ------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    # A naive datetime is read as UTC: dashboards and the store both work in UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _unix_seconds(moment: datetime) -> int:
    return (_utc(moment) - _EPOCH) // timedelta(seconds=1)


def _unix_millis(moment: datetime) -> int:
    return (_utc(moment) - _EPOCH) // timedelta(milliseconds=1)


def format_interval(seconds: float) -> str:
    """Grafana's short interval text (``secondsToHms``): the largest whole unit only, ``90`` → ``1m``."""
    units = ((31_536_000, "y"), (86_400, "d"), (3_600, "h"), (60, "m"), (1, "s"))
    remainder = seconds
    for size, suffix in units:
        count = int(remainder // size)
        if count:
            return f"{count}{suffix}"
        remainder %= size
    millis = int(seconds * 1000)
    return f"{millis}ms" if millis else "less than a millisecond"


def _check_interval(interval_s: float, name: str = "interval_s") -> None:
    if interval_s < 0:
        raise ValueError(f"{name} must not be negative, got {interval_s}")


# --- values and formats -------------------------------------------------------------------------


def _as_list(value: VariableValue) -> str | list[str]:
    """A single value as is, a multi-value selection as a list (checked to hold strings)."""
    if isinstance(value, str):
        return value
    values = list(value)
    for item in values:
        if not isinstance(item, str):
            raise ValueError(f"variable values must be strings, got {item!r}")
    return values


def is_all(value: VariableValue) -> bool:
    """Grafana's ``isAllValue``: ``$__all`` itself, or a selection whose first value is ``$__all``."""
    if isinstance(value, str):
        return value == ALL_VALUE
    values = list(value)
    return bool(values) and values[0] == ALL_VALUE


def _regex_escape(value: str) -> str:
    return _REGEX_SPECIALS.sub(lambda match: "\\" + match.group(0), value)


def _joined(value: str | list[str], separator: str) -> str:
    return value if isinstance(value, str) else separator.join(value)


def _glob(value: str | list[str]) -> str:
    if isinstance(value, str) or len(value) < 2:
        return _joined(value, ",")
    return "{" + ",".join(value) + "}"


def _regex(value: str | list[str]) -> str:
    if isinstance(value, str):
        return _regex_escape(value)
    escaped = [_regex_escape(item) for item in value]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def _quoted(value: str | list[str], quote_char: str, escaped_quote: str) -> str:
    items = [value] if isinstance(value, str) else value
    return ",".join(quote_char + item.replace(quote_char, escaped_quote) + quote_char for item in items)


def _percent_encoded(value: str | list[str]) -> str:
    text = value if isinstance(value, str) else "{" + ",".join(value) + "}"
    return quote(text, safe="-_.!~*'()")  # encodeURIComponent, as Grafana's percentencode


_FORMATS: Final[dict[str, Callable[[str | list[str]], str]]] = {
    "raw": lambda value: _joined(value, ","),  # a JS array turned into text
    "csv": lambda value: _joined(value, ","),
    "pipe": lambda value: _joined(value, "|"),
    "glob": _glob,
    "regex": _regex,
    "singlequote": lambda value: _quoted(value, "'", "\\'"),
    "doublequote": lambda value: _quoted(value, '"', '\\"'),
    "sqlstring": lambda value: _quoted(value, "'", "''"),
    "json": lambda value: json.dumps(value, separators=(",", ":")),
    "percentencode": _percent_encoded,
    "text": lambda value: _joined(value, " + "),
}


def _format_value(fmt: str, value: VariableValue, *, variable: str, text: str | None = None) -> str:
    """Grafana's format registry, for the formats a dashboard may use (``${var:format}``)."""
    name = fmt.partition(":")[0]
    formatter = _FORMATS.get(name)
    if formatter is None:
        raise ValueError(f"unknown format {fmt!r} for variable ${variable}: use one of {', '.join(sorted(_FORMATS))}")
    if name == "text" and text is not None:
        return text
    return formatter(_as_list(value))


def _clickhouse_default(value: VariableValue) -> str:
    # The plugin's own formatter: an array becomes 'a','b' (not escaped), a single value is raw.
    values = _as_list(value)
    return values if isinstance(values, str) else "'" + "','".join(values) + "'"


def _promql_special_regex_escape(value: str) -> str:
    value = value.replace("\\", "\\\\\\\\")
    return _PROMQL_REGEX_SPECIALS.sub(lambda match: "\\\\" + match.group(0), value)


def _promql_default(value: VariableValue) -> str:
    # interpolateQueryExpr of Grafana's Prometheus data source for a multi-value / include-All variable.
    values = _as_list(value)
    if isinstance(values, str):
        return _promql_special_regex_escape(values)
    escaped = [_promql_special_regex_escape(item) for item in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


# --- template variables -----------------------------------------------------------------------


class _Interpolator:
    """Grafana's ``templateSrv.replace`` for one query: variables, global variables, formats, All."""

    def __init__(
        self,
        *,
        variables: Mapping[str, VariableValue],
        all_values: Mapping[str, VariableValue],
        default_all: str | None,
        globals_: Mapping[str, str],
        time_range: tuple[datetime, datetime] | None,
        default_format: Callable[[VariableValue], str],
    ) -> None:
        self.variables = variables
        self.all_values = all_values
        self.default_all = default_all
        self.globals = globals_
        self.time_range = time_range
        self.default_format = default_format

    def replace(self, text: str) -> str:
        return _VARIABLE.sub(self._substitute, text)

    def _substitute(self, match: re.Match[str]) -> str:
        plain, bracket, bracket_format, braced, field_path, braced_format = match.groups()
        name = plain or bracket or braced
        fmt = bracket_format or braced_format
        if field_path:
            raise ValueError(f"field paths are not supported: {match.group(0)}")
        if name.startswith("__"):
            if name in ("__from", "__to"):
                return self._time_variable(name, fmt)
            if name in self.globals:
                return self.globals[name] if fmt is None else _format_value(fmt, self.globals[name], variable=name)
            if name == "__all":
                raise ValueError("$__all is a variable value, not a variable: it cannot appear in a query")
            return match.group(0)  # a data-source macro: expanded later (or reported as unknown)
        if name not in self.variables:
            raise ValueError(f"undefined variable ${name} in {match.group(0)!r}: known {sorted(self.variables)}")
        value = self.variables[name]
        text: str | None = None
        if is_all(value):
            all_value = self.all_values.get(name, self.default_all)
            if all_value is None:
                raise ValueError(
                    f"variable ${name} is All but its values are unknown: wrap the condition in "
                    f"$__conditionalAll(..., ${name}) or pass all_values[{name!r}]"
                )
            if isinstance(all_value, str):
                # Grafana inserts a custom all value as is, whatever the format, except text
                return ALL_TEXT if fmt is not None and fmt.partition(":")[0] == "text" else all_value
            value, text = list(all_value), ALL_TEXT
        if fmt is None:
            return self.default_format(value)
        return _format_value(fmt, value, variable=name, text=text)

    def _time_variable(self, name: str, fmt: str | None) -> str:
        if self.time_range is None:
            raise ValueError(f"${name} needs a time range")
        moment = self.time_range[0] if name == "__from" else self.time_range[1]
        if fmt is None:
            return str(_unix_millis(moment))
        kind, _, argument = fmt.partition(":")
        if kind != "date":
            return _format_value(fmt, str(_unix_millis(moment)), variable=name)
        if argument == "seconds":
            return str(_unix_seconds(moment))
        if argument in ("", "iso"):
            millis = _unix_millis(moment)
            return (_EPOCH + timedelta(milliseconds=millis)).strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"
        raise ValueError(f"unsupported date format {fmt!r} for ${name}: use date, date:iso or date:seconds")


# --- $__conditionalAll (the plugin's frontend) ------------------------------------------------


def _macro_arguments(text: str, open_index: int) -> list[str] | None:
    """The plugin frontend's ``getMacroArgs``: raw (untrimmed) arguments of the call opening at ``open_index``."""
    depth = 0
    arguments: list[str] = []
    start = open_index + 1
    for index in range(open_index, len(text)):
        char = text[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 1:
            arguments.append(text[start:index])
            start = index + 1
        if depth == 0:
            arguments.append(text[start:index])
            return arguments
    return None


def _apply_conditional_all(sql: str, variables: Mapping[str, VariableValue]) -> str:
    index = sql.rfind(_CONDITIONAL_ALL)
    while index != -1:
        open_index = index + len(_CONDITIONAL_ALL) - 1
        arguments = _macro_arguments(sql, open_index)
        if arguments is None:
            raise ValueError(f"$__conditionalAll without a closing parenthesis: {sql[index : index + 80]!r}")
        if len(arguments) != 2:
            raise ValueError(
                f"$__conditionalAll expects 2 arguments (condition, $variable), got {len(arguments)}: "
                f"{sql[index : open_index + 2 + sum(len(a) + 1 for a in arguments)]!r}"
            )
        condition, reference = arguments
        found = _VARIABLE_REFERENCE.match(reference.strip())
        if found is None:
            raise ValueError(f"$__conditionalAll needs a variable as its second argument, got {reference.strip()!r}")
        name = next(group for group in found.groups() if group)
        if name not in variables:
            raise ValueError(f"undefined variable ${name} in $__conditionalAll: known {sorted(variables)}")
        value = variables[name]
        # The plugin compares the value's text: '' (nothing selected) or '$__all' means "no filter".
        shown = value if isinstance(value, str) else ",".join(value)
        phrase = "1=1" if shown in ("", ALL_VALUE) else condition
        end = open_index + 1 + len(condition) + 1 + len(reference) + 1
        sql = sql[:index] + phrase + sql[end:]
        index = sql.rfind(_CONDITIONAL_ALL)
    return sql


# --- the plugin's backend macros ----------------------------------------------------------------


def _backend_arguments(text: str) -> tuple[list[str] | None, int]:
    """Grafana's SQL library ``parseArgs``: trimmed arguments if ``text`` opens with ``(``, and their length."""
    if not text.startswith("("):
        return None, 0
    depth = 0
    arguments: list[str] = []
    current: list[str] = []
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
            if depth == 1:
                continue
        elif char == ")":
            depth -= 1
            if depth == 0:
                arguments.append("".join(current).strip())
                return arguments, index + 1
        elif char == "," and depth == 1:
            arguments.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    return None, -1


_MacroFunction = Callable[[list[str]], str]


def _clickhouse_macros(start: datetime, end: datetime, interval_s: float) -> dict[str, tuple[int, _MacroFunction]]:
    """The plugin's macros: name → (argument count, function of the arguments)."""
    from_s, to_s = f"toDateTime({_unix_seconds(start)})", f"toDateTime({_unix_seconds(end)})"
    from_ms = f"fromUnixTimestamp64Milli({_unix_millis(start)})"
    to_ms = f"fromUnixTimestamp64Milli({_unix_millis(end)})"
    from_date, to_date = f"toDate('{_utc(start):%Y-%m-%d}')", f"toDate('{_utc(end):%Y-%m-%d}')"
    seconds = int(max(interval_s, 1))
    millis = int(max(interval_s * 1000, 1))

    def date_time_filter(args: list[str]) -> str:
        date_column, time_column = args
        return (
            f"({date_column} >= {from_date} AND {date_column} <= {to_date}) AND "
            f"({time_column} >= {from_s} AND {time_column} <= {to_s})"
        )

    return {
        "fromTime": (0, lambda _: from_s),
        "toTime": (0, lambda _: to_s),
        "fromTime_ms": (0, lambda _: from_ms),
        "toTime_ms": (0, lambda _: to_ms),
        "timeFilter": (1, lambda a: f"{a[0]} >= {from_s} AND {a[0]} <= {to_s}"),
        "timeFilter_ms": (1, lambda a: f"{a[0]} >= {from_ms} AND {a[0]} <= {to_ms}"),
        "dateFilter": (1, lambda a: f"{a[0]} >= {from_date} AND {a[0]} <= {to_date}"),
        "dateTimeFilter": (2, date_time_filter),
        "dt": (2, date_time_filter),
        "timeInterval": (1, lambda a: f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {seconds} second)"),
        "timeInterval_ms": (1, lambda a: f"toStartOfInterval(toDateTime64({a[0]}, 3), INTERVAL {millis} millisecond)"),
        "interval_s": (0, lambda _: str(seconds)),
    }


def _apply_backend_macros(sql: str, macros: Mapping[str, tuple[int, _MacroFunction]]) -> str:
    # Longest name first, as the plugin does, so $__timeFilter never eats $__timeFilter_ms (the \b
    # after the name already prevents it; the order keeps the behaviour identical anyway).
    for name in sorted(macros, key=len, reverse=True):
        arity, function = macros[name]
        pattern = re.compile(rf"\$__{re.escape(name)}\b", re.ASCII)
        pieces: list[str] = []
        position = 0
        for match in pattern.finditer(sql):
            if match.start() < position:
                continue  # inside the arguments of the previous occurrence
            arguments, length = _backend_arguments(sql[match.end() :])
            if length < 0:
                raise ValueError(
                    f"macro $__{name} has no closing parenthesis: {sql[match.start() : match.start() + 80]!r}"
                )
            given = arguments or []
            if arity and len(given) != arity:
                raise ValueError(
                    f"macro $__{name} expects {arity} argument{'s' if arity > 1 else ''}, received {len(given)}: "
                    f"{sql[match.start() : match.end() + length]!r}"
                )
            if arity and any(not argument for argument in given):
                raise ValueError(
                    f"macro $__{name} has an empty argument: {sql[match.start() : match.end() + length]!r}"
                )
            pieces.append(sql[position : match.start()])
            pieces.append(function(given))
            position = match.end() + length
        pieces.append(sql[position:])
        sql = "".join(pieces)
    return sql


def _reject_leftover_macros(text: str, known: Sequence[str]) -> None:
    leftover = _LEFTOVER_MACRO.search(text)
    if leftover is None:
        return
    name = leftover.group(1)
    hint = _UNSUPPORTED_MACROS.get(name)
    suggestion = f" (use {hint})" if hint else f"; known: {', '.join('$__' + k for k in sorted(known))}"
    raise ValueError(f"unknown macro $__{name}{suggestion}")


# --- public API -------------------------------------------------------------------------------


def expand_sql(
    sql: str,
    *,
    start: datetime,
    end: datetime,
    variables: Mapping[str, VariableValue],
    interval_s: int = 60,
    all_values: Mapping[str, VariableValue] | None = None,
) -> str:
    """Expand a ClickHouse panel query as Grafana with the grafana-clickhouse-datasource plugin would.

    ``start``/``end`` are the dashboard's time range (naive datetimes are UTC), ``interval_s`` the
    panel interval. ``variables`` maps names to a value or a list of values (a multi-value
    selection); ``"$__all"`` (or ``["$__all"]``) is All. Outside ``$__conditionalAll`` an All
    variable expands to ``all_values[name]``: a string is a custom all value, inserted as is; a
    list stands for every option of the variable, formatted like a multi-value selection.
    """
    _check_interval(interval_s)
    if _utc(end) < _utc(start):
        raise ValueError(f"the time range ends ({end}) before it starts ({start})")
    range_ms = _unix_millis(end) - _unix_millis(start)
    interpolator = _Interpolator(
        variables=variables,
        all_values=all_values or {},
        default_all=None,
        globals_={
            "__interval": format_interval(interval_s),
            "__interval_ms": str(int(interval_s * 1000)),
            "__range": f"{round(range_ms / 1000)}s",
            "__range_s": str(round(range_ms / 1000)),
            "__range_ms": str(range_ms),
        },
        time_range=(start, end),
        default_format=_clickhouse_default,
    )
    sql = _apply_conditional_all(sql, variables)
    sql = interpolator.replace(sql)
    macros = _clickhouse_macros(start, end, interval_s)
    sql = _apply_backend_macros(sql, macros)
    _reject_leftover_macros(sql, [*macros, "conditionalAll"])
    return sql


def expand_promql(
    expr: str,
    *,
    variables: Mapping[str, VariableValue],
    interval_s: int = 60,
    range_s: int = 3600,
    all_values: Mapping[str, str] | None = None,
    scrape_interval_s: int = DEFAULT_SCRAPE_INTERVAL_S,
) -> str:
    """Expand a Prometheus panel query as Grafana's Prometheus data source would.

    ``interval_s`` is the query step (``$__interval``), ``range_s`` the dashboard range
    (``$__range``), ``scrape_interval_s`` the data source's scrape interval (for
    ``$__rate_interval``). Variables are regex-escaped for ``=~`` matchers; All (``"$__all"``)
    becomes ``all_values[name]`` (the variable's custom all value), ``.*`` by default.
    """
    _check_interval(interval_s)
    _check_interval(range_s, "range_s")
    if scrape_interval_s <= 0:
        raise ValueError(f"scrape_interval_s must be positive, got {scrape_interval_s}")
    rate_interval = max(interval_s + scrape_interval_s, 4 * scrape_interval_s)
    interpolator = _Interpolator(
        variables=variables,
        all_values=dict(all_values or {}),
        default_all=DEFAULT_PROMQL_ALL_VALUE,
        globals_={
            "__interval": f"{interval_s}s",
            "__interval_ms": str(int(interval_s * 1000)),
            "__rate_interval": f"{rate_interval}s",
            "__range": f"{range_s}s",
            "__range_s": str(range_s),
            "__range_ms": str(range_s * 1000),
        },
        time_range=None,
        default_format=_promql_default,
    )
    expr = interpolator.replace(expr)
    _reject_leftover_macros(expr, ["interval", "interval_ms", "rate_interval", "range", "range_s", "range_ms"])
    return expr


__all__ = [
    "ALL_TEXT",
    "ALL_VALUE",
    "DEFAULT_PROMQL_ALL_VALUE",
    "DEFAULT_SCRAPE_INTERVAL_S",
    "VariableValue",
    "expand_promql",
    "expand_sql",
    "format_interval",
    "is_all",
]
