"""The local driver's own files: who may read them, and how its lock expires.

These use the real `LocalDriver` on a state folder in tmp_path; no agent is started, because
applying objects, writing the ledger and taking the lock are plain file writes.
"""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wavegate import filestore
from wavegate.config.app import APP_LABEL, Release
from wavegate.config.fleet import Cluster, LocalFleet
from wavegate.decide.ledger import Record, Status
from wavegate.drivers.local import LocalDriver
from wavegate.errors import EXIT_LOCKED, LockHeld, Preempted, StaleLock
from wavegate.kube import lease

APP = "library-app"
SECRET = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
          "data": {"password": "aHVudGVyMg=="},
          "metadata": {"name": "db", "namespace": "library", "labels": {APP_LABEL: APP}}}
CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"},
             "metadata": {"name": "cm", "namespace": "library", "labels": {APP_LABEL: APP}}}


def driver(root: Path) -> LocalDriver:
    cluster = Cluster(name="prod-0", region="westeurope", driver="local", namespace="library")
    return LocalDriver(cluster, LocalFleet(state_dir=root, images={}, secrets={}))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_manifests_and_the_ledger_are_readable_by_their_owner_only(
    tmp_path: Path,
) -> None:
    local = driver(tmp_path)
    (local.dir / "objects").mkdir(parents=True, mode=0o755)  # as an older wavegate left it
    local.acquire_lock(APP, holder="run-1", ttl=30)
    release = Release(app=APP, version="1.0.0", manifests=(SECRET, CONFIGMAP), checks="")
    local.apply(release, holder="run-1")
    record = Record(app=APP, cluster="prod-0", revision=1, version="1.0.0",
                    status=Status.APPLYING, run_id="run-1", by="ci", started_at="t0")
    stored = local.create_record(record, release, holder="run-1")
    local.update_record(stored.updated(status=Status.VERIFIED), holder="run-1")

    files = [*(local.dir / "objects").iterdir(), *(local.dir / "ledger" / APP).glob("0*")]
    assert sorted(p.name for p in files) == [
        "000001.record.json", "000001.release.json.gz",
        "ConfigMap.library.cm.json", "Secret.library.db.json"]
    assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(0o600) for p in files}
    folders = [local.dir / "objects", local.dir / "ledger", local.dir / "ledger" / APP]
    assert [oct(mode(folder)) for folder in folders] == [oct(0o700)] * 3
    assert local.stored_release(stored).manifests == (SECRET, CONFIGMAP)  # still readable


def stop_renewing(local: LocalDriver, *, ago: timedelta) -> None:
    """What a run that died `ago` leaves behind: its lease, last renewed then."""
    path = local.dir / "locks" / f"{APP}.json"
    current = filestore.read_json(path)
    current["spec"]["renewTime"] = lease.micro_time(datetime.now(UTC) - ago)
    filestore.write_json(path, current)


def test_a_live_lock_is_held_and_names_its_holder(tmp_path: Path) -> None:
    local = driver(tmp_path)
    local.acquire_lock(APP, holder="run-1", ttl=30)
    with pytest.raises(LockHeld) as caught:
        local.acquire_lock(APP, holder="run-2", ttl=30)
    assert caught.value.exit_code == EXIT_LOCKED
    lock = local.read_lock(APP)
    assert lock is not None and lock.holder == "run-1"
    assert str(caught.value) == f"prod-0: {APP} is locked by run run-1 until {lock.expires}"


def test_a_lock_its_holder_stopped_renewing_expires_like_a_lease(tmp_path: Path) -> None:
    local = driver(tmp_path)
    local.acquire_lock(APP, holder="run-1", ttl=30)
    stop_renewing(local, ago=timedelta(minutes=5))

    # Expired: another run is told the holder looks dead and what finishes or undoes it ...
    with pytest.raises(StaleLock) as caught:
        local.acquire_lock(APP, holder="run-2", ttl=30)
    assert caught.value.exit_code == EXIT_LOCKED
    assert "whose lease expired at" in str(caught.value)
    assert "`wavegate resume run-1`" in str(caught.value)
    lock = local.read_lock(APP)
    assert lock is not None
    assert datetime.fromisoformat(lock.expires) < datetime.now(UTC)  # status shows it expired

    # ... an emergency rollback takes it, and the old holder is fenced off at once.
    local.acquire_lock(APP, holder="rollback-1", ttl=30, force=True)
    with pytest.raises(Preempted):
        local.renew_lock(APP, holder="run-1", ttl=30)
    with pytest.raises(Preempted):
        local.delete(APP, holder="run-1")
    assert (local.read_lock(APP) or lock).holder == "rollback-1"


def test_a_holder_renews_its_own_expired_lock(tmp_path: Path) -> None:
    # A run paused at an approval gate stops renewing; its promote (same run) takes it on.
    local = driver(tmp_path)
    local.acquire_lock(APP, holder="run-1", ttl=30)
    stop_renewing(local, ago=timedelta(hours=2))
    local.acquire_lock(APP, holder="run-1", ttl=30)
    lock = local.read_lock(APP)
    assert lock is not None and datetime.fromisoformat(lock.expires) > datetime.now(UTC)
    local.release_lock(APP, holder="run-1")
    assert local.read_lock(APP) is None
