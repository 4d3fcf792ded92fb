"""Putting one cluster back on a verified release, proved by that release's own checks.

Used both when a deploy fails (back to the revision before it) and by the emergency
`rollback` command. A rollback opens a new revision carrying the target's stored manifests, so
the ledger reads as a timeline: 2.0.0 rolled-back, then 1.0.0 verified again. The caller
passes the ledger it has just read; nothing here reads it again unless a compare-and-set says
it changed underneath.

A rollback is never blocked by checks configuration: when the target's stored checks no longer
load, or a token they name cannot be read, the release is rolled back anyway and verified with
what can be used (the app folder's current checks, rendered for the target's version, else its
rollout alone); the result says so (`unverified`), in the report and the ledger's reason, and
the run ends needing a human (exit 3).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from wavegate.clock import Clock
from wavegate.config import checks
from wavegate.config.app import CHECKS_FILE, App, Release
from wavegate.config.checks import Suite
from wavegate.config.fleet import Policy
from wavegate.decide import drift, rollout
from wavegate.decide.ledger import Counts, Record, Status
from wavegate.decide.rollout import ClusterStatus, State
from wavegate.drivers.base import Driver
from wavegate.engine import credentials, probes
from wavegate.engine import ledger_writes as ledgerio
from wavegate.errors import InputError, Preempted, WavegateError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Restored:
    ok: bool
    version: str | None
    detail: str
    checks: list[dict[str, object]]
    revision: int | None = None  # the ledger revision the rollback wrote, if it got that far
    unverified: str | None = None  # why the target's own checks did not prove it, if they did not


@dataclass(frozen=True)
class Verification:
    """The checks a restored release is proved by: its own, a stand-in, or none (rollout only)."""

    suite: Suite | None
    tokens: Mapping[str, str | None]
    unverified: str | None = None  # why not its own stored checks


def finish_with(fleet_file: Path, *, app: str, cluster: str, to: str | None,
                run_id: str) -> str:
    """The command a human runs once `cluster` answers again, as a rollback prints it. TO is
    the version it was being taken to, once known: a rollback cut short leaves a newer
    revision of that version, and without `--to` the next one would go back from there."""
    argv = ["wavegate", "rollback", app, "-c", cluster, "-f", str(fleet_file)]
    if to:
        argv += ["--to", to]
    argv += ["--reason", f"finish rollback {run_id}"]
    return f"finish with `{shlex.join(argv)}`"


def restore(
    driver: Driver, *, app: str, records: Sequence[Record], replacing: Record | None,
    target: Record | None, run_id: str, by: str, reason: str, policy: Policy, clock: Clock,
    on_state: Callable[[State], None] = lambda state: None,
    baseline: drift.Baseline | None = None, fallback: App | None = None,
    holder: str | None = None,
) -> Restored:
    """Roll back to `target`; whatever goes wrong is a failed rollback, except `Preempted`
    (someone else took the cluster: their word stands), which is raised. With the access
    `baseline` taken before the failed release, the restored one must show what it showed.
    FALLBACK is the app folder whose checks stand in when the target's stored ones cannot be
    used. `holder` fences the writes (a deploy's process incarnation), the run id when not
    given."""
    on_state(State.ROLLING_BACK)
    try:
        result = _restore(driver, app=app, records=records, replacing=replacing, target=target,
                          run_id=run_id, by=by, reason=reason, policy=policy, clock=clock,
                          baseline=baseline.for_rollback() if baseline else None,
                          fallback=fallback, holder=holder or run_id)
    except Preempted:
        raise
    except WavegateError as error:
        result = Restored(False, target.version if target else None, str(error), [])
    except Exception as error:  # a bug must not leave the cluster half rolled back unsaid
        log.error("rollback.bug", cluster=driver.cluster.name, error=repr(error))
        log.debug("rollback.bug.traceback", cluster=driver.cluster.name, exc_info=True)
        result = Restored(False, target.version if target else None,
                          f"internal error: {type(error).__name__}: {error}", [])
    on_state(State.ROLLED_BACK if result.ok else State.ROLLBACK_FAILED)
    log.info("rollback.done" if result.ok else "rollback.failed", cluster=driver.cluster.name,
             to_version=result.version, detail=result.detail)
    return result


def _restore(
    driver: Driver, *, app: str, records: Sequence[Record], replacing: Record | None,
    target: Record | None, run_id: str, by: str, reason: str, policy: Policy, clock: Clock,
    baseline: drift.Baseline | None, fallback: App | None, holder: str,
) -> Restored:
    if target is None:
        # A first release has nothing to go back to: the cluster goes back to having no app.
        driver.delete(app, holder=holder)
        _retire(driver, app, replacing, holder, reason, known=_as_read(replacing, records))
        return Restored(True, None, "no earlier verified release: removed the app", [])
    release = driver.stored_release(target)
    if target.status is Status.ADOPTED:
        return _readopt(driver, release, records=records, replacing=replacing, target=target,
                        run_id=run_id, by=by, reason=reason, policy=policy, holder=holder)
    proof = verification(driver, release, target, fallback)
    if proof.unverified:
        log.warning("rollback.unverified", cluster=driver.cluster.name, detail=proof.unverified)
    record = ledgerio.open_revision(
        driver, release, run_id=run_id, by=by, reason=reason, records=records,
        rollback_of=replacing.revision if replacing else None, holder=holder)
    driver.apply(release, holder=holder)
    driver.wait_rollout(release, timeout=policy.rollout_timeout)
    status, last = _verify(driver.endpoint(), proof, policy, clock, baseline)
    results = [result.as_dict() for result in last.results] if last else []
    failed = status.state is State.FAILED
    said = f"{reason} ({proof.unverified})" if proof.unverified else reason
    ledgerio.mark(driver, app, record.revision, holder=holder, current=record,
                  status=Status.FAILED if failed else Status.VERIFIED,
                  checks=probes.counts(last) if last else Counts(), reason=said)
    if failed:
        return Restored(False, target.version, f"{target.version} failed its "
                        f"{'stand-in' if proof.unverified else 'own'} checks: {status.reason}",
                        results, record.revision, proof.unverified)
    # open_revision supersedes an unfinished record: that one is read again before its update.
    known = _as_read(replacing, records)
    unfinished = known is not None and known.status in (Status.APPLYING, Status.INTERRUPTED)
    _retire(driver, app, replacing, holder, reason, known=None if unfinished else known)
    back = f"back on {target.version} (revision {record.revision})"
    return Restored(True, target.version, f"{back}; {proof.unverified}" if proof.unverified
                    else back, results, record.revision, proof.unverified)


def verification(driver: Driver, release: Release, target: Record,
                 fallback: App | None) -> Verification:
    """The target's stored checks and tokens; if they cannot be used, the app folder's checks
    for the target's version; else none (the rollout alone), with why."""
    where = Path(f"{driver.cluster.name}/revision-{target.revision}/checks.yaml")
    try:
        suite = checks.load(release.checks, where)
        return Verification(suite, credentials.resolve(suite))
    except InputError as error:
        why = f"its stored checks are unusable ({error})"
    if fallback is not None:
        try:
            suite = checks.load(fallback.render_checks(driver.cluster, target.version),
                                fallback.path / CHECKS_FILE)
            return Verification(suite, credentials.resolve(suite),
                                f"not verified by its own checks: {why}; verified with "
                                f"{fallback.path / CHECKS_FILE} instead")
        except InputError as error:
            why += f"; {fallback.path / CHECKS_FILE} is unusable too ({error})"
    return Verification(None, {}, f"not verified by checks: {why}; judged by its rollout only")


def _readopt(driver: Driver, release: Release, *, records: Sequence[Record],
             replacing: Record | None, target: Record, run_id: str, by: str, reason: str,
             policy: Policy, holder: str) -> Restored:
    """Back to what ran before the first wavegate release. It has no checks of its own (the
    release's would judge another version), so it is rolled out, not verified, and its new
    revision says `adopted` again rather than claiming a verification that did not happen."""
    record = ledgerio.open_revision(
        driver, release, run_id=run_id, by=by, reason=reason, records=records,
        rollback_of=replacing.revision if replacing else None, holder=holder)
    driver.apply(release, holder=holder)
    driver.wait_rollout(release, timeout=policy.rollout_timeout)
    ledgerio.mark(driver, release.app, record.revision, holder=holder, current=record,
                  status=Status.ADOPTED, reason=reason)
    _retire(driver, release.app, replacing, holder, reason, known=None)
    return Restored(True, target.version, f"back on the objects adopted before the first "
                                          f"release (revision {record.revision}, not checked: "
                                          "they have no checks of their own)", [],
                    record.revision)


def _as_read(replacing: Record | None, records: Sequence[Record]) -> Record | None:
    """`replacing` as the ledger read by the caller holds it (its compare-and-set token)."""
    if replacing is None:
        return None
    return next((r for r in records if r.revision == replacing.revision), None)


def _verify(endpoint: str, proof: Verification, policy: Policy, clock: Clock,
            baseline: drift.Baseline | None) -> tuple[ClusterStatus, probes.Round | None]:
    """Rounds until the restored release passes, fails, or errs `max_check_errors` times; no
    round at all without checks to send (its rollout was all there was to judge)."""
    status = ClusterStatus(State.VERIFYING)
    if proof.suite is None:
        return ClusterStatus(State.VERIFIED), None
    while True:
        last = probes.run_round(endpoint, proof.suite, proof.tokens,
                                deadline=policy.check_timeout, baseline=baseline)
        status = rollout.after_round(status, last.outcome, policy, clock.now(),
                                     probes.describe(last))
        if status.state is not State.VERIFYING:
            return status, last
        clock.sleep(rollout.retry_pause(policy))


def _retire(driver: Driver, app: str, replacing: Record | None, holder: str, reason: str, *,
            known: Record | None) -> None:
    if replacing is not None:
        ledgerio.mark(driver, app, replacing.revision, holder=holder, current=known,
                      status=Status.ROLLED_BACK, reason=reason)
