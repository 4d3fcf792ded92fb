"""Deploy windows: when a deploy may start, and when it next may."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wavegate.config.windows import allows, next_opening, parse_allow, parse_freeze

OFFICE = (parse_allow("Mon-Thu 08:00-16:00 Europe/Amsterdam"),)
XMAS = (parse_freeze("2026-12-20/2027-01-05"),)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("at", "expected"), [
    ("2026-11-30 08:30", True),    # Monday 09:30 in Amsterdam
    ("2026-11-30 06:30", False),   # Monday 07:30 in Amsterdam: too early
    ("2026-11-30 14:59", True),    # 15:59 local
    ("2026-11-30 15:00", False),   # 16:00 local: the window has closed
    ("2026-12-04 10:00", False),   # Friday
    ("2026-12-21 10:00", False),   # Monday, but frozen
])
def test_allows_honours_days_hours_zone_and_freeze(at: str, expected: bool) -> None:
    assert allows(OFFICE, XMAS, utc(at)) is expected


def test_no_windows_means_always_allowed() -> None:
    assert allows((), (), utc("2026-12-25 03:00"))


@pytest.mark.parametrize(("at", "opening"), [
    ("2026-12-04 10:00", "2026-12-07 07:00"),  # Friday -> Monday 08:00 Amsterdam
    ("2026-12-18 10:00", "2027-01-06 07:00"),  # Friday before the freeze -> after it
    ("2026-11-30 08:30", "2026-11-30 08:30"),  # open now
])
def test_next_opening(at: str, opening: str) -> None:
    assert next_opening(OFFICE, XMAS, utc(at)) == utc(opening)


def test_freeze_without_allow_windows_opens_the_day_after() -> None:
    assert next_opening((), XMAS, utc("2026-12-24 12:00")) == utc("2027-01-06 00:00")
