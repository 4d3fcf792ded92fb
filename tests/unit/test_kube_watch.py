"""A watch that keeps going: listed first, re-opened where it stopped when the server ends it
or the connection drops, listed again after 410 Gone, and stopped promptly. The API server is
replaced by a script of lists and watch streams. And what a rollout wait makes of the pods its
watch brings: a Deployment that reads done waits while an old pod may still get traffic."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from tests.unit.test_workloads import replica
from wavegate.config.fleet import Cluster
from wavegate.decide import workloads
from wavegate.drivers import kubernetes as driver
from wavegate.drivers import kubewatch
from wavegate.errors import DriverError
from wavegate.kube import kinds
from wavegate.kube.apierrors import Action, ApiError

CLUSTER = Cluster(name="prod-0", region="r", driver="kubernetes", namespace="library",
                  kubeconfig=Path("/nonexistent"), endpoint="https://x")
ACTION = Action("watch", "pods", namespace="library")


def event(kind: str, name: str, version: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "object": {"metadata": {"name": name, "resourceVersion": version},
                                     **extra}}


class Stream:
    """A watch response: its events as JSON lines in two chunks, then an optional drop."""

    def __init__(self, events: list[dict[str, Any]], *, drop: bool = False) -> None:
        lines = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        self.chunks = [lines[: len(lines) // 2], lines[len(lines) // 2:]]
        self.drop = drop
        self.closed = False

    def stream(self, amt: Any = None, decode_content: bool = True) -> Iterator[bytes]:
        yield from self.chunks
        if self.drop:
            raise OSError("connection reset by peer")

    def close(self) -> None:
        self.closed = True

    def release_conn(self) -> None:
        pass


class FakeApi:
    """Lists and watch streams in the order the test gives them; then the watch blocks."""

    def __init__(self, lists: list[dict[str, Any]], streams: list[Stream | BaseException],
                 done: queue.Queue[None]) -> None:
        self.cluster, self.log = CLUSTER, structlog.get_logger()
        self.lists, self.streams, self.done = lists, streams, done
        self.watched_from: list[str] = []

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.lists.pop(0)

    def stream(self, path: str, *, query: dict[str, str], action: Action,
               expect: tuple[int, ...] = ()) -> Stream:
        self.watched_from.append(query.get("resourceVersion", "now"))
        if not self.streams:
            self.done.put(None)
            raise DriverError("script ended", cluster="prod-0")
        answer = self.streams.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def run(api: FakeApi, done: queue.Queue[None],
        resource_version: str | None = None) -> list[tuple[str, str, Any]]:
    events: queue.Queue[driver.Event] = queue.Queue()
    watch = driver._Watch(api, "/api/v1/namespaces/library/pods", tag="pods", events=events,
                          query={"labelSelector": "app=web"}, action=ACTION,
                          resource_version=resource_version)
    watch.start()
    done.get(timeout=5)
    watch.stop()
    seen = []
    while not events.empty():
        seen.append(events.get())
    return seen


def names(seen: list[tuple[str, str, Any]]) -> list[str]:
    return [f"{kind} {obj['metadata']['name']}" if kind not in ("SYNC", "ERROR")
            else f"{kind} {len(obj) if kind == 'SYNC' else ''}".strip()
            for _, kind, obj in seen]


def test_it_lists_then_follows_and_resumes_where_the_server_ended_it() -> None:
    done: queue.Queue[None] = queue.Queue()
    api = FakeApi(
        lists=[{"metadata": {"resourceVersion": "10"}, "items": [{"metadata": {"name": "a"}}]}],
        streams=[Stream([event("ADDED", "b", "11"), event("BOOKMARK", "", "15")]),
                 Stream([event("MODIFIED", "b", "16")])], done=done)
    seen = run(api, done)
    assert names(seen)[:3] == ["SYNC 1", "ADDED b", "MODIFIED b"]
    assert api.watched_from == ["10", "15", "16"]  # bookmarks move it on without an event


def test_started_from_now_it_lists_nothing_and_resumes_after_the_first_event() -> None:
    """What exists comes as ADDED on a watch with no resourceVersion: one request, not a list
    and a watch. A watch the server ends before any event is opened from now again (nothing
    was handed over, so nothing can be missed); after an event, from that event."""
    done: queue.Queue[None] = queue.Queue()
    api = FakeApi(lists=[], streams=[Stream([]), Stream([event("ADDED", "a", "30")]),
                                     Stream([event("MODIFIED", "a", "31")])], done=done)
    seen = run(api, done, resource_version=kubewatch.NOW)
    assert names(seen)[:2] == ["ADDED a", "MODIFIED a"]
    assert api.watched_from[:3] == ["now", "now", "30"]


def test_after_410_gone_it_lists_again() -> None:
    done: queue.Queue[None] = queue.Queue()
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                        "message": "too old resource version: 5 (40)"}}
    api = FakeApi(
        lists=[{"metadata": {"resourceVersion": "40"}, "items": []}],
        streams=[Stream([gone]), ApiError(410, "Gone", ""), Stream([event("ADDED", "c", "41")])],
        done=done)
    api.lists.append({"metadata": {"resourceVersion": "45"}, "items": []})
    seen = run(api, done, resource_version="5")
    assert names(seen)[:3] == ["SYNC 0", "SYNC 0", "ADDED c"]
    assert api.watched_from[:3] == ["5", "40", "45"]


def test_a_dropped_connection_is_resumed_from_the_last_event() -> None:
    done: queue.Queue[None] = queue.Queue()
    api = FakeApi(lists=[], streams=[Stream([event("ADDED", "a", "21")], drop=True),
                                     Stream([event("DELETED", "a", "22")])], done=done)
    seen = run(api, done, resource_version="20")
    assert names(seen)[:2] == ["ADDED a", "DELETED a"]
    assert api.watched_from[:2] == ["20", "21"]


def test_an_error_retries_did_not_cure_ends_the_watch_and_is_handed_over() -> None:
    done: queue.Queue[None] = queue.Queue()
    api = FakeApi(lists=[], streams=[], done=done)
    seen = run(api, done, resource_version="20")
    assert [(kind, str(error)) for _, kind, error in seen] == [
        ("ERROR", "prod-0: script ended")]


def test_an_error_event_other_than_410_ends_the_watch_and_names_the_status() -> None:
    done: queue.Queue[None] = queue.Queue()
    denied = {"type": "ERROR", "object": {"kind": "Status", "code": 403, "reason": "Forbidden",
                                          "message": "pods is forbidden"}}
    api = FakeApi(lists=[], streams=[Stream([denied])], done=done)
    api.streams.append(Stream([]))  # never reached: the 403 ends it
    events: queue.Queue[driver.Event] = queue.Queue()
    watch = driver._Watch(api, "/api/v1/namespaces/library/pods", tag="pods", events=events,
                          query={}, action=ACTION, resource_version="7")
    watch.start()
    tag, kind, error = events.get(timeout=5)
    watch.stop()
    assert (tag, kind) == ("pods", "ERROR") and isinstance(error, DriverError)
    assert "403" in str(error) or "forbidden" in str(error).lower()
    assert api.watched_from == ["7"]


def test_events_split_across_chunks_are_joined() -> None:
    stream = Stream([event("ADDED", "a", "1"), event("ADDED", "b", "2")])
    assert [e["object"]["metadata"]["name"] for e in kubewatch.events(stream)] == ["a", "b"]  # type: ignore[arg-type]


def test_a_broken_stream_reads_as_dropped() -> None:
    stream = Stream([event("ADDED", "a", "1")], drop=True)
    seen = []
    with pytest.raises(kubewatch.Dropped, match="watch interrupted"):
        for item in kubewatch.events(stream):  # type: ignore[arg-type]
            seen.append(item)
    assert len(seen) == 1  # what came before the drop is still handed over


# --- the lease a rollout wait follows ----------------------------------------------------

def lease(holder: str | None) -> dict[str, Any]:
    spec = {"holderIdentity": holder} if holder else {}
    return {"metadata": {"name": "wavegate-app", "resourceVersion": "9"}, "spec": spec}


def sight() -> driver._LeaseSight:
    api = FakeApi(lists=[], streams=[], done=queue.Queue())
    path = "/apis/coordination.k8s.io/v1/namespaces/library/leases"
    return driver._LeaseSight(api, path, name="wavegate-app", namespace="library", holder="run-1",
                              version="5")


@pytest.mark.parametrize(("kind", "payload", "changed"), [
    pytest.param("MODIFIED", lease("run-1"), False, id="our-renewal"),
    pytest.param("ADDED", lease("run-1"), False, id="our-retake"),
    pytest.param("SYNC", [lease("run-1")], False, id="relisted-ours"),
    pytest.param("MODIFIED", lease("run-2"), True, id="taken"),
    pytest.param("MODIFIED", lease(None), True, id="released"),
    pytest.param("DELETED", lease("run-1"), True, id="deleted"),
    pytest.param("SYNC", [], True, id="relisted-gone"),
])
def test_a_lease_change_not_ours_is_kept_for_the_next_look_and_wakes_the_wait(
        kind: str, payload: Any, changed: bool) -> None:
    followed, woken = sight(), queue.Queue[driver.Event]()
    followed.wakes(woken)
    followed.put(("lease", kind, payload))
    assert followed.changed() is changed
    assert followed.changed() is False  # said once: the look it led to asked the API server
    assert [event for _, event, _ in list(woken.queue)] == (["WAKE"] if changed else [])


def test_a_lease_watch_refused_says_so_once_and_the_looks_ask_instead() -> None:
    followed = sight()
    with capture_logs() as logs:
        followed.put(("lease", "ERROR", DriverError("forbidden: deployer cannot watch leases",
                                                    cluster="prod-0")))
        assert followed.following() is False
        followed.stop()
    assert [e["event"] for e in logs] == ["kube.lease_watch_unavailable"]
    assert logs[0]["detail"] == "prod-0: forbidden: deployer cannot watch leases"


def test_a_deployment_read_done_is_judged_rolled_out_once_its_old_pod_is_gone_or_long_stopping(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(driver.time, "monotonic", lambda: clock[0])
    wait = driver._Rollout(None, kinds.known("apps/v1", "Deployment"),  # type: ignore[arg-type]
                           "library", "web")
    done = {"metadata": {"name": "web", "generation": 2}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1,
                       "availableReplicas": 1}}
    pods: dict[str, Any] = {}
    stopping = replica("old", replica_set="web-1a", stopping=True)
    wait._follow(done, pods, ("pods", "ADDED", replica("new", replica_set="web-2b")))
    wait._follow(done, pods, ("pods", "ADDED", replica("old", replica_set="web-1a")))
    assert not wait._judged(done, pods)  # the old pod's deletion is not seen yet
    wait._follow(done, pods, ("pods", "MODIFIED", stopping))
    assert not wait._judged(done, pods)
    assert wait.progress == "1 of 1 available, 1 old pods stopping"
    clock[0] += workloads.ENDPOINTS_SETTLE
    assert wait._judged(done, pods)  # the Service has dropped it by now
    wait._follow(done, pods, ("pods", "DELETED", stopping))
    assert wait._judged(done, pods)
