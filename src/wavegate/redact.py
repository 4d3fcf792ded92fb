"""Keeping secrets out of every output.

Every secret wavegate reads (a probe token, a kubeconfig credential) is registered here the
moment it is read. `scrub` replaces any registered secret inside a string, and `processor` does
the same for every structlog event, so a token that slips into an exception message or a
response body is still never written to a log, report, ledger or terminal.
"""

from __future__ import annotations

import json
import threading
from collections.abc import MutableMapping
from typing import Any

MASK = "[redacted]"
MIN_LENGTH = 4  # shorter values would mask ordinary words; `--set-env` refuses them
_secrets: set[str] = set()
_lock = threading.Lock()


def register(secret: str) -> None:
    if len(secret) >= MIN_LENGTH:
        with _lock:
            _secrets.add(secret)


def scrub(text: str) -> str:
    return _scrubbed(text, _known())


def _known() -> list[str]:
    with _lock:
        return sorted(_secrets, key=len, reverse=True)  # a secret inside a longer one: last


def _scrubbed(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_data(value: Any) -> Any:
    """`scrub` through nested dicts, lists and strings (reports, ledger metadata); the
    secrets are looked up once for the whole value (a large run's report has 100,000s of
    strings)."""
    return _scrub_all(value, _known())


def json_text(value: Any, *, indent: int | None = None) -> str:
    """`value` as JSON text (sorted keys), every registered secret masked in its strings as
    `scrub_data` does. The text is written first, by json's C encoder when `indent` is None,
    and the value walked only when a secret shows in it: a 1,000-cluster run's journal is
    rewritten many times, and walking its 800,000 strings each time cost more than writing it."""
    text = json.dumps(value, indent=indent, sort_keys=True)
    secrets = _known()
    # json escapes each character on its own, so a secret inside a string shows escaped.
    if any(json.dumps(secret)[1:-1] in text for secret in secrets):
        text = json.dumps(_scrub_all(value, secrets), indent=indent, sort_keys=True)
    return text


def _scrub_all(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return _scrubbed(value, secrets)
    if isinstance(value, dict):
        return {key: _scrub_all(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_all(item, secrets) for item in value]
    return value


def processor(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """structlog processor: scrub every value of the event."""
    for key, value in list(event.items()):
        if isinstance(value, str):
            event[key] = scrub(value)
        elif isinstance(value, dict | list | tuple):
            event[key] = scrub_data(value)
        elif isinstance(value, BaseException):
            event[key] = scrub(repr(value))
    return event
