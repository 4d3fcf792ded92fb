"""Where an unfinished run stands, rebuilt from the clusters' ledgers alone. Pure.

The ledgers are the truth (they live in the clusters); the local journal only says which run
and with which inputs. A cluster whose revision of this run is still `applying` or
`interrupted` is deployed again (every step is idempotent, and its revision is reused); one
whose rollback was cut short is rolled back again; the bake of the current wave starts over,
since nobody watched the clusters while the run was down. A cluster an interrupt rolled back
before it was verified (its revision `interrupted`, then a rollback that held) is pending again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from wavegate.config.fleet import Wave
from wavegate.decide import ledger
from wavegate.decide.ledger import Record, Status
from wavegate.decide.rollout import ClusterStatus, Observed, State


def observed_from_ledgers(
    waves: tuple[Wave, ...], records: Mapping[str, Sequence[Record]], run_id: str,
) -> tuple[Observed, dict[str, Record]]:
    """The observed state of run `run_id`, and the deploy revision it made on each cluster."""
    clusters: dict[str, ClusterStatus] = {}
    revisions: dict[str, Record] = {}
    for name in (name for wave in waves for name in wave.clusters):
        status, revision = cluster_state(records.get(name, ()), run_id)
        clusters[name] = status
        if revision is not None:
            revisions[name] = revision
    return Observed(clusters=clusters), revisions


def cluster_state(records: Sequence[Record],
                  run_id: str) -> tuple[ClusterStatus, Record | None]:
    mine = [r for r in ledger.newest_first(records) if r.run_id == run_id]
    if not mine:
        return ClusterStatus(), None
    newest = mine[0]
    if newest.rollback_of is not None:
        original = next((r for r in mine if r.revision == newest.rollback_of), None)
        if original is not None and original.status is Status.INTERRUPTED \
                and newest.status in (Status.VERIFIED, Status.ADOPTED):
            # An interrupt put it back before it was verified: not a failure, deploy it again.
            return ClusterStatus(), None
        done = newest.status is Status.VERIFIED
        state = State.ROLLED_BACK if done else State.FAILED
        return ClusterStatus(state=state, changed=True, reason=newest.reason), original
    state = {Status.VERIFIED: State.VERIFIED, Status.FAILED: State.FAILED,
             Status.ROLLED_BACK: State.ROLLED_BACK}.get(newest.status, State.PENDING)
    return ClusterStatus(state=state, changed=True, reason=newest.reason), newest
