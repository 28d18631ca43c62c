"""Flow search: the filter language parses as documented, its SQL holds no user text, and in
real chDB each filter finds exactly the flows it describes, hostile input included."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlogs.errors import ConfigError
from flowlogs.settings import Settings
from pipeline import flow_search
from pipeline.flow_search import (
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    FlowSearchError,
    parse_filter,
    search_sql,
)
from pipeline.records import FlowRecordBuilder
from pipeline.sinks.clickhouse import ClickHouseSink
from pipeline.store import Store
from schemas.flow_record import FIELD_NAMES, FLOW_FIELDS, RECORD_VERSION
from schemas.rules import LAYERS

# Every piece a condition may be made of: backquoted schema columns, placeholders whose names
# we chose, the grammar's operators. A condition that is anything else carries user text.
_COLUMNS = "|".join(f.column for f in FLOW_FIELDS)
_TYPES = "UInt8|UInt16|UInt32|UInt64|String|IPv6"
_SQL_PIECE = re.compile(
    rf"\s+|[()]|AND|OR|NOT|LIKE|BETWEEN|!=|<=|>=|=|<|>|`(?:{_COLUMNS})`|\{{p\d+:(?:{_TYPES})\}}|toDateTime\(\{{p\d+:UInt32\}}\)"
)


def condition(text: str) -> tuple[str, dict[str, Any]]:
    """The filter's SQL, checked to be made of whitelisted pieces only."""
    sql, parameters = parse_filter(text).sql()
    assert sql == "1" or "".join(m[0] for m in _SQL_PIECE.finditer(sql)) == sql, sql
    assert sql == "1" or re.sub(_SQL_PIECE, "", sql) == "", sql
    assert sorted(parameters) == sorted(re.findall(r"\{(p\d+):", sql))
    return sql, parameters


def error(text: str) -> FlowSearchError:
    with pytest.raises(FlowSearchError) as caught:
        parse_filter(text)
    return caught.value


# --- the language ------------------------------------------------------------------------


def test_public_surface() -> None:
    assert set(flow_search.__all__) == {
        "MAX_DEPTH", "MAX_FILTER_LENGTH", "MAX_LIMIT", "Filter", "FlowSearchError", "parse_filter", "search_sql"
    }
    assert issubclass(FlowSearchError, ConfigError)


def test_precedence_not_and_or() -> None:
    sql, parameters = condition("srcport = 1 or dstport = 2 and not protocol = 3")
    assert sql == "(`srcport` = {p0:UInt16} OR (`dstport` = {p1:UInt16} AND (NOT (`protocol` = {p2:UInt8}))))"
    assert parameters == {"p0": 1, "p1": 2, "p2": 3}
    sql, _ = condition("(srcport = 1 or dstport = 2) and not (protocol = 3 or protocol = 4)")
    assert sql == (
        "((`srcport` = {p0:UInt16} OR `dstport` = {p1:UInt16})"
        " AND (NOT (`protocol` = {p2:UInt8} OR `protocol` = {p3:UInt8})))"
    )
    assert condition("not not srcport = 1")[0] == "(NOT (NOT (`srcport` = {p0:UInt16})))"
    # Keywords in any case; whitespace optional around operators.
    assert condition("SRCPORT=1 AND Not dstport IN (2)")[0] == "(`srcport` = {p0:UInt16} AND (NOT (`dstport` = {p1:UInt16})))"


def test_empty_filter_matches_everything() -> None:
    assert condition("") == ("1", {})
    assert condition("  \n\t") == ("1", {})


def test_in_and_not_in() -> None:
    assert condition("dstport in (22, 3389)") == (
        "(`dstport` = {p0:UInt16} OR `dstport` = {p1:UInt16})", {"p0": 22, "p1": 3389}
    )
    assert condition("dstport not in (22)") == ("(NOT (`dstport` = {p0:UInt16}))", {"p0": 22})
    assert condition("srcport != 5") == ("(NOT (`srcport` = {p0:UInt16}))", {"p0": 5})


_SAMPLES = {
    "number": ("7", 7),
    "time": ("1714564800", 1714564800),
    "address": ("10.0.0.1", "::ffff:10.0.0.1"),
    "string": ("x-1", "x-1"),
}


