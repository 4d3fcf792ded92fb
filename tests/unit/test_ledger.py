"""The questions a rollback asks of a cluster's ledger: what is live, what is last-known-good,
where does an emergency rollback go, and where does a failed deploy go back to.

Histories are written oldest first as `"revision version status"` lines, the way `wavegate
history` reads when turned upside down.
"""

from __future__ import annotations

import json

import pytest

from wavegate.decide import ledger
from wavegate.decide.ledger import Counts, Record, Status


def history(text: str) -> list[Record]:
    """`"1 1.0.0 verified, 2 2.0.0 failed"` -> records (given in any order)."""
    records = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        revision, version, status = entry.split()
        records.append(Record(app="library-app", cluster="prod-0", revision=int(revision),
                              version=version, status=Status(status), run_id=f"run-{revision}",
                              by="ci", started_at="2025-01-01T00:00:00.000+00:00"))
    return records


def revision(record: Record | None) -> int | None:
    return record.revision if record else None


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("", None, id="empty"),
    pytest.param("1 1.0 verified", 1, id="one-verified"),
    pytest.param("1 1.0 verified, 2 2.0 applying", 2, id="applying-is-live"),
    pytest.param("1 1.0 verified, 2 2.0 failed", 2, id="failed-stays-live-until-rolled-back"),
    pytest.param("1 1.0 verified, 2 2.0 interrupted", 2, id="interrupted-is-live"),
    pytest.param("1 1.0 verified, 2 2.0 rolled-back, 3 1.0 verified", 3,
                 id="after-a-rollback-the-new-revision"),
    pytest.param("1 1.0 verified, 2 2.0 superseded", 1, id="superseded-is-not-live"),
    pytest.param("1 1.0 rolled-back", None, id="first-release-removed"),
    pytest.param("3 2.0 applying, 1 1.0 verified, 2 1.1 verified", 3, id="input-order-ignored"),
])
def test_live(text: str, expected: int | None) -> None:
    assert revision(ledger.live(history(text))) == expected


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("", None, id="empty"),
    pytest.param("1 1.0 failed", None, id="nothing-verified"),
    pytest.param("1 1.0 verified, 2 1.1 verified, 3 2.0 failed", 2, id="newest-verified"),
    pytest.param("1 1.0 verified, 2 2.0 verified", 2, id="the-live-one-counts"),
    pytest.param("2 1.1 verified, 1 1.0 verified", 2, id="input-order-ignored"),
])
def test_last_known_good(text: str, expected: int | None) -> None:
    assert revision(ledger.last_known_good(history(text))) == expected


ROLLBACK = [
    pytest.param("1 1.0 verified, 2 1.1 verified, 3 2.0 verified", None, 2,
                 id="live-verified-culprit: the one before"),
    pytest.param("1 1.0 verified, 2 2.0 verified, 3 2.0 verified", None, 1,
                 id="skips-older-revisions-of-the-live-version"),
    pytest.param("1 1.0 verified, 2 1.1 verified, 3 2.0 failed", None, 2,
                 id="live-failed"),
    pytest.param("1 1.0 verified, 2 1.1 failed, 3 2.0 applying", None, 1,
                 id="skips-unverified"),
    pytest.param("1 1.0 verified", None, None, id="nothing-older"),
    pytest.param("", None, None, id="empty"),
    pytest.param("1 0.9 verified, 2 1.0 verified, 3 2.0 rolled-back, 4 1.0 verified", None, 1,
                 id="after-an-automatic-rollback-goes-further-back"),
    pytest.param("1 1.0 verified, 2 2.0 rolled-back, 3 1.0 verified", None, None,
                 id="already-back-on-the-only-good-version"),
    pytest.param("1 1.0 verified, 2 1.1 verified, 3 2.0 verified", "1.0", 1, id="to-version"),
    pytest.param("1 1.0 verified, 2 1.0 verified, 3 2.0 verified", "1.0", 2,
                 id="to-version-newest-of-it"),
    pytest.param("1 1.1 verified, 2 1.1 failed, 3 2.0 verified", "1.1", 1,
                 id="to-version-verified-only"),
    pytest.param("1 1.0 failed, 2 2.0 verified", "1.0", None, id="to-version-never-verified"),
    pytest.param("1 1.0 verified", "3.0", None, id="to-unknown-version"),
]


@pytest.mark.parametrize(("text", "to_version", "expected"), ROLLBACK)
def test_rollback_target(text: str, to_version: str | None, expected: int | None) -> None:
    assert revision(ledger.rollback_target(history(text), to_version=to_version)) == expected


@pytest.mark.parametrize(("text", "replacing", "expected"), [
    pytest.param("1 1.0 verified, 2 1.1 verified, 3 2.0 applying", 3, 2, id="the-one-before"),
    pytest.param("1 1.0 verified, 2 1.1 failed, 3 2.0 failed", 3, 1, id="skips-failed"),
    pytest.param("1 1.0 verified, 2 1.0 applying", 2, 1, id="same-version-is-fine"),
    pytest.param("1 2.0 applying", 1, None, id="first-release"),
    pytest.param("1 1.0 verified, 2 1.1 verified, 3 1.2 verified", 2, 1,
                 id="ignores-newer-revisions"),
])
def test_restore_target(text: str, replacing: int, expected: int | None) -> None:
    assert revision(ledger.restore_target(history(text), replacing=replacing)) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("", 1),
    ("1 1.0 verified", 2),
    ("5 1.0 superseded, 2 1.0 verified", 6),
])
def test_next_revision(text: str, expected: int) -> None:
    assert ledger.next_revision(history(text)) == expected


