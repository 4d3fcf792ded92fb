"""Drivers: how wavegate reaches one cluster. `base.Driver` is the seam; `for_cluster` picks one."""

from __future__ import annotations

from wavegate.config.fleet import Cluster, Fleet
from wavegate.drivers.base import Driver


def for_cluster(fleet: Fleet, cluster: Cluster) -> Driver:
    """The driver a cluster names; the Kubernetes client is imported only when one is used."""
    if cluster.driver == "local":
        from wavegate.drivers.local import LocalDriver

        assert fleet.local is not None  # fleet.load guarantees it for local clusters
        return LocalDriver(cluster, fleet.local)
    from wavegate.drivers.kubernetes import KubernetesDriver

    return KubernetesDriver(cluster, history=fleet.policy.history)
