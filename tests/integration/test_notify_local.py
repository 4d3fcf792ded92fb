"""Every command that changes clusters notifies: emergency rollback and check --rollback-on-fail
post the same webhook events as a deploy, to a receiver on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import TOKENS, LocalFleet
from tests.integration.test_deploy_local import _Receiver, _with_webhook, versions_on

pytestmark = pytest.mark.integration

NAMES = [f"prod-{n}" for n in range(6)]
# A check the live release cannot pass: what a check written today for a fault found today
# looks like, as far as the rollback that follows is concerned.
UNMET_CHECK = """\
  - name: serving a version that does not exist
    request: GET /version
    expect: {status: 200, json: {version: "0.0.0-never"}}
"""


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    hook = _Receiver()
    yield hook
    hook.close()


def _two_good_releases(fleet: LocalFleet) -> None:
    for version in ("1.0.0", "1.1.0"):
        result = fleet.deploy("library-app", version)
        assert result.code == 0, result.stderr[-3000:]


def test_emergency_rollback_posts_the_run_events(
        local_fleet: LocalFleet, receiver: _Receiver) -> None:
    _two_good_releases(local_fleet)
    _with_webhook(local_fleet, receiver.url)
    done = local_fleet.wavegate("rollback", "library-app", "--all", "--reason", "drill",
                                "-f", str(local_fleet.fleet_file))
    assert done.code == 0, done.stderr[-3000:]
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    events = [payload["event"] for payload in receiver.received]
    assert events == ["run.started", "rollback.done", "run.finished"]
    started, rolled_back, finished = receiver.received
    assert "drill" in started["text"] and started["text"].startswith("wavegate library-app")
    assert sorted(rolled_back["clusters"]) == NAMES
    assert finished["outcome"] == "rolled-back"
    assert len({payload["run_id"] for payload in receiver.received}) == 1


def test_check_rollback_on_fail_posts_the_failures_then_the_rollback(
        local_fleet: LocalFleet, receiver: _Receiver) -> None:
    _two_good_releases(local_fleet)
    variant = local_fleet.app_variant("stricter", configmap_extra={})
    checks = variant / "checks.yaml"
    checks.write_text(checks.read_text() + UNMET_CHECK)
    _with_webhook(local_fleet, receiver.url)
    done = local_fleet.wavegate("check", str(variant), "--rollback-on-fail",
                                "-f", str(local_fleet.fleet_file))
    assert done.code == 1, done.stderr[-3000:]
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    events = [payload["event"] for payload in receiver.received]
    assert events == ["check.failed"] * 6 + ["run.started", "rollback.done", "run.finished"]
    assert sorted(p["cluster"] for p in receiver.received[:6]) == NAMES
    assert all("0.0.0-never" in p["detail"] or "version" in p["detail"]
               for p in receiver.received[:6])
    assert receiver.received[-1]["outcome"] == "rolled-back"
    assert not any(token in str(receiver.received) for token in TOKENS.values())


def test_an_unset_webhook_variable_does_not_hold_up_an_emergency_rollback(
        local_fleet: LocalFleet, receiver: _Receiver) -> None:
    _two_good_releases(local_fleet)
    _with_webhook(local_fleet, receiver.url)
    del local_fleet.env["WAVEGATE_WEBHOOK"]
    done = local_fleet.wavegate("rollback", "library-app", "--all", "--reason", "drill",
                                "-f", str(local_fleet.fleet_file))
    assert done.code == 0, done.stderr[-3000:]
    assert set(versions_on(local_fleet).values()) == {"1.0.0"}
    assert "WAVEGATE_WEBHOOK is not set" in done.stderr
    assert receiver.received == []
