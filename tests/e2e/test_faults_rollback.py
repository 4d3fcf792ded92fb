"""Faults during rollbacks and under held locks, on six real control planes (the kube sandbox),
through the CLI: an API server stopped (SIGSTOP) during `rollback --all`, a Lease deleted by
hand during a bake, a token variable the stored checks name gone. They run on the e2e suites'
shared sandbox; every test sets where it starts and asserts where every cluster ends, with kubectl.
"""

from __future__ import annotations

import json
import os
import shlex
import signal

import pytest

from tests.e2e.conftest import NAMES, TOKENS, KubeFleet, printed_command

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def test_a_stopped_api_server_is_named_and_its_command_finishes_the_job(kube: KubeFleet) -> None:
    kube.reset("1.0.0", "1.1.0")
    assert set(kube.images().values()) == {"library-app:1.1.0"}
    pid = kube.api_server_pid("prod-3")
    report = kube.dir / "rollback.json"
    os.kill(pid, signal.SIGSTOP)
    try:
        done = kube.wavegate("rollback", "library-app", "--all", "--reason", "leak", "-f",
                             str(kube.fleet_file), "--report", str(report))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert done.returncode == 3, done.stderr[-3000:]
    images = kube.images()
    assert {name: images[name] for name in NAMES if name != "prod-3"} == dict.fromkeys(
        [name for name in NAMES if name != "prod-3"], "library-app:1.0.0")
    assert images["prod-3"] == "library-app:1.1.0"  # untouched while it did not answer

    argv = printed_command(done.stderr, "prod-3", on_line="wavegate: prod-3: not reached")
    command = shlex.join(argv)
    assert argv[:5] == ["wavegate", "rollback", "library-app", "-c", "prod-3"]
    entry = next(c for c in json.loads(report.read_text())["clusters"]
                 if c["cluster"] == "prod-3")
    assert entry["state"] == "rollback-failed" and command in entry["detail"]

    finished = kube.wavegate(*argv[1:])  # the printed command, once prod-3 answers again
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert set(kube.images().values()) == {"library-app:1.0.0"}


def test_a_lease_deleted_by_hand_during_the_bake_is_taken_again(kube: KubeFleet) -> None:
    kube.reset("1.0.0")
    with kube.edited(bake={"canary": "6s"}):
        deploy = kube.start_deploy("1.2.0")
        kube.reaches("prod-0", "baking")
        for name in NAMES:
            kube.kubectl(name, "delete", "lease", "wavegate-library-app")
        _, err = deploy.communicate(timeout=300)
    assert deploy.returncode == 0, err[-3000:]
    assert "kube.lock_retaken" in err
    assert set(kube.images().values()) == {"library-app:1.2.0"}
    for name in NAMES:  # released at the end: kept, with no holder
        holder = kube.kubectl(name, "get", "lease", "wavegate-library-app", "-o",
                              "jsonpath={.spec.holderIdentity}")
        assert holder == "", name


def test_a_token_variable_gone_does_not_block_the_rollback(kube: KubeFleet) -> None:
    kube.reset("1.0.0", "1.2.0")
    assert set(kube.images().values()) == {"library-app:1.2.0"}
    env = {key: value for key, value in kube.env.items() if key != "LIBRARY_TOKEN_ALICE"}
    report = kube.dir / "rollback-no-token.json"
    done = kube.wavegate("rollback", "library-app", "--all", "--reason", "leak", "-f",
                         str(kube.fleet_file), "--report", str(report), env=env)
    assert done.returncode == 3, done.stderr[-3000:]
    assert set(kube.images().values()) == {"library-app:1.0.0"}
    data = json.loads(report.read_text())
    for entry in data["clusters"]:
        assert entry["state"] == "rolled-back", entry
        assert "LIBRARY_TOKEN_ALICE" in entry["detail"]
        assert "judged by its rollout only" in entry["detail"]
    assert TOKENS["LIBRARY_TOKEN_BOB"] not in report.read_text()
