"""Which kubeconfig a cluster uses, and which of its values are secrets to keep out of output.

A cluster whose context is `in-cluster` (and that names no `kubeconfig:` of its own) uses the
service account of the pod wavegate runs in instead: KUBERNETES_SERVICE_HOST/PORT and the
token and CA files Kubernetes mounts (their folder can be moved with
WAVEGATE_SERVICEACCOUNT_DIR, for tests and for runners that mount it elsewhere).

The driver registers every credential of the kubeconfig with `wavegate.redact` as soon as it
reads the file (all users, not only the context's: a file that is read is a file whose secrets
could leak), then the token the client actually sends once it has it (exec plugins and token
files produce tokens the file does not hold).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from wavegate.config import fleet

DEFAULT = Path("~/.kube/config")
IN_CLUSTER = fleet.IN_CLUSTER
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SERVICE_ACCOUNT_DIR_ENV = "WAVEGATE_SERVICEACCOUNT_DIR"
SERVICE_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
_USER_SECRETS = ("token", "password", "client-key-data")
_PROVIDER_SECRETS = ("access-token", "id-token", "refresh-token", "client-secret")


def locations(explicit: Path | None, environ: Mapping[str, str] = os.environ) -> list[Path]:
    """The cluster's `kubeconfig:`, else every file of $KUBECONFIG, else ~/.kube/config.

    Read at call time: the client's own default is frozen when it is first imported.
    """
    if explicit is not None:
        return [explicit.expanduser()]
    listed = [Path(p).expanduser() for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return listed or [DEFAULT.expanduser()]


def uses_service_account(cluster: fleet.Cluster) -> bool:
    return cluster.context == IN_CLUSTER and cluster.kubeconfig is None


def service_account(environ: Mapping[str, str] = os.environ) -> tuple[Path, Path]:
    """The pod's service-account token file and CA bundle."""
    folder = Path(environ.get(SERVICE_ACCOUNT_DIR_ENV) or SERVICE_ACCOUNT_DIR)
    return folder / "token", folder / "ca.crt"


def missing_service_env(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The in-cluster environment variables that are not set (none inside a pod)."""
    return [name for name in SERVICE_ENV if not environ.get(name)]


def secrets(config: Mapping[str, Any]) -> Iterator[str]:
    """Every credential value in a parsed kubeconfig."""
    for entry in config.get("users") or ():
        user = (entry or {}).get("user") or {}
        for key in _USER_SECRETS:
            if isinstance(user.get(key), str):
                yield user[key]
        provider = (user.get("auth-provider") or {}).get("config") or {}
        for key in _PROVIDER_SECRETS:
            if isinstance(provider.get(key), str):
                yield provider[key]


def header_secrets(authorization: str | None) -> Iterator[str]:
    """`Bearer <token>` or `Basic <base64>`: the whole header value and the credential in it."""
    if not authorization:
        return
    yield authorization
    scheme, _, credential = authorization.partition(" ")
    if credential and scheme.lower() in ("bearer", "basic"):
        yield credential
