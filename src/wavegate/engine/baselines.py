"""Taking a cluster's access baseline from the release live there, just before it changes.

The I/O half of `decide.drift`: it asks the live release the listings of the access_drift
checks, then the reads of the ids they showed, and hands the answers to `drift.record`. Each
probe is retried like any other (errors within `check_timeout`). A live release that still
cannot answer (it is down, a credential is broken, a listing is not what the check says) gives
no baseline: the cluster is deployed all the same, since a release that is down must not
block its own fix, and its access-drift results say why they compared nothing; every other
check still applies. It returns what it saw and writes no run state.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from wavegate.config.checks import AccessDrift
from wavegate.decide import drift
from wavegate.decide.verdict import Outcome, Response
from wavegate.engine import probes

log = structlog.get_logger(__name__)


def take(endpoint: str, drifts: tuple[AccessDrift, ...], tokens: Mapping[str, str | None], *,
         version: str, salt: str, deadline: float,
         client: probes.Client | None = None) -> drift.Baseline:
    """The baseline of the release `version` serving at `endpoint`; `client` is the run's
    for that cluster (its connections serve the checks that follow)."""
    listings = probes.send_all(endpoint, drift.baseline_probes(drifts), tokens,
                               deadline=deadline, client=client)
    if listings.outcome is not Outcome.PASS:
        return _none(drifts, salt, version, listings)
    targets = drift.read_targets(drifts, _answered(listings))
    reads = probes.send_all(endpoint, drift.baseline_reads(drifts, targets), tokens,
                            deadline=deadline, client=client)
    if reads.outcome is not Outcome.PASS:
        return _none(drifts, salt, version, reads)
    return drift.record(drifts, version=version, salt=salt, listings=_answered(listings),
                        targets=targets, reads=_answered(reads))


def _none(drifts: tuple[AccessDrift, ...], salt: str, version: str,
          result: probes.Round) -> drift.Baseline:
    problem = probes.describe(result) or "no answer"
    log.warning("baseline.unavailable", version=version, detail=problem)
    return drift.nothing_live(drifts, salt, note=f"no baseline: the live release {version} "
                                                 f"could not be asked ({problem})")


def _answered(result: probes.Round) -> list[drift.Answered]:
    return [(r.probe, r.answer) for r in result.results if isinstance(r.answer, Response)]
