"""Billing periods: from the anchor day at midnight in the tenant's time zone to the next."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from socialflow.plans.quota import billing_period

UTC_ZONE = ZoneInfo("UTC")


def test_a_period_runs_from_the_anchor_day_to_the_next_months() -> None:
    start, end = billing_period(datetime(2026, 3, 20, 12, tzinfo=UTC), 15, UTC_ZONE)
    assert (start, end) == (datetime(2026, 3, 15, tzinfo=UTC), datetime(2026, 4, 15, tzinfo=UTC))


def test_before_the_anchor_day_the_period_began_last_month() -> None:
    start, end = billing_period(datetime(2026, 1, 10, tzinfo=UTC), 15, UTC_ZONE)
    assert (start, end) == (datetime(2025, 12, 15, tzinfo=UTC), datetime(2026, 1, 15, tzinfo=UTC))


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        # Anchored on the 31st: short months start on their last day.
        (datetime(2026, 2, 27, tzinfo=UTC), datetime(2026, 1, 31), datetime(2026, 2, 28)),
        (datetime(2026, 2, 28, tzinfo=UTC), datetime(2026, 2, 28), datetime(2026, 3, 31)),
        (datetime(2028, 2, 29, 5, tzinfo=UTC), datetime(2028, 2, 29), datetime(2028, 3, 31)),
        (datetime(2026, 4, 30, 23, tzinfo=UTC), datetime(2026, 4, 30), datetime(2026, 5, 31)),
    ],
)
def test_an_anchor_past_the_months_end_falls_on_its_last_day(
    now: datetime, start: datetime, end: datetime
) -> None:
    assert billing_period(now, 31, UTC_ZONE) == (
        start.replace(tzinfo=UTC),
        end.replace(tzinfo=UTC),
    )


def test_the_period_turns_at_midnight_in_the_tenants_zone_not_in_utc() -> None:
    auckland = ZoneInfo("Pacific/Auckland")  # UTC+13 in January (summer time)
    # 10:59 UTC on the 14th is 23:59 on the 14th in Auckland; 11:00 is midnight of the 15th.
    before = billing_period(datetime(2026, 1, 14, 10, 59, tzinfo=UTC), 15, auckland)
    after = billing_period(datetime(2026, 1, 14, 11, 0, tzinfo=UTC), 15, auckland)
    assert before[1] == after[0] == datetime(2026, 1, 14, 11, 0, tzinfo=UTC)
    assert before[0] == datetime(2025, 12, 14, 11, 0, tzinfo=UTC)
    # Daylight saving ends in April: the next midnight is UTC+12.
    assert after[1] == datetime(2026, 2, 14, 11, 0, tzinfo=UTC)
    assert billing_period(datetime(2026, 5, 1, tzinfo=UTC), 15, auckland)[0] == datetime(
        2026, 4, 14, 12, 0, tzinfo=UTC
    )


def test_new_year_wraps() -> None:
    start, end = billing_period(datetime(2026, 12, 31, tzinfo=UTC), 1, UTC_ZONE)
    assert (start, end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    start, end = billing_period(datetime(2027, 1, 1, tzinfo=UTC), 5, UTC_ZONE)
    assert (start, end) == (datetime(2026, 12, 5, tzinfo=UTC), datetime(2027, 1, 5, tzinfo=UTC))
