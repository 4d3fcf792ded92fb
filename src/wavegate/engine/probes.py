"""Sending a checks suite to one cluster's live endpoint: one round, and what came back.

This is the I/O around `verdict.judge`: it sends each probe, retries only what is `retryable`
(timeouts, refused connections, 5xx) with backoff inside the round's deadline, and stops
retrying the moment any probe fails, since a failure is acted on at once. Tokens go in the
Authorization header and nowhere else. It returns a `Round` and knows nothing of run states:
whether a round fails a cluster, and when the next one is due, is `rollout`'s to say.
A round's probes are coroutines on the process's one probe loop (`http_probe.run`); the
thread that asked for the round waits for it. A run keeps one connection pool per cluster
(`Clients`), so its rounds reuse the connections (keep-alive) the previous ones opened; a
round sends at most `PARALLEL_PROBES` probes at a time to its cluster. Pools are per cluster
even where clusters share an endpoint (behind one front door, or one server in a benchmark):
one pool shared by a whole wave queues every cluster's probes behind a few connections. Every
pool shares one TLS context: building one reads the CA bundle again, tens of milliseconds of
CPU per cluster."""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import structlog
import tenacity

from wavegate.config.checks import Probe, Suite
from wavegate.decide import drift, ledger
from wavegate.decide.verdict import Outcome, Verdict, expected, judge
from wavegate.engine import credentials, http_probe

log = structlog.get_logger(__name__)
# Probes in flight to one cluster, each on a connection of its own: enough that a round of 40
# probes takes ten round trips, not forty; few enough that a run does not open (over TLS:
# handshake) and hold more than four connections per cluster, nor ask one cluster's app to
# answer more than four at once.
PARALLEL_PROBES = 4
Sleep = Callable[[float], Awaitable[None]]  # the pause between retries, on the probe loop
NO_RETRY_REQUEST_DEADLINE = 1.0  # a round with no time for retries still sends each probe once


@dataclass(frozen=True)
class Result:
    probe: Probe
    verdict: Verdict
    attempts: int
    # The answer judged, for whoever must read more than the verdict (a baseline's ids).
    answer: http_probe.Answer | None = field(default=None, repr=False, compare=False)

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


