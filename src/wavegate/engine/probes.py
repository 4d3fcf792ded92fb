"""Running a checks suite against one cluster's live endpoint: one verification round.

This is the I/O around `verdict.judge`: it sends each probe, retries only what is `retryable`
(timeouts, refused connections, 5xx) with backoff inside the round's deadline, and stops
retrying the moment any probe fails, since a failure is acted on at once. Tokens go in the
Authorization header and nowhere else.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
import tenacity

from wavegate.clock import Clock
from wavegate.config.checks import Probe, Suite
from wavegate.config.fleet import Policy
from wavegate.decide import ledger, rollout
from wavegate.decide.verdict import (
    Outcome,
    Response,
    TransportError,
    Verdict,
    expected,
    judge,
)

log = structlog.get_logger(__name__)
REQUEST_TIMEOUT = 5.0
PARALLEL_PROBES = 8
RETRY_PAUSE = 1.0  # between verification rounds that errored, capped by check_interval


@dataclass(frozen=True)
class Result:
    probe: Probe
    verdict: Verdict
    attempts: int

    def as_dict(self) -> dict[str, Any]:
        principal = self.probe.principal.name if self.probe.principal else None
        return {"name": self.probe.check, "principal": principal,
                "request": str(self.probe.request), "outcome": self.verdict.outcome.value,
                "severity": self.verdict.severity, "detail": self.verdict.detail,
                "status": self.verdict.status, "expected": expected(self.probe)}


@dataclass(frozen=True)
class Round:
    results: tuple[Result, ...]

    @property
    def outcome(self) -> Outcome:
        outcomes = {result.verdict.outcome for result in self.results}
        for outcome in (Outcome.FAIL, Outcome.ERROR):
            if outcome in outcomes:
                return outcome
        return Outcome.PASS

    def count(self, outcome: Outcome) -> int:
        return sum(1 for result in self.results if result.verdict.outcome is outcome)

    def first(self, outcome: Outcome) -> Result | None:
        return next((r for r in self.results if r.verdict.outcome is outcome), None)


def run_round(
    endpoint: str, suite: Suite, tokens: Mapping[str, str | None], *, deadline: float,
    transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] | None = None,
) -> Round:
    """Send every probe of `suite` to `endpoint`; retries end at `deadline` seconds."""
    failed = threading.Event()
    with httpx.Client(base_url=endpoint, timeout=REQUEST_TIMEOUT, transport=transport,
                      follow_redirects=False) as client:
        def probe_once(probe: Probe) -> Result:
            return _probe_with_retries(client, probe, tokens, deadline, failed, sleep)

        with ThreadPoolExecutor(max_workers=PARALLEL_PROBES) as pool:
            results = tuple(pool.map(probe_once, suite.probes))
    return Round(results)


def _probe_with_retries(
    client: httpx.Client, probe: Probe, tokens: Mapping[str, str | None], deadline: float,
    failed: threading.Event, sleep: Callable[[float], None] | None,
) -> Result:
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda verdict: verdict.retryable),
        stop=tenacity.stop_after_delay(deadline) | tenacity.stop_when_event_set(failed),
        wait=tenacity.wait_exponential(multiplier=0.1, max=2.0),
        before_sleep=_log_retry(probe),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        sleep=sleep or tenacity.nap.sleep,
    )
    verdict: Verdict = retrying(_send, client, probe, tokens)
    if verdict.outcome is Outcome.FAIL:
        failed.set()
    attempts = retrying.statistics.get("attempt_number", 1)
    return Result(probe=probe, verdict=verdict, attempts=attempts)


def _send(client: httpx.Client, probe: Probe, tokens: Mapping[str, str | None]) -> Verdict:
    headers = {"Accept": "application/json"}
    token = tokens.get(probe.principal.name) if probe.principal else None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = client.request(probe.request.method, probe.request.path, headers=headers)
    except httpx.TransportError as error:
        return judge(probe, TransportError(type(error).__name__ + _reason(error)))
    return judge(probe, Response(status=response.status_code, body=response.content))


def _reason(error: httpx.TransportError) -> str:
    text = str(error)
    return f" ({text[:120]})" if text else ""


def _log_retry(probe: Probe) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        verdict = state.outcome.result() if state.outcome else None
        log.info("check.retry", check=probe.check, request=str(probe.request),
                 principal=probe.principal.name if probe.principal else None,
                 attempt=state.attempt_number, detail=getattr(verdict, "detail", None))
    return before_sleep


def until_judged(
    endpoint: str, suite: Suite, tokens: Mapping[str, str | None], policy: Policy,
    clock: Clock, *, stop: Callable[[], bool] = lambda: False,
    transport: httpx.BaseTransport | None = None,
) -> tuple[rollout.ClusterStatus, Round]:
    """Verification right after a rollout: rounds until a pass, a fail, or too many errors."""
    status = rollout.ClusterStatus(state=rollout.State.VERIFYING)
    while True:
        last = run_round(endpoint, suite, tokens, deadline=policy.check_timeout,
                         transport=transport)
        status = rollout.after_round(status, last.outcome, policy, clock.now(), describe(last))
        if last.outcome is Outcome.PASS or status.state is rollout.State.FAILED or stop():
            return status, last
        clock.sleep(min(policy.check_interval, RETRY_PAUSE))


def describe(result: Round) -> str | None:
    """One line for the first problem of a round: check, principal, request, what came back."""
    worst = result.first(Outcome.FAIL) or result.first(Outcome.ERROR)
    if worst is None:
        return None
    who = f" as {worst.probe.principal.name}" if worst.probe.principal else ""
    severity = " [security]" if worst.verdict.severity == "security" and \
        worst.verdict.outcome is Outcome.FAIL else ""
    return f"{worst.probe.check}{severity}: {worst.probe.request}{who}: {worst.verdict.detail}"


def counts(result: Round) -> ledger.Counts:
    return ledger.Counts(passed=result.count(Outcome.PASS), failed=result.count(Outcome.FAIL),
                         errors=result.count(Outcome.ERROR))
