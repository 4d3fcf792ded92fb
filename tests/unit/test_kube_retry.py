"""The named retry policy of API calls: bounded, growing waits, and only for what it is told."""

from __future__ import annotations

import pytest

from wavegate.kube import retry


def test_it_stops_after_the_policys_attempts_and_reraises() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def failing() -> None:
        calls.append(1)
        raise TimeoutError("slow")

    retrying = retry.retrying(retry.API_CALL, retry_on=lambda e: isinstance(e, TimeoutError),
                              on_retry=lambda state: None, sleep=waits.append)
    with pytest.raises(TimeoutError):
        retrying(failing)
    assert len(calls) == retry.API_CALL.attempts
    assert all(retry.API_CALL.first_wait <= w <= retry.API_CALL.max_wait * 1.1 for w in waits)
    assert sum(waits) < 5  # a cluster that is down is reported within seconds


def test_what_it_is_not_told_to_retry_fails_at_once() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise PermissionError("403")

    retrying = retry.retrying(retry.API_CALL, retry_on=lambda e: isinstance(e, TimeoutError),
                              on_retry=lambda state: None, sleep=lambda seconds: None)
    with pytest.raises(PermissionError):
        retrying(refused)
    assert calls == [1]