class Client(http_probe.Pool):
    """One cluster's keep-alive pool, kept for as long as a run lasts: every round reuses the
    connections the previous ones opened."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint, size=PARALLEL_PROBES, tls=_tls_context())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Clients:
    """One `Client` per cluster, for as long as a run lasts (a cluster whose endpoint moved
    gets a new one); `drop` ends one cluster's, `close` ends them all."""

    def __init__(self) -> None:
        self._clients: dict[str, tuple[str, Client]] = {}  # cluster -> (endpoint, client)
        self._guard = threading.Lock()

    def get(self, cluster: str, endpoint: str) -> Client:
        with self._guard:
            known, client = self._clients.get(cluster, (None, None))
            if client is not None and known == endpoint:
                return client
            self._clients[cluster] = (endpoint, Client(endpoint))
        if client is not None:
            client.close()  # the cluster's endpoint moved: its old connections lead nowhere
        return self._clients[cluster][1]

    def drop(self, cluster: str) -> None:
        """Close a cluster's connections (no round is due there for a while)."""
        with self._guard:
            _, client = self._clients.pop(cluster, (None, None))
        if client is not None:
            client.close()

    def close(self) -> None:
        with self._guard:
            clients, self._clients = [c for _, c in self._clients.values()], {}
        for client in clients:
            client.close()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verification (its CA bundle), built once for every client."""
    return httpx.create_ssl_context()


def run_round(
    endpoint: str, suite: Suite, tokens: Mapping[str, str | None], *, deadline: float,
    baseline: drift.Baseline | None = None, sleep: Sleep | None = None,
    client: Client | None = None,
) -> Round:
    """Send every probe of `suite` to `endpoint`; retries end at `deadline` seconds. Its
    access_drift checks are judged against `baseline` (those it was taken for, if given).
    `client` (from `Clients`) reuses a run's connections; without one the round opens its own.
    `sleep` stands in for the pause between retries (a test's returns at once)."""
    extra = drift.round_probes(baseline) if baseline else drift.unbaselined(suite.drifts)
    return send_all(endpoint, suite.probes + extra, tokens, deadline=deadline, sleep=sleep,
                    client=client)


def send_all(
    endpoint: str, probes: tuple[Probe, ...], tokens: Mapping[str, str | None], *,
    deadline: float, sleep: Sleep | None = None, client: Client | None = None,
) -> Round:
    """Send `probes` in parallel, each retried while its verdict is retryable. Identical
    requests (same principal, request and body limit, one sample) are sent once and their
    answer judged for each probe that asks it: an access_drift check re-reads what an authz
    matrix already read, a third of a round's probes with the shipped checks."""
    if client is None:
        with Client(endpoint) as own:
            return send_all(endpoint, probes, tokens, deadline=deadline, sleep=sleep,
                            client=own)
    asked = _first_asker(probes)
    sent = [probe for index, probe in enumerate(probes) if asked[index] == index]
    sender = _Sender(client, tokens, deadline, sleep or asyncio.sleep)
    answered = dict(zip((id(probe) for probe in sent), http_probe.run(sender.each(sent)),
                        strict=True))
    return Round(tuple(_shared(probe, answered[id(probes[asked[index]])])
                       for index, probe in enumerate(probes)))


def _first_asker(probes: tuple[Probe, ...]) -> list[int]:
    """For each probe, the index of the first probe sending the very same request."""
    first: dict[tuple[object, ...], int] = {}
    asked = []
    for index, probe in enumerate(probes):
        name = probe.principal.name if probe.principal else None
        key = (name, probe.request, probe.max_body) if probe.samples == 1 else (index,)
        asked.append(first.setdefault(key, index))
    return asked


def _shared(probe: Probe, sent: Result) -> Result:
    """`sent`'s answer judged for `probe` (itself, or another probe asking the same)."""
    if sent.probe is probe:
        return sent
    verdict = judge(probe, sent.answer) if sent.answer is not None else sent.verdict
    return replace(sent, probe=probe, verdict=verdict)


class _Sender:
    """One round's probes to one cluster, on the probe loop (`http_probe.run`): each sent,
    judged, and retried while its verdict is retryable, until the round's deadline or until
    any probe fails (a failure is acted on at once)."""

    def __init__(self, pool: http_probe.Pool, tokens: Mapping[str, str | None],
                 deadline: float, sleep: Sleep) -> None:
        self.pool, self.tokens, self.deadline, self.sleep = pool, tokens, deadline, sleep
        self.failed = threading.Event()  # what tenacity's stop_when_event_set reads
        self.request_deadline = deadline if deadline > 0 else NO_RETRY_REQUEST_DEADLINE

    async def each(self, probes: list[Probe]) -> list[Result]:
        return await asyncio.gather(*(self.probe(probe) for probe in probes))

    async def probe(self, probe: Probe) -> Result:
        started = time.monotonic()
        first = await self.sampled(probe)
        if first[0].retryable:
            return await self.retried(probe, first,
                                      left=self.deadline - (time.monotonic() - started))
        if first[0].outcome is Outcome.FAIL:
            self.failed.set()
        return Result(probe=probe, verdict=first[0], attempts=1, answer=first[1])

    async def retried(self, probe: Probe, first: tuple[Verdict, http_probe.Answer], *,
                      left: float) -> Result:
        """A probe whose first answer calls for a retry, retried by tenacity from that answer
        (a Retrying per probe cost more than most exchanges, so only these build one)."""
        answers = iter([first])

        async def attempt() -> tuple[Verdict, http_probe.Answer]:
            return next(answers, None) or await self.sampled(probe)

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_result(lambda judged: judged[0].retryable),
            stop=tenacity.stop_after_delay(left) | tenacity.stop_when_event_set(self.failed),
            wait=tenacity.wait_exponential(multiplier=0.1, max=2.0),
            before_sleep=_log_retry(probe),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            sleep=self.sleep,
        )
        judged: tuple[Verdict, http_probe.Answer] = await retrying(attempt)
        verdict, answer = judged
        if verdict.outcome is Outcome.FAIL:
            self.failed.set()
        attempts = retrying.statistics.get("attempt_number", 1)
        return Result(probe=probe, verdict=verdict, attempts=attempts, answer=answer)

    async def sampled(self, probe: Probe) -> tuple[Verdict, http_probe.Answer]:
        """`samples` answers (behind an ingress, from different replicas): the first that
        does not pass is the verdict, since one replica that leaks is a leak."""
        for _ in range(probe.samples):
            answer = await self.send(probe)
            verdict = judge(probe, answer)
            if verdict.outcome is not Outcome.PASS:
                break
        return verdict, answer

    async def send(self, probe: Probe) -> http_probe.Answer:
        name = probe.principal.name if probe.principal else None
        token = self.tokens.get(name) if name else None
        answer = await self.exchange(probe, token)
        if not (name and token and getattr(answer, "status", None) == 401):
            return answer
        # A token rotated since it was read is refused once, not counted: read it again (a
        # file or a command: off the loop), resend.
        fresh = await asyncio.to_thread(credentials.refreshed, self.tokens, name, token)
        return await self.exchange(probe, fresh) if fresh else answer

    async def exchange(self, probe: Probe, token: str | None) -> http_probe.Answer:
        request = probe.request
        headers = {**dict(request.headers), **_headers(token, json_body=request.body is not None)}
        limits = http_probe.Limits(deadline=self.request_deadline, max_body=probe.max_body)
        return await self.pool.send(
            request.method, request.target, headers=headers, limits=limits,
            content=request.body.encode() if request.body is not None else None)


def _headers(token: str | None, *, json_body: bool = False) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if json_body:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _log_retry(probe: Probe) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        verdict = state.outcome.result()[0] if state.outcome else None
        log.info("check.retry", check=probe.check, request=str(probe.request),
                 principal=probe.principal.name if probe.principal else None,
                 attempt=state.attempt_number, detail=getattr(verdict, "detail", None))
    return before_sleep


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
