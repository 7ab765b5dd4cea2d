"""What the SQL endpoint lets through: statement checks before execution, and the settings of each query.

The endpoint (``sql_endpoint.py``) hands Grafana the collector's embedded ClickHouse. ClickHouse's own
``readonly=1`` stops writes, DDL and setting changes, but in the embedded engine it does not stop
everything that reaches outside the store: ``SELECT file('/etc/passwd')`` reads a file and
``... INTO OUTFILE`` writes one even under ``readonly=1`` (chDB runs them as clickhouse-local
does). So every statement passes two checks before it runs, and each refusal is a ClickHouse-style
error naming what was refused:

1. ``check_tokens``: a real tokenizer (strings with both escape styles, quoted identifiers, nested
   block comments, ``--``/``#`` comments, heredocs), so keywords inside strings or comments never
   count and never hide. One statement only; it must start with SELECT, WITH, SHOW, DESCRIBE/DESC or
   EXISTS; no ``INTO OUTFILE``; no call of a function that reaches the file system, the network,
   other processes or dictionaries (``file``, ``url``, ``remote``, ``s3``, ``executable``, ``dictGet``...).
2. ``check_ast``: ClickHouse's own parser (``EXPLAIN AST``, run by the endpoint) decides what the
   statement is: its root must be a query that reads, every table function must be one that only
   generates rows (``numbers``, ``zeros``, ``generate_series``, ``values``), the denied functions
   must not appear anywhere, and ``system`` tables are limited to metadata the Grafana plugin reads.

Settings: the client may send harmless ones (``limit``, output formatting); the limits (time,
memory, result rows and bytes) may only be lowered, never raised; anything else is refused as
ClickHouse refuses a setting change in readonly mode (code 164).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

ALLOWED_FIRST_KEYWORDS: Final = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS"})
# table functions that only generate rows: everything else (file, url, s3, remote, merge, view...)
# reads outside the query or another table, and is refused
ALLOWED_TABLE_FUNCTIONS: Final = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries", "values", "one"}
)
# functions refused anywhere in a statement, as a table function or a scalar (file() is both)
DENIED_FUNCTIONS: Final = frozenset(
    name.lower()
    for name in (
        "file", "fileCluster", "url", "urlCluster", "remote", "remoteSecure", "cluster", "clusterAllReplicas",
        "s3", "s3Cluster", "gcs", "oss", "cosn", "hdfs", "hdfsCluster", "azureBlobStorage",
        "azureBlobStorageCluster", "iceberg", "icebergS3", "icebergAzure", "icebergHDFS", "icebergLocal",
        "icebergCluster", "icebergS3Cluster", "deltaLake", "deltaLakeCluster", "deltaLakeLocal", "hudi",
        "hudiCluster", "paimon", "executable", "executablePool", "input", "mysql", "postgresql", "jdbc",
        "odbc", "sqlite", "mongodb", "redis", "arrowFlight", "arrowflight", "ytsaurus", "python",
        "dictionary", "fuzzJSON", "fuzzQuery", "generateRandom", "merge", "mergeTreeIndex",
        "mergeTreeProjection", "loop", "view", "viewIfPermitted", "viewExplain", "remoteTable",
        "timeSeriesData", "timeSeriesTags", "timeSeriesMetrics", "addressToLine", "addressToLineWithInlines",
        "addressToSymbol", "demangle", "trap", "filesystemAvailable", "filesystemCapacity",
        "filesystemUnreserved", "getServerSetting", "getMacro", "zookeeperSessionUptime",
    )
)  # fmt: skip
# dictionaries may be defined with file, executable or network sources: none of their functions
DENIED_FUNCTION_PREFIXES: Final = ("dict",)
# system tables the Grafana plugin's editors and health check read, and other plain metadata
ALLOWED_SYSTEM_TABLES: Final = frozenset(
    {
        "one", "numbers", "numbers_mt", "zeros", "zeros_mt", "databases", "tables", "columns", "functions",
        "table_functions", "data_type_families", "formats", "settings", "time_zones", "build_options",
        "contributors", "parts", "parts_columns", "table_engines", "collations", "keywords", "licenses",
    }
)  # fmt: skip
# the limits: a client may lower them; the endpoint's value is the ceiling
LIMIT_SETTINGS: Final = ("max_execution_time", "max_memory_usage", "max_result_rows", "max_result_bytes")
# settings that change how a result looks or how much of it comes back, never what can be reached
HARMLESS_SETTINGS: Final = frozenset(
    {
        "limit", "offset", "extremes", "join_use_nulls", "session_timezone", "date_time_output_format",
        "date_time_input_format", "output_format_json_quote_64bit_integers", "output_format_json_quote_denormals",
        "output_format_json_named_tuples_as_objects", "output_format_decimal_trailing_zeros",
        "output_format_pretty_max_rows", "output_format_pretty_color", "output_format_write_statistics",
        "output_format_json_quote_decimals", "output_format_tsv_crlf_end_of_line",
        "aggregate_functions_null_for_empty", "cast_keep_nullable",
        "prefer_column_name_to_alias", "totals_mode", "transform_null_in", "readonly",
    }
)  # fmt: skip


class SqlError(Exception):
    """A ClickHouse exception as the HTTP interface reports it: ``Code: N. DB::Exception: ... (NAME)``."""

    def __init__(self, code: int, name: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message
        self.status = status

    def body(self, version: str) -> bytes:
        return f"Code: {self.code}. DB::Exception: {self.message}. ({self.name}) (version {version})\n".encode()


def syntax_error(message: str) -> SqlError:
    return SqlError(62, "SYNTAX_ERROR", message, 400)


def readonly_error(message: str) -> SqlError:
    return SqlError(164, "READONLY", message, 403)


def access_denied(message: str) -> SqlError:
    return SqlError(497, "ACCESS_DENIED", message, 403)


# --- tokens -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    """``kind`` is word, quoted (a quoted identifier), string, number, param, or punct (one character)."""

    kind: str
    text: str


_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_NUMBER: Final = re.compile(r"(?:0[xX][0-9A-Fa-f_]+|0[bB][01_]+|[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9]+)?)")
_HEREDOC: Final = re.compile(r"\$([A-Za-z0-9_]*)\$")


def tokenize(sql: str) -> list[Token]:
    """ClickHouse's lexical structure, closely enough to tell code from strings and comments.

    An unterminated string, quoted identifier or comment is a syntax error (it could hide the rest).
    """
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char.isspace():
            i += 1
        elif sql.startswith("--", i) or char == "#":
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            i = _skip_block_comment(sql, i)
        elif char in "'\"`":
            end = _quoted_end(sql, i, char)
            tokens.append(Token("string" if char == "'" else "quoted", sql[i + 1 : end - 1]))
            i = end
        elif char == "$" and (heredoc := _HEREDOC.match(sql, i)) is not None:
            closing = sql.find(heredoc.group(0), heredoc.end())
            if closing < 0:
                raise syntax_error("Unterminated heredoc string")
            tokens.append(Token("string", sql[heredoc.end() : closing]))
            i = closing + len(heredoc.group(0))
        elif char == "{":
            end = sql.find("}", i)
            if end < 0:
                raise syntax_error("Unterminated query parameter {name:Type}")
            tokens.append(Token("param", sql[i + 1 : end]))
            i = end + 1
        elif (word := _WORD.match(sql, i)) is not None:
            tokens.append(Token("word", word.group(0)))
            i = word.end()
        elif (number := _NUMBER.match(sql, i)) is not None and number.end() > i:
            tokens.append(Token("number", number.group(0)))
            i = number.end()
        else:
            tokens.append(Token("punct", char))
            i += 1
    return tokens


def _skip_block_comment(sql: str, start: int) -> int:
    depth, i = 0, start
    while i < len(sql):
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise syntax_error("Unterminated multi-line comment")


def _quoted_end(sql: str, start: int, quote: str) -> int:
    """Index just past the closing quote; backslash escapes and doubled quotes both stay inside."""
    i = start + 1
    while i < len(sql):
        char = sql[i]
        if char == "\\":
            i += 2
        elif char == quote:
            if i + 1 < len(sql) and sql[i + 1] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise syntax_error(f"Unterminated quoted {'string' if quote == chr(39) else 'identifier'}")


# --- statement checks -------------------------------------------------------------------------


def _denied(name: str) -> bool:
    lowered = name.lower()
    return lowered in DENIED_FUNCTIONS or lowered.startswith(DENIED_FUNCTION_PREFIXES)


def _refuse_function(name: str) -> SqlError:
    return access_denied(
        f"function {name}() is not allowed on the agentwatch SQL endpoint: it can reach files, the network, "
        "other processes or dictionaries"
    )


def check_tokens(sql: str) -> list[Token]:
    """The lexical checks (see the module docstring); returns the tokens without a trailing ``;``."""
    tokens = tokenize(sql)
    while tokens and tokens[-1] == Token("punct", ";"):
        tokens.pop()
    if not tokens:
        raise syntax_error("Empty query")
    if Token("punct", ";") in tokens:
        raise syntax_error("Multi-statements are not allowed")
    first = next((token for token in tokens if token != Token("punct", "(")), tokens[0])
    keyword = first.text.upper() if first.kind == "word" else first.text
    if keyword not in ALLOWED_FIRST_KEYWORDS:
        raise readonly_error(
            f"{keyword} statements are not allowed on the agentwatch SQL endpoint, which is read-only "
            f"(allowed: {', '.join(sorted(ALLOWED_FIRST_KEYWORDS))})"
        )
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.kind not in ("word", "quoted") or following is None:
            continue
        if token.kind == "word" and token.text.upper() == "INTO" and following.text.upper() == "OUTFILE":
            raise readonly_error("INTO OUTFILE is not allowed on the agentwatch SQL endpoint: it writes a file")
        if following == Token("punct", "(") and _denied(token.text):
            raise _refuse_function(token.text)
    return tokens


def output_format(tokens: list[Token]) -> str | None:
    """The format named by a top-level ``FORMAT name`` clause, if any (the last one wins, as in ClickHouse)."""
    depth = 0
    found: str | None = None
    for index, token in enumerate(tokens):
        if token.kind == "punct" and token.text in "([":
            depth += 1
        elif token.kind == "punct" and token.text in ")]":
            depth -= 1
        elif depth == 0 and token.kind == "word" and token.text.upper() == "FORMAT" and index + 1 < len(tokens):
            following = tokens[index + 1]
            if following.kind in ("word", "quoted"):
                found = following.text
    return found


_AST_LINE: Final = re.compile(r"^( *)(\S+)(?: (\S+))?")
_ALLOWED_ROOTS: Final = ("Select", "Show", "Describe", "Exists")


def check_ast(explained: str) -> None:
    """Check the tree ``EXPLAIN AST`` printed for the statement (one node per line, two spaces per level).

    String literals are printed escaped, on their node's line, so a literal cannot forge a node.
    """
    lines = [line for line in explained.splitlines() if line.strip()]
    if not lines:
        raise syntax_error("the statement did not parse to anything")
    root = lines[0].split()[0]
    if root == "ShowProcesslistQuery":  # system.processes: other sessions' queries
        raise access_denied("SHOW PROCESSLIST is not allowed on the agentwatch SQL endpoint")
    if not root.startswith(_ALLOWED_ROOTS):
        raise readonly_error(f"a {root} statement is not allowed on the agentwatch SQL endpoint, which is read-only")
    parents: list[tuple[int, str]] = []  # (indent, node kind) of the open ancestors
    for line in lines:
        match = _AST_LINE.match(line)
        if match is None:
            continue
        indent, kind, name = len(match.group(1)), match.group(2), match.group(3) or ""
        while parents and parents[-1][0] >= indent:
            parents.pop()
        parent = parents[-1][1] if parents else ""
        if kind == "Function":
            if _denied(name):
                raise _refuse_function(name)
            if parent == "TableExpression" and name.lower() not in ALLOWED_TABLE_FUNCTIONS:
                raise access_denied(
                    f"table function {name}() is not allowed on the agentwatch SQL endpoint "
                    f"(allowed: {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))})"
                )
        elif kind == "TableIdentifier":
            database, dot, table = name.partition(".")
            if dot and database.strip('`"') == "system" and table.strip('`"') not in ALLOWED_SYSTEM_TABLES:
                raise access_denied(
                    f"system.{table} is not readable on the agentwatch SQL endpoint "
                    f"(system tables allowed: {', '.join(sorted(ALLOWED_SYSTEM_TABLES))})"
                )
        parents.append((indent, kind))


# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """The ceilings every query runs under (``max_execution_time`` in seconds, the rest in rows or bytes)."""

    max_execution_time: float = 30.0
    max_memory_usage: int = 1 << 30
    max_result_rows: int = 100_000
    max_result_bytes: int = 128 << 20

    def settings(self) -> dict[str, str]:
        return {
            "max_execution_time": _number(self.max_execution_time),
            "max_memory_usage": str(self.max_memory_usage),
            "max_result_rows": str(self.max_result_rows),
            "max_result_bytes": str(self.max_result_bytes),
            "result_overflow_mode": "throw",
            "timeout_overflow_mode": "throw",
        }


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


_SETTING_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def query_settings(requested: Mapping[str, str], limits: Limits) -> dict[str, str]:
    """The settings one query runs with: the client's harmless ones, then the limits (lowered, never raised).

    ``readonly`` from the client is accepted and ignored (the endpoint always runs ``readonly=1``).
    """
    ceilings = limits.settings()
    chosen: dict[str, str] = {}
    for name, value in requested.items():
        if not _SETTING_NAME.match(name):
            raise SqlError(36, "BAD_ARGUMENTS", f"Invalid setting name {name!r}", 400)
        if name in LIMIT_SETTINGS:
            try:
                wanted = float(value)
            except ValueError:
                raise SqlError(72, "CANNOT_PARSE_NUMBER", f"Cannot parse {name}={value!r} as a number", 400) from None
            ceiling = float(ceilings[name])
            # 0 means "no limit" in ClickHouse: that is raising it, so the ceiling stays
            if 0 < wanted < ceiling:
                ceilings[name] = _number(wanted)
        elif name == "readonly":
            continue
        elif name in HARMLESS_SETTINGS:
            chosen[name] = value
        else:
            raise readonly_error(f"Cannot modify '{name}' setting in readonly mode")
    return {**chosen, **ceilings}