@pytest.mark.parametrize("field", FLOW_FIELDS, ids=FIELD_NAMES)
def test_every_field_by_json_and_column_name(field: Any) -> None:
    kind = flow_search._kind(field)
    if kind == "enum":
        value = re.findall(r"'([^']*)'", field.clickhouse_type)[-1]
        text, expected, param_type = value, value, "String"
    else:
        text, expected = _SAMPLES[kind]
        param_type = {"address": "IPv6", "string": "String"}.get(kind, field.clickhouse_type)
    placeholder = "toDateTime({p0:UInt32})" if kind == "time" else f"{{p0:{param_type}}}"
    for name in {field.name, field.column}:
        assert condition(f"{name} = {text}") == (f"`{field.column}` = {placeholder}", {"p0": expected})
        assert condition(f"{name} = '{text}'") == (f"`{field.column}` = {placeholder}", {"p0": expected})


def test_numbers_are_range_checked_to_their_type() -> None:
    assert condition("srcport = 65535")[1] == {"p0": 65535}
    assert condition("flow-id = 18446744073709551615")[1] == {"p0": 2**64 - 1}
    assert condition("tcp-flags >= 0")[1] == {"p0": 0}
    for text, bound in (("srcport = 65536", 65535), ("protocol = 256", 255), ("flow-id = 18446744073709551616", 2**64 - 1)):
        assert f"expects a whole number 0..{bound}" in str(error(text))
    for bad in ("-1", "1.5", "0x50", "'１２'"):  # the last: full-width digits, quoted
        assert "expects a whole number" in str(error(f"srcport = {bad}"))


def test_protocol_names() -> None:
    names = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "gre": 47, "esp": 50, "TCP": 6}
    for name, number in names.items():
        assert condition(f"protocol = {name}")[1] == {"p0": number}
    assert condition("protocol in (tcp, 17)")[1] == {"p0": 6, "p1": 17}
    message = str(error("protocol = sctpx"))
    assert "protocol expects a whole number 0..255 or a protocol name (tcp, udp, icmp, icmpv6, gre, esp)" in message
    assert "expects a whole number 0..65535, not 'tcp'" in str(error("srcport = tcp"))  # names are for protocol only


def test_times_unix_or_iso() -> None:
    moment = int(datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp())
    for text in (str(moment), "2024-05-01T12:00:00Z", "'2024-05-01 12:00'", "2024-05-01T14:00:00+02:00"):
        assert condition(f"window-start >= {text}") == ("`window_start` >= toDateTime({p0:UInt32})", {"p0": moment})
    assert condition("start < 2024-05-01")[1] == {"p0": moment - 12 * 3600}
    assert "start expects Unix seconds or an ISO 8601 time" in str(error("start = yesterday"))
    assert "end expects a time from 1970-01-01" in str(error("end = 4294967296"))
    assert "expects a time from 1970-01-01" in str(error("end = 1960-01-01"))


def test_addresses_and_cidrs() -> None:
    assert condition("srcaddr = 10.1.2.3")[1] == {"p0": "::ffff:10.1.2.3"}
    assert condition("srcaddr = ::ffff:10.1.2.3")[1] == {"p0": "::ffff:10.1.2.3"}  # the stored form, written out
    assert condition("dstaddr = 2001:DB8::1")[1] == {"p0": "2001:db8::1"}
    assert condition("srcaddr = 10.0.0.0/8") == (
        "`srcaddr` BETWEEN {p0:IPv6} AND {p1:IPv6}", {"p0": "::ffff:10.0.0.0", "p1": "::ffff:10.255.255.255"}
    )
    assert condition("srcaddr = 10.1.2.3/16")[1] == {"p0": "::ffff:10.1.0.0", "p1": "::ffff:10.1.255.255"}  # host bits go
    assert condition("dstaddr = 2001:db8::/32")[1] == {"p0": "2001:db8::", "p1": "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"}
    assert condition("srcaddr = 192.0.2.7/32")[1] == {"p0": "::ffff:192.0.2.7", "p1": "::ffff:192.0.2.7"}
    assert condition("srcaddr != 10.0.0.0/8")[0] == "(NOT (`srcaddr` BETWEEN {p0:IPv6} AND {p1:IPv6}))"
    for bad in ("10.0.0", "10.0.0.0/33", "'fe80::1%eth0'", "host.example", "10.0.0.*"):
        assert "srcaddr expects an IPv4 or IPv6 address or CIDR" in str(error(f"srcaddr = {bad}"))
    assert "'<' does not apply to srcaddr, which holds addresses (use =, !=, in or not in) at 8" in str(error("srcaddr < 10.0.0.1"))


