"""Whether a check endpoint would carry a principal's token in clear text.

A bearer token sent over plain `http://` can be read by anyone on the path, so a principal that
sends one is refused there, unless the host is this machine (loopback never leaves it) or the
fleet file says `insecure_http: true` for the cluster (a lab behind its own network). Pure.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from wavegate.config.checks import Suite
from wavegate.config.fleet import Cluster
from wavegate.errors import InputError


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`: addresses that never leave the machine."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def in_clear(endpoint: str) -> bool:
    """Whether requests to `endpoint` cross a network unencrypted."""
    url = urlsplit(endpoint)
    return url.scheme.lower() == "http" and not is_loopback(url.hostname or "")


def refuse_tokens_in_clear(suite: Suite, cluster: Cluster) -> None:
    """An `InputError` (exit 2) when a probe of `suite` would send a token in clear text to
    `cluster`. A cluster without an endpoint is a local one, served on loopback."""
    if cluster.endpoint is None or cluster.insecure_http or not in_clear(cluster.endpoint):
        return
    sender = next((principal for principal in suite.senders if principal.sends_token), None)
    if sender is None:
        return
    raise InputError(
        f"principal {sender.name!r} sends a token, and cluster {cluster.name}'s endpoint "
        f"{cluster.endpoint} is plain http, so the token would cross the network in clear "
        f"text: use https, or set `insecure_http: true` on {cluster.name} in the fleet file",
        file=suite.file, line=sender.line, field=f"principals.{sender.name}")
