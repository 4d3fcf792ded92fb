"""Who may take an app's lock on a cluster, decided from the Lease and the time alone; and the
MicroTime format v1.20 insists on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wavegate.errors import EXIT_LOCKED, LockHeld, StaleLock
from wavegate.kube import lease
from wavegate.kube.lease import Decision

NOW = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


def held(holder: str | None, *, renewed_ago: float = 5, ttl: int = 30) -> dict[str, Any]:
    spec: dict[str, Any] = {"leaseDurationSeconds": ttl,
                            "renewTime": lease.micro_time(NOW - timedelta(seconds=renewed_ago))}
    if holder is not None:
        spec["holderIdentity"] = holder
    return {"metadata": {"name": "wavegate-app", "namespace": "library",
                         "resourceVersion": "17", "managedFields": [{"manager": "x"}]},
            "spec": spec}


@pytest.mark.parametrize(("current", "force", "expected"), [
    pytest.param(held("me"), False, Decision.RENEW, id="ours-renewed"),
    pytest.param(held("me", renewed_ago=99), False, Decision.RENEW, id="ours-even-expired"),
    pytest.param(held(None), False, Decision.TAKE, id="nobody-holds-it"),
    pytest.param(held("other"), False, Decision.HELD, id="another-live-run"),
    pytest.param(held("other", renewed_ago=31), False, Decision.STALE,
                 id="expired-is-not-taken-without-force"),
    pytest.param(held("other"), True, Decision.TAKE, id="force-takes-a-live-one"),
    pytest.param(held("other", renewed_ago=31), True, Decision.TAKE, id="force-takes-expired"),
    pytest.param({"metadata": {}, "spec": {"holderIdentity": "other"}}, False, Decision.HELD,
                 id="no-times-counts-as-live"),
])
def test_decide(current: dict[str, Any], force: bool, expected: Decision) -> None:
    assert lease.decide(current, holder_id="me", force=force, now=NOW) is expected


def test_micro_time_always_has_six_digits_and_z() -> None:
    assert lease.micro_time(NOW) == "2025-03-14T09:26:53.000000Z"
    assert lease.micro_time(NOW.replace(microsecond=42)) == "2025-03-14T09:26:53.000042Z"
    eastern = NOW.astimezone(datetime.now().astimezone().tzinfo)
    assert lease.micro_time(eastern) == "2025-03-14T09:26:53.000000Z"


@pytest.mark.parametrize("text", ["2025-03-14T09:26:53.000000Z", "2025-03-14T09:26:53Z",
                                  "2025-03-14T10:26:53+01:00"])
def test_parse_time_reads_what_the_server_writes(text: str) -> None:
    assert lease.parse_time(text) == NOW


def test_a_new_lease_names_holder_duration_and_times() -> None:
    body = lease.new("app", namespace="library", holder="run-1", ttl=29.2, now=NOW)
    assert body["metadata"]["name"] == "wavegate-app"
    assert body["spec"] == {"holderIdentity": "run-1", "leaseDurationSeconds": 30,
                            "acquireTime": "2025-03-14T09:26:53.000000Z",
                            "renewTime": "2025-03-14T09:26:53.000000Z", "leaseTransitions": 0}


def test_taking_counts_a_transition_and_keeps_the_resource_version() -> None:
    taken = lease.taken(held("other"), holder_id="me", ttl=30, now=NOW)
    assert taken["metadata"]["resourceVersion"] == "17"
    assert "managedFields" not in taken["metadata"]
    assert taken["spec"]["holderIdentity"] == "me"
    assert taken["spec"]["leaseTransitions"] == 1
    assert taken["spec"]["acquireTime"] == taken["spec"]["renewTime"] == lease.micro_time(NOW)


def test_a_release_counts_the_hand_over_so_a_take_of_a_released_lease_adds_none() -> None:
    released = lease.released(held("me"))
    assert lease.holder(released) is None
    assert released["spec"]["leaseTransitions"] == 1
    retaken = lease.taken(released, holder_id="next", ttl=30, now=NOW)
    assert retaken["spec"]["leaseTransitions"] == 1


def test_the_one_request_take_tests_that_nobody_holds_the_lease_before_writing() -> None:
    patch = lease.take_if_released(holder_id="me", ttl=29.5, now=NOW)
    assert patch[0] == {"op": "test", "path": "/spec/holderIdentity", "value": None}
    written = {op["path"]: op["value"] for op in patch[1:]}
    assert written == {"/spec/holderIdentity": "me", "/spec/leaseDurationSeconds": 30,
                       "/spec/acquireTime": lease.micro_time(NOW),
                       "/spec/renewTime": lease.micro_time(NOW)}
    assert {op["op"] for op in patch[1:]} == {"add"}  # add sets a member whether or not it exists


def test_renewing_moves_only_the_renew_time() -> None:
    current = held("me", renewed_ago=10)
    current["spec"]["acquireTime"] = "2025-03-14T09:00:00.000000Z"
    renewed = lease.renewed(current, ttl=60, now=NOW)
    assert renewed["metadata"]["resourceVersion"] == "17"
    assert renewed["spec"]["acquireTime"] == "2025-03-14T09:00:00.000000Z"
    assert renewed["spec"]["renewTime"] == lease.micro_time(NOW)
    assert renewed["spec"]["leaseDurationSeconds"] == 60


def test_the_lock_shown_to_users_expires_at_renew_time_plus_duration() -> None:
    assert lease.expires_text(held("run-9", renewed_ago=5, ttl=30)) == "2025-03-14T09:27:18+00:00"
    assert lease.expires_text({"spec": {"holderIdentity": "run-9"}}) is None
    assert lease.holder(held(None)) is None


def test_a_stale_lock_says_the_holder_looks_dead_and_what_to_do() -> None:
    error = StaleLock(cluster="prod-0", app="library-app", holder="run-9",
                      expires="2025-03-14T09:27:18+00:00")
    assert isinstance(error, LockHeld) and error.exit_code == EXIT_LOCKED
    assert str(error) == ("prod-0: library-app is locked by run run-9, whose lease expired at "
                          "2025-03-14T09:27:18+00:00: that run looks dead; `wavegate resume "
                          "run-9` finishes it, `wavegate rollback library-app` undoes it")


# --- fencing on trust ----------------------------------------------------------------------


@pytest.mark.parametrize(("holder", "age", "trusted"), [
    pytest.param("me", 0.0, True, id="just-confirmed"),
    pytest.param("me", 2.9, True, id="within-a-tenth-of-30s"),
    pytest.param("me", 3.0, False, id="a-tenth-of-the-term-old"),
    pytest.param("other", 0.0, False, id="another-holder-never"),
])
def test_a_look_at_the_lease_fences_writes_for_a_tenth_of_its_term(
        holder: str, age: float, trusted: bool) -> None:
    known = lease.Held(held("me", ttl=30), "me", confirmed=100.0)
    assert known.trusted(holder, at=100.0 + age) is trusted


@pytest.mark.parametrize(("current", "wait"), [
    pytest.param(held("old", ttl=30), 3.0, id="from-a-live-holder-its-trust-window"),
    pytest.param(held("old", ttl=60), 6.0, id="the-window-of-the-holders-own-term"),
    pytest.param(held(None), 0.0, id="a-released-lease-nothing"),
    pytest.param(held("me"), 0.0, id="our-own-nothing"),
])
def test_whoever_takes_a_lease_waits_out_the_old_holders_trust(
        current: dict[str, Any], wait: float) -> None:
    """The old holder's writes let through on its last look all land before the taker's."""
    assert lease.takeover_wait(current, taker="me") == wait
    if wait:
        old = lease.Held(current, "old", confirmed=0.0)
        assert not old.trusted("old", at=wait)


@pytest.mark.parametrize(("holder", "age", "within", "expected"), [
    pytest.param("me", 2.9, None, True, id="a-write-within-the-trust-window"),
    pytest.param("me", 3.0, None, False, id="a-write-past-the-trust-window"),
    pytest.param("me", 0.9, 1.0, True, id="a-wait-within-its-second"),
    pytest.param("me", 1.0, 1.0, False, id="a-wait-past-its-second"),
    pytest.param("other", 0.0, None, False, id="another-holder"),
])
def test_a_look_at_the_lease_stands_only_as_long_as_asked(
        holder: str, age: float, within: float | None, expected: bool) -> None:
    known = lease.Held(held("me", ttl=30), "me", confirmed=100.0)
    assert known.trusted(holder, at=100.0 + age, within=within) is expected
