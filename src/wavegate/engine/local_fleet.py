"""`wavegate fleet up|down|status`: the embedded local fleet's cluster agents."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from wavegate.config.fleet import Fleet
from wavegate.drivers.local import LocalDriver
from wavegate.errors import InputError


def _local_drivers(fleet: Fleet) -> list[LocalDriver]:
    if fleet.local is None:
        raise InputError("this fleet has no 'local:' section; fleet up/down manage the "
                         "embedded local fleet (use --kube for sandbox control planes)",
                         file=fleet.path)
    local = fleet.local
    return [LocalDriver(cluster, local) for cluster in fleet.clusters
            if cluster.driver == "local"]


def up(fleet: Fleet) -> list[dict[str, Any]]:
    """Start every cluster not yet running (in parallel); each one's endpoint."""
    drivers = _local_drivers(fleet)
    with ThreadPoolExecutor(max_workers=len(drivers) or 1) as pool:
        list(pool.map(lambda driver: driver.connect(), drivers))
    return status(fleet)


def down(fleet: Fleet) -> list[str]:
    drivers = _local_drivers(fleet)
    with ThreadPoolExecutor(max_workers=len(drivers) or 1) as pool:
        list(pool.map(lambda driver: driver.stop(), drivers))
    return [driver.cluster.name for driver in drivers]


def status(fleet: Fleet) -> list[dict[str, Any]]:
    rows = []
    for driver in _local_drivers(fleet):
        agent = driver.agent()
        rows.append({"cluster": driver.cluster.name, "region": driver.cluster.region,
                     "running": agent.running, "endpoint": agent.endpoint, "pid": agent.pid,
                     "state_dir": str(agent.state_dir)})
    return rows
