"""What a server-side dry run says an apply would change, as a diff a person can read. Pure.

The live object and the dry-run result are both cut down to what the user wrote (no status,
no managedFields, no server bookkeeping) before they are compared, so the diff shows the change
and not the noise. Secret contents never appear: a Secret is only said to change, or not.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml

_SERVER_METADATA = ("managedFields", "resourceVersion", "generation", "uid",
                    "creationTimestamp", "selfLink")
_SERVER_ANNOTATIONS = ("deployment.kubernetes.io/revision",)


def diff(title: str, live: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """Unified diff lines from `live` (None: absent) to `after`; [] when nothing changes."""
    if after.get("kind") == "Secret":
        return _secret(title, live, after)
    before = _lines(essence(live)) if live else []
    lines = list(difflib.unified_diff(before, _lines(essence(after)),
                                      fromfile=f"live {title}" if live else "(absent)",
                                      tofile=f"dry run {title}", lineterm=""))
    return lines


def essence(manifest: dict[str, Any]) -> dict[str, Any]:
    """The object without what the server adds and owns."""
    trimmed = {key: value for key, value in manifest.items() if key != "status"}
    metadata = dict(trimmed.get("metadata") or {})
    for key in _SERVER_METADATA:
        metadata.pop(key, None)
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items()
                   if k not in _SERVER_ANNOTATIONS}
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    trimmed["metadata"] = metadata
    return trimmed


def _secret(title: str, live: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    if live is None:
        return [f"+ {title}: created (contents not shown)"]
    if live.get("data") != after.get("data") or live.get("type") != after.get("type"):
        return [f"~ {title}: changes (contents not shown)"]
    return []


def _lines(document: dict[str, Any]) -> list[str]:
    return yaml.safe_dump(document, sort_keys=True).splitlines()
