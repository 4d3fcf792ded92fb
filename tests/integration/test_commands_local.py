"""Commands on the local fleet that the operations tests leave out: `plan` through the local
driver's preview, and a refused `promote` that leaves its run resumable."""

from __future__ import annotations

import pytest
import yaml

from tests.integration.conftest import TOKENS, LocalFleet

pytestmark = pytest.mark.integration


def test_plan_previews_each_local_cluster_from_its_ledger(local_fleet: LocalFleet) -> None:
    assert local_fleet.deploy("library-app", "1.0.0").code == 0
    fleet = ("-f", str(local_fleet.fleet_file), "-o", "json")
    same = local_fleet.wavegate("plan", "library-app", "--version", "1.0.0", *fleet).json()
    newer = local_fleet.wavegate("plan", "library-app", "--version", "1.1.0", *fleet).json()
    canary = newer["waves"][0]["clusters"][0]
    assert {c["change"] for w in same["waves"] for c in w["clusters"]} == {"none"}
    assert (canary["cluster"], canary["from"], canary["to"], canary["change"], canary["source"]) \
        == ("prod-0", "1.0.0", "1.1.0", "update", "ledger")
    assert "+++ rendered (1.1.0)" in canary["diff"]
    assert any(line.startswith("+") and "1.1.0" in line for line in canary["diff"][2:])


def test_a_refused_promote_leaves_the_paused_run_to_promote_again(local_fleet: LocalFleet) -> None:
    document = yaml.safe_load(local_fleet.fleet_file.read_text())
    document["policy"]["approval"] = ["regions"]
    local_fleet.fleet_file.write_text(yaml.safe_dump(document))
    paused = local_fleet.deploy("library-app", "1.0.0")
    assert paused.code == 10, paused.stderr
    run_id = paused.stdout.split("wavegate promote ", 1)[1].split("`", 1)[0]

    token = local_fleet.env.pop("LIBRARY_TOKEN_BOB")
    refused = local_fleet.wavegate("promote", run_id)
    assert refused.code == 2
    assert "LIBRARY_TOKEN_BOB" in refused.stderr and TOKENS["LIBRARY_TOKEN_ALICE"] not in (
        refused.stdout + refused.stderr)

    local_fleet.env["LIBRARY_TOKEN_BOB"] = token
    promoted = local_fleet.wavegate("promote", run_id)
    assert promoted.code == 0, promoted.stderr
    assert {row["live_version"] for row in local_fleet.status().values()} == {"1.0.0"}