def test_aliases_match_either_field() -> None:
    assert condition("addr = 10.0.0.1") == (
        "(`srcaddr` = {p0:IPv6} OR `dstaddr` = {p1:IPv6})", {"p0": "::ffff:10.0.0.1", "p1": "::ffff:10.0.0.1"}
    )
    assert condition("port in (53, 80)")[0] == (
        "(`srcport` = {p0:UInt16} OR `srcport` = {p1:UInt16} OR `dstport` = {p2:UInt16} OR `dstport` = {p3:UInt16})"
    )
    assert condition("port != 53")[0] == "(NOT (`srcport` = {p0:UInt16} OR `dstport` = {p1:UInt16}))"
    assert condition("PORT >= 1024")[0] == "(`srcport` >= {p0:UInt16} OR `dstport` >= {p1:UInt16})"


def test_enum_values_are_checked() -> None:
    assert condition("action = REJECT")[1] == {"p0": "REJECT"}
    assert condition("action = reject")[1] == {"p0": "REJECT"}  # any case, sent as defined
    assert condition("log-status = NODATA")[1] == {"p0": "NODATA"}
    assert condition("flow-direction = INGRESS")[1] == {"p0": "ingress"}
    assert condition("rule-layer in (sg, acl)")[1] == {"p0": "sg", "p1": "acl"}
    assert condition("type = ipv6")[1] == {"p0": "IPv6"}
    assert "action expects one of ACCEPT, REJECT, not 'DENY' at 9" in str(error("action = DENY"))
    assert "log-status expects one of OK, NODATA, SKIPDATA, LATE" in str(error("log-status = OK*"))
    assert "'>' does not apply to action, which holds enum values (use =, !=, in or not in)" in str(error("action > ACCEPT"))


def test_wildcards_become_like_with_metacharacters_escaped() -> None:
    assert condition("interface-id = eni-0*") == ("`interface_id` LIKE {p0:String}", {"p0": "eni-0%"})
    assert condition("rule-id = *") == ("`rule_id` LIKE {p0:String}", {"p0": "%"})
    assert condition("vpc-id = '100%_x\\\\*'") == ("`vpc_id` LIKE {p0:String}", {"p0": "100\\%\\_x\\\\%"})
    assert condition("vpc-id = 'a\\*b'") == ("`vpc_id` = {p0:String}", {"p0": "a*b"})  # an escaped star is a star
    assert condition("vpc-id = '50%'") == ("`vpc_id` = {p0:String}", {"p0": "50%"})  # no wildcard: no LIKE
    assert condition("subnet-id not in (a*, b)")[0] == "(NOT (`subnet_id` LIKE {p0:String} OR `subnet_id` = {p1:String}))"
    assert "'<' does not apply to interface-id, which holds strings" in str(error("interface-id < eni-0*"))


