"""The one way a test waits for something it cannot be told of: poll a condition a user could
see, up to a bound; never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(find: Callable[[], T | None], *, timeout: float = 30, every: float = 0.1) -> T:
    """What `find` returns once it is not None; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (found := find()) is None:
        assert time.monotonic() < deadline, f"timed out after {timeout}s"
        time.sleep(every)
    return found
