"""Which kubeconfig a cluster reads, and which of its values are secrets to keep out of every
output."""

from __future__ import annotations

import os
from pathlib import Path

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
