"""`deploy --set-env` on the local fleet: the value reaches the pods and the ledger's release,
and no other file wavegate writes; a killed run resumes with it read again from the
environment, and a resume without it is refused before anything is touched."""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path

import pytest

from tests.integration.conftest import LocalFleet
from tests.integration.test_operations_local import (
    _start_deploy,
    edit_fleet,
    run_id_of,
    set_bake,
    versions,
)

pytestmark = pytest.mark.integration

SECRET = "itest-db-password-Rf62hQ"
VARIABLE = "WG_ITEST_DB_PASSWORD"
SET_ENV = ("--set-env", f"db_password={VARIABLE}")


def files_holding(root: Path, text: str) -> dict[Path, int]:
    """Every file under `root` whose bytes hold `text`, with its permission bits (gzip files
    are read decompressed, as a ledger's releases are stored)."""
    found = {}
    for folder, _, names in os.walk(root):  # not into the manifests symlink
        for name in names:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            if name.endswith(".gz"):
                data = gzip.decompress(data)
            if text.encode() in data:
                found[path.relative_to(root)] = stat.S_IMODE(path.stat().st_mode)
    return found


def test_a_set_env_value_lands_only_in_the_release_and_resume_reads_it_again(
        local_fleet: LocalFleet) -> None:
    local_fleet.env[VARIABLE] = SECRET
    app = str(local_fleet.app_variant("secret-app",
                                      configmap_extra={"DB_PASSWORD": "${db_password}"}))
    done = local_fleet.deploy(app, "1.0.0", *SET_ENV, "--report", "first.json",
                              "--junit", "first.xml", "--report-html", "first.html")
    assert done.code == 0, done.stderr

    # Killed in the canary's bake (seen in its journal), then resumed from a new process.
    set_bake(local_fleet, "canary", "30s")
    process = _start_deploy(local_fleet, "1.1.0", app, *SET_ENV)
    local_fleet.wait_for_state("prod-0", "baking")
    process.kill()
    local_fleet.outputs += process.communicate()
    set_bake(local_fleet, "canary", "1s")
    resumed = local_fleet.wavegate("resume", "--report", "resumed.json")
    assert resumed.code == 0, resumed.stderr
    assert set(versions(local_fleet).values()) == {"1.1.0"}

    # Paused at a gate; resuming it without the variable is refused and changes nothing.
    edit_fleet(local_fleet, approval=["regions"])
    paused = local_fleet.deploy(app, "1.2.0", *SET_ENV)
    assert paused.code == 10, paused.stderr
    run_id = run_id_of(paused.stdout)
    journal = local_fleet.root / ".wavegate" / "runs" / f"{run_id}.json"
    before, live = journal.read_text(), versions(local_fleet)
    del local_fleet.env[VARIABLE]
    refused = local_fleet.wavegate("resume", run_id)
    assert refused.code == 2
    assert f"environment variable {VARIABLE} is not set" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert journal.read_text() == before and versions(local_fleet) == live
    assert json.loads(before)["inputs"]["set_env"] == {"db_password": VARIABLE}

    holders = files_holding(local_fleet.root, SECRET)
    assert not any(SECRET in output for output in local_fleet.outputs)
    assert all(path.parts[0] == "state" and path.parts[2] in ("objects", "ledger")
               for path in holders), sorted(holders)  # no report, journal, page or log
    assert set(holders.values()) == {0o600}
    releases = {path.parts[1] for path in holders if path.name.endswith(".release.json.gz")}
    assert releases == {f"prod-{n}" for n in range(6)}  # the value was really deployed
