"""The Kubernetes driver (placeholder until the driver lands): refuses clearly, touches nothing."""

from __future__ import annotations

from wavegate.errors import InputError
from wavegate.fleet import Cluster


class KubernetesDriver:
    def __init__(self, cluster: Cluster) -> None:
        raise InputError(f"cluster {cluster.name}: the kubernetes driver is not available in "
                         "this build yet; use the local fleet (clusters/local.yaml)")
