"""API failures, classified, and put into one line a user can act on.

    ApiError      the API server answered with an error status (the body's Status, cut short)
    Unreachable   no answer: refused, reset, timed out, or TLS failed

`is_transient` says what the driver retries (429, 5xx, connection trouble); `describe` is the
message of the `DriverError` for the rest, naming what wavegate tried. A 403 names the verb and
resource that were refused, in the words RBAC rules use. Bodies are cut short and scrubbed of
every registered secret, so a token echoed by a proxy or a webhook never reaches a log.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from wavegate import redact

MAX_MESSAGE = 200
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# A 500 that is no outage: server-side apply could not build the patch (bad manifest).
_PERMANENT_500 = ("failed to create typed patch object",)
_FORBIDDEN = re.compile(
    r'User "(?P<user>[^"]*)" cannot (?P<verb>[\w-]+) resource "(?P<resource>[^"]+)"'
    r'(?: in API group "(?P<group>[^"]*)")?(?: in the namespace "(?P<namespace>[^"]+)")?')


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status, self.reason, self.message = status, reason, message
        super().__init__(f"{status} {reason}: {message}")


class Unreachable(Exception):
    """No HTTP answer. `transient` is False for what waiting cannot fix (a TLS failure)."""

    def __init__(self, detail: str, *, transient: bool = True) -> None:
        self.detail, self.transient = one_line(detail), transient
        super().__init__(self.detail)


@dataclass(frozen=True)
class Action:
    """What wavegate was doing: `patch` of `deployments.apps` `library/web`."""

    verb: str
    resource: str  # as RBAC names it: deployments.apps, secrets
    name: str | None = None
    namespace: str | None = None

    def __str__(self) -> str:
        if self.name:
            target = f" {self.namespace}/{self.name}" if self.namespace else f" {self.name}"
        else:
            target = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.verb} {self.resource}{target}"


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    flat = " ".join(redact.scrub(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def from_response(status: int, body: bytes, http_reason: str = "") -> ApiError:
    """The error an answer carries; its body is a Status object, or whatever a proxy sent."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("kind") == "Status":
        reason = str(data.get("reason") or http_reason or "Error")
        return ApiError(status, reason, one_line(str(data.get("message") or "")))
    text = body.decode("utf-8", errors="replace")
    return ApiError(status, http_reason or "Error", one_line(text))


def from_watch_event(status: dict[str, object]) -> ApiError:
    """An ERROR event of a watch: its object is a Status."""
    code = status.get("code")
    return ApiError(code if isinstance(code, int) else 500, str(status.get("reason") or "Error"),
                    one_line(str(status.get("message") or "")))


def is_transient(error: BaseException) -> bool:
    if isinstance(error, Unreachable):
        return error.transient
    if isinstance(error, ApiError):
        if error.status == 500 and error.message.startswith(_PERMANENT_500):
            return False
        return error.status in TRANSIENT_STATUSES
    return False


def describe(error: BaseException, action: Action) -> str:
    """The one line a DriverError carries."""
    if isinstance(error, Unreachable):
        return f"{action}: API server unreachable: {error.detail}"
    if not isinstance(error, ApiError):
        return f"{action}: {one_line(str(error))}"
    if error.status == 403:
        return forbidden(error.message, action)
    if error.status == 401:
        return (f"{action}: unauthorized (401): the API server refused the kubeconfig's "
                "credentials, also after reloading them")
    detail = f": {error.message}" if error.message else ""
    return f"{action}: {error.reason} ({error.status}){detail}"


def forbidden(message: str, action: Action) -> str:
    """`forbidden: deployer cannot patch deployments.apps in namespace library`."""
    found = _FORBIDDEN.search(message)
    if found:
        group = found["group"]
        resource = f"{found['resource']}.{group}" if group else found["resource"]
        where = f" in namespace {found['namespace']}" if found["namespace"] else ""
        return f"forbidden: {found['user']} cannot {found['verb']} {resource}{where}"
    where = f" in namespace {action.namespace}" if action.namespace else ""
    if action.verb == "apply":
        # The authorizer let the PATCH through; the apply handler then needed `create` for an
        # object that did not exist yet, and v1.20 says only '<name> is forbidden: '.
        return (f"forbidden: cannot create {action.resource}{where} (server-side apply of "
                f"{action.name} creates it, which needs create as well as patch)")
    return f"forbidden: cannot {action.verb} {action.resource}{where}: {message}"
