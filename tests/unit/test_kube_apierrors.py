"""What a user reads when the API server says no: one line, naming what was refused in the
words an RBAC rule uses, cut short, and never a secret, whatever the body held. And what the
driver retries: only what waiting can cure."""

from __future__ import annotations

import json

import pytest

from wavegate import redact
from wavegate.kube import apierrors
from wavegate.kube.apierrors import Action, ApiError, Unreachable

APPLY = Action("apply", "deployments.apps", "web", "library")


def status_body(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": message, "reason": reason, "code": code}).encode()


@pytest.mark.parametrize(("message", "action", "expected"), [
    pytest.param('deployments.apps "web" is forbidden: User "deployer" cannot patch resource '
                 '"deployments" in API group "apps" in the namespace "library"', APPLY,
                 "forbidden: deployer cannot patch deployments.apps in namespace library",
                 id="namespaced-group"),
    pytest.param('secrets is forbidden: User "deployer" cannot list resource "secrets" in API '
                 'group "" in the namespace "library"', Action("list", "secrets"),
                 "forbidden: deployer cannot list secrets in namespace library", id="core"),
    pytest.param('nodes is forbidden: User "system:serviceaccount:library:wavegate-deployer" '
                 'cannot list resource "nodes" in API group "" at the cluster scope',
                 Action("list", "nodes"), "forbidden: system:serviceaccount:library:"
                 "wavegate-deployer cannot list nodes", id="cluster-scope"),
    pytest.param('configmaps "c" is forbidden: ', Action("apply", "configmaps", "c", "library"),
                 "forbidden: cannot create configmaps in namespace library (server-side apply "
                 "of c creates it, which needs create as well as patch)",
                 id="apply-create-says-nothing"),
    pytest.param("denied by webhook", Action("delete", "services", "s", "ns"),
                 "forbidden: cannot delete services in namespace ns: denied by webhook",
                 id="unparsed"),
])
def test_forbidden_names_the_refused_verb_and_resource(message: str, action: Action,
                                                        expected: str) -> None:
    error = apierrors.from_response(403, status_body(403, "Forbidden", message))
    assert apierrors.describe(error, action) == expected


def test_other_statuses_name_the_action_and_the_reason() -> None:
    error = apierrors.from_response(404, status_body(404, "NotFound",
                                                     'namespaces "library" not found'))
    described = apierrors.describe(error, Action("get", "leases.coordination.k8s.io",
                                                 "wavegate-app", "library"))
    assert described == ("get leases.coordination.k8s.io library/wavegate-app: NotFound (404): "
                         'namespaces "library" not found')


def test_unauthorized_says_the_credentials_were_refused_after_a_reload() -> None:
    error = apierrors.from_response(401, status_body(401, "Unauthorized", "Unauthorized"))
    assert "refused the kubeconfig's credentials, also after reloading them" in \
        apierrors.describe(error, Action("get", "/version"))


def test_bodies_are_one_line_cut_short_and_scrubbed() -> None:
    token = "tok-apierrors-5c1d9e"
    redact.register(token)
    body = f"<html>\n<body>proxy error for Bearer {token}\n{'x' * 500}</body></html>".encode()
    error = apierrors.from_response(502, body, "Bad Gateway")
    assert "\n" not in error.message and token not in error.message
    assert len(error.message) <= apierrors.MAX_MESSAGE
    assert error.reason == "Bad Gateway" and error.message.startswith("<html> <body>proxy error")


def test_unreachable_is_one_line() -> None:
    described = apierrors.describe(Unreachable("https://127.0.0.1:1:\nConnection refused"),
                                   Action("get", "/version"))
    assert described == "get /version: API server unreachable: https://127.0.0.1:1: Connection " \
        "refused"


@pytest.mark.parametrize(("error", "transient"), [
    pytest.param(ApiError(429, "TooManyRequests", ""), True, id="429"),
    pytest.param(ApiError(500, "InternalError", "etcdserver: request timed out"), True, id="500"),
    pytest.param(ApiError(503, "ServiceUnavailable", ""), True, id="503"),
    pytest.param(ApiError(504, "Timeout", ""), True, id="504"),
    pytest.param(ApiError(500, "Internal Server Error", "failed to create typed patch object: "
                          ".spec.ports: element 0: associative list with keys has an element "
                          "that omits key field \"protocol\""), False, id="ssa-500-is-no-outage"),
    pytest.param(ApiError(403, "Forbidden", ""), False, id="403"),
    pytest.param(ApiError(401, "Unauthorized", ""), False, id="401-is-reloaded-not-retried"),
    pytest.param(ApiError(409, "Conflict", ""), False, id="409"),
    pytest.param(ApiError(422, "Invalid", ""), False, id="422"),
    pytest.param(Unreachable("connection refused"), True, id="refused"),
    pytest.param(Unreachable("TLS failed", transient=False), False, id="tls"),
    pytest.param(ValueError("bug"), False, id="a-bug"),
])
def test_transient(error: BaseException, transient: bool) -> None:
    assert apierrors.is_transient(error) is transient


def test_a_watch_error_event_keeps_its_code() -> None:
    error = apierrors.from_watch_event({"kind": "Status", "code": 410, "reason": "Expired",
                                        "message": "too old resource version: 1 (42)"})
    assert (error.status, error.reason) == (410, "Expired")


@pytest.mark.parametrize(("action", "text"), [
    (Action("get", "/version"), "get /version"),
    (Action("list", "secrets", namespace="library"), "list secrets in namespace library"),
    (Action("apply", "namespaces", "library"), "apply namespaces library"),
    (APPLY, "apply deployments.apps library/web"),
])
def test_actions_read_as_what_was_tried(action: Action, text: str) -> None:
    assert str(action) == text
