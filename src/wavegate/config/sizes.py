"""Byte sizes as users write them: `1MiB`, `512KiB`, `4MB`, or a plain number of bytes."""

from __future__ import annotations

import re

KIB = 1024
MIB = 1024 * KIB
_UNITS = {"": 1, "B": 1, "KiB": KIB, "MiB": MIB, "GiB": 1024 * MIB,
          "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_PATTERN = re.compile(r"^(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$")
_HINT = "expected a size like 1MiB, 512KiB or 4096 (bytes)"


def parse(value: object) -> int:
    """Bytes in `value` (at least one); ValueError with a user-facing message otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{_HINT}, got {value!r}")
    match = _PATTERN.match(str(value).strip())
    if not match:
        raise ValueError(f"{_HINT}, got {value!r}")
    size = int(match.group(1)) * _UNITS[match.group(2) or ""]
    if size < 1:
        raise ValueError(f"a size must be at least one byte, got {value!r}")
    return size


def format(size: int) -> str:
    """The shortest exact binary spelling of `size` (for messages)."""
    for unit, factor in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", KIB)):
        if size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"
