"""Taking a cluster's access baseline from the release live there, just before it changes.

The I/O half of `decide.drift`: it asks the live release the listings of the access_drift
checks, then the reads of the ids they showed, and hands the answers to `drift.record`. A
baseline that cannot be taken is treated like a round of checks: errors (5xx, timeouts) are
tried again, `max_check_errors` times in all; a failure (a broken credential, a listing that
cannot be read) is final. Either way `Unavailable` is raised and the cluster fails before it
is touched: a release judged against no baseline could leak unseen. It returns what it saw and
writes no run state.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import structlog

from wavegate.clock import Clock
from wavegate.config.checks import AccessDrift
from wavegate.config.fleet import Policy
from wavegate.decide import drift
from wavegate.decide.verdict import Outcome, Response
from wavegate.engine import probes
from wavegate.errors import EXIT_ROLLED_BACK, WavegateError

log = structlog.get_logger(__name__)
RETRY_PAUSE = 1.0  # between tries that errored, capped by check_interval


class Unavailable(WavegateError):
    """No baseline could be taken: the cluster fails, as after a failed check."""

    exit_code = EXIT_ROLLED_BACK


def take(endpoint: str, drifts: tuple[AccessDrift, ...], tokens: Mapping[str, str | None], *,
         version: str, salt: str, policy: Policy, clock: Clock,
         transport: httpx.BaseTransport | None = None) -> drift.Baseline:
    """The baseline of the release `version` serving at `endpoint`."""
    problem = "not tried"
    for attempt in range(max(policy.max_check_errors, 1)):
        if attempt:
            clock.sleep(min(policy.check_interval, RETRY_PAUSE))
        taken = _once(endpoint, drifts, tokens, version=version, salt=salt,
                      deadline=policy.check_timeout, transport=transport)
        if isinstance(taken, drift.Baseline):
            return taken
        problem, final = taken
        log.info("baseline.retry" if not final else "baseline.failed", detail=problem,
                 attempt=attempt + 1)
        if final:
            break
    raise Unavailable(f"no access baseline could be taken from the live release {version}: "
                      f"{problem}")


def _once(endpoint: str, drifts: tuple[AccessDrift, ...], tokens: Mapping[str, str | None], *,
          version: str, salt: str, deadline: float,
          transport: httpx.BaseTransport | None) -> drift.Baseline | tuple[str, bool]:
    """A baseline, or (why not, whether trying again cannot help)."""
    listings = probes.send_all(endpoint, drift.baseline_probes(drifts), tokens,
                               deadline=deadline, transport=transport)
    if listings.outcome is not Outcome.PASS:
        return _problem(listings)
    targets = drift.read_targets(drifts, _answered(listings))
    reads = probes.send_all(endpoint, drift.baseline_reads(drifts, targets), tokens,
                            deadline=deadline, transport=transport)
    if reads.outcome is not Outcome.PASS:
        return _problem(reads)
    return drift.record(drifts, version=version, salt=salt, listings=_answered(listings),
                        targets=targets, reads=_answered(reads))


def _problem(result: probes.Round) -> tuple[str, bool]:
    return probes.describe(result) or "no answer", result.outcome is Outcome.FAIL


def _answered(result: probes.Round) -> list[drift.Answered]:
    return [(r.probe, r.answer) for r in result.results if isinstance(r.answer, Response)]