def test_quoted_strings_and_escapes() -> None:
    assert condition('rule-id = "a \\"b\\" \\\\ c"')[1] == {"p0": 'a "b" \\ c'}
    assert condition("rule-id = 'it\\'s'")[1] == {"p0": "it's"}
    assert condition("rule-id = \"it's\"")[1] == {"p0": "it's"}
    assert condition("rule-id = 'and'")[1] == {"p0": "and"}  # a quoted keyword is a value
    assert condition("rule-id = ''")[1] == {"p0": ""}
    assert condition("rule-id = 'ü – 日本'")[1] == {"p0": "ü – 日本"}


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("interface-id =", "filter: expected a value after '=', found the end at 14", 14),
        ("srcport = and", "filter: expected a value after '=', found 'and' (quote a keyword to use it as a value) at 10", 10),
        ("srcport", "filter: expected an operator (=, !=, <, <=, >, >=, in, not in) after 'srcport', found the end at 7", 7),
        ("srcport 80", "expected an operator (=, !=, <, <=, >, >=, in, not in) after 'srcport', found '80' at 8", 8),
        ("srcport = 1 dstport = 2", "expected 'and', 'or' or the end of the filter, found 'dstport' at 12", 12),
        ("(srcport = 1", "expected ')' to close the '(' at 0, found the end at 12", 12),
        ("srcport = 1)", "expected 'and', 'or' or the end of the filter, found ')' at 11", 11),
        ("srcport in 1", "expected '(' after 'in', found '1' at 11", 11),
        ("srcport in (1 2)", "expected ',' or ')' in the list after 'in', found '2' at 14", 14),
        ("srcport in ()", "expected a value in the list after 'in (', found ')' at 12", 12),
        ("srcport in (1,)", "expected a value after ',', found ')' at 14", 14),
        ("srcport = 1 and", "expected a field name or '(', found the end at 15", 15),
        ("and srcport = 1", "expected a field name or '(', found 'and' at 0", 0),
        ("srcport == 1", "expected a value after '=', found '=' at 9", 9),
        ("srcport = 1; drop", "unexpected character ';' at 11", 11),
        ("rule-id = 'abc", "unterminated string starting at 10", 10),
        ("rule-id = 'abc\\", "unterminated string starting at 10", 10),
        ("rule-id = 'a\x00'", "control character U+0000 at 12", 12),
        ("  foo = 1", "unknown field 'foo' at 2; valid fields: addr, port, version, flow-id, interface-id", 2),
        ("srcport = 99999", "srcport expects a whole number 0..65535, not '99999' at 10", 10),
    ],
)
def test_errors_say_what_was_expected_and_where(text: str, message: str, position: int) -> None:
    caught = error(text)
    assert message in str(caught)
    assert str(caught).startswith("filter: ")
    assert caught.position == position


def test_unknown_field_lists_every_valid_one() -> None:
    message = str(error("bogus = 1"))
    for name in ("addr", "port", *FIELD_NAMES):
        assert name in message


def test_length_and_depth_limits() -> None:
    longest = "rule-id = '" + "x" * (MAX_FILTER_LENGTH - 12) + "'"
    assert len(longest) == MAX_FILTER_LENGTH and condition(longest)
    assert f"longer than {MAX_FILTER_LENGTH} characters" in str(error(longest + " "))
    deepest = "(" * (MAX_DEPTH - 1) + "not srcport = 1" + ")" * (MAX_DEPTH - 1)
    assert condition(deepest) and condition("not " * MAX_DEPTH + "srcport = 1")
    assert error("(" * MAX_DEPTH + "not srcport = 1").position == MAX_DEPTH  # at the 33rd opener
    for too_deep in ("(" * MAX_DEPTH + "not srcport = 1" + ")" * MAX_DEPTH, "not " * (MAX_DEPTH + 1) + "srcport = 1"):
        assert f"nested deeper than {MAX_DEPTH} levels" in str(error(too_deep))
    assert "nested deeper" in str(error("(" * 1000))  # no RecursionError on the way


def test_search_sql_validates_its_bounds() -> None:
    sql, parameters = search_sql("srcport = 1", since=10, until=20, limit=5)
    assert parameters == {"p0": 1, "since": 10, "until": 20, "limit": 5}
    assert "LIMIT {limit:UInt32}" in sql and "`srcport` = {p0:UInt16}" in sql and "FROM flows\n" in sql
    assert "FROM flowlogs.saved_flows\n" in search_sql("", since=0, until=1, limit=1, table="flowlogs.saved_flows")[0]
    for limit in (0, 10_001, True, "5", 2.0):
        with pytest.raises(FlowSearchError, match="limit must be a whole number 1..10000"):
            search_sql("", since=0, until=1, limit=limit)  # type: ignore[arg-type]
    with pytest.raises(FlowSearchError, match="since must be a whole number"):
        search_sql("", since=-1, until=1, limit=1)
    for table in ("flows; DROP TABLE flows", "flows f", "`flows`", ""):
        with pytest.raises(FlowSearchError, match="is not a table name"):
            search_sql("", since=0, until=1, limit=1, table=table)
    with pytest.raises(FlowSearchError, match="filter: expected"):
        search_sql("srcport =", since=0, until=1, limit=1)


# --- real chDB ---------------------------------------------------------------------------

NOW = int(time.time())
T0 = NOW - NOW % 3600 - 3600  # within the flows table's TTL
ENIS = ["eni-0aa", "eni-0bb", "eni-1cc", "eni_%x"]  # the last one holds LIKE's metacharacters
PLACEMENT = {"eni-0aa": ("vpc-1", "subnet-1"), "eni-0bb": ("vpc-1", "subnet-2"), "eni-1cc": ("vpc-2", "subnet-3")}
RULE_IDS = ("-", "acl-1/100")

