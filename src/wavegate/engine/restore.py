"""Putting one cluster back on a verified release, proved by that release's own checks.

Used both when a deploy fails (back to the revision before it) and by the emergency
`rollback` command. A rollback opens a new revision carrying the target's stored manifests, so
the ledger reads as a timeline: 2.0.0 rolled-back, then 1.0.0 verified again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from wavegate.clock import Clock
from wavegate.config import checks
from wavegate.config.app import Release
from wavegate.config.fleet import Policy
from wavegate.decide.ledger import Record, Status
from wavegate.decide.rollout import State
from wavegate.drivers.base import Driver
from wavegate.engine import credentials
from wavegate.engine import ledger_writes as ledgerio
from wavegate.engine import probes as verify
from wavegate.errors import DriverError, InputError, RolloutFailed

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Restored:
    ok: bool
    version: str | None
    detail: str
    checks: list[dict[str, object]]


def restore(
    driver: Driver, *, app: str, replacing: Record | None, target: Record | None, run_id: str,
    by: str, reason: str, policy: Policy, clock: Clock,
    on_state: Callable[[State], None] = lambda state: None,
) -> Restored:
    on_state(State.ROLLING_BACK)
    try:
        result = _restore(driver, app=app, replacing=replacing, target=target, run_id=run_id,
                          by=by, reason=reason, policy=policy, clock=clock)
    except (DriverError, RolloutFailed, InputError) as error:
        result = Restored(False, target.version if target else None, str(error), [])
    on_state(State.ROLLED_BACK if result.ok else State.ROLLBACK_FAILED)
    log.info("rollback.done" if result.ok else "rollback.failed", cluster=driver.cluster.name,
             to_version=result.version, detail=result.detail)
    return result


def _restore(
    driver: Driver, *, app: str, replacing: Record | None, target: Record | None, run_id: str,
    by: str, reason: str, policy: Policy, clock: Clock,
) -> Restored:
    if target is None:
        # A first release has nothing to go back to: the cluster goes back to having no app.
        driver.delete(app, holder=run_id)
        _retire(driver, app, replacing, run_id, reason)
        return Restored(True, None, "no earlier verified release: removed the app", [])
    release = driver.stored_release(target)
    if target.status is Status.ADOPTED:
        return _readopt(driver, release, replacing=replacing, target=target, run_id=run_id,
                        by=by, reason=reason, policy=policy)
    where = Path(f"{driver.cluster.name}/revision-{target.revision}/checks.yaml")
    suite = checks.load(release.checks, where)
    tokens = credentials.resolve(suite)
    record = ledgerio.open_revision(
        driver, release, run_id=run_id, by=by, reason=reason,
        rollback_of=replacing.revision if replacing else None)
    driver.apply(release, holder=run_id)
    driver.wait_rollout(release, timeout=policy.rollout_timeout)
    status, last = verify.until_judged(driver.endpoint(), suite, tokens, policy, clock)
    results = [result.as_dict() for result in last.results]
    ledgerio.mark(driver, app, record.revision, holder=run_id,
                  status=Status.VERIFIED if status.state is not State.FAILED else Status.FAILED,
                  checks=verify.counts(last), reason=reason)
    if status.state is State.FAILED:
        return Restored(False, target.version, f"{target.version} failed its own checks: "
                                               f"{status.reason}", results)
    _retire(driver, app, replacing, run_id, reason)
    return Restored(True, target.version, f"back on {target.version} "
                                          f"(revision {record.revision})", results)


def _readopt(driver: Driver, release: Release, *, replacing: Record | None, target: Record,
             run_id: str, by: str, reason: str, policy: Policy) -> Restored:
    """Back to what ran before the first wavegate release. It has no checks of its own (the
    release's would judge another version), so it is rolled out, not verified, and its new
    revision says `adopted` again rather than claiming a verification that did not happen."""
    record = ledgerio.open_revision(
        driver, release, run_id=run_id, by=by, reason=reason,
        rollback_of=replacing.revision if replacing else None)
    driver.apply(release, holder=run_id)
    driver.wait_rollout(release, timeout=policy.rollout_timeout)
    ledgerio.mark(driver, release.app, record.revision, holder=run_id, status=Status.ADOPTED,
                  reason=reason)
    _retire(driver, release.app, replacing, run_id, reason)
    return Restored(True, target.version, f"back on the objects adopted before the first "
                                          f"release (revision {record.revision}, not checked: "
                                          "they have no checks of their own)", [])


def _retire(driver: Driver, app: str, replacing: Record | None, run_id: str,
            reason: str) -> None:
    if replacing is not None:
        ledgerio.mark(driver, app, replacing.revision, holder=run_id, status=Status.ROLLED_BACK,
                      reason=reason)

