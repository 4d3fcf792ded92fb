"""Shared by the e2e suites: the sandbox's binaries, an admin client, and waits.

Where the kube sandbox cannot run, the suites skip, except under CI. Every wait here polls a
condition a user could see (an object, a run's journal) up to a bound; none sleeps a fixed time.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes import client, config

from wavegate.sandbox import controlplane

T = TypeVar("T")
TIMEOUT = 10  # seconds for each admin API call: the Python client would wait forever without one


def sandbox_binaries(*tools: str) -> Path:
    """The built kube binaries (and `tools` on PATH); skip without them, except in CI, where
    that must not pass unnoticed."""
    found = controlplane.find_binaries()
    missing = [name for name in ("etcd", *tools) if not shutil.which(name)]
    if found is None:
        missing.insert(0, "kube binaries")
    if missing:
        reason = f"{', '.join(missing)} missing; run scripts/build-kube-sandbox.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert found is not None
    return found


def admin_client(kubeconfig: Path, context: str) -> client.ApiClient:
    """A client for `context` of a sandbox kubeconfig; use it as a context manager."""
    return config.new_client_from_config(config_file=str(kubeconfig), context=context,
                                         persist_config=False)


def eventually(find: Callable[[], T | None], *, timeout: float = 30, every: float = 0.1) -> T:
    """What `find` returns once it is not None; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (found := find()) is None:
        assert time.monotonic() < deadline, f"timed out after {timeout}s"
        time.sleep(every)
    return found


def run_reaches(runs: Path, cluster: str, state: str, *, timeout: float = 120) -> None:
    """Wait until an unfinished run's journal in `runs` shows `cluster` in `state`."""
    def seen() -> bool | None:
        for path in runs.glob("*.json"):
            try:
                data = json.loads(path.read_text())
            except ValueError:  # caught mid-write by another process
                continue
            if data.get("outcome") is None and any(
                    c["cluster"] == cluster and c["state"] == state for c in data["clusters"]):
                return True
        return None

    try:
        eventually(seen, timeout=timeout, every=0.05)
    except AssertionError:
        raise AssertionError(f"{cluster} never reached {state}") from None
