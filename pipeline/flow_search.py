"""Flow search: a small filter language, parsed here and turned into parameterised SQL.

A filter is comparisons joined by ``and``, ``or``, ``not`` and parentheses::

    action = REJECT and (dstport in (22, 3389) or addr = 10.0.0.0/8)
    interface-id = eni-0* and not protocol = udp and window-start >= 2024-05-01T12:00:00Z

Grammar (keywords ``and or not in`` and field names are case-insensitive; precedence
``not`` > ``and`` > ``or``)::

    filter     := [or_expr]                      an empty filter matches every flow
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | comparison
    comparison := field ("=" | "!=" | "<" | "<=" | ">" | ">=") value
                | field ["not"] "in" "(" value ("," value)* ")"
    value      := word | "double-quoted" | 'single-quoted'

* ``field``: a flow record field by its JSON name (``interface-id``) or column name
  (``interface_id``), or an alias: ``addr`` (srcaddr or dstaddr), ``port`` (srcport or
  dstport). With an alias, ``=``, ``in`` and the orderings hold when either field matches;
  ``!=`` and ``not in`` hold when neither does.
* ``word``: letters, digits and ``_ . : / * + -``. In quotes, a backslash takes the next
  character as it is (``\\"``, ``\\'``, ``\\\\``, ``\\*``). Keywords must be quoted to be values.
* Values by field type: whole numbers range-checked to the column's UInt type; for
  ``protocol`` also tcp, udp, icmp, icmpv6, gre, esp. Times: Unix seconds or ISO 8601 (no
  zone = UTC). Addresses: IPv4, IPv6 or a CIDR (host bits ignored); IPv4 matches the
  IPv4-mapped form the store keeps. Enums: one of their values (any case). Strings: text
  where an unescaped ``*`` matches any run of characters.
* Orderings (``< <= > >=``) apply to numbers and times only.

Every value reaches ClickHouse as a server-side parameter (``{p0:Type}``; times as
``toDateTime({p0:UInt32})``); the SQL text holds only column names from
``schemas/flow_record.py``, the grammar's operators and placeholders. Input is limited to
:data:`MAX_FILTER_LENGTH` characters and :data:`MAX_DEPTH` levels of parentheses and ``not``;
other control characters than tab, CR and LF are refused. Every error is a
:class:`FlowSearchError` that says what was expected and at which character position
(counted from 0).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flowlogs.errors import ConfigError
from pipeline.report_sql import address_text
from schemas.flow_record import FLOW_FIELDS, FLOWS_TABLE, FlowField

__all__ = ["MAX_DEPTH", "MAX_FILTER_LENGTH", "MAX_LIMIT", "Filter", "FlowSearchError", "parse_filter", "search_sql"]

MAX_FILTER_LENGTH = 2000
MAX_DEPTH = 32
MAX_LIMIT = 10_000

PROTOCOL_NAMES = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "gre": 47, "esp": 50}
ALIASES = {"addr": ("srcaddr", "dstaddr"), "port": ("srcport", "dstport")}
ORDERINGS = ("<", "<=", ">", ">=")
KEYWORDS = ("and", "or", "not", "in")
_MAX_TIME = 2**32 - 1  # DateTime is UInt32 seconds

_TOKEN = re.compile(r"\s*(?:(?P<op>!=|<=|>=|=|<|>)|(?P<punct>[(),])|(?P<word>[A-Za-z0-9_.:/*+-]+)|(?P<quote>[\"']))")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_ENUM_VALUE = re.compile(r"'([^']*)' = -?\d+")


class FlowSearchError(ConfigError):
    """A filter (or a search bound) is invalid; ``position`` is where in the filter, if known."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


def _kind(f: FlowField) -> str:
    """How values of ``f`` are written: number, time, address, enum or string."""
    t = f.clickhouse_type
    if t.startswith("UInt"):
        return "number"
    if t.startswith("DateTime"):
        return "time"
    if t == "IPv6":
        return "address"
    if t.startswith("Enum8("):
        return "enum"
    if t in ("String", "LowCardinality(String)"):
        return "string"
    # A new column type must be given a way to be searched, not silently skipped.
    raise TypeError(f"flow_search has no values for the ClickHouse type {t} of {f.name}")


