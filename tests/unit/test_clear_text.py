"""No token in clear text: a principal that sends a token is refused (exit 2) against a plain
`http://` endpoint that is not loopback, unless the cluster says `insecure_http: true`.

The refusal comes from `deploy`'s prepare step, before any cluster is contacted: the fleet here
points at addresses nothing listens on, and a kubeconfig that does not exist.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wavegate.config import checks, endpoints
from wavegate.config import fleet as fleets
from wavegate.config.app import App
from wavegate.engine import deploy as deploys
from wavegate.errors import InputError

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "manifests" / "library-app"
FLEET = """\
fleet: lab
defaults: {{driver: kubernetes, namespace: library, kubeconfig: missing-kubeconfig,
           values: {{replicas: 1}}}}
clusters:
  - name: lab-0
    context: lab-0
    endpoint: {endpoint}
{extra}waves:
  - {{name: all, clusters: [lab-0]}}
"""


def fleet_file(tmp_path: Path, endpoint: str, extra: str = "") -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.format(endpoint=endpoint, extra=extra))
    return path


def deploy(tmp_path: Path, fleet: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIBRARY_TOKEN_ALICE": "cleartext-alice-7731",
           "LIBRARY_TOKEN_BOB": "cleartext-bob-7732", "LIBRARY_TOKEN_CAROL": "cleartext-carol-7733",
           "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "wavegate", "deploy",
                           str(APP), "--version", "1.0.0",
                           "-f", str(fleet), "--dry-run"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_a_token_to_a_remote_http_endpoint_is_exit_2_naming_principal_and_cluster(
        tmp_path: Path) -> None:
    done = deploy(tmp_path, fleet_file(tmp_path, "http://10.20.30.40:8080"))
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    checks_file = APP / "checks.yaml"
    assert f"{checks_file}:3: principals.alice: principal 'alice' sends a token" in message
    assert "lab-0" in message and "http://10.20.30.40:8080" in message
    assert "insecure_http: true" in message
    assert "Traceback" not in done.stderr and "cleartext-alice-7731" not in done.stderr


@pytest.mark.parametrize(("endpoint", "extra"), [
    pytest.param("https://library.lab.example", "", id="https"),
    pytest.param("http://10.20.30.40:8080", "    insecure_http: true\n", id="insecure-http"),
    pytest.param("http://127.0.0.9:8080", "", id="loopback-v4"),
])
def test_tls_loopback_or_an_explicit_insecure_http_are_accepted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str, extra: str) -> None:
    monkeypatch.setenv("LIBRARY_TOKEN_ALICE", "cleartext-alice-7741")
    monkeypatch.setenv("LIBRARY_TOKEN_BOB", "cleartext-bob-7742")
    monkeypatch.setenv("LIBRARY_TOKEN_CAROL", "cleartext-carol-7743")
    fleet = fleets.load(fleet_file(tmp_path, endpoint, extra))
    prepared = deploys.prepare(fleet, App.from_folder(APP), "1.0.0", {})
    assert list(prepared.targets) == ["lab-0"]


@pytest.mark.parametrize(("endpoint", "clear"), [
    ("http://library.example.com", True),
    ("HTTP://10.0.0.1:80/base", True),
    ("http://127.0.0.1:8080", False),
    ("http://127.255.0.3", False),
    ("http://[::1]:8080", False),
    ("http://localhost:8080", False),
    ("http://localhost.evil.example", True),
    ("https://10.0.0.1", False),
])
def test_which_endpoints_carry_a_token_in_clear_text(endpoint: str, clear: bool) -> None:
    assert endpoints.in_clear(endpoint) is clear


def test_an_anonymous_only_suite_may_use_plain_http(tmp_path: Path) -> None:
    suite = checks.load("principals: {anonymous: {}}\n"
                        "checks: [{name: h, as: anonymous, request: GET /healthz}]\n",
                        tmp_path / "checks.yaml")
    cluster = fleets.load(fleet_file(tmp_path, "http://10.1.1.1")).clusters[0]
    endpoints.refuse_tokens_in_clear(suite, cluster)  # nothing to refuse


def test_insecure_http_must_be_a_boolean(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, "http://10.1.1.1", "    insecure_http: yes please\n")
    with pytest.raises(InputError) as caught:
        fleets.load(path)
    assert str(caught.value).startswith(f"{path}:8: clusters[0].insecure_http: expected true "
                                        "or false")
