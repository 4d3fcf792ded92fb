"""`wavegate check`: the checks of the release live on each cluster, ad hoc or every N.

Each cluster is judged with the app folder's checks.yaml rendered for the version live there,
so a check written today for a leak suspected today runs against what is out; without an app
folder, with the checks stored with the live revision. Each cluster is reached on its own (a
cluster that does not answer is an `error` row, never the end of the command), and
`--rollback-on-fail` is an emergency rollback: each cluster rolled back independently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from wavegate.clock import Clock
from wavegate.config import checks, endpoints
from wavegate.config.app import CHECKS_FILE, App
from wavegate.config.app import resolve as resolve_app
from wavegate.config.fleet import Fleet, Policy
from wavegate.decide import ledger
from wavegate.decide.verdict import Outcome
from wavegate.drivers.base import Driver
from wavegate.engine import credentials, fanout, rollback
from wavegate.engine import probes as verify
from wavegate.engine.session import Watch, unwatched
from wavegate.errors import DriverError, InputError
from wavegate.outputs.report import RunReport


def check_all(app: str, live: dict[str, Driver], policy: Policy,
              folder: App | None = None,
              reached: set[str] | None = None) -> list[dict[str, Any]]:
    """One round on every cluster. REACHED names the drivers connected already (kept across
    rounds); the others are connected first, each on its own."""
    reached = set() if reached is None else reached
    with fanout.pool(len(live)) as pool:
        return list(pool.map(lambda driver: _check(app, driver, policy, folder, reached),
                             live.values()))


def _check(app: str, driver: Driver, policy: Policy, folder: App | None,
           reached: set[str]) -> dict[str, Any]:
    name = driver.cluster.name
    try:
        if name not in reached:
            driver.connect()
            reached.add(name)
        current = ledger.live(driver.records(app))
        if current is None:
            return {"cluster": name, "outcome": "none", "detail": f"{app} is not deployed"}
        if folder is not None:
            suite = checks.load(folder.render_checks(driver.cluster, current.version),
                                folder.path / CHECKS_FILE)
        else:
            stored = driver.stored_release(current).checks
            suite = checks.load(stored, Path(f"{name}/revision-{current.revision}/checks"))
        endpoints.refuse_tokens_in_clear(suite, driver.cluster)
        result = verify.run_round(driver.endpoint(), suite, credentials.resolve(suite),
                                  deadline=policy.check_timeout)
    except DriverError as error:
        return {"cluster": name, "outcome": Outcome.ERROR.value, "detail": str(error)}
    return {"cluster": name, "version": current.version, "revision": current.revision,
            "outcome": result.outcome.value, "detail": verify.describe(result),
            "checks": [r.as_dict() for r in result.results]}


def app_folder(app_name: str) -> App | None:
    try:
        return resolve_app(app_name)
    except InputError:
        return None  # no folder here: judge with the checks stored in the ledger


def rounds(app: str, live: dict[str, Driver], policy: Policy, folder: App | None, *,
           every: float | None,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[list[dict[str, Any]]]:
    """Each round's rows: one round, or one every `every` seconds for as long as asked."""
    reached: set[str] = set()
    while True:
        yield check_all(app, live, policy, folder, reached)
        if every is None:
            return
        sleep(every)


def roll_back(fleet: Fleet, app: str, failed: list[dict[str, Any]], *, by: str, clock: Clock,
              watch: Watch = unwatched, folder: App | None = None) -> RunReport:
    """The leak that sat on a cluster for three days, caught by the next check: every cluster
    goes back to its last verified release."""
    reason = "; ".join(f"{row['cluster']}: {row['detail']}" for row in failed)
    return rollback.emergency(fleet, app, [cluster.name for cluster in fleet.clusters],
                              to_version=None, reason=f"check failed: {reason}", by=by,
                              clock=clock, watch=watch, folder=folder,
                              failed_checks={row["cluster"]: str(row["detail"]) for row in failed})