_FIELDS: dict[str, FlowField] = {**{f.name: f for f in FLOW_FIELDS}, **{f.column: f for f in FLOW_FIELDS}}
_KINDS = {f.name: _kind(f) for f in FLOW_FIELDS}
_KIND_NAMES = {"address": "addresses", "enum": "enum values", "string": "strings"}
_ENUMS = {f.name: tuple(_ENUM_VALUE.findall(f.clickhouse_type)) for f in FLOW_FIELDS if _KINDS[f.name] == "enum"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # op, punct, word, string or end
    text: str  # for string tokens: the value with escapes resolved
    position: int
    end: int  # where the token's text in the filter ends
    wildcards: frozenset[int] = frozenset()  # indexes in ``text`` of the `*` that are wildcards


@dataclass(frozen=True, slots=True)
class _Match:
    """One test of one value against a column: ``column OP {p:Type}``, a BETWEEN or a LIKE."""

    operator: str  # = < <= > >= LIKE BETWEEN
    param_type: str
    values: tuple[Any, ...]  # two for BETWEEN, else one
    function: str = ""  # applied to each placeholder: toDateTime for times


@dataclass(frozen=True, slots=True)
class _Comparison:
    columns: tuple[str, ...]
    matches: tuple[_Match, ...]  # any of them, on any column
    negated: bool  # != and not in: none of them on no column


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node


@dataclass(frozen=True, slots=True)
class _Junction:
    operator: str  # AND or OR
    operands: tuple[_Node, ...]


_Node = _Comparison | _Not | _Junction


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed filter; :meth:`sql` renders it."""

    text: str
    root: _Node | None  # None: the empty filter

    def sql(self) -> tuple[str, dict[str, Any]]:
        """The filter as a ClickHouse condition and its parameters.

        The condition holds only column names, operators and ``{pN:Type}`` placeholders; every
        value is in the parameters dict (``pN`` → value). The empty filter gives ``1``.
        """
        parameters: dict[str, Any] = {}
        return ("1" if self.root is None else _render(self.root, parameters)), parameters


def _render(node: _Node, parameters: dict[str, Any]) -> str:
    """SQL of ``node``: one test of one column as it is, anything else wholly in parentheses
    (so a result that starts with "(" needs no more of them)."""
    if isinstance(node, _Junction):
        return "(" + f" {node.operator} ".join(_render(n, parameters) for n in node.operands) + ")"
    if isinstance(node, _Not):
        return _negation(_render(node.operand, parameters))
    tests = [_render_match(column, m, parameters) for column in node.columns for m in node.matches]
    either = tests[0] if len(tests) == 1 else "(" + " OR ".join(tests) + ")"
    return _negation(either) if node.negated else either


def _negation(condition: str) -> str:
    # NOT binds looser than = in ClickHouse, but the parentheses say so to a reader too.
    return f"(NOT {condition})" if condition.startswith("(") else f"(NOT ({condition}))"


def _render_match(column: str, match: _Match, parameters: dict[str, Any]) -> str:
    placeholders = []
    for value in match.values:
        name = f"p{len(parameters)}"
        parameters[name] = value
        placeholder = f"{{{name}:{match.param_type}}}"
        placeholders.append(f"{match.function}({placeholder})" if match.function else placeholder)
    if match.operator == "BETWEEN":
        return f"`{column}` BETWEEN {placeholders[0]} AND {placeholders[1]}"
    return f"`{column}` {match.operator} {placeholders[0]}"


def parse_filter(text: str) -> Filter:
    """The :class:`Filter` that ``text`` writes (grammar in this module's docstring).

    Raises :class:`FlowSearchError` naming what was expected and where.
    """
    if not isinstance(text, str):
        raise FlowSearchError(f"filter: expected text, not {type(text).__name__}")
    if len(text) > MAX_FILTER_LENGTH:
        raise FlowSearchError(f"filter: longer than {MAX_FILTER_LENGTH} characters ({len(text)})", MAX_FILTER_LENGTH)
    for position, char in enumerate(text):
        # Control characters have no place in a filter and would only hide what it says.
        if (ord(char) < 32 and char not in "\t\n\r") or ord(char) == 127:
            raise FlowSearchError(f"filter: control character U+{ord(char):04X} at {position}", position)
    return _Parser(text).parse()


class _Parser:
    """Recursive descent over the tokens of one filter."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def _advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def _is_keyword(self, word: str) -> bool:
        return self.token.kind == "word" and self.token.text.lower() == word

    def _found(self) -> str:
        token = self.token
        return "the end" if token.kind == "end" else repr(self.text[token.position : token.end][:40])

    def _fail(self, expected: str) -> FlowSearchError:
        position = self.token.position
        return FlowSearchError(f"filter: expected {expected}, found {self._found()} at {position}", position)

    def parse(self) -> Filter:
        if self.token.kind == "end":
            return Filter(self.text, None)
        root = self._or(0)
        if self.token.kind != "end":
            raise self._fail("'and', 'or' or the end of the filter")
        return Filter(self.text, root)

    def _or(self, depth: int) -> _Node:
        operands = [self._and(depth)]
        while self._is_keyword("or"):
            self._advance()
            operands.append(self._and(depth))
        return operands[0] if len(operands) == 1 else _Junction("OR", tuple(operands))

    def _and(self, depth: int) -> _Node:
        operands = [self._not(depth)]
        while self._is_keyword("and"):
            self._advance()
            operands.append(self._not(depth))
        return operands[0] if len(operands) == 1 else _Junction("AND", tuple(operands))

    def _not(self, depth: int) -> _Node:
        opens = self._is_keyword("not") or (self.token.kind == "punct" and self.token.text == "(")
        if opens and depth >= MAX_DEPTH:
            raise FlowSearchError(
                f"filter: nested deeper than {MAX_DEPTH} levels of parentheses and 'not' at {self.token.position}",
                self.token.position,
            )
        if self._is_keyword("not"):
            self._advance()
            return _Not(self._not(depth + 1))
        if self.token.kind == "punct" and self.token.text == "(":
            opening = self._advance()
            inner = self._or(depth + 1)
            if not (self.token.kind == "punct" and self.token.text == ")"):
                raise self._fail(f"')' to close the '(' at {opening.position}")
            self._advance()
            return inner
        return self._comparison()

    def _comparison(self) -> _Comparison:
        name_token = self.token
        if name_token.kind != "word" or name_token.text.lower() in KEYWORDS:
            raise self._fail("a field name or '('")
        name = name_token.text.lower()
        if name in ALIASES:
            fields = tuple(_FIELDS[n] for n in ALIASES[name])
        elif name in _FIELDS:
            fields = (_FIELDS[name],)
        else:
            valid = ", ".join([*ALIASES, *(f.name for f in FLOW_FIELDS)])
            raise FlowSearchError(
                f"filter: unknown field {name_token.text!r} at {name_token.position}; valid fields: {valid}"
                " (or the column names, with _ for -)",
                name_token.position,
            )
        self._advance()
        field = fields[0]  # an alias's fields share one type
        columns = tuple(f.column for f in fields)
        operator = self.token
        if operator.kind == "op":
            self._advance()
            if operator.text in ORDERINGS and _KINDS[field.name] not in ("number", "time"):
                raise FlowSearchError(
                    f"filter: {operator.text!r} does not apply to {name}, which holds {_KIND_NAMES[_KINDS[field.name]]}"
                    f" (use =, !=, in or not in) at {operator.position}",
                    operator.position,
                )
            value = self._value(f"after {operator.text!r}")
            test = "=" if operator.text == "!=" else operator.text
            return _Comparison(columns, (_match(field, name, test, value),), operator.text == "!=")
        negated = self._is_keyword("not")
        if negated:
            self._advance()
        if not self._is_keyword("in"):
            raise self._fail(f"an operator (=, !=, <, <=, >, >=, in, not in) after {name_token.text!r}")
        self._advance()
        if not (self.token.kind == "punct" and self.token.text == "("):
            raise self._fail("'(' after 'in'")
        self._advance()
        matches = [_match(field, name, "=", self._value("in the list after 'in ('"))]
        while self.token.kind == "punct" and self.token.text == ",":
            self._advance()
            matches.append(_match(field, name, "=", self._value("after ','")))
        if not (self.token.kind == "punct" and self.token.text == ")"):
            raise self._fail("',' or ')' in the list after 'in'")
        self._advance()
        return _Comparison(columns, tuple(matches), negated)

    def _value(self, where: str) -> _Token:
        token = self.token
        if token.kind == "string" or (token.kind == "word" and token.text.lower() not in KEYWORDS):
            return self._advance()
        hint = " (quote a keyword to use it as a value)" if token.kind == "word" else ""
        raise FlowSearchError(
            f"filter: expected a value {where}, found {self._found()}{hint} at {token.position}", token.position
        )


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    position = 0
    while True:
        matched = _TOKEN.match(text, position)
        if matched is None:
            rest = text[position:]
            start = position + len(rest) - len(rest.lstrip())
            if start == len(text):
                tokens.append(_Token("end", "", start, start))
                return tokens
            raise FlowSearchError(f"filter: unexpected character {text[start]!r} at {start}", start)
        kind = matched.lastgroup or ""
        start = matched.start(kind)
        position = matched.end()
        if kind != "quote":
            tokens.append(_Token(kind, matched[kind], start, position))
            continue
        chars: list[str] = []
        wildcards: set[int] = set()
        while True:
            if position >= len(text):
                raise FlowSearchError(f"filter: unterminated string starting at {start}", start)
            char = text[position]
            if char == matched["quote"]:
                position += 1
                break
            if char == "\\":
                if position + 1 >= len(text):
                    raise FlowSearchError(f"filter: unterminated string starting at {start}", start)
                chars.append(text[position + 1])
                position += 2
                continue
            if char == "*":
                wildcards.add(len(chars))
            chars.append(char)
            position += 1
        tokens.append(_Token("string", "".join(chars), start, position, frozenset(wildcards)))


def _match(field: FlowField, name: str, operator: str, token: _Token) -> _Match:
    """The test of ``field`` against the value ``token`` writes; FlowSearchError if it is not
    a value of the field's type."""
    kind = _KINDS[field.name]
    text = token.text
    wildcards = token.wildcards if token.kind == "string" else frozenset(i for i, c in enumerate(text) if c == "*")

    def bad(expected: str) -> FlowSearchError:
        return FlowSearchError(f"filter: {name} expects {expected}, not {text!r} at {token.position}", token.position)

    if kind == "number":
        bits = int(field.clickhouse_type[4:])
        if field.name == "protocol" and text.lower() in PROTOCOL_NAMES:
            return _Match(operator, field.clickhouse_type, (PROTOCOL_NAMES[text.lower()],))
        names = f" or a protocol name ({', '.join(PROTOCOL_NAMES)})" if field.name == "protocol" else ""
        if not (text.isascii() and text.isdigit()) or int(text) >= 2**bits:
            raise bad(f"a whole number 0..{2**bits - 1}{names}")
        return _Match(operator, field.clickhouse_type, (int(text),))
    if kind == "time":
        # Seconds as UInt32: a DateTime parameter would not read short numbers such as 0.
        return _Match(operator, "UInt32", (_seconds(text, bad),), "toDateTime")
    if kind == "address":
        try:
            if "%" in text:  # an IPv6 scope (fe80::1%eth0) is nothing the store keeps
                raise ValueError(text)
            network = ipaddress.ip_network(text, strict=False) if "/" in text else ipaddress.ip_address(text)
        except ValueError:
            raise bad("an IPv4 or IPv6 address or CIDR") from None
        if isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
            first, last = _mapped(network.network_address), _mapped(network.broadcast_address)
            return _Match("BETWEEN", "IPv6", (first, last))
        return _Match(operator, "IPv6", (_mapped(network),))
    if kind == "enum":
        values = _ENUMS[field.name]
        canonical = {v.lower(): v for v in values}.get(text.lower())
        if canonical is None:
            raise bad(f"one of {', '.join(values)}")
        return _Match(operator, "String", (canonical,))
    if not wildcards:
        return _Match(operator, "String", (text,))
    # LIKE's own metacharacters in the text are literal; only our `*` is a wildcard.
    pattern = "".join("%" if i in wildcards else ("\\" + c if c in "%_\\" else c) for i, c in enumerate(text))
    return _Match("LIKE", "String", (pattern,))


def _mapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """``address`` as the store keeps it: IPv4 as ``::ffff:a.b.c.d``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # so that it reads the same on every Python
    return f"::ffff:{address}" if address.version == 4 else str(address)


def _seconds(text: str, bad: Callable[[str], FlowSearchError]) -> int:
    if text.isascii() and text.isdigit():
        seconds = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise bad("Unix seconds or an ISO 8601 time (2024-05-01T12:00:00Z)") from None
        seconds = int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
    if not 0 <= seconds <= _MAX_TIME:
        raise bad(f"a time from 1970-01-01 to {datetime.fromtimestamp(_MAX_TIME, UTC):%Y-%m-%d}")
    return seconds


def _output(f: FlowField) -> str:
    """A field of the flow record as plain JSON-friendly SQL, named as in JSON."""
    kind = _KINDS[f.name]
    column = f"`{f.column}`"
    expression = {
        "address": address_text(column),
        "time": f"toUInt32({column})",
        "enum": f"toString({column})",
    }.get(kind, column)
    return f"{expression} AS `{f.name}`"


def _bound(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FlowSearchError(f"search: {name} must be a whole number {low}..{high}, not {value!r}")
    return value


def search_sql(text: str, *, since: int, until: int, limit: int, table: str = FLOWS_TABLE) -> tuple[str, dict[str, Any]]:
    """A SELECT of the flow records that match the filter ``text`` in windows starting in
    ``[since, until)`` (Unix seconds), newest window first, at most ``limit`` (1..MAX_LIMIT).

    Columns are the flow record's fields under their JSON names, as plain values: addresses
    as text (IPv4 dotted), enums as strings, times as Unix seconds. Returns the SQL and its
    parameters for :meth:`pipeline.store.Store.query`; FlowSearchError for a bad filter or bound.
    """
    since = _bound("since", since, 0, _MAX_TIME)
    until = _bound("until", until, 0, _MAX_TIME)
    limit = _bound("limit", limit, 1, MAX_LIMIT)
    if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
        raise FlowSearchError(f"search: {table!r} is not a table name")
    condition, parameters = parse_filter(text).sql()
    parameters.update(since=since, until=until, limit=limit)
    columns = ", ".join(f"`{f.column}`" for f in FLOW_FIELDS)
    # The inner query filters on the stored columns: in one query, an output alias such as
    # `srcaddr` (the address as text) would stand for the column inside WHERE.
    sql = (
        f"SELECT {', '.join(_output(f) for f in FLOW_FIELDS)}\nFROM (\n"
        f"    SELECT {columns}\n    FROM {table}\n"
        "    WHERE window_start >= toDateTime({since:UInt32}) AND window_start < toDateTime({until:UInt32})\n"
        f"      AND {condition}\n"
        "    ORDER BY window_start DESC, flow_id\n    LIMIT {limit:UInt32}\n)\n"
        "ORDER BY window_start DESC, flow_id"
    )
    return sql, parameters
