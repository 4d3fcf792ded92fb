"""Which kubeconfig a cluster reads, and which of its values are secrets to keep out of every
output."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from wavegate.config.fleet import Cluster
from wavegate.kube import kubeconfig


def test_the_clusters_own_kubeconfig_comes_first(tmp_path: Path) -> None:
    own = tmp_path / "kubeconfig"
    assert kubeconfig.locations(own, {"KUBECONFIG": "/elsewhere"}) == [own]


def test_then_every_file_of_kubeconfig_in_order() -> None:
    environ = {"KUBECONFIG": os.pathsep.join(["/a/config", "", "/b/config"])}
    assert kubeconfig.locations(None, environ) == [Path("/a/config"), Path("/b/config")]


def test_then_the_default() -> None:
    assert kubeconfig.locations(None, {}) == [Path("~/.kube/config").expanduser()]


def test_every_users_credentials_are_secrets() -> None:
    config = {"users": [
        {"name": "admin", "user": {"token": "tok-1", "client-certificate-data": "cert"}},
        {"name": "cert", "user": {"client-key-data": "key-1"}},
        {"name": "basic", "user": {"username": "alice", "password": "pw-1"}},
        {"name": "oidc", "user": {"auth-provider": {"name": "oidc", "config": {
            "id-token": "id-1", "refresh-token": "refresh-1", "client-secret": "cs-1",
            "client-id": "public"}}}},
        {"name": "exec", "user": {"exec": {"command": "get-token"}}},
        {"name": "empty"},
        None,
    ]}
    assert sorted(kubeconfig.secrets(config)) == sorted(
        ["tok-1", "key-1", "pw-1", "id-1", "refresh-1", "cs-1"])


def test_an_authorization_header_yields_itself_and_its_credential() -> None:
    assert list(kubeconfig.header_secrets("Bearer abc123")) == ["Bearer abc123", "abc123"]
    assert list(kubeconfig.header_secrets("Basic YWxpY2U6cHc=")) == ["Basic YWxpY2U6cHc=",
                                                                     "YWxpY2U6cHc="]
    assert list(kubeconfig.header_secrets(None)) == []


def test_in_cluster_means_the_pods_service_account_unless_a_kubeconfig_is_named() -> None:
    pod = Cluster(name="a", region="r", driver="kubernetes", namespace="n", context="in-cluster")
    assert kubeconfig.uses_service_account(pod)
    assert not kubeconfig.uses_service_account(replace(pod, kubeconfig=Path("k")))
    assert not kubeconfig.uses_service_account(replace(pod, context="prod-0"))


def test_the_service_account_folder_can_be_moved_and_missing_variables_are_named() -> None:
    assert kubeconfig.service_account({}) == (
        Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"))
    moved = {"WAVEGATE_SERVICEACCOUNT_DIR": "/mnt/sa", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert kubeconfig.service_account(moved) == (Path("/mnt/sa/token"), Path("/mnt/sa/ca.crt"))
    assert kubeconfig.missing_service_env(moved) == ["KUBERNETES_SERVICE_PORT"]
