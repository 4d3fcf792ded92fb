"""Shared by the unit suites that run deploys against fake clusters."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.fakes import FakeCluster
from tests.unit import loopback
from tests.unit.test_runner import NAMES, TOKENS


@pytest.fixture
def clusters() -> Iterator[dict[str, FakeCluster]]:
    """Six fake clusters whose servers know the test principals' tokens, stopped after."""
    states = {name: FakeCluster(name, env=dict(TOKENS)) for name in NAMES}
    yield states
    for state in states.values():
        state.stop()


@pytest.fixture
def serve() -> Iterator[loopback.Serve]:
    """Starts a loopback HTTP server for a handler; every one started is closed after the test
    (held answers released, threads joined), even when the test fails."""
    with contextlib.ExitStack() as servers:
        yield lambda handler: servers.enter_context(loopback.Server(handler))
