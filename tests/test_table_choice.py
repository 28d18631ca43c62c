"""choose_table picks the coarsest table that gives the raw table's exact answer."""

import pytest

from flowlogs.settings import StoreSettings
from pipeline import reports
from pipeline.table_choice import RAW, ROLLUP_TABLES, choose_table, retention_days

M1, M5, H1 = (t.name for t in ROLLUP_TABLES)
DAY = 86_400
NOW = 1_800_000_000 - 1_800_000_000 % DAY + 12 * 3600 + 17  # noon and 17 s, UTC
HOUR = NOW - NOW % 3600 - 6 * 3600  # aligned to an hour (so to 5 m and 1 m too)


def pick(since, until=None, step=None, needs=(), **kw) -> str:
    return choose_table(since, until, step, needs, now=NOW, **kw).name


def test_the_rollups_are_1m_5m_1h_coarsest_last() -> None:
    assert [t.seconds for t in ROLLUP_TABLES] == [60, 300, 3600]
    assert (M1, M5, H1) == ("flows_1m", "flows_5m", "flows_1h")


def test_an_aligned_range_reads_the_coarsest_rollup_that_divides_it() -> None:
    assert pick(HOUR, HOUR + 3 * 3600) == H1
    assert pick(HOUR + 300, HOUR + 3600) == M5
    assert pick(HOUR + 60, HOUR + 3600) == M1
    assert pick(HOUR, HOUR + 3600 + 120) == M1  # the end decides as much as the start


def test_an_unaligned_edge_reads_raw() -> None:
    assert pick(HOUR + 30, HOUR + 3600) == RAW.name
    assert pick(HOUR, NOW) == RAW.name  # "until now" cuts the newest minute


def test_an_open_end_needs_no_alignment() -> None:
    # Views fill the rollups in the same INSERT as the raw table: the newest bucket holds
    # exactly the raw rows so far.
    assert pick(HOUR) == H1
    assert pick(HOUR + 60) == M1


def test_the_step_must_be_a_multiple_of_the_bucket() -> None:
    assert pick(HOUR, HOUR + 6 * 3600, step=3600) == H1
    assert pick(HOUR, HOUR + 6 * 3600, step=600) == M5
    assert pick(HOUR, HOUR + 6 * 3600, step=120) == M1
    assert pick(HOUR, HOUR + 6 * 3600, step=90) == RAW.name


def test_columns_a_rollup_lacks_send_the_query_finer() -> None:
    talkers = ("srcaddr", "dstaddr", "protocol", "dstport")
    assert pick(HOUR, HOUR + 3600, needs=talkers) == M5  # 1 h keeps no addresses or ports
    assert pick(HOUR, HOUR + 3600, needs=("interface_id", "vpc_id", "flow_direction")) == H1
    for per_record in ("srcport", "tcp_flags", "flow_id", "start"):
        assert pick(HOUR, HOUR + 3600, needs=(per_record,)) == RAW.name


def test_retention_decides_which_table_still_holds_the_range() -> None:
    ten_days_ago = NOW - NOW % 3600 - 10 * DAY
    assert pick(ten_days_ago + 60) == RAW.name  # 1 m keeps 7 days, raw 15
    assert pick(ten_days_ago + 300, needs=("srcaddr",)) == M5
    assert pick(NOW - NOW % 3600 - 200 * DAY) == H1
    # Older than every table that has the columns: the one that keeps the longest history.
    assert pick(NOW - NOW % 3600 - 200 * DAY, needs=("dstaddr",)) == M5
    assert pick(NOW - NOW % 3600 - 200 * DAY + 60, needs=("srcport",)) == RAW.name
    # All of history: the longest-kept table that has the columns.
    assert pick(None) == H1
    assert pick(None, needs=("dstport",)) == M5
    assert pick(None, needs=("tcp_flags",)) == RAW.name


def test_configured_retention_is_used() -> None:
    store = StoreSettings(ttl_days=400, ttl_5m_days=30)
    days = retention_days(store)
    assert days == {"flows": 400, M1: 7, M5: 30, H1: 365}
    assert pick(NOW - NOW % 3600 - 200 * DAY, needs=("dstaddr",), retention=days) == RAW.name
    assert pick(NOW - NOW % 3600 - 20 * DAY + 300, needs=("dstaddr",), retention=days) == M5


def test_bad_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="no flow column named nope"):
        pick(HOUR, needs=("nope",))
    with pytest.raises(ValueError, match="step"):
        pick(HOUR, step=0)


def test_reports_read_the_chosen_table_and_still_sum() -> None:
    sql = reports.top_talkers(10, HOUR, HOUR + 3600, now=NOW)
    assert f"FROM {M5}\n" in sql and "sum(records) AS records" in sql and "bucket >= " in sql
    assert "GROUP BY srcaddr, dstaddr, protocol, dstport" in sql
    sql = reports.top_talkers(10, HOUR + 1, now=NOW)
    assert f"FROM {RAW.name}\n" in sql and "count() AS records" in sql and "window_start >= " in sql
    assert f"FROM {H1} " in reports.totals(HOUR, HOUR + 7200, now=NOW)
    sql = reports.traffic_per_eni(300, HOUR, HOUR + 3600, interface_id="eni-'1", now=NOW)
    assert f"FROM {M5}\n" in sql and "interface_id = 'eni-\\'1'" in sql and "GROUP BY step_start, interface_id" in sql
