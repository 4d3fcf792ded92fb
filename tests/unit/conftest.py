"""Shared by the unit suites that run deploys against fake clusters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import FakeCluster
from tests.unit.test_runner import NAMES, TOKENS


@pytest.fixture
def clusters() -> Iterator[dict[str, FakeCluster]]:
    """Six fake clusters whose servers know the test principals' tokens, stopped after."""
    states = {name: FakeCluster(name, env=dict(TOKENS)) for name in NAMES}
    yield states
    for state in states.values():
        state.stop()
