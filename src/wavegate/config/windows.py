"""Deploy windows: when a deploy may start (`allow`) and when it must not (`freeze`).

Pure: parsing, "is this moment allowed", and "when is the next allowed moment". Freeze dates
are read in the time zone of the first allow window (UTC when there is none), the zone the
release team thinks in. A rollback is never held by a window; that is the callers' rule.

An allow window whose end is not after its start runs overnight: `Mon-Fri 22:00-02:00 UTC`
opens on the days named at 22:00 and closes at 02:00 the next morning (so Friday's runs into
Saturday, and Monday 00:00-02:00 belongs to Sunday, which is not named). Times are wall-clock
times in the window's zone, so across a daylight-saving change a window closes at the local
hour written, however many real hours that makes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_ALLOW = re.compile(
    r"^(?P<days>[A-Za-z]{3}(?:-[A-Za-z]{3})?(?:,[A-Za-z]{3}(?:-[A-Za-z]{3})?)*)\s+"
    r"(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})\s+(?P<tz>\S+)$"
)


@dataclass(frozen=True)
class Allow:
    weekdays: frozenset[int]
    start: time
    end: time
    zone: tzinfo


@dataclass(frozen=True)
class Freeze:
    first: date
    last: date


def parse_allow(text: str) -> Allow:
    match = _ALLOW.match(text.strip())
    if not match:
        raise ValueError(
            f"expected like 'Mon-Thu 08:00-16:00 Europe/Amsterdam', got {text!r}")
    try:
        zone = ZoneInfo(match["tz"])
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {match['tz']!r}") from None
    start, end = _time(match["start"]), _time(match["end"])
    if start == end:
        raise ValueError(f"a window that starts when it ends is empty: {text!r}")
    return Allow(_weekdays(match["days"]), start, end, zone)


def parse_freeze(text: str) -> Freeze:
    first, _, last = text.partition("/")
    try:
        freeze = Freeze(date.fromisoformat(first), date.fromisoformat(last or first))
    except ValueError:
        raise ValueError(
            f"expected a date range like 2025-12-20/2026-01-05, got {text!r}") from None
    if freeze.last < freeze.first:
        raise ValueError(f"freeze ends before it starts: {text!r}")
    return freeze


def _weekdays(spec: str) -> frozenset[int]:
    days: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        start, end = _day(first), _day(last or first)
        days.update(range(start, end + 1) if start <= end else [*range(start, 7), *range(end + 1)])
    return frozenset(days)


def _day(name: str) -> int:
    try:
        return DAYS.index(name.capitalize())
    except ValueError:
        raise ValueError(f"unknown day {name!r} (expected one of {', '.join(DAYS)})") from None


def _time(text: str) -> time:
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise ValueError(f"invalid time {text!r}") from None


def allows(allow: tuple[Allow, ...], freeze: tuple[Freeze, ...], at: datetime) -> bool:
    zone: tzinfo = allow[0].zone if allow else UTC
    today = at.astimezone(zone).date()
    if any(f.first <= today <= f.last for f in freeze):
        return False
    return not allow or any(_inside(window, at) for window in allow)


def next_opening(allow: tuple[Allow, ...], freeze: tuple[Freeze, ...],
                 at: datetime, *, horizon_days: int = 60) -> datetime | None:
    """The first moment at or after `at` that `allows`, or None within the horizon."""
    if allows(allow, freeze, at):
        return at
    candidates = []
    for window in allow or (Allow(frozenset(range(7)), time(0), time(23, 59), UTC),):
        local = at.astimezone(window.zone)
        for day in range(horizon_days + 1):
            start = datetime.combine(local.date() + timedelta(days=day), window.start,
                                     tzinfo=window.zone)
            if start >= at and allows(allow, freeze, start):
                candidates.append(start)
                break
    return min(candidates, default=None)


def _inside(window: Allow, at: datetime) -> bool:
    local = at.astimezone(window.zone)
    day, moment = local.weekday(), local.time()
    if window.start < window.end:
        return day in window.weekdays and window.start <= moment < window.end
    # Overnight: the evening of a named day, or the small hours after one.
    return ((day in window.weekdays and moment >= window.start)
            or ((day - 1) % 7 in window.weekdays and moment < window.end))