# flow-id, ENI, src, dst, sport, dport, protocol, packets, bytes, window offset, action,
# log-status, direction, tcp-flags. flow-id 9 is before the searched range.
KNOWN = [
    (1, "eni-0aa", "10.0.0.1", "10.1.0.1", 40000, 443, 6, 10, 1000, 0, "ACCEPT", "OK", "ingress", 2),
    (2, "eni-0aa", "10.0.0.2", "192.168.1.5", 40001, 22, 6, 5, 500, 0, "REJECT", "OK", "ingress", 2),
    (3, "eni-0bb", "172.16.0.9", "10.0.0.1", 53, 40002, 17, 1, 80, 60, "ACCEPT", "OK", "egress", 0),
    (4, "eni-0bb", "2001:db8::1", "2001:db8::2", 40003, 80, 6, 20, 3000, 60, "ACCEPT", "OK", "egress", 18),
    (5, "eni-1cc", "2001:db8:1::5", "2001:db8::1", 0, 128 << 8, 58, 2, 200, 120, "REJECT", "OK", "ingress", 0),
    (6, "eni-1cc", "0.0.0.0", "0.0.0.0", 0, 0, 0, 0, 0, 120, "ACCEPT", "NODATA", "ingress", 0),
    (7, "eni_%x", "10.200.3.4", "8.8.8.8", 50000, 53, 17, 3, 240, 180, "ACCEPT", "OK", "egress", 0),
    (8, "eni_%x", "10.0.0.1", "8.8.4.4", 3389, 3389, 6, 7, 700, 180, "REJECT", "LATE", "ingress", 0),
    (9, "eni-0aa", "10.0.0.1", "10.1.0.1", 40000, 443, 6, 10, 1000, -3600, "ACCEPT", "OK", "ingress", 2),
]
IN_RANGE = set(range(1, 9))


def _stored(address: str) -> bytes:
    parsed = ipaddress.ip_address(address)
    return (ipaddress.IPv6Address(f"::ffff:{parsed}") if parsed.version == 4 else parsed).packed


