"""Deploy windows: when a deploy may start, and when it next may."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wavegate.config.windows import Allow, allows, next_opening, parse_allow, parse_freeze

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


# --- overnight windows, and windows across a daylight-saving change ----------------------------

NIGHTS = (parse_allow("Mon-Fri 22:00-02:00 UTC"),)
# Europe/Amsterdam moves its clocks on the last Sunday of March (02:00 CET -> 03:00 CEST) and
# of October (03:00 CEST -> 02:00 CET); in 2026 those are March 29 and October 25.
AMSTERDAM_NIGHT = (parse_allow("Sat 22:00-06:00 Europe/Amsterdam"),)
INTO_THE_GAP = (parse_allow("Sat 22:00-02:30 Europe/Amsterdam"),)


@pytest.mark.parametrize(("windows", "at", "expected"), [
    (NIGHTS, "2026-11-30 21:59", False),   # Monday evening, not yet
    (NIGHTS, "2026-11-30 22:00", True),    # Monday 22:00: opens on a day named
    (NIGHTS, "2026-12-01 01:59", True),    # ... and runs past midnight into Tuesday
    (NIGHTS, "2026-12-01 02:00", False),   # closed at 02:00
    (NIGHTS, "2026-12-01 12:00", False),   # Tuesday noon
    (NIGHTS, "2026-11-30 01:00", False),   # Monday 01:00 belongs to Sunday's night: not named
    (NIGHTS, "2026-12-05 01:00", True),    # Saturday 01:00 belongs to Friday's night
    (NIGHTS, "2026-12-05 22:30", False),   # Saturday evening: not named
    # Spring forward: the night is an hour shorter, it still closes at 06:00 local.
    (AMSTERDAM_NIGHT, "2026-03-28 20:59", False),  # 21:59 CET
    (AMSTERDAM_NIGHT, "2026-03-28 21:00", True),   # 22:00 CET
    (AMSTERDAM_NIGHT, "2026-03-29 00:59", True),   # 01:59 CET, the last minute before the jump
    (AMSTERDAM_NIGHT, "2026-03-29 01:00", True),   # 03:00 CEST
    (AMSTERDAM_NIGHT, "2026-03-29 03:59", True),   # 05:59 CEST
    (AMSTERDAM_NIGHT, "2026-03-29 04:00", False),  # 06:00 CEST (eight hours would be 05:00)
    # Fall back: the night is an hour longer, 02:30 happens twice and both are inside.
    (AMSTERDAM_NIGHT, "2026-10-24 19:59", False),  # 21:59 CEST
    (AMSTERDAM_NIGHT, "2026-10-24 20:00", True),   # 22:00 CEST
    (AMSTERDAM_NIGHT, "2026-10-25 00:30", True),   # 02:30 CEST
    (AMSTERDAM_NIGHT, "2026-10-25 01:30", True),   # 02:30 CET
    (AMSTERDAM_NIGHT, "2026-10-25 04:59", True),   # 05:59 CET
    (AMSTERDAM_NIGHT, "2026-10-25 05:00", False),  # 06:00 CET
    # A window that ends inside the skipped hour closes at the jump.
    (INTO_THE_GAP, "2026-03-29 00:59", True),      # 01:59 CET
    (INTO_THE_GAP, "2026-03-29 01:00", False),     # 03:00 CEST: 02:30 has passed
])
def test_overnight_windows_open_on_the_days_named_and_close_at_the_local_hour(
    windows: tuple[Allow, ...], at: str, expected: bool,
) -> None:
    assert allows(windows, (), utc(at)) is expected


@pytest.mark.parametrize(("windows", "at", "opening"), [
    (NIGHTS, "2026-12-05 10:00", "2026-12-07 22:00"),           # Saturday -> Monday night
    (NIGHTS, "2026-11-30 03:00", "2026-11-30 22:00"),           # Monday morning -> that night
    (NIGHTS, "2026-12-01 01:00", "2026-12-01 01:00"),           # open now (Monday's night)
    (AMSTERDAM_NIGHT, "2026-03-28 12:00", "2026-03-28 21:00"),  # 22:00 CET
    (AMSTERDAM_NIGHT, "2026-10-24 12:00", "2026-10-24 20:00"),  # 22:00 CEST
    (AMSTERDAM_NIGHT, "2026-03-29 04:00", "2026-04-04 20:00"),  # next Saturday, in CEST
])
def test_next_opening_of_overnight_windows(windows: tuple[Allow, ...], at: str,
                                           opening: str) -> None:
    assert next_opening(windows, (), utc(at)) == utc(opening)


def test_an_overnight_window_is_closed_by_a_freeze_that_starts_at_midnight() -> None:
    freeze = (parse_freeze("2026-12-05/2026-12-06"),)
    assert not allows(NIGHTS, freeze, utc("2026-12-05 01:00"))  # Friday's night, Saturday frozen
    assert allows(NIGHTS, freeze, utc("2026-12-04 23:00"))      # still Friday


@pytest.mark.parametrize(("spec", "message"), [
    ("Mon 08:00-08:00 UTC", "a window that starts when it ends is empty"),
    ("Mon-Fri 22:00-2:00 UTC", "expected like"),
    ("Mon-Fri 22:00-24:00 UTC", "invalid time '24:00'"),
    ("Mon-Fri 22:00-02:00 Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
])
def test_refused_windows_say_why(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_allow(spec)
