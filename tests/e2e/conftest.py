"""Shared by the e2e suites: where the kube sandbox cannot run, skip, except under CI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from wavegate.sandbox import controlplane


def sandbox_binaries() -> Path:
    """The built kube binaries; skip without them, except in CI, where that must not pass
    unnoticed."""
    found = controlplane.find_binaries()
    missing = "kube binaries" if found is None else "etcd" if not shutil.which("etcd") else None
    if missing is not None:
        reason = f"{missing} missing; run scripts/build-kube-sandbox.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert found is not None
    return found