def test_newest_first() -> None:
    records = history("2 b verified, 3 c failed, 1 a verified")
    assert [r.revision for r in ledger.newest_first(records)] == [3, 2, 1]


# --- Record as stored ----------------------------------------------------------------------------

FULL = Record(app="library-app", cluster="prod-0", revision=7, version="2.0.0",
              status=Status.ROLLED_BACK, run_id="r-42", by="alice@ci",
              started_at="2025-06-06T08:02:00.000+00:00",
              finished_at="2025-06-06T08:05:00.000+00:00",
              checks=Counts(passed=10, failed=1, errors=2), reason="leak on space-hr",
              rollback_of=6, resource_version="991")


def test_record_round_trips_through_json_text() -> None:
    data = json.loads(json.dumps(FULL.to_json()))
    assert Record.from_json(data, resource_version="991") == FULL


def test_record_json_shape_is_what_history_prints() -> None:
    data = FULL.to_json()
    assert data["status"] == "rolled-back"
    assert data["checks"] == {"passed": 10, "failed": 1, "errors": 2}
    assert "resource_version" not in data  # the store's token, not part of the record
    assert {"cluster", "revision", "version", "status", "run_id", "started_at",
            "finished_at", "by", "checks"} <= set(data)


def test_record_from_json_tolerates_unknown_and_missing_optional_fields() -> None:
    data = {"app": "a", "cluster": "c", "revision": 1, "version": "1.0", "status": "verified",
            "run_id": "r", "by": "me", "started_at": "t", "written_by_a_newer_wavegate": True,
            "checks": None}
    record = Record.from_json(data)
    assert (record.status, record.checks, record.finished_at, record.resource_version) == (
        Status.VERIFIED, Counts(), None, None)


def test_record_updated_returns_a_changed_copy() -> None:
    changed = FULL.updated(status=Status.VERIFIED, reason=None)
    assert (changed.status, changed.reason, changed.revision) == (Status.VERIFIED, None, 7)
    assert FULL.status is Status.ROLLED_BACK


def test_now_is_utc_iso_with_milliseconds() -> None:
    stamp = ledger.now()
    assert stamp.endswith("+00:00") and len(stamp.split(".")[1]) == len("123+00:00")


# --- adoption, unreadable records, the history limit ---------------------------------------


@pytest.mark.parametrize(("text", "replacing", "expected"), [
    pytest.param("0 pre adopted, 1 1.0 failed", 1, 0, id="first-release-back-to-adopted"),
    pytest.param("0 pre adopted, 1 1.0 verified, 2 2.0 failed", 2, 1, id="verified-first"),
    pytest.param("1 1.0 failed", 1, None, id="nothing-adopted-nothing-to-go-to"),
])
def test_a_failed_first_release_goes_back_to_what_was_adopted(text: str, replacing: int,
                                                              expected: int | None) -> None:
    records = history(text)
    assert revision(ledger.restore_target(records, replacing=replacing)) == expected
    assert ledger.last_known_good(history("0 pre adopted")) is None  # adopted is not checked


def test_an_unreadable_record_is_listed_and_skipped_by_every_decision() -> None:
    records = history("1 1.0 verified, 2 ? unreadable")
    assert revision(ledger.live(records)) == 1
    assert revision(ledger.last_known_good(records)) == 1
    assert ledger.next_revision(records) == 3  # its name stays taken
    assert [r.revision for r in ledger.unreadable(records)] == [2]


@pytest.mark.parametrize(("text", "keep", "dropped"), [
    pytest.param("1 1.0 verified, 2 1.1 verified, 3 1.2 verified", 5, [], id="under-the-limit"),
    pytest.param("1 1.0 verified, 2 1.1 verified, 3 1.2 verified, 4 1.3 verified", 1, [1, 2],
                 id="oldest-go-but-not-the-rollback-target"),
    pytest.param("1 1.0 verified, 2 2.0 failed, 3 2.0 rolled-back, 4 2.1 failed, "
                 "5 2.2 rolled-back, 6 2.3 applying", 2, [2, 3, 4], id="lkg-kept-however-old"),
    pytest.param("0 pre adopted, 1 1.0 failed, 2 1.1 failed, 3 1.2 applying", 1, [1, 2],
                 id="adopted-kept-until-a-release-verifies"),
    pytest.param("1 ? unreadable, 2 1.0 verified, 3 1.1 verified", 2, [1],
                 id="an-unreadable-record-ages-out"),
])
def test_the_ledger_keeps_its_history_limit_and_what_it_still_needs(
        text: str, keep: int, dropped: list[int]) -> None:
    assert [r.revision for r in ledger.trimmed(history(text), keep=keep)] == dropped


def test_an_inventory_survives_the_json_round_trip() -> None:
    ref = ledger.ObjectRef("networking.k8s.io", "v1", "Ingress", "library", "admin")
    record = history("1 1.0 verified")[0].updated(inventory=(ref,))
    assert Record.from_json(json.loads(json.dumps(record.to_json()))) == record
    assert "inventory" not in history("1 1.0 verified")[0].to_json()
