"""How the driver talks to an API server, with the HTTP layer replaced by a script of
answers: what it retries (429, 5xx, no answer) and how often, what it never retries (403), a
401 that reloads the credentials once, and error messages that name the action in one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from wavegate.config.fleet import Cluster
from wavegate.drivers import kubernetes as driver
from wavegate.errors import EXIT_NEEDS_HUMAN, DriverError
from wavegate.kube import retry
from wavegate.kube.apierrors import Action, ApiError, Unreachable

CLUSTER = Cluster(name="prod-0", region="westeurope", driver="kubernetes", namespace="library",
                  context="prod-0", endpoint="https://x", kubeconfig=Path("/nonexistent"))
ACTION = Action("get", "leases.coordination.k8s.io", "wavegate-app", "library")


class FakeResponse:
    def __init__(self, data: bytes) -> None:
        self.data = data


class Script:
    """Answers in order: an exception to raise, or a body to return."""

    def __init__(self, *answers: BaseException | bytes) -> None:
        self.answers = list(answers)
        self.sent: list[int] = []  # the connection generation each request went out on

    def __call__(self, connection: Any, request: Any) -> FakeResponse:
        self.sent.append(connection.generation)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return FakeResponse(answer)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[driver._Api]:
    loads = iter(range(1, 100))

    def load(self: driver._Api) -> driver._Connection:
        self._connection = driver._Connection("https://x", None, None, next(loads))
        return self._connection

    monkeypatch.setattr(driver._Api, "load", load)
    slept: list[float] = []
    api = driver._Api(CLUSTER, sleep=slept.append)
    api.slept = slept  # type: ignore[attr-defined]
    yield api


def use(monkeypatch: pytest.MonkeyPatch, script: Script) -> Script:
    monkeypatch.setattr(driver, "_send", script)
    return script


def test_transient_failures_are_retried_with_growing_waits_then_succeed(
        api: driver._Api, monkeypatch: pytest.MonkeyPatch) -> None:
    script = use(monkeypatch, Script(ApiError(503, "ServiceUnavailable", ""),
                                     Unreachable("connection reset"),
                                     ApiError(429, "TooManyRequests", ""), b'{"ok": true}'))
    with capture_logs() as logs:
        assert api.request("GET", "/x", action=ACTION) == {"ok": True}
    assert len(script.sent) == 4
    waits = api.slept  # type: ignore[attr-defined]
    assert len(waits) == 3 and waits[0] < waits[1] < waits[2]
    retries = [entry for entry in logs if entry["event"] == "kube.retry"]
    assert [entry["attempt"] for entry in retries] == [1, 2, 3]
    assert retries[0]["policy"] == retry.API_CALL.name and retries[0]["cluster"] == "prod-0"


def test_a_cluster_that_stays_down_is_a_driver_error_after_the_policys_attempts(
        api: driver._Api, monkeypatch: pytest.MonkeyPatch) -> None:
    script = use(monkeypatch, Script(*[Unreachable("https://x: Connection refused")] * 9))
    with pytest.raises(DriverError) as failed:
        api.request("GET", "/x", action=ACTION)
    assert len(script.sent) == retry.API_CALL.attempts
    assert failed.value.exit_code == EXIT_NEEDS_HUMAN
    assert str(failed.value) == ("prod-0: get leases.coordination.k8s.io library/wavegate-app: "
                                 "API server unreachable: https://x: Connection refused")


def test_forbidden_is_never_retried(api: driver._Api, monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = ('leases.coordination.k8s.io "wavegate-app" is forbidden: User "deployer" cannot '
               'get resource "leases" in API group "coordination.k8s.io" in the namespace '
               '"library"')
    script = use(monkeypatch, Script(ApiError(403, "Forbidden", refusal)))
    with pytest.raises(DriverError) as failed:
        api.request("GET", "/x", action=ACTION)
    assert len(script.sent) == 1
    assert str(failed.value) == ("prod-0: forbidden: deployer cannot get "
                                 "leases.coordination.k8s.io in namespace library")


def test_a_401_reloads_the_credentials_once_and_resends(
        api: driver._Api, monkeypatch: pytest.MonkeyPatch) -> None:
    script = use(monkeypatch, Script(ApiError(401, "Unauthorized", ""), b"{}"))
    with capture_logs() as logs:
        api.request("GET", "/x", action=ACTION)
    assert script.sent == [1, 2]  # the second request went out with reloaded credentials
    assert "kube.reauthenticate" in [entry["event"] for entry in logs]


def test_a_401_after_the_reload_is_final(api: driver._Api,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    script = use(monkeypatch, Script(*[ApiError(401, "Unauthorized", "")] * 4))
    with pytest.raises(DriverError, match="also after reloading them"):
        api.request("GET", "/x", action=ACTION)
    assert script.sent == [1, 2]


def test_expected_statuses_reach_the_caller(api: driver._Api,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, Script(ApiError(409, "AlreadyExists", "")))
    with pytest.raises(ApiError) as conflict:
        api.request("POST", "/x", action=ACTION, expect=(409,))
    assert conflict.value.status == 409


def test_calls_are_counted_by_method(api: driver._Api, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, Script(b"{}", b"{}", b""))
    api.request("GET", "/x", action=ACTION)
    api.request("PATCH", "/x", action=ACTION, body={})
    assert api.request("DELETE", "/x", action=ACTION) == {}
    assert api.calls == {"GET": 1, "PATCH": 1, "DELETE": 1}


def test_construction_does_no_io() -> None:
    made = driver.KubernetesDriver(CLUSTER)  # the kubeconfig does not even exist
    assert made.endpoint() == "https://x"
