"""`LIBRARY_FAIL`: failure injection for testing the orchestrator, not the app.

Values: `crash` (exit 1 before listening), `never-ready` (/healthz answers 503 forever),
`error-5xx` (every /api/* request answers 500), `error-5xx-first-N` (the first N /api/*
requests of the process answer 500), `huge-body` or `huge-body-N` (every /api/* request
answers 200 with a body of 256 or N MiB, streamed), `trickle` (every /api/* request gets its
headers, then one body byte every half second, never all of it), `hang` (every /api/* request
is read and never answered, until the process stops), `ready-when:PATH` (/healthz answers 503
until the file PATH exists: a rollout a test holds open and lets go). Parsing is pure; the request
counter is process state, so the server owns it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_FIRST_N = re.compile(r"error-5xx-first-(\d+)")
_HUGE_N = re.compile(r"huge-body-(\d+)")
HUGE_BODY_MIB = 256


@dataclass(frozen=True)
class Faults:
    crash: bool = False
    never_ready: bool = False
    api_errors_always: bool = False
    api_errors_first: int = 0
    huge_body_mib: int = 0
    trickle: bool = False
    hang: bool = False
    ready_when: str | None = None  # a file whose existence makes /healthz answer 200

    def ready(self) -> bool:
        if self.never_ready:
            return False
        return self.ready_when is None or os.path.exists(self.ready_when)

    def fails_api_request(self, number: int) -> bool:
        """Whether the process's `number`-th /api/* request (from 1) answers 500."""
        return self.api_errors_always or number <= self.api_errors_first


def parse_faults(value: str) -> Faults:
    match value:
        case "":
            return Faults()
        case "crash":
            return Faults(crash=True)
        case "never-ready":
            return Faults(never_ready=True)
        case "error-5xx":
            return Faults(api_errors_always=True)
        case "huge-body":
            return Faults(huge_body_mib=HUGE_BODY_MIB)
        case "trickle":
            return Faults(trickle=True)
        case "hang":
            return Faults(hang=True)
    if value.startswith("ready-when:") and len(value) > len("ready-when:"):
        return Faults(ready_when=value.removeprefix("ready-when:"))
    first_n = _FIRST_N.fullmatch(value)
    if first_n:
        return Faults(api_errors_first=int(first_n[1]))
    huge_n = _HUGE_N.fullmatch(value)
    if huge_n and int(huge_n[1]) > 0:
        return Faults(huge_body_mib=int(huge_n[1]))
    # A typo must not silently run a healthy app in a test that expects a failure.
    raise ValueError(
        f"LIBRARY_FAIL={value!r}: expected crash, never-ready, error-5xx, error-5xx-first-N, "
        "huge-body, huge-body-N, trickle, hang or ready-when:PATH"
    )
