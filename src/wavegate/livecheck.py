"""`wavegate check`: the checks of the release live on each cluster, ad hoc or every N.

Each cluster is judged with the checks stored with its live revision, the same contract that
release was verified against.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from wavegate import checks, credentials, ledger, verify
from wavegate.drivers.base import Driver
from wavegate.errors import DriverError
from wavegate.fleet import Policy
from wavegate.verdict import Outcome


def check_all(app: str, live: dict[str, Driver], policy: Policy) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=len(live) or 1) as pool:
        return list(pool.map(lambda driver: _check(app, driver, policy), live.values()))


def _check(app: str, driver: Driver, policy: Policy) -> dict[str, Any]:
    name = driver.cluster.name
    try:
        current = ledger.live(driver.records(app))
        if current is None:
            return {"cluster": name, "outcome": "none", "detail": f"{app} is not deployed"}
        release = driver.stored_release(current)
        suite = checks.load(release.checks, Path(f"{name}/revision-{current.revision}/checks"))
        result = verify.run_round(driver.endpoint(), suite, credentials.resolve(suite),
                                  deadline=policy.check_timeout)
    except DriverError as error:
        return {"cluster": name, "outcome": Outcome.ERROR.value, "detail": str(error)}
    return {"cluster": name, "version": current.version, "revision": current.revision,
            "outcome": result.outcome.value, "detail": verify.describe(result),
            "checks": [r.as_dict() for r in result.results]}
