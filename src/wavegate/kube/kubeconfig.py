"""Which kubeconfig a cluster uses, and which of its values are secrets to keep out of output.

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

DEFAULT = Path("~/.kube/config")
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