def known_flows() -> pa.Table:
    """The KNOWN rows as the worker stores flow records (pipeline/records.py)."""
    row = list(zip(*KNOWN))
    (ids, enis, src, dst, sport, dport, proto, packets, nbytes, offset, action, status, direction, flags) = row
    window_start = np.array([T0 + o for o in offset], np.uint32)
    rejected = np.array([a == "REJECT" for a in action])
    cols: dict[str, np.ndarray] = {
        "version": np.full(len(KNOWN), RECORD_VERSION, np.uint8),
        "flow_id": np.array(ids, np.uint64),
        "eni": np.array([ENIS.index(e) for e in enis]),
        "srcaddr": np.frombuffer(b"".join(map(_stored, src)), "V16"),
        "dstaddr": np.frombuffer(b"".join(map(_stored, dst)), "V16"),
        "srcport": np.array(sport, np.uint16),
        "dstport": np.array(dport, np.uint16),
        "protocol": np.array(proto, np.uint8),
        "packets": np.array(packets, np.uint64),
        "bytes": np.array(nbytes, np.uint64),
        "start": window_start + np.uint32(5),
        "end": window_start + np.uint32(30),
        "window_start": window_start,
        "action": np.array([("ACCEPT", "REJECT").index(a) for a in action], np.int32),
        "rule_layer": np.where(rejected, LAYERS.index("acl"), LAYERS.index("default")).astype(np.int32),
        "rule_id": rejected.astype(np.int32),
        "rule_id_values": np.array(RULE_IDS, dtype=object),
        "rule_set_version": np.full(len(KNOWN), 3, np.uint32),
        "log_status": np.array([("OK", "NODATA", "SKIPDATA", "LATE").index(s) for s in status], np.int32),
        "tcp_flags": np.array(flags, np.uint8),
        "flow_direction": np.array([("ingress", "egress").index(d) for d in direction], np.int32),
        "type": np.array([":" in s for s in src], np.int32),
    }
    return FlowRecordBuilder(ENIS, PLACEMENT, 60 * 10**9).arrow(cols)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One chDB store holding the KNOWN flows for the whole module (the searches only read)."""
    s = Store(Settings(home=tmp_path_factory.mktemp("flow_search")))
    s.start()
    ClickHouseSink(s).write([known_flows()])
    yield s
    s.stop()


def search(store: Store, text: str, *, limit: int = 100) -> list[dict[str, Any]]:
    sql, parameters = search_sql(text, since=T0, until=T0 + 3600, limit=limit)
    columns, rows = store.query(sql, parameters)
    return [dict(zip(columns, row)) for row in rows]


def found_ids(store: Store, text: str) -> set[int]:
    rows = search(store, text)
    ids = [r["flow-id"] for r in rows]
    assert len(ids) == len(set(ids))
    return set(ids)


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


EXPECTED = [
    ("", IN_RANGE),
    ("action = REJECT", {2, 5, 8}),
    ("not action = reject", {1, 3, 4, 6, 7}),
    ("srcaddr = 10.0.0.0/8", {1, 2, 7, 8}),
    ("srcaddr = 10.0.0.0/24", {1, 2, 8}),
    ("srcaddr = ::ffff:10.0.0.2", {2}),
    ("addr = 10.0.0.1", {1, 3, 8}),
    ("addr != 10.0.0.1", {2, 4, 5, 6, 7}),
    ("srcaddr = 2001:db8::/32", {4, 5}),
    ("srcaddr = 2001:db8::/48", {4}),
    ("dstaddr = 2001:db8::1", {5}),
    ("dstaddr in (8.8.8.8, 8.8.4.4, 192.168.0.0/16)", {2, 7, 8}),
    ("port = 53", {3, 7}),
    ("port in (22, 3389)", {2, 8}),
    ("port not in (0, 53)", {1, 2, 4, 8}),
    ("dstport >= 443 and protocol = tcp", {1, 8}),
    ("protocol = icmpv6", {5}),
    ("protocol = 58", {5}),
    ("protocol != tcp", {3, 5, 6, 7}),
    ("interface-id = eni-0*", {1, 2, 3, 4}),
    ('interface_id = "eni_%*"', {7, 8}),
    ("interface-id = eni_*", {7, 8}),  # `_` is literal: not eni-0aa
    ("interface-id = 'eni_%'", set()),  # no `*`: the whole id, not a LIKE
    ("interface-id in (eni-1cc, 'eni_%x')", {5, 6, 7, 8}),
    ("vpc-id = '-'", {7, 8}),
    ("vpc-id = vpc-1 and subnet-id != subnet-1", {3, 4}),
    ("log-status = NODATA", {6}),
    ("log-status != OK", {6, 8}),
    ("flow-direction = egress", {3, 4, 7}),
    ("type = IPv6", {4, 5}),
    ("tcp-flags = 18", {4}),
    ("rule-id = 'acl-1/100'", {2, 5, 8}),
    ("rule-layer = acl", {2, 5, 8}),
    ("rule-set-version = 3 and version = 2", IN_RANGE),
    ("packets > 5 and bytes < 1000", {8}),
    ("action = ACCEPT or log-status = LATE and srcport = 3389", {1, 3, 4, 6, 7, 8}),
    ("(action = ACCEPT or log-status = LATE) and srcport = 3389", {8}),
    ("flow-id in (1, 9)", {1}),  # 9 is outside [since, until)
    (f"window-start >= {T0 + 120}", {5, 6, 7, 8}),
    (f"window-start = {iso(T0 + 60)}", {3, 4}),
    (f"start < {iso(T0 + 60)}", {1, 2}),
    (f"end <= {T0 + 90}", {1, 2, 3, 4}),
    ("window-start > 0 and start != 0", IN_RANGE),
]


@pytest.mark.parametrize(("text", "expected"), EXPECTED, ids=[t or "(empty)" for t, _ in EXPECTED])
def test_search_finds_exactly_the_matching_flows(store: Store, text: str, expected: set[int]) -> None:
    condition(text)
    assert found_ids(store, text) == expected


def test_search_rows_are_plain_values_newest_first(store: Store) -> None:
    rows = search(store, "")
    assert list(rows[0]) == list(FIELD_NAMES)
    assert [r["window-start"] for r in rows] == sorted((r["window-start"] for r in rows), reverse=True)
    first = next(r for r in rows if r["flow-id"] == 1)
    assert first == {
        "version": RECORD_VERSION, "flow-id": 1, "interface-id": "eni-0aa", "vpc-id": "vpc-1",
        "subnet-id": "subnet-1", "srcaddr": "10.0.0.1", "dstaddr": "10.1.0.1", "srcport": 40000,
        "dstport": 443, "protocol": 6, "packets": 10, "bytes": 1000, "start": T0 + 5, "end": T0 + 30,
        "window-start": T0, "action": "ACCEPT", "rule-layer": "default", "rule-id": "-",
        "rule-set-version": 3, "log-status": "OK", "tcp-flags": 2, "flow-direction": "ingress", "type": "IPv4",
    }  # fmt: skip
    assert next(r for r in rows if r["flow-id"] == 4)["srcaddr"] == "2001:db8::1"
    assert [r["flow-id"] for r in search(store, "", limit=2)] == [r["flow-id"] for r in rows[:2]]
    assert {r["window-start"] for r in search(store, "", limit=2)} == {T0 + 180}


# --- hostile input -----------------------------------------------------------------------

REJECT = None
HOSTILE: list[tuple[str, set[int] | None]] = [
    ("'; DROP TABLE flows; --", REJECT),
    ("1 OR 1=1", REJECT),
    ("srcaddr = '1' OR '1'='1'", REJECT),
    ("interface-id = '1' OR '1'='1'", REJECT),
    ("interface-id = 'x' or 1=1", REJECT),
    ('interface-id = "x\\") OR (1=1"', set()),
    ("interface-id = 'eni-0aa\\' OR 1=1 --'", set()),
    ("interface-id = 'eni-0aa' -- comment", REJECT),
    ("interface-id = eni-0aa /* comment */", REJECT),
    ("rule-id = '/* */ --'", set()),
    ("rule-id = '-- '", set()),
    ("interface-id = 'eni-0aa\\\\'", set()),  # the value ends in a backslash
    ("rule-id = '\\\\'", set()),
    ("rule-id = '\\\\\\' OR 1=1'", set()),
    ("interface-id = \u201ceni-0aa\u201d", REJECT),  # unicode quotes are not quotes
    ("interface-id = \u2018eni-0aa\u2019", REJECT),
    ("interface-id = 'eni-0aa\x00' or 1=1", REJECT),
    ("interface-id = eni-0aa\x00", REJECT),
    ("interface-id = '{p0:String}'", set()),
    ("interface-id = '{since:UInt32}' or rule-id = '{p1:String}'", set()),
    ("interface-id = `flows`", REJECT),
    ("interface-id in ('a', 'b'') OR 1=1 --')", REJECT),
    ("interface-id in ('a', 'b\\') OR 1=1 --')", set()),
    ("interface-id = eni-0aa) OR (1=1", REJECT),
    ("srcport = 80; DROP TABLE flows", REJECT),
    ("srcport = 80 UNION SELECT 1", REJECT),
    ("srcport = 0x50", REJECT),
    ("srcport = 1e3", REJECT),
    ("action = \"REJECT' OR '1'='1\"", REJECT),
    ("srcaddr = '10.0.0.1\\' OR 1=1'", REJECT),
    ("window-start >= '0 OR 1=1'", REJECT),
    ("interface-id = '%'", set()),
    ("interface-id = '_*'", set()),
    ("interface-id = 'eni-0aa' and interface-id = \"'\"", set()),
    ("interface-id = 'eni-0aa' or rule-id = '\\'; DROP TABLE flows; --'", {1, 2}),
    ("interface-id = 'eni-0aa\tx\ny'", set()),
    ("rule-id = 'ünï\u0301cødé \u202e'", set()),
    ("srcport = 1 or " * 200 + "srcport = 1", REJECT),
    ("(" * 40 + "srcport = 1" + ")" * 40, REJECT),
    ("not " * 40 + "srcport = 1", REJECT),
    ("interface-id = '" + "x" * 1980 + "'", set()),  # just under the length limit
]


def _tables(store: Store) -> list[tuple[Any, ...]]:
    return store.query(
        "SELECT database, name, engine FROM system.tables"
        " WHERE database NOT IN ('system', 'information_schema', 'INFORMATION_SCHEMA') ORDER BY ALL"
    )[1]


def test_hostile_input_is_rejected_or_taken_as_a_value(store: Store) -> None:
    tables = _tables(store)
    for text, expected in HOSTILE:
        if expected is REJECT:
            with pytest.raises(FlowSearchError):
                search_sql(text, since=T0, until=T0 + 3600, limit=100)
            continue
        condition(text)  # the SQL text is whitelisted pieces only
        assert found_ids(store, text) == expected, text
    assert store.query("SELECT count() FROM flows")[1] == [(len(KNOWN),)]
    assert _tables(store) == tables


_FRAGMENTS = [
    *FIELD_NAMES, "addr", "port", "interface_id", "=", "!=", "<", "<=", ">", ">=", "in", "not in", "and",
    "or", "not", "(", ")", ",", "(", "1", "0", "65536", "tcp", "REJECT", "nodata", "10.0.0.0/8", "10.0.0.1",
    "::1", "2001:db8::/32", "eni-0*", "*", "'x''", "'a\\'b'", '"\\""', "'%_\\\\'", "2024-05-01T12:00:00Z",
    "'; DROP TABLE flows; --", "/*", "*/", "--", "{p0:String}", "'{p1:UInt8}'", "\\", "`", "\u201c", ";",
]  # fmt: skip


def _filter_runs_or_is_rejected(store: Store, text: str) -> None:
    try:
        sql, parameters = search_sql(text, since=T0, until=T0 + 3600, limit=10)
    except FlowSearchError:
        return
    condition(text)
    _, rows = store.query(sql, parameters)  # a StoreError here fails the test
    assert len(rows) <= 10


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_is_rejected_or_runs(store: Store, text: str) -> None:
    _filter_runs_or_is_rejected(store, text)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from(_FRAGMENTS), max_size=12))
def test_random_token_soup_is_rejected_or_runs(store: Store, pieces: list[str]) -> None:
    _filter_runs_or_is_rejected(store, " ".join(pieces))


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from([*FIELD_NAMES, "addr", "port"]),
    operator=st.sampled_from(["=", "!=", "<", ">=", "in", "not in"]),
    value=st.text(max_size=30),
)
def test_any_quoted_value_is_rejected_or_runs(store: Store, field: str, operator: str, value: str) -> None:
    quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    _filter_runs_or_is_rejected(store, f"{field} {operator} ({quoted})" if "in" in operator else f"{field} {operator} {quoted}")


_VALUES = {
    "number": ["0", "53", "443", "65535", "tcp", "icmpv6", "'17'", "18446744073709551615"],
    "time": [str(T0), iso(T0 + 60), "2024-05-01", "'2024-05-01 12:00'", "0"],
    "address": ["10.0.0.1", "10.0.0.0/8", "2001:db8::/32", "::ffff:10.0.0.2", "0.0.0.0/0", "::/0", "'::1'"],
    "enum": ["ACCEPT", "reject", "NODATA", "ingress", "IPv6", "acl", "default"],
    "string": ["eni-0*", "'eni_%*'", "'x\\' OR 1=1 --'", "'{p0:String}'", "'\\\\'", "*", "'; DROP TABLE flows; --'"],
}
_FIELD_KINDS = {name: flow_search._kind(f) for f in FLOW_FIELDS for name in (f.name, f.column)} | {
    "addr": "address",
    "port": "number",
}


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@st.composite
def _comparisons(draw: st.DrawFn) -> str:
    """A comparison whose values mostly suit its field: these reach the SQL."""
    field = draw(st.sampled_from(sorted(_FIELD_KINDS)))
    kind = _FIELD_KINDS[field]
    values = st.sampled_from(_VALUES[kind]) | st.text(max_size=20).map(_quote)
    operator = draw(st.sampled_from(["=", "!=", "in", "not in", *(["<", "<=", ">", ">="] if kind in ("number", "time") else [])]))
    if "in" in operator:
        return f"{field} {operator} ({', '.join(draw(st.lists(values, min_size=1, max_size=3)))})"
    return f"{field} {operator} {draw(values)}"


_FILTERS = st.recursive(
    _comparisons(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or", "AND", "Or"]), inner).map(" ".join),
        inner.map(lambda f: f"not {f}"),
        inner.map(lambda f: f"({f})"),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(text=_FILTERS)
def test_random_filters_of_the_grammar_run(store: Store, text: str) -> None:
    _filter_runs_or_is_rejected(store, text)


def test_store_is_intact_after_the_random_searches(store: Store) -> None:
    assert store.query("SELECT count() FROM flows")[1] == [(len(KNOWN),)]
    assert found_ids(store, "") == IN_RANGE
