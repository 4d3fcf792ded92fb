"""Durations as users write them: `500ms`, `90s`, `10m`, `2h`, `1d`, or compounds of those
(`1h30m`, `1d12h`), largest unit first, each unit at most once."""

from __future__ import annotations

import re

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_ORDER = tuple(_UNITS)
# `ms` before `m`, so `500ms` is never read as 500 minutes followed by junk.
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_EXPECTED = "expected a duration like 90s, 10m, 2h, 1d or 1h30m"


def parse(text: object) -> float:
    """Seconds in `text`; ValueError with a user-facing message otherwise."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"{_EXPECTED}, got {text!r}")
    if isinstance(text, int):
        if text == 0:
            return 0.0
        raise ValueError(f"a duration needs a unit (90s, 10m, 2h, 1d), got {text}")
    parts = _parts(text.strip())
    if parts is None:
        raise ValueError(f"{_EXPECTED}, got {text!r}")
    return sum(float(amount) * _UNITS[unit] for amount, unit in parts)


def _parts(text: str) -> list[tuple[str, str]] | None:
    """(amount, unit) pairs covering all of `text` in falling unit order, else None.

    A repeated or out-of-order unit (`30m1h`, `1h1h`) is refused: it is more likely a typo
    than a sum the user meant."""
    parts, position = [], 0
    while position < len(text):
        match = _PART.match(text, position)
        if match is None:
            return None
        parts.append((match.group(1), match.group(2)))
        position = match.end()
    units = [_ORDER.index(unit) for _, unit in parts]
    if not parts or units != sorted(set(units)):
        return None
    # A fraction only makes sense on the last part (`1.5h`; `1.5h30m` is ambiguous).
    if any("." in amount for amount, _ in parts[:-1]):
        return None
    return parts


def format(seconds: float) -> str:
    """The shortest exact spelling of `seconds` (for plans and logs)."""
    if seconds == 0:
        return "0s"
    for unit in ("d", "h", "m", "s"):
        amount = seconds / _UNITS[unit]
        if amount >= 1 and amount == int(amount):
            return f"{int(amount)}{unit}"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:.1f}s"
