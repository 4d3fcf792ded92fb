"""The named retry policies of API calls: what is retried, how often, how long apart.

Only transient failures are retried (`apierrors.is_transient`: 429, 5xx, no answer); a 403 or a
409 is an answer, and asking again gets the same one. Each retry is logged by the caller's
`on_retry`; the sleep is injectable so unit tests do not wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import tenacity


@dataclass(frozen=True)
class Policy:
    name: str
    attempts: int
    first_wait: float  # seconds; doubles each attempt, with up to 10% jitter
    max_wait: float
    deadline: float  # no new attempt after this many seconds (a hung server times out slowly)


# One API request: five attempts over about three seconds, enough for an API server restart
# or a brief overload (429), short enough that a cluster that is down is reported promptly;
# an API server that accepts connections but never answers (each attempt waits out its
# timeout) is reported after about 15 s instead of 30.
API_CALL = Policy("kube-api-call", attempts=5, first_wait=0.2, max_wait=5.0, deadline=10.0)


def retrying(policy: Policy, *, retry_on: Callable[[BaseException], bool],
             on_retry: Callable[[tenacity.RetryCallState], None],
             sleep: Callable[[float], None] = time.sleep) -> tenacity.Retrying:
    return tenacity.Retrying(
        stop=(tenacity.stop_after_attempt(policy.attempts)
              | tenacity.stop_after_delay(policy.deadline)),
        wait=(tenacity.wait_exponential(multiplier=policy.first_wait, max=policy.max_wait)
              + tenacity.wait_random(0, policy.first_wait / 10)),
        retry=tenacity.retry_if_exception(retry_on),
        before_sleep=on_retry,
        reraise=True,
        sleep=sleep,
    )
