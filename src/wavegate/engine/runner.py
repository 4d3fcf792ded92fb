"""The deploy run: the one loop that does I/O around `rollout.decide`.

It asks what to do next, does it (deploy tasks on a thread pool bounded by each wave's
max_parallel, check rounds, rollbacks), folds what it saw back into the observed state, and
asks again. It is the one place a run's state changes, each change written once; it keeps the
ledger (one revision per cluster it changes), the report, and the locks. Log lines carry
`run_id`, `cluster` and `wave`.

One error policy for a cluster's work (`_guarded`): `Preempted` stops the run (exit 4); any
other exception, a `WavegateError` or a bug, fails that cluster, which then takes the failure
policy like a failed check. A bug is logged as one, its traceback at debug level.

The loop never waits on a cluster's work: applies, rollout waits and check rounds run on
workers, and a stop (a signal, a lost lock) sets `_cancel`, which the drivers look at before
each write and within a second while waiting (raising `Stopped`). A round that ends after a
stop is not a verification: its answer is dropped (the process waits for it, at most its
deadline, only once the run has ended). On an interrupt, clusters not verified yet
are rolled back to their last-known-good (`rollout` says which); baking and verified ones stay.
Every write names this process's incarnation (`holder`), so a second process of the same run
never passes the fence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from wavegate.clock import Clock
from wavegate.config import durations, windows
from wavegate.config.app import App, Release
from wavegate.config.checks import Suite
from wavegate.config.fleet import Fleet
from wavegate.decide import drift, ledger, rollout
from wavegate.decide.ledger import Record, Status
from wavegate.decide.rollout import Decision, Ending, Observed, State
from wavegate.drivers.base import Driver
from wavegate.engine import baselines, fanout, probes, restore
from wavegate.engine import ledger_writes as ledgerio
from wavegate.engine.notify import Notifier
from wavegate.errors import (
    EXIT_BAD_INPUT,
    EXIT_LOCKED,
    EXIT_NEEDS_HUMAN,
    EXIT_OK,
    EXIT_PAUSED,
    EXIT_ROLLED_BACK,
    Preempted,
    RolloutFailed,
    Stopped,
    WavegateError,
)
from wavegate.outputs.report import RunReport

log = structlog.get_logger(__name__)

EXIT_CODES = {Ending.SUCCEEDED: EXIT_OK, Ending.ROLLED_BACK: EXIT_ROLLED_BACK,
              Ending.NEEDS_HUMAN: EXIT_NEEDS_HUMAN, Ending.INTERRUPTED: EXIT_NEEDS_HUMAN,
              Ending.PREEMPTED: EXIT_LOCKED, Ending.PAUSED: EXIT_PAUSED,
              Ending.ABORTED: EXIT_ROLLED_BACK}
_POLL = 0.2  # how often a waiting loop looks at the stop flag


@dataclass(frozen=True)
class Target:
    """One cluster of the run: how to reach it, what to give it, how to judge it."""

    driver: Driver
    release: Release
    suite: Suite
    tokens: Mapping[str, str | None]


@dataclass(frozen=True)
class Options:
    """How this run may proceed: gates it may pass, windows it may ignore, where it resumes."""

    approved: frozenset[str] = frozenset()  # every wave when --auto-approve
    ignore_windows: str | None = None  # the reason, recorded in the ledger
    resume_from: Observed | None = None
    records: Mapping[str, Record] = dataclasses.field(default_factory=dict)
    force_conflicts: bool = False  # take fields other field managers own
    wall: Callable[[], datetime] = lambda: datetime.now(UTC)
    baselines: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)


class Runner:
    def __init__(self, *, fleet: Fleet, targets: Mapping[str, Target], run_id: str, by: str,
                 clock: Clock, report: RunReport, notifier: Notifier | None = None,
                 options: Options | None = None, holder: str | None = None,
                 fallback: App | None = None) -> None:
        self.fleet, self.targets, self.run_id, self.by = fleet, targets, run_id, by
        self.fallback = fallback  # whose checks prove a rollback when the stored ones cannot
        self.holder = holder or run_id  # the lock holder: this process's incarnation of the run
        self.clock, self.report = clock, report
        self.notifier = notifier or Notifier([], run_id=run_id, app=report.app, version=None)
        self.options = options or Options()
        self.plan = rollout.Plan(fleet.waves, fleet.policy, self.options.approved)
        self.seen = self.options.resume_from or Observed.start(fleet.waves)
        self.records: dict[str, Record] = dict(self.options.records)
        self.paused_at: str | None = None
        self.bad_input = False  # a cluster refused the release as given (a field conflict)
        self._guard = threading.Lock()
        self._stop: Ending | None = self.seen.stop  # a resumed abort starts out stopping
        self._wake = threading.Event()
        self._cancel = threading.Event()  # what drivers and rounds see of a stop
        self._lost: set[str] = set()  # clusters whose lock was taken: never written again
        self._clients = probes.Clients()  # one keep-alive client per cluster for the run
        self._salt = secrets.token_hex(16)  # fingerprints this run's access baselines
        self.baselines = {name: drift.Baseline.from_json(data, targets[name].suite.drifts)
                          for name, data in self.options.baselines.items() if name in targets}

    def _pool_size(self) -> int:
        widest = max((wave.max_parallel for wave in self.fleet.waves), default=1)
        return max(1, min(len(self.targets), widest, fanout.MAX_WORKERS))

    def stop(self, why: Ending) -> None:
        """Ask the run to stop at its next safe point (signal handlers, lost locks)."""
        with self._guard:
            self._stop = self._stop or why
        self._cancel.set()
        self._wake.set()

    def run(self) -> Ending:
        log.info("run.started", run_id=self.run_id, app=self._app, version=self._version)
        self.notifier.send("run.started", f"rolling out to {len(self.targets)} clusters in "
                           f"{len(self.fleet.waves)} waves")
        pool = ThreadPoolExecutor(max_workers=self._pool_size())
        try:
            with _frozen_for_the_collector():
                ending = self._loop(pool)
        except Exception as error:  # a bug in the loop itself: leave what resume needs
            _log_bug("run.bug", error, run_id=self.run_id)
            ending = Ending.NEEDS_HUMAN
            self._mark_interrupted()
        finally:
            # The run has decided its end; a round still out (its answer is dropped) ends by
            # its own deadline, and only then are the clients it uses closed.
            self._cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self._clients.close()
        if ending in (Ending.INTERRUPTED, Ending.PREEMPTED):
            self._mark_interrupted()  # closed, so neither resume nor a reader sees `applying`
        if ending is Ending.SUCCEEDED:
            for name in self.targets:
                self.report.update(name, detail=None)  # "watching until" is over
        log.info("run.finished", run_id=self.run_id, outcome=ending.value)
        self.notifier.send("run.finished", f"run {ending.value}", outcome=ending.value)
        return ending

    def _loop(self, pool: ThreadPoolExecutor) -> Ending:
        running: dict[Future[None], str] = {}
        while True:
            with self._guard:
                self.seen = _replace(_with_stop(self.seen, self._stop),
                                     window_open=self._window_open())
                decision = rollout.decide(self.plan, self.seen, self.clock.now())
            if decision.finish is not None:
                self.paused_at = decision.paused_at
                return decision.finish
            if decision.abort:
                self._abort()
                continue
            if decision.unwind:
                self._unwind(decision.unwind, pool)
                continue
            self._act(decision, pool, running)
            self._wait(decision, running)

    def _act(self, decision: Decision, pool: ThreadPoolExecutor,
             running: dict[Future[None], str]) -> None:
        for name in decision.deploy:
            self._set_state(name, State.APPLYING)
            running[pool.submit(self._guarded, name, self._deploy)] = name
        if decision.start_bake is not None:
            self._start_bake(decision.start_bake)
        out = set(running.values())
        for name in decision.check:  # a round still out for a cluster is not sent again
            if name not in out:
                running[pool.submit(self._guarded, name, self._check)] = name
        if decision.wave_verified is not None:
            self._wave_verified(decision.wave_verified, pool)
            self._close_connections(decision.wave_verified, busy=set(running.values()))
        if decision.start_watch:
            log.info("watch.started", run_id=self.run_id, seconds=self.fleet.policy.watch)
            until = self.options.wall() + timedelta(seconds=self.fleet.policy.watch)
            for name in self.targets:
                self.report.update(name, detail=f"watching until {until:%H:%M:%S} UTC")
            with self._guard:
                self.seen = _replace(self.seen, watch_started=self.clock.now())
        if decision.rollback:
            self._roll_back(decision.rollback, pool)

    def _window_open(self) -> bool:
        open_at = self.fleet.policy.windows
        return self.options.ignore_windows is not None or windows.allows(
            open_at.allow, open_at.freeze, self.options.wall())

    def _abort(self) -> None:
        """`wavegate abort`: everything this run changed counts as failed."""
        with self._guard:
            self._stop = None
            self._wake.clear()  # the rollback that follows may wait again
            doomed = [name for name, status in self.seen.clusters.items()
                      if (status.changed or status.state is not State.PENDING)
                      and status.state not in (State.FAILED, State.ROLLED_BACK)]
        for name in doomed:
            self._fail(name, "run aborted")

    def _wait(self, decision: Decision, running: dict[Future[None], str]) -> None:
        if running:
            done, _ = wait(list(running), timeout=_POLL, return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                future.result()  # a bug in a task must not pass silently
        elif decision.wake_at is not None and not decision.check:
            self.clock.sleep(decision.wake_at - self.clock.now(), self._wake)
        elif decision == Decision():
            # Nothing to do and nothing running would spin; never expected, so say so.
            log.warning("run.idle", run_id=self.run_id)
            self.clock.sleep(_POLL, self._wake)

    # --- one cluster's work, on a worker thread -----------------------------------------------

    def _guarded(self, name: str, work: Callable[[str], None]) -> None:
        """The one error policy for a cluster's work: see the module docstring."""
        try:
            work(name)
        except Preempted as error:
            log.warning("run.preempted", run_id=self.run_id, cluster=name, detail=str(error))
            self._lost.add(name)
            self.stop(Ending.PREEMPTED)
            self._set_state(name, State.FAILED, str(error))
        except Stopped:
            # Cut short by the stop: what it wrote is unwound; nothing written, nothing to do.
            self._set_state(name, State.INTERRUPTED if name in self.records else State.PENDING,
                            "run interrupted before this cluster was verified")
        except RolloutFailed as error:
            self._fail(name, f"rollout failed: {error}")
        except WavegateError as error:
            # A field conflict is the release as given being refused: exit 2 once unwound.
            self.bad_input = self.bad_input or error.exit_code == EXIT_BAD_INPUT
            self._fail(name, str(error))
        except Exception as error:
            _log_bug("cluster.bug", error, run_id=self.run_id, cluster=name)
            self._fail(name, f"internal error: {type(error).__name__}: {error}")

    def _deploy(self, name: str) -> None:
        """Apply and roll out; `decide` then schedules the first verification."""
        target = self.targets[name]
        self._apply(name, target)
        self._set_state(name, State.ROLLING_OUT)
        target.driver.wait_rollout(target.release, timeout=self.fleet.policy.rollout_timeout,
                                   holder=self.holder, cancel=self._cancel)
        self._set_state(name, State.VERIFYING)

    def _apply(self, name: str, target: Target) -> None:
        driver, release = target.driver, target.release
        records = driver.records(release.app)
        resumed = self.records.get(name)
        previous = ledger.live([r for r in records if resumed is None
                                or r.revision != resumed.revision])
        self.report.update(name, from_version=previous.version if previous else None)
        self._take_baseline(name, target, previous, resumed=resumed is not None)
        if resumed is not None and resumed.status in (Status.APPLYING, Status.INTERRUPTED):
            record = ledgerio.mark(driver, release.app, resumed.revision, holder=self.holder,
                                   status=Status.APPLYING)  # a resumed run redoes this step
        else:
            note = self.options.ignore_windows
            record = ledgerio.open_revision(driver, release, run_id=self.run_id, by=self.by,
                                            reason=f"windows ignored: {note}" if note else None,
                                            records=records, holder=self.holder)
        self.records[name] = record
        self.report.update(name, revision=record.revision)
        log.info("cluster.applying", run_id=self.run_id, cluster=name,
                 revision=record.revision, version=release.version)
        driver.apply(release, holder=self.holder, force_conflicts=self.options.force_conflicts,
                     cancel=self._cancel)

    def _take_baseline(self, name: str, target: Target, live: Record | None, *,
                       resumed: bool) -> None:
        """Access drift: ask the release live on `name` who sees what, before it changes."""
        drifts = target.suite.drifts
        if not drifts or name in self.baselines:
            return
        if resumed:  # it may serve the new release already: its answers are no baseline
            taken = drift.nothing_live(drifts, self._salt, note=drift.LOST)
        elif live is None:
            taken = drift.nothing_live(drifts, self._salt)
        else:
            endpoint = target.driver.endpoint()
            taken = baselines.take(endpoint, drifts, target.tokens,
                                   version=live.version, salt=self._salt,
                                   deadline=self.fleet.policy.check_timeout,
                                   client=self._clients.get(name, endpoint))
        self.baselines[name] = taken
        self.report.keep_baseline(name, taken.to_json())

    # --- bake and watch ----------------------------------------------------------------------

    def _start_bake(self, wave: str) -> None:
        bake = next(w for w in self.fleet.waves if w.name == wave)
        log.info("wave.baking", run_id=self.run_id, wave=wave, seconds=bake.bake)
        until = self.options.wall() + timedelta(seconds=bake.bake)
        for name in bake.clusters:  # progress for whoever watches the table
            self.report.update(name, detail=f"baking until {until:%H:%M:%S} UTC, checks every "
                                            f"{durations.format(self.fleet.policy.check_interval)}")
        with self._guard:
            self.seen = rollout.with_bake_started(self.seen, wave, self.clock.now())

    def _check(self, name: str) -> None:
        """One round (first verification, bake or watch), folded in by `rollout.with_round`."""
        target = self.targets[name]
        if self._cancel.is_set():
            return  # queued before the stop: no round to send
        endpoint = target.driver.endpoint()
        try:
            result = probes.run_round(endpoint, target.suite, target.tokens,
                                      deadline=self.fleet.policy.check_timeout,
                                      baseline=self.baselines.get(name),
                                      client=self._clients.get(name, endpoint))
        except Exception:
            if self._cancel.is_set():
                return  # left behind by a run that ended: its client was closed under it
            raise
        if self._cancel.is_set():
            return  # answered after the stop: never a verification, the cluster is unwound
        self._record_round(name, result)
        with self._guard:
            before = self.seen.clusters[name].state
            self.seen = rollout.with_round(self.seen, name, result.outcome, self.fleet.policy,
                                           self.clock.now(), probes.describe(result))
            after = self.seen.clusters[name]
        if after.state is before:
            return
        self.report.update(name, state=after.state.value)
        if after.state is State.FAILED:
            self._announce_failure(name, after.reason or "checks failed")
        elif after.state is State.BAKING:
            log.info("cluster.verified", run_id=self.run_id, cluster=name)

    def _wave_verified(self, wave_name: str, pool: ThreadPoolExecutor) -> None:
        wave = next(w for w in self.fleet.waves if w.name == wave_name)

        def verified(name: str) -> None:
            self._mark(name, status=Status.VERIFIED)
            self._set_state(name, State.VERIFIED)
            self.report.update(name, detail=None)

        list(pool.map(lambda name: self._guarded(name, verified), wave.clusters))
        if any(self.seen.clusters[name].state is not State.VERIFIED for name in wave.clusters):
            return  # a ledger that could not take the word fails its cluster: no announcement
        log.info("wave.verified", run_id=self.run_id, wave=wave_name)
        self.notifier.send("wave.verified", f"wave {wave_name} verified "
                           f"({', '.join(wave.clusters)})", wave=wave_name)

    def _close_connections(self, wave_name: str, *, busy: set[str]) -> None:
        """A verified wave sends no round until the watch (which opens new ones): its open
        connections would only hold sockets, up to `PARALLEL_PROBES` per cluster of the fleet."""
        wave = next(w for w in self.fleet.waves if w.name == wave_name)
        for name in wave.clusters:
            if name not in busy:  # a round still out keeps its client; the run's end closes it
                self._clients.drop(name)

    # --- failure -----------------------------------------------------------------------------

    def _fail(self, name: str, reason: str) -> None:
        self._set_state(name, State.FAILED, reason)
        self._announce_failure(name, reason)

    def _announce_failure(self, name: str, reason: str) -> None:
        """What follows a cluster's failure, once its state says so: log, webhook, ledger."""
        log.error("cluster.failed", run_id=self.run_id, cluster=name, reason=reason)
        self.notifier.send("check.failed", f"{name} failed: {reason}", cluster=name,
                           detail=reason)
        if name in self.records:
            try:
                self._mark(name, status=Status.FAILED, reason=reason)
            except Exception as error:  # the rollback that follows retires the record anyway
                log.error("ledger.unwritable", run_id=self.run_id, cluster=name,
                          detail=str(error))

    def _roll_back(self, groups: tuple[tuple[str, ...], ...], pool: ThreadPoolExecutor) -> None:
        reason = self._failure_summary()
        for group in groups:
            log.info("rollback.wave", run_id=self.run_id, clusters=list(group))
            list(pool.map(lambda name: self._restore(name, reason), group))
        with self._guard:
            self.seen = _replace(self.seen, rollback_done=True)
        states = {name: self.seen.clusters[name].state.value for group in groups for name in group}
        self.notifier.send("rollback.done", "rollback: " + ", ".join(
            f"{name} {state}" for name, state in states.items()), clusters=states)

    def _restore(self, name: str, reason: str) -> None:
        driver = self.targets[name].driver
        mine = self.records.get(name)
        try:
            records = driver.records(self._app)  # read once, passed along to every write
            replacing = next((r for r in records if mine and r.revision == mine.revision), mine)
            target = ledger.restore_target(records, replacing=replacing.revision) \
                if replacing else ledger.last_known_good(records)
            result = restore.restore(
                driver, app=self._app, records=records, replacing=replacing, target=target,
                run_id=self.run_id, by=self.by, reason=f"rollback: {reason}",
                policy=self.fleet.policy, clock=self.clock,
                on_state=lambda state: self._set_state(name, state),
                baseline=self.baselines.get(name), holder=self.holder, fallback=self.fallback)
        except Preempted as error:
            log.warning("run.preempted", run_id=self.run_id, cluster=name, detail=str(error))
            self._lost.add(name)
            self.stop(Ending.PREEMPTED)
            self._set_state(name, State.ROLLBACK_FAILED, str(error))
            return
        except Exception as error:  # unreachable ledger, or a bug: a human must look
            if not isinstance(error, WavegateError):
                _log_bug("rollback.bug", error, run_id=self.run_id, cluster=name)
            self._set_state(name, State.ROLLBACK_FAILED,
                            f"{error}; {self._finish_with(name, to=None)}")
            return
        if result.ok and result.unverified:
            with self._guard:  # back, but not proved by its own checks: a human should look
                self.seen = _replace(self.seen, unproven=self.seen.unproven | {name})
        own = self.seen.clusters[name].reason or "rolled back with its wave"
        self.report.update(name, detail=f"{own}; {result.detail}" if result.ok
                           else f"{own}; rollback failed: {result.detail}; "
                           f"{self._finish_with(name, to=result.version)}",
                           rollback_revision=result.revision)
        if result.ok and name in self.seen.unwound and name in self.records:
            # Not a failed release: `resume` reads `interrupted` as "deploy this one again".
            self._try_mark(name, status=Status.INTERRUPTED, reason="run interrupted before "
                           "verification; rolled back to the last-known-good")

    def _finish_with(self, name: str, *, to: str | None) -> str:
        """What a human runs to finish a rollback this run could not (its cluster unreachable,
        or its target not rolling out)."""
        return restore.finish_with(self.fleet.path, app=self._app, cluster=name, to=to,
                                   run_id=self.run_id)

    def _unwind(self, names: tuple[str, ...], pool: ThreadPoolExecutor) -> None:
        """An interrupt: clusters not verified yet go back to their last-known-good, in
        parallel; what the grace period does not finish, `resume` does."""
        log.warning("run.interrupted", run_id=self.run_id, rolling_back=list(names),
                    detail="not verified yet: back to the last-known-good")
        with self._guard:
            self.seen = rollout.with_unwound(self.seen, names)
        for name in names:
            self._set_state(name, State.INTERRUPTED,
                            "run interrupted before this cluster was verified")
        list(pool.map(lambda name: self._restore(name, "run interrupted"), names))

    def _failure_summary(self) -> str:
        failed = [(n, s.reason) for n, s in self.seen.clusters.items()
                  if s.state is State.FAILED]
        return "; ".join(f"{name}: {why}" for name, why in failed) or "run failed"

    def _mark_interrupted(self) -> None:
        settled = (State.FAILED, State.ROLLED_BACK, State.ROLLBACK_FAILED)
        for name, record in self.records.items():
            if record.status is not Status.APPLYING or name in self._lost:
                continue  # verified and failed records keep their word; a lost one is theirs
            if self.seen.clusters[name].state in (State.ROLLED_BACK, State.ROLLBACK_FAILED):
                continue  # its rollback wrote the ledger
            self._try_mark(name, status=Status.INTERRUPTED, reason="run interrupted")
            if self.seen.clusters[name].state not in settled:  # keep why it failed
                self._set_state(name, State.INTERRUPTED)

    def _try_mark(self, name: str, **changes: Any) -> None:
        try:
            self._mark(name, **changes)
        except Exception as error:  # resume rebuilds from `applying` just as well
            log.error("ledger.unwritable", run_id=self.run_id, cluster=name, detail=str(error))

    # --- bookkeeping -------------------------------------------------------------------------

    def _mark(self, name: str, **changes: Any) -> None:
        record = self.records[name]
        self.records[name] = ledgerio.mark(self.targets[name].driver, self._app,
                                           record.revision, holder=self.holder,
                                           current=record, checks=record.checks, **changes)

    def _record_round(self, name: str, result: probes.Round) -> None:
        self.report.update(name, checks=[r.as_dict() for r in result.results])
        if name in self.records:
            self.records[name] = self.records[name].updated(checks=probes.counts(result))

    def _set_state(self, name: str, state: State, reason: str | None = None) -> None:
        with self._guard:
            self.seen = rollout.with_state(self.seen, name, state, reason)
        fields: dict[str, object] = {"state": state.value}
        if reason:
            fields["detail"] = reason
        self.report.update(name, **fields)

    @property
    def _app(self) -> str:
        return next(iter(self.targets.values())).release.app

    @property
    def _version(self) -> str:
        return next(iter(self.targets.values())).release.version


def _replace(seen: Observed, **changes: Any) -> Observed:
    return dataclasses.replace(seen, **changes)


def _with_stop(seen: Observed, stop: Ending | None) -> Observed:
    return seen if seen.stop == stop else _replace(seen, stop=stop)


@contextlib.contextmanager
def _frozen_for_the_collector() -> Iterator[None]:
    """What exists when a run starts (the fleet, every cluster's rendered release and checks)
    lasts until it ends: frozen, Python's cyclic collector skips it in every full collection
    of the run. And a run allocates in bursts (a hundred clusters' rounds at once) objects that
    live a round or two: collected every 20,000 allocations instead of 700, few of them live
    long enough to be promoted and walked again. At 1,000 clusters the run spent 1.5 s
    collecting, 0.45 s now. Both undone at the end, so a process that runs again (a test
    session, resume after a pause) collects as before."""
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(20_000, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _log_bug(event: str, error: Exception, **context: str) -> None:
    """A bug, said to be one: the user sees what broke; the traceback is there at debug."""
    log.error(event, error=f"{type(error).__name__}: {error}",
              hint="this is a bug in wavegate; please report it", **context)
    log.debug(f"{event}.traceback", exc_info=error, **context)

