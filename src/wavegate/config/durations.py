"""Durations as users write them: `500ms`, `90s`, `10m`, `2h`, `1d`."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")


def parse(text: object) -> float:
    """Seconds in `text`; ValueError with a user-facing message otherwise."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"expected a duration like 90s, 10m, 2h or 1d, got {text!r}")
    if isinstance(text, int):
        if text == 0:
            return 0.0
        raise ValueError(f"a duration needs a unit (90s, 10m, 2h, 1d), got {text}")
    match = _PATTERN.match(text.strip())
    if not match:
        raise ValueError(f"expected a duration like 90s, 10m, 2h or 1d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


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
